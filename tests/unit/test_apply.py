"""The executor (composenet/kernel/apply.py) and the pipeline (pipeline.run_apply) with FAKE
handlers: no root, no kernel.

The fake handlers share a ``FakeKernel``: a dict of the resources it "holds" by key, the calls
made in order, and failures to inject (the k-th call, or a given call a number of times). Like
the real kernel, deleting a namespace takes what lives in it along (the plan's implied deletes).
The resolver's fake hands the executor a readiness check through ``ctx.defer``, as the real one
does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from composenet import pipeline
from composenet.core.plan import Action, Change, Plan, Reason, Step, order
from composenet.core.render import describe
from composenet.core.resources import Address, Bridge, Netns, NetnsFile, Process, Resolver, Resource, Route
from composenet.core.state import ObservedState
from composenet.errors import ComposenetError, KernelError
from composenet.kernel.apply import KILL_AFTER_STEP, apply
from composenet.kernel.context import Context, Handlers
from tests.unit.helpers import load_text

LINK_KINDS = ("netns", "bridge", "vxlan", "veth", "macvlan", "address", "route", "sysctl")
IN_NAMESPACE = ("address", "route", "macvlan", "sysctl")  # gone with their namespace


class FakeKernel:
    """What the fake handlers share: the resources held, by key; every call in order
    ("create <key>", "check <key>" for a deferred check, "flush <handler>"); failures to inject."""

    def __init__(self, *resources: Resource):
        self.resources: dict[str, Resource] = {r.key: r for r in resources}
        self.calls: list[str] = []
        self.count = 0  # create, update, delete and check calls so far
        self.fail_call: int | None = None  # this call (1-based) raises
        self.fail: dict[str, int] = {}  # call -> how many more times it raises
        self.forget: set[str] = set()  # keys whose create succeeds but is not kept
        self.bad_flush: set[str] = set()  # handlers whose flush raises
        self.refuse: dict[str, str] = {}  # handler -> why its check refuses a plan

    def call(self, what: str) -> None:
        self.count += 1
        self.calls.append(what)
        if self.count == self.fail_call:
            raise KernelError(f"injected failure of call {self.count}")
        if self.fail.get(what, 0) > 0:
            self.fail[what] -= 1
            raise KernelError(f"injected failure of {what}")

    def ops(self) -> list[str]:
        """The calls that change something (no flushes, no checks)."""
        return [c for c in self.calls if c.split()[0] in ("create", "update", "delete")]


class FakeHandler:
    """A handler of ``kinds`` over the fake kernel: each call either changes the kernel
    completely or raises having changed nothing (the contract of the real ones)."""

    def __init__(self, kernel: FakeKernel, name: str, kinds: tuple[str, ...]):
        self.kernel = kernel
        self.name = name
        self.kinds = kinds
        self.observed = 0

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        self.observed += 1
        for r in self.kernel.resources.values():
            if r.kind in self.kinds:
                observed.add(r)

    def create(self, ctx: Context, r: Resource) -> None:
        self.kernel.call(f"create {r.key}")
        if r.key not in self.kernel.forget:
            self.kernel.resources[r.key] = r

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        self.kernel.call(f"update {after.key}")
        self.kernel.resources[after.key] = after

    def delete(self, ctx: Context, r: Resource) -> None:
        self.kernel.call(f"delete {r.key}")
        self.kernel.resources.pop(r.key, None)
        if isinstance(r, Netns):  # the kernel deletes what lives in the namespace
            for k, x in list(self.kernel.resources.items()):
                if x.kind in IN_NAMESPACE and getattr(x, "ns", "") == r.name:
                    del self.kernel.resources[k]

    def check(self, ctx: Context, plan: Plan) -> None:
        self.kernel.calls.append(f"precheck {self.name} {len(plan.steps)}")
        if self.name in self.kernel.refuse:
            raise ComposenetError(self.kernel.refuse[self.name])

    def flush(self, ctx: Context) -> None:
        self.kernel.calls.append(f"flush {self.name}")
        if self.name in self.kernel.bad_flush:
            raise KernelError(f"injected failure of flush {self.name}")


class DeferringHandler(FakeHandler):
    """Like the resolver's handler: create starts something whose readiness is checked later,
    through ``ctx.defer`` under the executor, at once otherwise."""

    def create(self, ctx: Context, r: Resource) -> None:
        super().create(ctx, r)

        def check() -> None:
            self.kernel.call(f"check {r.key}")

        if not ctx.defer(check):
            check()


def fake_handlers(kernel: FakeKernel) -> Handlers:
    """A registry shaped like default_handlers(), one fake per group of kinds, and one that
    observes only (host facts)."""
    return Handlers([FakeHandler(kernel, "links", LINK_KINDS), FakeHandler(kernel, "nft", ("nft",)),
                     FakeHandler(kernel, "guard", ("guard",)), FakeHandler(kernel, "files", ("file",)), DeferringHandler(kernel, "resolver", ("resolver",)),
                     FakeHandler(kernel, "peers", ("dnsrecords",)), FakeHandler(kernel, "processes", ("supervisor", "process")),
                     FakeHandler(kernel, "facts", ())])


FLUSHES = [f"flush {n}" for n in ("links", "nft", "guard", "files", "resolver", "peers", "processes", "facts")]


@pytest.fixture(autouse=True)
def _no_kill_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KILL_AFTER_STEP, raising=False)


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(project="p", run_dir=str(tmp_path / "run"))


# ---- resources of a small project "p" ---------------------------------------------------------

OLD = Netns("p-old-1", "p", "old")
OLD_ADDR = Address("p-old-1", "eth0", "172.18.0.9/16")
NS = Netns("p-a-1", "p", "a")
BR = Bridge("cnb-1", "composenet:p/front", "p_front")
GW = Address("", "cnb-1", "172.18.0.1/16")
INNER = Address("p-a-1", "eth0", "172.18.0.2/16")
ROUTE = Route("p-a-1", "0.0.0.0/0", "172.18.0.1", "eth0")
HOSTS = NetnsFile("p-a-1", "hosts", "172.18.0.2 a\n")
RES = Resolver("p", ("p_front=172.18.0.1",), "{}", "d1")
PROC = Process("p-a-1", "a", "p-a-1", ("sleep", "300"))


def change(action: Action, before: Resource | None = None, after: Resource | None = None) -> Change:
    r = after if after is not None else before
    assert r is not None
    return Change(action, r.key, before, after, Reason.missing)


def plan_of(*changes: Change) -> Plan:
    """A plan whose steps are ``changes`` in the order given."""
    return Plan("p", [Step(i, c) for i, c in enumerate(changes)])


def creates(*rs: Resource) -> list[Change]:
    return [change(Action.create, after=r) for r in rs]


def run(ctx: Context, kernel: FakeKernel, plan: Plan, implied: set[str] | None = None) -> list[tuple[int, int, str]]:
    """Apply ``plan`` with fake handlers; returns the progress reports."""
    progress: list[tuple[int, int, str]] = []
    apply(ctx, plan, fake_handlers(kernel), implied, lambda n, total, text: progress.append((n, total, text)))
    return progress


# ---- order -------------------------------------------------------------------------------------


def test_steps_run_in_plan_order_deletes_first_and_the_resolver_moved_up(ctx: Context) -> None:
    kernel = FakeKernel(OLD)
    changes = [*creates(PROC, HOSTS, RES, ROUTE, INNER, GW, BR, NS), change(Action.delete, before=OLD)]
    plan = Plan("p", order(changes, {r.key for r in (NS, BR, GW, INNER, ROUTE, HOSTS, RES, PROC)}))
    keys = [s.change.key for s in plan.steps]
    assert keys[0] == OLD.key  # the planner puts deletes first
    progress = run(ctx, kernel, plan)
    # The resolver starts right after the bridge's address (it binds to it), its readiness is
    # checked before the first process starts.
    assert kernel.calls == ["delete netns:p-old-1", "create netns:p-a-1", "create link:-:cnb-1",
                            "create addr:-:cnb-1:172.18.0.1/16", "create resolver:p",
                            "create addr:p-a-1:eth0:172.18.0.2/16", "create route:p-a-1:0.0.0.0/0",
                            "create file:p-a-1/hosts", "check resolver:p", "create process:p-a-1"]
    # Progress numbers steps as the plan does, in the order they run.
    assert [n for n, _t, _x in progress] == [keys.index(c.split()[1]) + 1 for c in kernel.ops()]
    assert {t for _n, t, _x in progress} == {len(plan.steps)}
    assert progress[0][2] == f"- {describe(OLD)}" and progress[1][2] == f"+ {describe(NS)}"
    assert set(kernel.resources) == {r.key for r in (NS, BR, GW, INNER, ROUTE, HOSTS, RES, PROC)}
    assert ctx.deferred is None


def test_implied_deletes_are_skipped_but_reported(ctx: Context) -> None:
    kernel = FakeKernel(OLD, OLD_ADDR)
    plan = plan_of(change(Action.delete, before=OLD_ADDR), change(Action.delete, before=OLD))
    progress = run(ctx, kernel, plan, implied={OLD_ADDR.key})
    assert kernel.calls == ["delete netns:p-old-1"]  # the address went with its namespace
    assert [n for n, _t, _x in progress] == [1, 2]
    assert kernel.resources == {}


# ---- failure and rollback ----------------------------------------------------------------------


def mixed_plan() -> tuple[FakeKernel, Plan]:
    """A kernel holding an old namespace, a hosts file and a process; a plan that deletes the
    first, updates the second, replaces the third and creates a namespace, a bridge and a route."""
    old_hosts = NetnsFile("p-a-1", "hosts", "old\n")
    old_proc = Process("p-a-1", "a", "p-a-1", ("sleep", "1"))
    kernel = FakeKernel(OLD, old_hosts, old_proc)
    plan = plan_of(change(Action.delete, before=OLD), change(Action.create, after=NS),
                   change(Action.update, before=old_hosts, after=HOSTS),
                   change(Action.replace, before=old_proc, after=PROC),
                   change(Action.create, after=BR), change(Action.create, after=ROUTE))
    return kernel, plan


def test_a_failed_step_is_rolled_back_in_reverse_and_named(ctx: Context) -> None:
    kernel, plan = mixed_plan()
    before = dict(kernel.resources)
    kernel.fail["create route:p-a-1:0.0.0.0/0"] = 1
    with pytest.raises(KernelError) as ei:
        run(ctx, kernel, plan)
    n = kernel.calls.index("flush links")
    assert kernel.calls[:n] == ["delete netns:p-old-1", "create netns:p-a-1", "update file:p-a-1/hosts",
                                "delete process:p-a-1", "create process:p-a-1", "create link:-:cnb-1",
                                "create route:p-a-1:0.0.0.0/0"]
    # Every handler finishes what it batched, then the journal is undone newest first (a replace
    # is two entries: its create undone, then its delete).
    assert kernel.calls[n:] == [*FLUSHES, "delete link:-:cnb-1", "delete process:p-a-1", "create process:p-a-1",
                                "update file:p-a-1/hosts", "delete netns:p-a-1", "create netns:p-old-1"]
    assert kernel.resources == before
    text = str(ei.value)
    assert text.startswith(f"step 6/6 failed: create {describe(ROUTE)}: injected failure of create route")
    assert "rolled back 6 completed step(s)" in text and "rollback failed" not in text
    assert ei.value.hint == "nothing else was changed; fix the cause and run `composenet up` again"
    assert ctx.deferred is None


def test_failure_on_the_kth_call(ctx: Context) -> None:
    kernel, plan = mixed_plan()
    kernel.fail_call = 4  # the delete half of the replace
    with pytest.raises(KernelError) as ei:
        run(ctx, kernel, plan)
    assert ei.value.message.startswith(f"step 4/6 failed: replace {describe(PROC)}: injected failure of call 4")
    assert ei.value.message.endswith("\n  rolled back 3 completed step(s)"
                                     "\n  the kernel was read back: it is as it was before this run")
    assert PROC.key in kernel.resources and kernel.resources[PROC.key] != PROC


def test_an_undo_that_fails_is_tried_again_after_the_others(ctx: Context) -> None:
    kernel, plan = mixed_plan()
    before = dict(kernel.resources)
    kernel.fail["create route:p-a-1:0.0.0.0/0"] = 1
    kernel.fail["delete link:-:cnb-1"] = 1  # the first undo: fails once, works on the retry
    with pytest.raises(KernelError) as ei:
        run(ctx, kernel, plan)
    undo = kernel.calls[kernel.calls.index(FLUSHES[-1]) + 1 :]
    assert undo == ["delete link:-:cnb-1", "delete process:p-a-1", "create process:p-a-1",
                    "update file:p-a-1/hosts", "delete netns:p-a-1", "create netns:p-old-1", "delete link:-:cnb-1"]
    assert kernel.resources == before
    assert "rolled back 6 completed step(s)" in str(ei.value) and "rollback failed" not in str(ei.value)


def test_undos_that_keep_failing_are_listed(ctx: Context) -> None:
    kernel, plan = mixed_plan()
    kernel.fail["create route:p-a-1:0.0.0.0/0"] = 1
    kernel.fail["delete link:-:cnb-1"] = 2
    kernel.fail["create netns:p-old-1"] = 2
    kernel.bad_flush = {"nft"}
    with pytest.raises(KernelError) as ei:
        run(ctx, kernel, plan)
    assert kernel.calls.count("flush facts") == 1  # a failed flush does not stop the others
    assert ei.value.message.splitlines()[1:] == [
        "  rolled back 4 completed step(s); rollback failed for:",
        "    finish deletes: injected failure of flush nft",
        f"    delete {describe(BR)}: injected failure of delete link:-:cnb-1",
        f"    create {describe(OLD)}: injected failure of create netns:p-old-1",
        "  the kernel is not as it was before this run:",  # read back: what the failed undos left
        f"    missing: {describe(OLD)}",
        f"    still there: {describe(BR)}",
    ]
    assert "nothing else was changed" not in (ei.value.hint or "")
    assert BR.key in kernel.resources and OLD.key not in kernel.resources


def test_an_exception_that_is_not_a_kernel_error_is_named_by_its_type(ctx: Context) -> None:
    class Broken(FakeHandler):
        def create(self, ctx: Context, r: Resource) -> None:
            raise ValueError("no such thing")

    kernel = FakeKernel()
    handlers = Handlers([FakeHandler(kernel, "links", ("netns",)), Broken(kernel, "files", ("file",))])
    with pytest.raises(KernelError, match=r"step 2/2 failed: create .*: ValueError: no such thing\n  rolled back 1"):
        apply(ctx, plan_of(*creates(NS, HOSTS)), handlers)
    assert kernel.resources == {}


# ---- deferred checks -----------------------------------------------------------------------------


def test_deferred_checks_run_before_the_first_process_and_at_the_end(ctx: Context) -> None:
    kernel = FakeKernel()
    run(ctx, kernel, plan_of(*creates(BR, GW, RES, HOSTS, PROC)))
    assert kernel.calls == ["create link:-:cnb-1", "create addr:-:cnb-1:172.18.0.1/16", "create resolver:p",
                            "create file:p-a-1/hosts", "check resolver:p", "create process:p-a-1"]
    kernel = FakeKernel()
    run(ctx, kernel, plan_of(*creates(BR, GW, RES, HOSTS)))  # no process: checked once the steps are done
    assert kernel.calls == ["create link:-:cnb-1", "create addr:-:cnb-1:172.18.0.1/16", "create resolver:p",
                            "create file:p-a-1/hosts", "check resolver:p"]
    assert ctx.deferred is None


def test_a_failed_deferred_check_fails_the_step_that_deferred_it(ctx: Context) -> None:
    for plan, total in ((plan_of(*creates(BR, GW, RES, HOSTS, PROC)), 5), (plan_of(*creates(BR, GW, RES, HOSTS)), 4)):
        kernel = FakeKernel()
        kernel.fail["check resolver:p"] = 1
        with pytest.raises(KernelError) as ei:
            run(ctx, kernel, plan)
        assert str(ei.value).startswith(f"step 3/{total} failed: create {describe(RES)}: injected failure of check")
        assert "rolled back 4 completed step(s)" in str(ei.value)
        assert "create process:p-a-1" not in kernel.calls  # the service never started
        assert kernel.calls[-4:] == ["delete file:p-a-1/hosts", "delete resolver:p",
                                     "delete addr:-:cnb-1:172.18.0.1/16", "delete link:-:cnb-1"]
        assert kernel.resources == {}
        assert ctx.deferred is None


def test_defer_outside_the_executor_does_the_work_at_once(ctx: Context) -> None:
    kernel = FakeKernel()
    DeferringHandler(kernel, "resolver", ("resolver",)).create(ctx, RES)
    assert kernel.calls == ["create resolver:p", "check resolver:p"]
    assert ctx.deferred is None and ctx.defer(lambda: None) is False


# ---- the pipeline ----------------------------------------------------------------------------------

COMPOSE = """
name: shop
services:
  web:
    command: ["sleep", "300"]
    networks: [front]
    ports: ["8080:80"]
  db:
    command: ["sleep", "300"]
    networks: [front, back]
