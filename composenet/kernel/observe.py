"""Kernel -> ObservedState for one project: every handler reads the objects of its kinds that
the project owns (by label), and the host facts IPAM needs. I/O only; no changes."""

from __future__ import annotations

import json

from composenet.core.state import ObservedState
from composenet.kernel.cluster import observe_cluster
from composenet.kernel.context import Context, Handlers
from composenet.kernel.handlers import default_handlers
from composenet.kernel.rtnl import nl


def observe_project(ctx: Context, handlers: Handlers | None = None, cluster: bool = True) -> ObservedState:
    """What the kernel holds of the project, read by every handler of ``handlers`` (default: a
    fresh ``default_handlers()``), plus the project's records of what it applied and connected,
    and (``cluster``) the cluster store's view: `ps`, `port`, `exec` and `logs` do not need it
    and do not wait for a store that does not answer."""
    observed = ObservedState()
    with nl(ctx, "").snapshot():  # the host's links and addresses, dumped once for every handler
        for h in handlers if handlers is not None else default_handlers():
            h.observe(ctx, observed)
    if cluster:
        observe_cluster(ctx, observed)  # with a cluster store only (ObservedState.cluster)
    observed.applied = read_applied(ctx)
    observed.connections = read_connections(ctx)
    return observed


def connections_path(ctx: Context) -> str:
    return ctx.paths.connections


def read_connections(ctx: Context) -> list[dict]:
    """The endpoints `composenet network connect` added (see ObservedState.connections)."""
    try:
        with open(connections_path(ctx)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []


def applied_path(ctx: Context) -> str:
    return ctx.paths.applied


def read_applied(ctx: Context) -> dict[str, str]:
    try:
        with open(applied_path(ctx)) as f:
            data = json.load(f)
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
