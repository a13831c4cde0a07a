"""Planner core: IPAM, diff, ordering, rendering — pure functions, no kernel."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from composenet.core import ipam
from composenet.core.desired import Upstreams, desire, parse_resolv_conf
from composenet.core.diff import diff, digest, implied_deletes
from composenet.core.model import Attachment, IpamConfig, Network, Port, Project, Service
from composenet.core.plan import Action, Change, Reason, order
from composenet.core.render import NO_CHANGES, render_text
from composenet.core.resources import (
    Address,
    Bridge,
    Macvlan,
    Netns,
    NftTable,
    Process,
    Veth,
    bridge_ifname,
    nft_table_name,
)
from composenet.core.ruleset import PortMap, build
from composenet.core.state import ObservedState
from composenet.errors import PlanError
from composenet.pipeline import make_plan

UP = Upstreams(("192.0.2.53",))


def split_project(extra: tuple[Service, ...] = ()) -> Project:
    return Project(
        name="split", working_dir="/",
        networks=(Network("backend", "split_backend", internal=True), Network("frontend", "split_frontend")),
        services=tuple(sorted((
            Service("web", networks=(Attachment("frontend"), Attachment("backend")), ports=(Port(80, "8080"),),
                    command=("serve",)),
            Service("api", networks=(Attachment("backend"),), replicas=3),
            Service("fe", networks=(Attachment("frontend"),)),
        ) + extra, key=lambda s: s.name)),
    )


def observed_after(desired) -> ObservedState:
    st = ObservedState()
    for r in desired.resources.values():
        if isinstance(r, NftTable):
            r = replace(r, ruleset="")
        st.add(r)
        st.applied[r.key] = digest(r)
    return st


# ---- IPAM ---------------------------------------------------------------------------------

def test_auto_subnet_skips_host_routes_and_other_projects():
    got = ipam.allocate_subnet([], ["172.17.0.0/16", "172.18.5.0/24", "10.0.0.0/8"])
    assert str(got) == "172.19.0.0/16"


def test_auto_subnet_falls_back_to_192_168_in_slash_20():
    taken = [f"172.{i}.0.0/16" for i in range(17, 32)]
    assert str(ipam.allocate_subnet(taken, ["192.168.0.0/24"])) == "192.168.16.0/20"


def test_default_route_does_not_block_pools():
    assert str(ipam.allocate_subnet([], ["0.0.0.0/0"])) == "172.17.0.0/16"


def test_pool_starts_at_ip_range_and_skips_gateway_and_aux():
    pool = ipam.Pool(ipaddress.ip_network("10.201.2.0/24"), "10.201.2.254", "10.201.2.128/25", ["10.201.2.128"])
    assert pool.next() == "10.201.2.129"
    assert pool.next() == "10.201.2.130"
    assert not pool.claim("10.201.2.254")
    assert not pool.claim("10.9.9.9")


def test_pool_exhaustion_is_an_error():
    pool = ipam.Pool(ipaddress.ip_network("10.0.0.0/30"), "10.0.0.1")
    assert pool.next() == "10.0.0.2"
    with pytest.raises(PlanError):
        pool.next()


def test_docker_mac():
    assert ipam.mac_for("10.201.1.10", "x") == "02:42:0a:c9:01:0a"


def test_ipam_deterministic_and_stable_when_a_network_is_added():
    p = split_project()
    d1 = desire(p, ObservedState(), UP)
    assert d1.networks == desire(p, ObservedState(), UP).networks
    # Add a network whose key sorts first: the existing ones keep their subnets.
    p2 = replace(p, networks=(Network("aaa", "split_aaa"),) + p.networks)
    d2 = desire(p2, observed_after(d1), UP)
    sub = {n["name"]: n["subnet"] for n in d2.networks}
    old = {n["name"]: n["subnet"] for n in d1.networks}
    assert sub["split_frontend"] == old["split_frontend"] and sub["split_backend"] == old["split_backend"]
    assert sub["split_aaa"] not in old.values()


def test_endpoints_keep_addresses_when_a_service_is_added():
    p = split_project()
    d1 = desire(p, ObservedState(), UP)
    p2 = split_project((Service("aaa", networks=(Attachment("frontend"),)),))
    d2 = desire(p2, observed_after(d1), UP)
    old = {a.key for a in d1.resources.values() if isinstance(a, Address)}
    new = {a.key for a in d2.resources.values() if isinstance(a, Address)}
    assert old <= new


def test_a_network_whose_bridge_is_gone_keeps_the_subnet_its_containers_hold():
    # Issue 3: the subnet was remembered only through the bridge's address. With the bridge
    # deleted by hand and a lower automatic subnet free, the network moved and every container
    # was re-addressed; the addresses on its veths' container ends now keep it in place.
    p = split_project()
    d1 = desire(p, ObservedState(host_routes=("172.17.0.0/16",)), UP)
    sub1 = {n["name"]: n["subnet"] for n in d1.networks}
    assert sub1 == {"split_backend": "172.18.0.0/16", "split_frontend": "172.19.0.0/16"}
    gone = bridge_ifname("split", "split_backend")
    st = observed_after(d1)  # 172.17.0.0/16 is free now
    for key in [k for k, r in st.resources.items() if isinstance(r, Bridge) and r.ifname == gone
                or isinstance(r, Address) and not r.ns and r.ifname == gone]:
        del st.resources[key]
    assert any(isinstance(r, Veth) and r.bridge == gone for r in st.resources.values())
    d2 = desire(p, st, UP)
    assert {n["name"]: n["subnet"] for n in d2.networks} == sub1
    assert d2.resources == d1.resources
    assert {c.resource.key for c in diff(d2, st)} >= {f"link:-:{gone}", f"addr:-:{gone}:172.18.0.1/16"}
    assert all(not (isinstance(c.resource, Address) and c.resource.ns) for c in diff(d2, st))


def test_static_address_and_gateway():
    p = Project(name="n", working_dir="/", networks=(
        Network("net2", "n_net2", ipam=(IpamConfig("10.201.2.0/24", "10.201.2.128/25", "10.201.2.254"),)),),
        services=(Service("a", networks=(Attachment("net2", ipv4_address="10.201.2.5"),)),
                  Service("b", networks=(Attachment("net2"),))))
    d = desire(p, ObservedState(), UP)
    addrs = {a.ns: a.cidr for a in d.resources.values() if isinstance(a, Address) and a.ns}
    assert addrs == {"n-a-1": "10.201.2.5/24", "n-b-1": "10.201.2.128/24"}
    assert Address("", bridge_ifname("n", "n_net2"), "10.201.2.254/24").key in d.resources


# ---- diff ---------------------------------------------------------------------------------

def test_up_twice_is_empty():
    d = desire(split_project(), ObservedState(), UP)
    assert diff(d, observed_after(d)) == []


def test_orphans_are_deleted_and_sysctls_kept():
    d = desire(split_project(), ObservedState(), UP)
    obs = observed_after(d)
    from composenet.core.state import DesiredState

    changes = diff(DesiredState("split"), obs)
    kinds = {c.kind for c in changes}
    assert "sysctl" not in kinds and {"netns", "veth", "bridge", "nft"} <= kinds
    assert all(c.action == Action.delete and c.reason == Reason.orphan for c in changes)


def test_rule_deleted_by_hand_is_drift():
    d = desire(split_project(), ObservedState(), UP)
    obs = observed_after(d)
    t = next(r for r in obs.resources.values() if isinstance(r, NftTable))
    obs.add(replace(t, rules=tuple(x for x in t.rules if "dnat web" not in x)))
    (c,) = diff(d, obs)
    assert c.action == Action.update and c.reason == Reason.drift and c.fields == ("rules",)


def test_rules_added_by_the_file_are_not_drift():
    # The kernel holds exactly the table the last `up` wrote; the file now wants more rules (a
    # new network, a new published port): "changed in the file", not "drifted".
    d = desire(split_project(), ObservedState(), UP)
    obs = observed_after(d)
    t = next(r for r in obs.resources.values() if isinstance(r, NftTable))
    older = replace(t, rules=tuple(x for x in t.rules if "dnat web" not in x))
    obs.add(older)
    obs.applied[t.key] = digest(older)
    (c,) = diff(d, obs)
    assert c.action == Action.update and c.reason == Reason.changed and c.fields == ("rules",)


def test_changed_in_file_vs_drift():
    d = desire(split_project(), ObservedState(), UP)
    obs = observed_after(d)
    br = next(r for r in obs.resources.values() if isinstance(r, Bridge))
    obs.add(replace(br, mtu=1400))
    (c,) = diff(d, obs)
    assert c.action == Action.update and c.reason == Reason.drift
    obs.applied.clear()
    (c,) = diff(d, obs)
    assert c.reason == Reason.changed


def test_veth_on_another_bridge_is_moved_back_in_place():
    # Re-created, the veth would lose its end's addresses and routes in the namespace (the
    # plan does not re-add them): e.g. after its bridge was deleted by hand (bridge '').
    d = desire(split_project(), ObservedState(), UP)
    obs = observed_after(d)
    v = next(r for r in obs.resources.values() if isinstance(r, Veth))
    for other in ("cnb-other", ""):
        obs.add(replace(v, bridge=other, hairpin=False))
        (c,) = diff(d, obs)
        assert c.action == Action.update and set(c.fields) <= {"bridge", "hairpin"}, c


def test_dead_process_is_recreated():
    d = desire(split_project(), ObservedState(), UP)
    obs = observed_after(d)
    proc = next(r for r in obs.resources.values() if isinstance(r, Process))
    del obs.resources[proc.key]
    (c,) = diff(d, obs)
    assert c.action == Action.create and c.reason == Reason.dead


def test_implied_deletes_inside_deleted_namespace():
    ns = Netns("p-a-1", "p", "a")
    addr = Address("p-a-1", "eth0", "10.0.0.2/24")
    changes = [Change(Action.delete, r.key, r, None, Reason.orphan) for r in (ns, addr)]
    assert implied_deletes(changes) == {addr.key}


def test_implied_deletes_macvlans_but_not_veths_of_deleted_namespaces():
    """Deleting a namespace destroys the links inside it: its macvlans need no delete of their
    own. A veth's host end does not: it outlives a namespace someone else holds open, so it
    is deleted (by the kernel handler, in one batch)."""
    gone = Netns("p-a-1", "p", "a")
    veth = Veth("cnv-1", "composenet:p/p-a-1/front", gone.name, "eth0", "cnb-1")
    mac = Macvlan(gone.name, "eth1", "composenet:p/p-a-1/lan", "eth9")
    addr = Address(gone.name, "eth1", "192.0.2.2/24")
    changes = [Change(Action.delete, r.key, r, None, Reason.orphan) for r in (gone, veth, mac, addr)]
    assert implied_deletes(changes) == {mac.key, addr.key}
    # Only inside a namespace that is deleted.
    assert implied_deletes([Change(Action.delete, mac.key, mac, None, Reason.orphan)]) == set()


# ---- ordering ------------------------------------------------------------------------------

def test_order_creates_by_dependency_and_deletes_reversed():
    d = desire(split_project(), ObservedState(), UP)
    steps = order(diff(d, ObservedState()), set(d.resources))
    pos = {s.change.key: s.index for s in steps}
    for s in steps:
        for dep in s.change.resource.deps():
            if dep in pos:
                assert pos[dep] < s.index, (dep, s.change.key)
    kinds = [s.change.kind for s in steps]
    assert kinds.index("process") > kinds.index("nft") > max(i for i, k in enumerate(kinds) if k == "veth")
    from composenet.core.state import DesiredState

    down = order(diff(DesiredState("split"), observed_after(d)), set())
    dpos = {s.change.key: s.index for s in down}
    for s in down:
        for dep in s.change.resource.deps():
            if dep in dpos:
                assert dpos[dep] > s.index


def test_cycle_names_the_objects():
    a = Process("a", "a", "", ("x",), after=("b",))
    b = Process("b", "b", "", ("x",), after=("a",))
    changes = [Change(Action.create, r.key, None, r, Reason.missing) for r in (a, b)]
    with pytest.raises(PlanError, match="process:a, process:b"):
        order(changes, {a.key, b.key})


# ---- rendering -------------------------------------------------------------------------------

def test_no_changes_sentence():
    d = desire(split_project(), ObservedState(), UP)
    planned = make_plan(split_project(), "split", observed_after(d), UP)
    text = render_text(planned.plan)
    assert text.rstrip().endswith(NO_CHANGES)
    assert NO_CHANGES == "No changes. Kernel state matches the compose file."


def test_plan_text_is_byte_identical_and_has_summary():
    a = render_text(make_plan(split_project(), "split", ObservedState(), UP).plan)
    b = render_text(make_plan(split_project(), "split", ObservedState(), UP).plan)
    assert a == b
    assert a.rstrip().splitlines()[-1].startswith("Plan: ")
    assert "Exposure:" in a and "*:8080/tcp" in a


# ---- ruleset ---------------------------------------------------------------------------------

def test_ruleset_identities_one_per_rule_and_chain():
    text, idents = build("composenet_t", [], [PortMap("web", None, 8080, "tcp", ("10.0.0.2",), 80)])
    rules = [line for line in text.splitlines() if "comment" in line]
    assert len(rules) == sum(1 for i in idents if not i.startswith(("chain ", "set ")))
    assert "published: cn:dnat web *:8080/tcp -> 10.0.0.2:80" in idents


def test_ruleset_hairpin_per_subnet_without_iifname():
    """Hairpin masquerade matches the output bridge and the source subnet (one rule per subnet,
    per family): br_netfilter runs postrouting with no input device, so no iifname."""
    from composenet.core.ruleset import NetRules

    net = NetRules("front", "cnb-x", ("10.0.0.0/24", "fd00::/64"), ("10.0.0.1", "fd00::1"))
    text, idents = build("composenet_t", [net], [])
    hairpin = [line.strip() for line in text.splitlines() if "cn:hairpin" in line]
    assert hairpin == [
        'oifname "cnb-x" ip saddr 10.0.0.0/24 ct status dnat masquerade'
        ' comment "cn:hairpin front 10.0.0.0/24: published port of the same network"',
        'oifname "cnb-x" ip6 saddr fd00::/64 ct status dnat masquerade'
        ' comment "cn:hairpin front fd00::/64: published port of the same network"',
    ]
    assert not any("iifname" in line for line in text.splitlines() if "masquerade" in line)
    assert len(idents) == len(set(idents))


def test_table_name_is_an_nft_identifier():
    assert nft_table_name("my-app") != nft_table_name("my_app")
    assert all(c.isalnum() or c == "_" for c in nft_table_name("a.b-c"))


def test_resolv_conf_parsing():
    up = parse_resolv_conf("# x\nnameserver 198.51.100.53\nsearch a b\noptions ndots:2\n")
    assert up.servers == ("198.51.100.53",) and up.search == ("a", "b") and up.options == ("ndots:2",)


# ---- macvlan: the resolver inside the containers' namespaces ---------------------------------

def test_macvlan_containers_get_a_resolver_in_their_namespace():
    import json

    from composenet.core.resources import NetnsFile, Resolver

    project = Project(
        name="mv", working_dir="/",
        networks=(Network("lan", "mv_lan", driver="macvlan", driver_opts=(("parent", "eth9"),),
                          ipam=(IpamConfig(subnet="192.168.57.0/24", gateway="192.168.57.1"),)),
                  Network("side", "mv_side")),
        services=(Service("a", networks=(Attachment("lan"),)),
                  Service("b", networks=(Attachment("side"), Attachment("lan"))),
                  Service("c", networks=(Attachment("side"),))),
    )
    d = desire(project, ObservedState(), UP)
    files = {r.ns: r.content for r in d.resources.values() if isinstance(r, NetnsFile) and r.name == "resolv.conf"}
    assert files["mv-a-1"] == "nameserver 127.0.0.11\noptions ndots:0\n"
    assert files["mv-b-1"] == "nameserver 127.0.0.11\noptions ndots:0\n"  # also on a bridge network
    assert files["mv-c-1"].startswith("nameserver ") and "127.0.0.11" not in files["mv-c-1"]
    res = next(r for r in d.resources.values() if isinstance(r, Resolver))
    cfg = json.loads(res.config)
    assert cfg["namespaces"] == [{"container": "mv-a-1", "netns": "mv-a-1", "network": "mv_lan"},
                                 {"container": "mv-b-1", "netns": "mv-b-1", "network": "mv_lan"}]
    assert res.listeners[1:] == ("mv_lan=127.0.0.11@mv-a-1", "mv_lan=127.0.0.11@mv-b-1")
    # A project with bridge networks only has no "namespaces" key (its config is unchanged).
    d2 = desire(split_project(), ObservedState(), UP)
    res2 = next(r for r in d2.resources.values() if isinstance(r, Resolver))
    assert "namespaces" not in json.loads(res2.config)
