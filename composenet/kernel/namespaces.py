"""Network namespaces as resources: their create, update and delete (KernelHandler dispatches
kind ``netns`` here), and their records in the run directory.

A record ``<project dir>/netns/<ns>`` (composenet.paths) holds the project and service a
namespace belongs to. It is written before the namespace is made, so that `down` after a crash
finds every namespace the project may have left, and removed only once the namespace is gone.

Owns: those records (this project's, and listing another project's for the host facts) and the
namespace's own setup (lo up). Must not: create or change links in a namespace (kernel.links,
kernel.addresses do), or touch the records of /etc/netns files and processes (kernel.files,
kernel.procs own theirs). The system calls are composenet.linux.netns's.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from composenet.core.resources import Netns
from composenet.kernel.context import Context
from composenet.kernel.rtnl import fail
from composenet.linux import failpoint, netns
from composenet.linux.fileio import atomic_write
from composenet.linux.netlink import IFF_UP, NL, RTM_NEWLINK, ifinfomsg
from composenet.paths import ProjectPaths

# ---- records ----------------------------------------------------------------------------------


def _record_path(ctx: Context, name: str) -> str:
    return os.path.join(ctx.paths.netns_records, name)


def read_records(ctx: Context) -> dict[str, dict[str, Any]]:
    """This project's namespace records, by namespace name (an unreadable record: {})."""
    out: dict[str, dict[str, Any]] = {}
    d = ctx.paths.netns_records
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return out
    for n in names:
        if n.startswith("."):
            continue
        try:
            with open(os.path.join(d, n)) as f:
                data = json.load(f)
            out[n] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            out[n] = {}
    return out


def recorded_namespaces(run_dir: str, project: str) -> list[str]:
    """The names of the namespaces project ``project`` recorded, sorted ([] if it has none)."""
    try:
        return sorted(n for n in os.listdir(ProjectPaths(run_dir, project).netns_records) if not n.startswith("."))
    except OSError:
        return []


def _write_record(ctx: Context, r: Netns) -> None:
    atomic_write(_record_path(ctx, r.name), json.dumps({"service": r.service, "project": r.project}))


def _remove_record(ctx: Context, name: str) -> None:
    try:
        os.unlink(_record_path(ctx, name))
    except FileNotFoundError:
        pass


# ---- operations -------------------------------------------------------------------------------


def create_netns(ctx: Context, r: Netns) -> None:
    """Record, create with lo up (set before the namespace becomes visible, so a crash never
    leaves a namespace without it), and undo all of it if a step fails. The run keeps the
    netlink socket the namespace was made with (no setns needed to configure it)."""
    had_record = os.path.exists(_record_path(ctx, r.name))
    _write_record(ctx, r)  # first: a crash after this leaves a record `down` can follow
    failpoint.hit(f"netns record {r.name}")

    made: list[NL] = []

    def lo_up(sock: socket.socket) -> None:  # lo is ifindex 1 in every namespace
        made.append(NL(sock, r.name))
        made[0].request(RTM_NEWLINK, ifinfomsg(index=1, flags=IFF_UP, change=IFF_UP))

    try:
        netns.create(r.name, lo_up)
    except OSError as e:
        if not had_record:
            _remove_record(ctx, r.name)
        raise fail(f"create netns {r.name}", e) from e
    ctx.drop_sockets(r.name)
    ctx.netlink[r.name] = made[0]


def update_netns(ctx: Context, before: Netns, after: Netns) -> None:
    _write_record(ctx, after)


def delete_netns(ctx: Context, r: Netns) -> None:
    """Close the run's sockets in it (they would keep it alive), delete it, then its record."""
    ctx.drop_sockets(r.name)
    try:
        netns.delete(r.name)
    except OSError as e:
        raise fail(f"delete netns {r.name}", e) from e
    _remove_record(ctx, r.name)
