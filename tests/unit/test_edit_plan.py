"""Issue 16 in the pure layers and the executor (no root): rollbacks put back what the kernel
removed by itself and verify it, EEXIST waits only for our own dying host link, and the plan's
text and reasons (forwarding sysctls, in-place kinds, sections, rule counts)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from composenet.core.diff import IN_PLACE, diff, is_forwarding
from composenet.core.plan import Action, Change, Plan, Reason, Step
from composenet.core.render import describe, render_text
from composenet.core.resources import KINDS, ForwardingGuard, NftTable, Route, Supervisor, Sysctl, Veth
from composenet.core.state import DesiredState, ObservedState
from composenet.errors import KernelError
from composenet.kernel import links
from composenet.kernel.apply import apply
from composenet.kernel.context import Context, Handlers
from composenet.linux.netlink import Link, NetlinkError
from composenet.pipeline import make_plan
from tests.unit.test_apply import INNER, NS, ROUTE, FakeHandler, FakeKernel, fake_handlers

VETH = Veth("cnv-1", "composenet:p/p-a-1/p_front", "p-a-1", "eth0", "cnb-1")
VETH_B = Veth("cnv-2", "composenet:p/p-a-1/p_back", "p-a-1", "eth1", "cnb-2")


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(project="p", run_dir=str(tmp_path / "run"))


class KernelLikeLinks(FakeHandler):
    """Deleting a veth drops the routes through its end, as the kernel does."""

    def delete(self, ctx: Context, r) -> None:
        super().delete(ctx, r)
        if isinstance(r, Veth):
            for k, x in list(self.kernel.resources.items()):
                if isinstance(x, Route) and (x.ns, x.ifname) == (r.ns, r.peer):
                    del self.kernel.resources[k]


def test_a_rollback_re_adds_the_route_the_kernel_dropped_and_verifies(ctx: Context) -> None:
    # The veth is deleted (its route goes with it), then a later step fails before the step that
    # would have re-added the route: no journal entry holds the route, the rollback re-adds it.
    kernel = FakeKernel(NS, VETH, INNER, ROUTE)
    before = dict(kernel.resources)
    moved = Veth("cnv-1", VETH.label, "p-a-1", "eth1", "cnb-1")
    steps = [Change(Action.delete, VETH.key, VETH, None, Reason.changed),
             Change(Action.create, VETH.key, None, moved, Reason.changed),
             Change(Action.create, VETH_B.key, None, VETH_B, Reason.missing),
             Change(Action.update, ROUTE.key, ROUTE, ROUTE, Reason.consequence, note="re-added: eth0 is re-created")]
    kernel.fail[f"create {VETH_B.key}"] = 1
    handlers = Handlers([KernelLikeLinks(kernel, "links", ("netns", "veth", "address", "route")),
                         *list(fake_handlers(kernel))[1:]])
    with pytest.raises(KernelError) as ei:
        apply(ctx, Plan("p", [Step(i, c) for i, c in enumerate(steps)]), handlers)
    assert ROUTE.key in kernel.resources
    assert kernel.resources == before
    assert "the kernel was read back: it is as it was before this run" in ei.value.message
    assert ei.value.hint == "nothing else was changed; fix the cause and run `composenet up` again"


class FakeNL:
    """The two calls _create_waiting makes: a create that fails with EEXIST, and link()."""

    def __init__(self, ns: str = "", links: dict[str, Link] | None = None):
        self.ns = ns
        self.links = links or {}
        self.requests = 0

    def request(self, *args) -> None:
        self.requests += 1
        raise NetlinkError(errno.EEXIST)

    def link(self, name: str = "", index: int = 0) -> Link | None:
        return self.links.get(name)


def link(name: str, alias: str) -> Link:
    return Link(index=5, name=name, flags=0, mtu=1500, mac=None, alias=alias, kind="veth", master=0, link=0,
                link_netnsid=None)


def test_eexist_of_a_name_inside_the_namespace_fails_at_once_naming_it() -> None:
    host = FakeNL()
    inside = FakeNL("p-a-1", {"eth0": link("eth0", "composenet:p/p-a-1/p_back")})
    with pytest.raises(KernelError) as ei:
        links.KernelHandler._create_waiting(host, "cnv-1", "composenet:p/p-a-1/p_front", b"", "create veth cnv-1",
                                            inside, "eth0")  # type: ignore[arg-type]
    assert host.requests == 2  # no wait: one more try (a dying host link may just have gone), then the error
    assert "the name eth0 is already taken in namespace p-a-1 (by composenet:p/p-a-1/p_back)" in ei.value.message


def test_eexist_waits_only_for_our_own_dying_host_link_and_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(links, "DYING_LINK_TIMEOUT", 0.05)
    label = "composenet:p/p-a-1/p_front"
    host = FakeNL("", {"cnv-1": link("cnv-1", label)})
    with pytest.raises(KernelError) as ei:
        links.KernelHandler._create_waiting(host, "cnv-1", label, b"", "create veth cnv-1")  # type: ignore[arg-type]
    assert host.requests > 1
    assert "host link cnv-1 (this project's, being deleted by the kernel) was still there" in ei.value.message


def test_forwarding_sysctls_are_needed_by_the_project_and_not_kept(tmp_path: Path) -> None:
    fwd = Sysctl("", "net.ipv4.ip_forward", "1")
    observed = ObservedState()
    observed.add(Sysctl("", "net.ipv4.ip_forward", "0"))
    desired = DesiredState(project="p")
    desired.add(fwd)
    [c] = diff(desired, observed)
    assert is_forwarding(fwd) and c.reason == Reason.needed
    observed.add(Sysctl("", "net.ipv4.conf.all.route_localnet", "1"))
    plan = make_plan(None, "p", observed, None).plan
    assert not any("ip_forward" in k for k in plan.kept), plan.kept
    assert any("route_localnet" in k for k in plan.kept), plan.kept


def test_in_place_kinds_exist() -> None:
    for kind, fields in IN_PLACE.items():
        cls = KINDS[kind]
        names = {f for f in cls.__dataclass_fields__}
        assert fields <= names, (kind, fields - names)


def test_guard_and_supervisor_are_not_listed_under_a_service_and_sets_are_not_rules() -> None:
    guard = ForwardingGuard("p", ("cnb-1",), ("ipv4",))
    sup = Supervisor("p", ("tcp/0.0.0.0/8080",))
    table = NftTable("inet", "composenet_p", rules=("chain x", "set ports: tcp . 80", "cn:dnat web"))
    plan = Plan("p", [Step(i, Change(Action.create, r.key, None, r, Reason.missing))
                      for i, r in enumerate((guard, sup, table))])
    text = render_text(plan)
    assert "service ?" not in text
    assert text.index("  host:") < text.index(describe(guard)) < text.index("  project:") < text.index(describe(sup))
    assert describe(table).endswith("(1 rules)")


def test_a_rollback_puts_back_what_went_with_a_deleted_namespace(ctx: Context) -> None:
    # The address is deleted by the kernel with its namespace (an implied delete: no step runs
    # for it); when a later step fails, the rollback re-creates the namespace and the address.
    kernel = FakeKernel(NS, INNER)
    before = dict(kernel.resources)
    steps = [Change(Action.delete, INNER.key, INNER, None, Reason.orphan),
             Change(Action.delete, NS.key, NS, None, Reason.orphan),
             Change(Action.create, VETH_B.key, None, VETH_B, Reason.missing)]
    kernel.fail[f"create {VETH_B.key}"] = 1
    with pytest.raises(KernelError) as ei:
        apply(ctx, Plan("p", [Step(i, c) for i, c in enumerate(steps)]), fake_handlers(kernel), {INNER.key})
    assert kernel.resources == before
    assert "it is as it was before this run" in ei.value.message
