"""The live state `composenet graph` draws: the project observed and planned against the kernel,
and the state of each container and network (composenet.core.graph.Live). Read-only.

A container is ``running`` (its process runs), ``no command``, ``exited`` (its process should
run and does not), ``missing`` (its namespace is gone) or ``drifted`` (the plan would change
one of its links, addresses or routes); a network is ``up``, ``missing`` (its bridge is gone),
``drifted`` or ``external`` (another owner's); a published port is missing when the project's
table has no DNAT rule for it.

Must not: change anything, or decide how the graph looks (composenet.core.graph).
"""

from __future__ import annotations

from composenet.core.desired import Upstreams
from composenet.core.graph import Live
from composenet.core.model import Project
from composenet.core.planner import make_plan
from composenet.core.resources import (
    Address,
    Bridge,
    Ipvlan,
    Macvlan,
    Netns,
    NftTable,
    Process,
    Resource,
    Route,
    Veth,
)
from composenet.core.ruleset import parse_port
from composenet.core.state import DesiredState, ObservedState
from composenet.kernel.context import Context
from composenet.kernel.observe import observe_project


def live_state(ctx: Context, project: Project, upstreams: Upstreams) -> tuple[DesiredState, Live] | None:
    """(the desired state planned against the kernel, the live view), or None when the project is
    not up (the kernel holds none of its namespaces, bridges or table)."""
    observed = observe_project(ctx)
    if not any(isinstance(r, Netns | Bridge | NftTable) for r in observed.resources.values()):
        return None
    planned = make_plan(project, project.name, observed, upstreams, ctx.run_dir)
    return planned.desired, live_view(planned.desired, observed, [c.resource for c in planned.plan.changes])


def live_view(desired: DesiredState, observed: ObservedState, changed: list[Resource]) -> Live:
    """Each container's and network's state, from what is desired, observed and would change."""
    drifted_ns = {r.ns for r in changed if isinstance(r, Address | Route | Veth | Macvlan | Ipvlan) and r.ns}
    bridges = {r.ifname for r in changed if isinstance(r, Bridge)} | {
        r.ifname for r in changed if isinstance(r, Address) and not r.ns}
    containers = {}
    for row in desired.containers:
        name, ns = row["name"], row["ns"]
        proc = desired.resources.get(f"process:{name}")
        if ns and f"netns:{ns}" in desired.resources and f"netns:{ns}" not in observed.resources:
            state = "missing"
        elif ns in drifted_ns:
            state = "drifted"
        elif isinstance(proc, Process):
            running = observed.processes.get(name, {}).get("state") == "running"
            state = "running" if proc.key in observed.resources and running else "exited"
        else:
            state = "no command"
        containers[name] = state
    networks = {}
    for row in desired.networks:
        br = row.get("bridge")
        if row["kind"] == "external":
            state = "external"
        elif br and f"link:-:{br}" not in observed.resources:
            state = "missing"
        elif br and br in bridges:
            state = "drifted"
        else:
            state = "up"
        networks[row["name"]] = state
    have = {(r.service, r.host_port, r.protocol) for t in observed.resources.values() if isinstance(t, NftTable)
            for r in map(parse_port, t.rules) if r is not None}
    missing = tuple(sorted({(row["service"], row["host_port"], row["protocol"]) for row in desired.exposure}
                           - have))
    return Live(containers, networks, missing)