networks:
  front: {}
  back: {}
"""


def up(tmp_path: Path, kernel: FakeKernel, project: bool = True) -> tuple[pipeline.Planned, list[str]]:
    """`up` of COMPOSE (or `down` of project shop) with fresh fake handlers over ``kernel``."""
    echoed: list[str] = []
    ctx = Context(project="shop", run_dir=str(tmp_path / "run"))
    p = load_text(tmp_path, COMPOSE) if project else None
    planned = pipeline.run_apply(ctx, p, "shop", None, echoed.append, handlers=fake_handlers(kernel))
    return planned, echoed


def test_run_apply_up_records_verifies_and_down_removes_everything(tmp_path: Path) -> None:
    kernel = FakeKernel()
    planned, echoed = up(tmp_path, kernel)
    want = planned.desired.resources
    assert set(kernel.resources) == set(want) and planned.ruleset is not None
    total = len(planned.plan.steps)
    # Every handler checked the whole plan before the first step changed anything.
    prechecks = [c for c in kernel.calls if c.startswith("precheck ")]
    assert prechecks == [f"precheck {h} {total}" for h in ("links", "nft", "guard", "files", "resolver", "peers",
                                                            "processes", "facts")]
    assert kernel.calls.index(prechecks[-1]) < kernel.calls.index(kernel.ops()[0])
    assert len(echoed) == total and all(e.startswith("[") and f"/{total}] " in e for e in echoed)
    assert kernel.calls.index("check resolver:shop") < kernel.calls.index("create process:shop-db-1")
    project_dir = tmp_path / "run" / "shop"
    applied = json.loads((project_dir / "applied.json").read_text())
    assert sorted(applied) == sorted(want)
    # Again: nothing to do, nothing called.
    calls = len(kernel.calls)
    planned2, echoed = up(tmp_path, kernel)
    assert planned2.plan.empty and echoed == ["No changes. Kernel state matches the compose file."]
    assert len(kernel.calls) == calls
    # Down: everything but the bridges' sysctls (never deleted; a real kernel drops them with the
    # bridge) goes, and so does the run directory. No host setting is kept: forwarding is the
    # guard membership's, which leaving restores.
    calls = len(kernel.calls)
    planned3, echoed = up(tmp_path, kernel, project=False)
    assert not planned3.plan.kept and {r.kind for r in kernel.resources.values()} == {"sysctl"}
    assert "guard:shop" in want and "guard:shop" not in kernel.resources
    assert not project_dir.exists()
    down_calls = [c for c in kernel.calls[calls:] if not c.startswith(("flush", "precheck"))]
    assert down_calls and all(c.startswith("delete ") for c in down_calls)
    # Implied deletes (addresses and routes inside the namespaces) were left to the kernel.
    assert not [c for c in down_calls if c.startswith(("delete addr:shop-", "delete route:shop-"))]
    assert len(down_calls) < len(planned3.plan.steps)
    _planned, echoed = up(tmp_path, kernel, project=False)
    assert echoed == ["Nothing to remove: project 'shop' owns nothing in this kernel."]
    assert not project_dir.exists()


def test_run_apply_fails_verify_when_the_kernel_forgets_a_resource(tmp_path: Path) -> None:
    kernel = FakeKernel()
    kernel.forget = {"nft:inet composenet_shop"}
    with pytest.raises(ComposenetError, match=r"^applied \d+ step\(s\), but the kernel still differs") as ei:
        up(tmp_path, kernel)
    assert "composenet_shop" in str(ei.value)
    assert ei.value.hint == "run `composenet plan` to see what differs"


def test_run_apply_failed_first_up_leaves_nothing(tmp_path: Path) -> None:
    kernel = FakeKernel()
    kernel.fail["create process:shop-web-1"] = 1
    with pytest.raises(KernelError, match=r"failed: create process .*shop-web-1"):
        up(tmp_path, kernel)
    assert kernel.resources == {}
    assert not (tmp_path / "run" / "shop").exists()  # only the lock was there


def test_run_apply_refuses_a_plan_a_handler_rejects_before_any_step(tmp_path: Path) -> None:
    kernel = FakeKernel()
    kernel.refuse["nft"] = "nft rejected the generated ruleset; nothing was changed:\nline 3: syntax error"
    with pytest.raises(ComposenetError, match="nft rejected the generated ruleset; nothing was changed:\nline 3"):
        up(tmp_path, kernel)
    assert kernel.ops() == [] and not os.path.exists(tmp_path / "run" / "shop")
