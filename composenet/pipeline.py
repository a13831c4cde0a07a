"""The pipeline in one place: plan, up and down share one code path up to ``apply``.

``make_plan`` is pure (desired x observed -> Plan); ``run_up`` / ``run_down`` add the I/O:
lock, observe, check, apply, record what was applied, re-observe and verify.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from composenet.core.diff import diff, digest, implied_deletes
from composenet.core.model import Project
from composenet.core.plan import Plan, order, saved_plan_difference
from composenet.core.render import describe, render_text
from composenet.core.resources import Bridge, NftTable, Sysctl
from composenet.core.state import DesiredState, ObservedState
from composenet.errors import ComposenetError, PlanError
from composenet.kernel.context import Context
from composenet.paths import LOCK, RUN_DIR

if TYPE_CHECKING:  # composenet.desired is imported where a plan is made: `down` never needs it
    from composenet.core.desired import Upstreams

Echo = Callable[[str], None]


def read_upstreams(path: str | None) -> Upstreams:
    from composenet.core.desired import Upstreams, parse_resolv_conf

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


@dataclass
class Planned:
    plan: Plan
    desired: DesiredState
    observed: ObservedState
    ruleset: str | None


def make_plan(project: Project | None, project_name: str, observed: ObservedState, upstreams: Upstreams | None,
              run_dir: str = RUN_DIR) -> Planned:
    """Pure: the plan that takes ``observed`` to what ``project`` wants (None: to nothing)."""
    if project is not None:
        from composenet.core.desired import Upstreams, desire

        desired = desire(project, observed, upstreams or Upstreams(), run_dir)
    else:
        desired = DesiredState(project=project_name)
    changes = diff(desired, observed)
    steps = order(changes, set(desired.resources))
    plan = Plan(project_name, steps, desired.networks, desired.containers, desired.exposure,
                list(desired.warnings), observed_digest=observed.digest())
    if project is None:
        plan.kept = sorted(f"{describe(r)} (host setting, left as is)" for r in observed.resources.values()
                           if isinstance(r, Sysctl) and not r.ns and not r.ifname)
    for c in changes:  # Docker refuses to remove a network in use; composenet says what breaks
        if c.after is None and isinstance(c.before, Bridge):
            users = observed.networks.get(c.before.network, {}).get("used")
            if users:
                plan.warnings.append(f"network {c.before.network}: other projects' endpoints ({', '.join(users)}) "
                                     "use it as an external network; they lose it with its bridge")
    ruleset = next((r.ruleset for r in desired.resources.values() if isinstance(r, NftTable)), None)
    return Planned(plan, desired, observed, ruleset)


def check_ruleset(ruleset: str) -> str | None:
    """``nft -c -f -``: the kernel's parser checks the ruleset without loading it. None if fine
    or if nft is not available (plan on a machine without nftables)."""
    if shutil.which("nft") is None or os.geteuid() != 0:
        return None
    from composenet.kernel import nft

    return nft.check(ruleset)


def record_applied(ctx: Context, desired: DesiredState) -> None:
    os.makedirs(ctx.project_dir, exist_ok=True)
    data = {k: digest(r) for k, r in sorted(desired.resources.items())}
    tmp = os.path.join(ctx.project_dir, ".applied.json.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, ctx.paths.applied)


def run_apply(ctx: Context, project: Project | None, project_name: str, upstreams: Upstreams | None, echo: Echo,
              quiet: bool = False, saved_plan: dict | None = None) -> Planned:
    """Observe, plan, check, apply, record, verify. Used by `up` (project) and `down` (None)."""
    from composenet.kernel import links, rundir

    links.check_mount_namespace()
    with rundir.project_lock(ctx):
        if project is None:
            return _apply_locked(ctx, None, project_name, upstreams, echo, quiet, saved_plan)
        try:
            # Host-wide, after the project lock (see rundir.ipam_lock): two `up`s of different
            # projects must not both pick the same free subnet. Held from observing the host's
            # subnets until the bridges carry theirs (the end of apply).
            with contextlib.ExitStack() as ipam:
                ipam.enter_context(rundir.ipam_lock(ctx))
                return _apply_locked(ctx, project, project_name, upstreams, echo, quiet, saved_plan, ipam.close)
        except BaseException:
            # A refused `up` of a project that is not up (a plan error, a failed first apply
            # rolled back): taking the lock made its directory; leave nothing behind.
            if os.path.isdir(ctx.project_dir) and os.listdir(ctx.project_dir) == [LOCK]:
                rundir.remove_project_dir(ctx)
            raise


def _apply_locked(ctx: Context, project: Project | None, project_name: str, upstreams: Upstreams | None,
                  echo: Echo,
                  quiet: bool, saved_plan: dict | None, applied: Callable[[], None] = lambda: None) -> Planned:
    from composenet.kernel import rundir
    from composenet.kernel.apply import apply
    from composenet.kernel.observe import observe_project

    observed = observe_project(ctx)
    planned = make_plan(project, project_name, observed, upstreams, ctx.run_dir)
    if saved_plan is not None:
        diff_lines = "".join(f"\n  {x}" for x in saved_plan_difference(saved_plan, planned.plan))
        if saved_plan.get("observed_digest") != planned.plan.observed_digest:
            raise PlanError("the kernel changed since the saved plan was made; it was not applied" + diff_lines,
                            hint="run `composenet plan --out FILE` again and review it")
        if diff_lines:
            raise PlanError("the saved plan no longer matches the compose file and the kernel; it was not applied"
                            + diff_lines, hint="run `composenet plan --out FILE` again and review it")
    for w in planned.plan.warnings:
        echo(f"warning: {w}")
    if planned.plan.empty:
        if not quiet:
            echo("No changes. Kernel state matches the compose file." if project is not None
                 else f"Nothing to remove: project {project_name!r} owns nothing in this kernel.")
        if project is None:  # `down` of a project already down: taking the lock made its directory
            rundir.remove_project_dir(ctx)
        return planned
    if planned.ruleset is not None and any(c.kind == "nft" and c.after is not None for c in planned.plan.changes):
        err = check_ruleset(planned.ruleset)
        if err:
            raise ComposenetError(f"nft rejected the generated ruleset; nothing was changed:\n{err}")
    total = len(planned.plan.steps)

    def progress(n: int, total: int, text: str) -> None:
        if not quiet:
            echo(f"[{n}/{total}] {text}")

    apply(ctx, planned.plan, implied_deletes(planned.plan.changes), progress)
    applied()
    if project is not None:
        record_applied(ctx, planned.desired)
    # Verify: re-observe; the plan must now be empty.
    after = observe_project(ctx)
    again = make_plan(project, project_name, after, upstreams, ctx.run_dir)
    if project is None:
        rundir.remove_project_dir(ctx)
    if not again.plan.empty:
        text = render_text(again.plan)
        raise ComposenetError(
            f"applied {total} step(s), but the kernel still differs from the compose file:\n{text}",
            hint="run `composenet plan` to see what differs",
        )
    return planned
