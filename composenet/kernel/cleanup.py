"""Removing a project's run directory after ``down``, keeping only the records that still refer to
something alive, so that a later ``down`` finds what a failed one left.

Owns: the walk over the directory, and the last sweep of `down`: every process left in the
project's cgroup (or carrying its marker) is killed, and every dead /run/netns file the project
recorded is removed. Whether a record is live is asked of the module that owns the record
(namespaces: linux.netns; /etc/netns files: kernel.files; processes: kernel.processes; the
resolver: kernel.resolver). Must not: delete anything outside the project's run directory, its
cgroup and the dead namespace files it recorded.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal

from composenet.kernel import files, processes, resolver
from composenet.kernel.context import Context
from composenet.kernel.namespaces import recorded_namespaces
from composenet.linux import cgroup, failpoint, proc
from composenet.linux.netns import delete, file_state, is_netns
from composenet.paths import FILES_RECORDS, NETNS_RECORDS, PROC_RECORDS, RECORD_DIRS, netns_path
from composenet.supervisor import client as supervisor_client


def remove_project_dir(ctx: Context) -> list[str]:
    """After ``down``: remove the project's runtime directory, keeping only records that still
    refer to something alive (a namespace still mounted, /etc/netns files still there, a process
    or resolver still running), so a later ``down`` finds them. Returns what was kept (empty when
    the directory is gone).

    Logs, the lock, the applied-state record and any other bookkeeping go: after ``down`` nothing
    of the project is left. Called with the lock held: see project_lock for why that is safe."""
    sweep_processes(ctx)
    root = ctx.project_dir
    if not os.path.isdir(root):
        return []
    remove_dead_netns_files(ctx)
    live: set[str] = set()
    for path in _record_paths(ctx):
        if _record_is_live(path):
            live.add(path)
    if resolver.resolver_alive(ctx):
        live.update(p for p in (resolver.resolver_config_path(ctx), resolver.resolver_pidfile(ctx)) if os.path.exists(p))
    kept: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for f in filenames:
            p = os.path.join(dirpath, f)
            if p in live:
                kept.append(p)
                continue
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if os.path.islink(p):
                os.unlink(p)
                continue
            try:
                os.rmdir(p)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    shutil.rmtree(p, ignore_errors=True)
    try:
        os.rmdir(root)
    except OSError:
        pass
    return sorted(kept)


def sweep_processes(ctx: Context) -> None:
    """Kill every process of the project that is left, recorded or not: the members of its
    cgroup (composenet.linux.cgroup; its supervisor's too), or without cgroup v2 the processes
    carrying its marker and the supervisor its pidfile names (checked against its start time);
    then remove its cgroups."""
    path = cgroup.project_path(ctx.project)
    if path is not None and os.path.isdir(path):
        cgroup.kill(path)
        failpoint.hit(f"kill cgroup {ctx.project}")
        cgroup.wait_empty(path)
        cgroup.remove(path)
        cgroup.prune(path)
        return
    rec = supervisor_client.read_json(supervisor_client.pidfile(ctx.project_dir)) or {}
    pids = cgroup.marked(f"{cgroup.host_id()}/{ctx.project}/")
    try:
        if proc.alive(int(rec["pid"]), int(rec["starttime"])):
            pids.append(int(rec["pid"]))
    except (KeyError, TypeError, ValueError):
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait_until(lambda: not any(proc.alive(p) for p in pids), cgroup.KILL_TIMEOUT)


def remove_dead_netns_files(ctx: Context) -> None:
    """/run/netns files the project recorded that are dead (a plain file: a crash between making
    the file and mounting on it, or between unmounting and unlinking it): nothing can enter them,
    and `ip netns` would list them as namespaces. Their records go with the directory."""
    for name in recorded_namespaces(ctx.run_dir, ctx.project):
        if file_state(netns_path(name)) == "dead":
            delete(name)


def _record_paths(ctx: Context) -> list[str]:
    out = []
    for sub in RECORD_DIRS:
        d = ctx.paths / sub
        try:
            out += [os.path.join(d, n) for n in os.listdir(d) if not n.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            pass
    return out


def _record_is_live(path: str) -> bool:
    """Whether a record refers to something alive, asked of the module that owns the record."""
    sub, name = os.path.basename(os.path.dirname(path)), os.path.basename(path)
    if sub == NETNS_RECORDS:
        return is_netns(netns_path(name))
    if sub == FILES_RECORDS:
        return files.has_files(name)
    if sub == PROC_RECORDS:
        return processes.record_alive(path)
    return False
