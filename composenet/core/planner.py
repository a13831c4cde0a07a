"""(Project, ObservedState) -> Plan: the one pure path that `plan`, `up`, `down` and the golden
tests share. No I/O: the caller observes (composenet.pipeline) or loads a recording.

Must not: observe, apply or print; it only strings the pure stages together.
"""

from __future__ import annotations

from dataclasses import dataclass

from composenet.core.desired import Upstreams, desire
from composenet.core.diff import diff, is_forwarding
from composenet.core.model import Project
from composenet.core.plan import Plan, order
from composenet.core.render import describe
from composenet.core.resources import Bridge, NftTable, Sysctl
from composenet.core.state import DesiredState, ObservedState
from composenet.paths import RUN_DIR


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
        desired = desire(project, observed, upstreams or Upstreams(), run_dir)
    else:
        desired = DesiredState(project=project_name)
    changes = diff(desired, observed)
    steps = order(changes, set(desired.resources))
    plan = Plan(project_name, steps, desired.networks, desired.containers, desired.exposure,
                list(desired.warnings), observed_digest=observed.digest(), host=list(desired.host),
                cluster=list(desired.cluster))
    if project is None:
        plan.kept = sorted(f"{describe(r)} (host setting, left as is)" for r in observed.resources.values()
                           if isinstance(r, Sysctl) and not r.ns and not r.ifname and not is_forwarding(r))
    for c in changes:  # Docker refuses to remove a network in use; composenet says what breaks
        if c.after is None and isinstance(c.before, Bridge):
            users = observed.networks.get(c.before.network, {}).get("used")
            if users:
                plan.warnings.append(f"network {c.before.network}: other projects' endpoints ({', '.join(users)}) "
                                     "use it as an external network; they lose it with its bridge")
    ruleset = next((r.ruleset for r in desired.resources.values() if isinstance(r, NftTable)), None)
    return Planned(plan, desired, observed, ruleset)
