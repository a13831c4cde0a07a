"""Kernel -> ObservedState for one project: every handler reads the objects of its kinds that
the project owns (by label), and the host facts IPAM needs. I/O only; no changes."""

from __future__ import annotations

import json

from composenet.core.state import ObservedState
from composenet.kernel.context import Context, Handler


def handlers() -> list[Handler]:
    from composenet.kernel import files, links, nft, procs

    return [*links.HANDLERS, *nft.HANDLERS, *files.HANDLERS, *procs.HANDLERS]


def handler_for(kind: str) -> Handler:
    for h in handlers():
        if kind in h.kinds:
            return h
    raise KeyError(kind)


def observe_project(ctx: Context) -> ObservedState:
    from composenet.kernel import links

    observed = ObservedState()
    for h in handlers():
        h.observe(ctx, observed)
    links.host_facts(ctx, observed)
    observed.networks.update(links.macvlan_networks(ctx, standalone_macvlans(ctx.run_dir, set(observed.networks))))
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


def standalone_macvlans(run_dir: str, skip: set[str]) -> dict[str, dict]:
    """Specs of the standalone macvlan networks (`composenet network create`), except the names in ``skip``."""
    from composenet.kernel.netinfo import standalone_specs

    return {k: v for k, v in standalone_specs(run_dir).items() if v.get("driver") == "macvlan" and k not in skip}
