"""The pipeline in one place: plan, up and down share one code path up to ``apply``.

``core.planner.make_plan`` is pure (desired x observed -> Plan); ``run_apply`` adds the I/O for
`up` (a project) and `down` (None): lock, observe, plan, check, apply, record what was applied,
re-observe and verify, all through one registry of handlers per run (``handlers``: the real ones
by default; fake ones in the executor's unit tests).

Must not: print (callers pass an ``echo``) or decide what the kernel should hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from composenet.core.desired import Upstreams, parse_resolv_conf
from composenet.core.diff import digest, implied_deletes
from composenet.core.model import Project
from composenet.core.plan import Change, Plan, saved_plan_difference
from composenet.core.planner import Planned, make_plan
from composenet.core.render import render_text
from composenet.core.state import DesiredState
from composenet.errors import ComposenetError, PlanError
from composenet.kernel import cluster, nft, rundir
from composenet.kernel.apply import apply
from composenet.kernel.cleanup import remove_project_dir
from composenet.kernel.context import Context, Handlers
from composenet.kernel.handlers import default_handlers
from composenet.kernel.netinfo import record_project_networks
from composenet.kernel.observe import observe_project
from composenet.paths import LOCK

__all__ = ["Planned", "Report", "make_plan", "read_upstreams", "run_apply", "check_ruleset"]

Echo = Callable[[str], None]


@dataclass
class Report:
    """How a caller follows a run (`up`): ``step`` is called before each step, in the order
    they run, with (i, total, change, text); ``timings`` collects the seconds of each phase:
    observe, plan, "apply <kind>" per resource kind, verify. Without a Report, run_apply
    echoes each step (`[n/total] text`) unless quiet."""

    step: Callable[[int, int, Change, str], None] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, seconds: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds


def read_upstreams(path: str | None) -> Upstreams:
    """Upstream resolvers: the given file (--resolv-conf / COMPOSENET_RESOLV_CONF), else
    /etc/resolv.conf; on a systemd-resolved host (only 127.0.0.53), its real upstream list."""
    path = path or "/etc/resolv.conf"
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return Upstreams()
    up = parse_resolv_conf(text)
    if up.servers and all(s.startswith("127.0.0.53") for s in up.servers):
        try:
            with open("/run/systemd/resolve/resolv.conf") as f:
                real = parse_resolv_conf(f.read())
            if real.servers:
                return Upstreams(real.servers, up.search, up.options, text)
        except OSError:
            pass
    return up


def check_ruleset(ruleset: str) -> str | None:
    """``nft -c``: the kernel's parser checks the ruleset without loading it (for `plan`, which
    shows the problem; `up` refuses through NftHandler.check). None if fine, or if nft is not
    available or we are not root (plan on a machine without nftables)."""
    return nft.check_if_possible(ruleset)


def record_applied(ctx: Context, desired: DesiredState) -> None:
    os.makedirs(ctx.project_dir, exist_ok=True)
    data = {k: digest(r) for k, r in sorted(desired.resources.items())}
    tmp = os.path.join(ctx.project_dir, ".applied.json.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, ctx.paths.applied)


def run_apply(ctx: Context, project: Project | None, project_name: str, upstreams: Upstreams | None, echo: Echo,
              quiet: bool = False, saved_plan: dict | None = None, handlers: Handlers | None = None,
              report: Report | None = None) -> Planned:
    """Observe, plan, check, apply, record, verify. Used by `up` (project) and `down` (None)."""
    run = _Run(ctx, project, project_name, upstreams, echo, quiet, handlers or default_handlers(), report)
    with rundir.project_lock(ctx):
        if project is None:
            return run.locked(saved_plan)
        try:
            # Host-wide, after the project lock (see rundir.ipam_lock): two `up`s of different
            # projects must not both pick the same free subnet. Held from observing the host's
            # subnets until the bridges carry theirs (the end of apply).
            with contextlib.ExitStack() as ipam:
                ipam.enter_context(rundir.ipam_lock(ctx))
                return run.locked(saved_plan, ipam.close)
        except BaseException:
            # A refused `up` of a project that is not up (a plan error, a failed first apply
            # rolled back): taking the lock made its directory; leave nothing behind.
            if os.path.isdir(ctx.project_dir) and os.listdir(ctx.project_dir) == [LOCK]:
                remove_project_dir(ctx)
            raise


@dataclass
class _Run:
    """One `up` or `down`: what every phase needs."""

    ctx: Context
    project: Project | None
    name: str
    upstreams: Upstreams | None
    echo: Echo
    quiet: bool
    handlers: Handlers
    report: Report | None = None

    def plan(self, verify: bool = False) -> Planned:
        t0 = time.monotonic()
        observed = observe_project(self.ctx, self.handlers)
        t1 = time.monotonic()
        planned = make_plan(self.project, self.name, observed, self.upstreams, self.ctx.run_dir)
        if self.report is not None:
            if verify:
                self.report.add("verify", time.monotonic() - t0)
            else:
                self.report.add("observe", t1 - t0)
                self.report.add("plan", time.monotonic() - t1)
        return planned

    def locked(self, saved_plan: dict | None, applied: Callable[[], None] = lambda: None) -> Planned:
        """Under the project lock: plan, check, apply, record, verify. With a cluster store, the
        host's agent is started first and awaited when the cluster steps need it."""
        early = cluster.early_agent(self.ctx, self.project) if self.project is not None else None
        try:
            return self._locked(saved_plan, applied, early)
        finally:
            if early is not None:
                early.settle()

    def _locked(self, saved_plan: dict | None, applied: Callable[[], None],
                early: cluster.agentctl.EarlyStart | None) -> Planned:
        ctx, project = self.ctx, self.project
        if project is None:
            cluster.at_down(ctx, self.echo)  # the project's cluster records (a warning if the store is down)
        planned = self.plan()
        if saved_plan is not None:
            _check_saved(saved_plan, planned.plan)
        for w in planned.plan.warnings:
            self.echo(f"warning: {w}")
        if planned.plan.empty and project is not None and cluster.pending(ctx, project, planned):
            planned, crun = cluster.prepare(ctx, project, planned, self.plan, early)  # publish what a failed `up` did not
            if crun is not None and planned.plan.empty:  # else: applied below, with what re-planning found
                cluster.after_apply(ctx, project, planned, crun)
        if planned.plan.empty:
            if not self.quiet:
                self.echo("No changes. Kernel state matches the compose file." if project is not None
                          else f"Nothing to remove: project {self.name!r} owns nothing in this kernel.")
            if project is None:  # `down` of a project already down: taking the lock made its directory
                remove_project_dir(ctx)
            elif os.path.exists(ctx.paths.applied):  # labels or attachable may have changed
                record_project_networks(ctx, project, planned.desired.networks)
            return planned
        for h in self.handlers:  # each may refuse the plan before anything changes
            h.check(ctx, planned.plan)
        crun = None
        if project is not None:  # cluster records and leases first: a conflict re-plans, before any kernel step
            t0 = time.monotonic()
            planned, crun = cluster.prepare(ctx, project, planned, self.plan, early)
            if crun is not None and self.report is not None:
                self.report.add("cluster", time.monotonic() - t0)
        total = len(planned.plan.steps)
        report = self.report
        done = [0]
        last: list[tuple[str, float]] = []  # (kind, start) of the step running

        def progress(n: int, total: int, text: str) -> None:
            now = time.monotonic()
            if report is not None and last:
                report.add(f"apply {last[0][0]}", now - last[0][1])
            change = planned.plan.steps[n - 1].change
            last[:] = [(change.kind, now)]
            done[0] += 1
            if report is not None:
                if report.step is not None:
                    report.step(done[0], total, change, text)
            elif not self.quiet:
                self.echo(f"[{done[0]}/{total}] {text}")

        try:
            apply(ctx, planned.plan, self.handlers, implied_deletes(planned.plan.changes), progress)
        except BaseException:
            if crun is not None:
                crun.undo(ctx)
            raise
        finally:
            if report is not None and last:
                report.add(f"apply {last[0][0]}", time.monotonic() - last[0][1])
        applied()
        if crun is not None:
            assert project is not None
            t0 = time.monotonic()
            cluster.after_apply(ctx, project, planned, crun)
            if self.report is not None:
                self.report.add("cluster publish", time.monotonic() - t0)
        if project is not None:
            record_applied(ctx, planned.desired)
            record_project_networks(ctx, project, planned.desired.networks)
        # Verify: re-observe; the plan must now be empty.
        again = self.plan(verify=True)
        if project is None:
            remove_project_dir(ctx)
        if not again.plan.empty:
            text = render_text(again.plan)
            raise ComposenetError(
                f"applied {total} step(s), but the kernel still differs from the compose file:\n{text}",
                hint="run `composenet plan` to see what differs",
            )
        return planned


def _check_saved(saved_plan: dict, plan: Plan) -> None:
    """A saved plan (`plan --out`) is applied only if it is still what would be applied now."""
    diff_lines = "".join(f"\n  {x}" for x in saved_plan_difference(saved_plan, plan))
    if saved_plan.get("observed_digest") != plan.observed_digest:
        raise PlanError("the kernel changed since the saved plan was made; it was not applied" + diff_lines,
                        hint="run `composenet plan --out FILE` again and review it")
    if diff_lines:
        raise PlanError("the saved plan no longer matches the compose file and the kernel; it was not applied"
                        + diff_lines, hint="run `composenet plan --out FILE` again and review it")
