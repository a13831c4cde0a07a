"""The ``process`` resource: a service's command, run as a host process inside the service's
network namespace (composenet.linux.spawn: its own UTS and mount namespaces, environment, cwd
and user), its output appended to ``<project dir>/logs/<container>.log``.

Owns the records ``<project dir>/proc/<container>.json``: the resource, the pid and the
process's start time, so that a reused pid is never taken for the service. Observe reports a
process whose record still matches a running process; delete stops its process group (SIGTERM,
SIGKILL after the service's grace period) and removes the record. `ps` reads the records too.

Must not: signal a pid without checking that it still is the process started (start time), or
enter a namespace itself (the child does, between fork and exec).
"""

from __future__ import annotations

import json
import os
from typing import Any

from composenet.core.resources import Process, Resource, resource_from_json
from composenet.core.state import ObservedState
from composenet.errors import KernelError
from composenet.kernel.context import Context, HandlerBase
from composenet.linux import proc
from composenet.linux.fileio import atomic_write, read_json
from composenet.linux.spawn import open_log, spawn

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_env(env: tuple[tuple[str, str], ...] | dict[str, str]) -> dict[str, str]:
    """The environment exactly as given, plus a default PATH when it has none."""
    out = dict(env)
    out.setdefault("PATH", DEFAULT_PATH)
    return out


# ---- records --------------------------------------------------------------------------------


def read_record(path: str) -> dict[str, Any] | None:
    data = read_json(path)
    return data if data is not None and data.get("kind") == "process" else None


def read_records(ctx: Context) -> dict[str, dict[str, Any]]:
    """Process records by container name, whether the process still runs or not."""
    out = {}
    d = ctx.paths.proc_records
    try:
        names = sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    for n in names:
        if n.startswith(".") or not n.endswith(".json"):
            continue
        rec = read_record(os.path.join(d, n))
        if rec is not None:
            out[str(rec.get("container", n[:-5]))] = rec
    return out


def record_running(rec: dict[str, Any]) -> bool:
    try:
        return proc.alive(int(rec["pid"]), int(rec["starttime"]))
    except (KeyError, TypeError, ValueError):
        return False


def record_alive(path: str) -> bool:
    """For kernel.cleanup.remove_project_dir: does this process record refer to a running process?"""
    rec = read_record(path)
    return rec is not None and record_running(rec)


def process_from_record(rec: dict[str, Any]) -> Process:
    data = {k: v for k, v in rec.items() if k not in ("pid", "starttime")}
    r = resource_from_json(data)
    assert isinstance(r, Process)
    return r


# ---- the handler ----------------------------------------------------------------------------


class ProcessHandler(HandlerBase):
    kinds: tuple[str, ...] = ("process",)

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        for rec in read_records(ctx).values():
            if record_running(rec):
                try:
                    observed.add(process_from_record(rec))
                except (KeyError, TypeError, ValueError):
                    continue  # an unreadable record: the process is stopped by hand or by `down`

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, Process)
        if not r.argv:
            raise KernelError(f"process {r.container}: empty command")
        logfd = open_log(ctx.paths.log(r.container))
        try:
            p = spawn(r.argv, ns=r.ns, hostname=r.hostname, env=command_env(r.env), cwd=r.cwd, user=r.user,
                      stdout=logfd, stderr=logfd, what=f"process {r.container}")
        finally:
            os.close(logfd)
        proc.adopt(p)
        st = proc.start_time(p.pid)
        rec = {**r.to_json(), "pid": p.pid, "starttime": st if st is not None else -1}
        try:
            atomic_write(ctx.paths.proc_record(r.container), json.dumps(rec, sort_keys=True) + "\n")
        except OSError as e:
            proc.stop_group(p.pid, st, 0.0, f"process {r.container}")
            raise KernelError(f"process {r.container}: cannot write its record: {e.strerror}") from None

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        # A running process cannot change its command, environment or namespace in place.
        self.delete(ctx, before)
        self.create(ctx, after)

    def delete(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, Process)
        path = ctx.paths.proc_record(r.container)
        rec = read_record(path)
        if rec is not None:
            try:
                pid, st = int(rec["pid"]), int(rec["starttime"])
            except (KeyError, TypeError, ValueError):
                pid, st = 0, 0
            if pid > 0:
                proc.stop_group(pid, st, float(rec.get("stop_grace_period", r.stop_grace_period)),
                                f"process {r.container}")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
