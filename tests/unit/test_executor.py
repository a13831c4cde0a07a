"""Pure parts of the executor and the nft handler: execution order, restorable rulesets."""

from __future__ import annotations

import json

from composenet.core.plan import Action, Change, Plan, Reason, Step
from composenet.core.resources import Address, Bridge, Netns, NetnsFile, Resolver, Route
from composenet.kernel.apply import _execution_order
from composenet.kernel.nft import restorable


def _plan(*rs: tuple[Action, object]) -> Plan:
    steps = []
    for i, (action, r) in enumerate(rs):
        before, after = (r, None) if action == Action.delete else (None, r)
        steps.append(Step(i, Change(action, r.key, before, after, Reason.missing)))  # type: ignore[attr-defined]
    return Plan("p", steps)


def test_resolver_starts_right_after_the_bridges_and_their_addresses() -> None:
    old = Netns("p-old-1", "p", "old")
    ns = Netns("p-a-1", "p", "a")
    br = Bridge("cnb-1", "composenet:p/front", "front")
    gw = Address("", "cnb-1", "172.18.0.1/16")
    inner = Address("p-a-1", "eth0", "172.18.0.2/16")
    route = Route("p-a-1", "0.0.0.0/0", "172.18.0.1", "eth0")
    f = NetnsFile("p-a-1", "hosts", "")
    res = Resolver("p", ("front=172.18.0.1",))
    plan = _plan((Action.delete, old), (Action.create, ns), (Action.create, br), (Action.create, gw),
                 (Action.create, inner), (Action.create, route), (Action.create, f), (Action.create, res))
    got = [(n, s.change.resource.kind) for n, s in _execution_order(plan)]
    assert got == [(1, "netns"), (2, "netns"), (3, "bridge"), (4, "address"), (8, "resolver"),
                   (5, "address"), (6, "route"), (7, "file")]
    # Without a bridge or address before it, it still never runs before a delete.
    plan2 = _plan((Action.delete, old), (Action.create, f), (Action.create, res))
    assert [n for n, _s in _execution_order(plan2)] == [1, 3, 2]
    # A reload (update) keeps its place; so does every plan without a resolver start.
    upd = Plan("p", [*plan.steps[:-1], Step(7, Change(Action.update, res.key, res, res, Reason.changed))])
    assert [n for n, _s in _execution_order(upd)] == list(range(1, 9))


def test_restorable_replaces_the_table_with_what_was_listed() -> None:
    listed = {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "inet", "name": "t", "handle": 3}},
        {"chain": {"family": "inet", "table": "t", "name": "c", "handle": 1}},
        {"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 2, "expr": [{"accept": None}]}},
    ]}
    cmds = json.loads(restorable(listed))["nftables"]
    t = {"family": "inet", "name": "t"}
    assert cmds[:2] == [{"add": {"table": t}}, {"delete": {"table": t}}]
    assert cmds[2:] == [{"add": o} for o in listed["nftables"][1:]]
    assert restorable({"nftables": [{"metainfo": {}}]}) == ""


def test_resolver_with_namespace_listeners_starts_after_those_namespaces() -> None:
    """A listener inside a container's namespace (a container on a macvlan network) needs that
    namespace; other namespaces do not hold the resolver back."""
    a = Netns("p-a-1", "p", "a")
    b = Netns("p-b-1", "p", "b")
    br = Bridge("cnb-1", "composenet:p/front", "front")
    gw = Address("", "cnb-1", "172.18.0.1/16")
    f = NetnsFile("p-a-1", "hosts", "")
    res = Resolver("p", ("front=172.18.0.1", "lan=127.0.0.11@p-a-1"))
    plan = _plan((Action.create, br), (Action.create, gw), (Action.create, b), (Action.create, a),
                 (Action.create, f), (Action.create, res))
    assert [n for n, _s in _execution_order(plan)] == [1, 2, 3, 4, 6, 5]
    res2 = Resolver("p", ("front=172.18.0.1", "lan=127.0.0.11@p-b-1"))
    plan2 = _plan((Action.create, br), (Action.create, gw), (Action.create, b), (Action.create, a),
                  (Action.create, f), (Action.create, res2))
    assert [n for n, _s in _execution_order(plan2)] == [1, 2, 3, 6, 4, 5]
