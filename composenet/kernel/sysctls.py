"""Sysctls as resources: setting them in a namespace (KernelHandler dispatches kind ``sysctl``
here) and reading back the ones composenet sets, under /proc/sys.

Owns: the /proc/sys path of a sysctl name (interface names may contain dots) and the list of
sysctls observe reads: forwarding on the host, and route_localnet, accept_ra and accept_dad of
each of the project's bridges, and the per-endpoint ones (``com.docker.network.endpoint.sysctls``)
inside the project's namespaces, which it finds in its record of them (ENDPOINT_RECORD, in the
project's run directory: written when one is set, gone with the directory after ``down``).
Must not: revert a sysctl (they are ensured, never reverted: other software may rely on them;
an endpoint's go with its namespace) or read one composenet does not set.
"""

from __future__ import annotations

import json
import os
import threading

from composenet.core.resources import Sysctl
from composenet.core.state import ObservedState
from composenet.kernel.context import Context
from composenet.kernel.rtnl import fail
from composenet.linux import netns
from composenet.linux.fileio import atomic_write, read_json

ENDPOINT_RECORD = "endpoint-sysctls.json"  # {namespace: {sysctl name: interface}}
_record_lock = threading.Lock()  # one read-modify-write of the record at a time

# Host-wide sysctls composenet sets (observed in the namespace it runs in).
HOST_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")


def sysctl_path(name: str, ifname: str | None) -> str:
    """/proc/sys path of a sysctl; an interface name may itself contain dots (eth0.100)."""
    if ifname and f".{ifname}." in name:
        head, tail = name.split(f".{ifname}.", 1)
        return "/proc/sys/" + "/".join([*head.split("."), ifname, *tail.split(".")])
    return "/proc/sys/" + name.replace(".", "/")


def create_sysctl(ctx: Context, r: Sysctl) -> None:
    if r.ns:
        _record(ctx, r)  # first: observe must find it even if the write below fails
    path = sysctl_path(r.name, r.ifname)
    try:
        # /proc/sys/net follows the namespace of the thread that opens the file.
        with netns.entered(r.ns):
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, r.value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise fail(f"set sysctl {r.name} = {r.value}" + (f" in {r.ns}" if r.ns else ""), e) from e


def update_sysctl(ctx: Context, before: Sysctl, after: Sysctl) -> None:
    create_sysctl(ctx, after)


def delete_sysctl(ctx: Context, r: Sysctl) -> None:
    """Sysctls are ensured, never reverted (other software may rely on them)."""


def observe_sysctls(observed: ObservedState, bridges: list[str]) -> None:
    """Add the host sysctls and those of each bridge in ``bridges`` (names), as they are now."""
    for name in HOST_SYSCTLS:
        _observe_sysctl(observed, "", name, None)
    for b in bridges:
        for name in (f"net.ipv4.conf.{b}.route_localnet", f"net.ipv6.conf.{b}.accept_ra",
                     f"net.ipv6.conf.{b}.accept_dad"):
            _observe_sysctl(observed, "", name, b)


def _observe_sysctl(observed: ObservedState, ns: str, name: str, ifname: str | None) -> None:
    try:
        with open(sysctl_path(name, ifname)) as f:
            value = f.read().strip()
    except OSError:
        return
    observed.add(Sysctl(ns, name, value, ifname))


def _record_path(ctx: Context) -> str:
    return os.path.join(ctx.project_dir, ENDPOINT_RECORD)


def _record(ctx: Context, r: Sysctl) -> None:
    """Remember that sysctl ``r`` is set in namespace ``r.ns`` (observe reads it back)."""
    with _record_lock:
        _record_locked(ctx, r)


def _record_locked(ctx: Context, r: Sysctl) -> None:
    data = read_json(_record_path(ctx)) or {}
    mine = data.setdefault(r.ns, {})
    if isinstance(mine, dict) and mine.get(r.name) == r.ifname:
        return
    if not isinstance(mine, dict):
        data[r.ns] = mine = {}
    mine[r.name] = r.ifname
    atomic_write(_record_path(ctx), json.dumps(data, indent=1, sort_keys=True) + "\n")


def observe_endpoint_sysctls(ctx: Context, observed: ObservedState, owned_ns: list[str]) -> None:
    """Add the per-endpoint sysctls the record lists, as they are now, in each of ``owned_ns``
    (namespaces gone are skipped: their sysctls went with them)."""
    data = read_json(_record_path(ctx)) or {}
    for ns in owned_ns:
        names = data.get(ns)
        if not isinstance(names, dict) or not names:
            continue
        with netns.entered(ns):
            for name, ifname in sorted(names.items()):
                _observe_sysctl(observed, ns, str(name), str(ifname) if ifname else None)
