"""Kernel -> ObservedState for one project: every handler reads the objects of its kinds that
the project owns (by label), and the host facts IPAM needs. I/O only; no changes."""

from __future__ import annotations

import json
import os

from composenet.handlers import Context, Handler
from composenet.state import ObservedState


def handlers() -> list[Handler]:
    from composenet import files, kernel, nft, procs

    return [*kernel.HANDLERS, *nft.HANDLERS, *files.HANDLERS, *procs.HANDLERS]


def handler_for(kind: str) -> Handler:
    for h in handlers():
        if kind in h.kinds:
            return h
    raise KeyError(kind)


def observe_project(ctx: Context) -> ObservedState:
    from composenet import kernel

    observed = ObservedState()
    for h in handlers():
        h.observe(ctx, observed)
    kernel.host_facts(ctx, observed)
    observed.applied = read_applied(ctx)
    return observed


def applied_path(ctx: Context) -> str:
    return os.path.join(ctx.project_dir, "applied.json")


def read_applied(ctx: Context) -> dict[str, str]:
    try:
        with open(applied_path(ctx)) as f:
            data = json.load(f)
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
