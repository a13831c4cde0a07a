"""The ``supervisor`` and ``process`` resources: the project's supervisor daemon
(composenet.supervisor: it runs the service commands and holds the published host ports) and
each service's command, which `up` asks the supervisor to start.

A process's record ``<project dir>/proc/<container>.json`` (the resource) is written before the
supervisor is asked to start it: a crash in between leaves a record and no state, which observe
reports as not running, and the next `up` starts it. The supervisor writes the state
(``states/<container>.json``: running, restarting, exited with its code, failed to start), and
a process counts as there (observe) while its supervisor lives and has a state for the current
record that is not "failed": a one-shot command that exited is not missing, and a command that
could not start is started again by the next `up`.

`up` watches the commands it started for a moment (``START_WINDOW``): a command that cannot
start (no such executable, a missing user or directory) or that exits non-zero right after its
start is an error of that service, reported with the end of its log once the plan is applied
(the other services stay up; nothing is rolled back), by the observe that verifies the plan.

Every process of the project lives in the project's cgroup (composenet.linux.cgroup), so `down`
kills whatever is left, recorded or not (kernel.cleanup).

Must not: signal a process itself (the supervisor does; only a supervisor that does not answer
is killed here, after checking it is the one recorded), or enter a namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import composenet
from composenet.core.resources import Process, Resource, Supervisor, resource_from_json
from composenet.core.resources.services import held_order
from composenet.core.state import ObservedState
from composenet.errors import ComposenetError, KernelError
from composenet.kernel.context import Context, HandlerBase
from composenet.linux import cgroup, failpoint, proc
from composenet.linux.fileio import atomic_write, read_json, tail_lines
from composenet.linux.spawn import open_log
from composenet.supervisor import DEFAULT_PATH, LOG, MODULE, PORTS, client

SUPERVISOR_START_TIMEOUT = 10.0
SUPERVISOR_EXIT_TIMEOUT = 5.0
KILL_TIMEOUT = 5.0
START_WINDOW = 0.3  # seconds `up` watches a command it started for an exit right after its start
RUNNING_STATES = ("running", "restarting", "exited", "stopping")
__all__ = ["DEFAULT_PATH", "STATE_KEYS", "ProcessHandler", "SupervisorHandler", "read_records", "record_alive",
           "status_of"]


# ---- records and states -----------------------------------------------------------------------


def read_record(path: str) -> dict[str, Any] | None:
    data = read_json(path)
    return data if data is not None and data.get("kind") == "process" else None


STATE_KEYS = ("pid", "starttime", "state", "exit_code", "restarts", "error")


def read_records(ctx: Context) -> dict[str, dict[str, Any]]:
    """Process records by container name, whether the process runs or not, each with what its
    supervisor last said of it (``STATE_KEYS``: pid and start time while it runs, state, exit
    code, restarts, why it could not start), for `ps`, `check` and messages."""
    out = {}
    d = ctx.paths.proc_records
    try:
        names = sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    states = client.states(ctx.project_dir)
    for n in names:
        if n.startswith(".") or not n.endswith(".json"):
            continue
        rec = read_record(os.path.join(d, n))
        if rec is not None:
            name = str(rec.get("container", n[:-5]))
            st = states.get(name) or {}
            out[name] = {**rec, **{k: st[k] for k in STATE_KEYS if k in st}}
    return out


def record_digest(path: str) -> str | None:
    """What the supervisor calls the record (the digest of the file's bytes)."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        return None


def record_alive(path: str) -> bool:
    """For kernel.cleanup.remove_project_dir: does this record refer to a process that runs?"""
    rec = read_record(path)
    if rec is None:
        return False
    root = os.path.dirname(os.path.dirname(path))
    st = client.states(root).get(str(rec.get("container", "")))
    return bool(_live(root) and st and st.get("pid") and proc.alive(int(st["pid"]), st.get("starttime")))


def process_from_record(rec: dict[str, Any]) -> Process:
    data = {k: v for k, v in rec.items() if k not in STATE_KEYS}
    r = resource_from_json(data)
    assert isinstance(r, Process)
    return r


def status_of(state: dict[str, Any] | None, supervised: bool) -> dict[str, Any]:
    """A process's state for `ps` (ObservedState.processes)."""
    if state is None:
        return {"state": "not started", "pid": None, "exit_code": None, "restarts": 0, "error": ""}
    out = {k: state.get(k) for k in ("state", "pid", "exit_code", "restarts", "error")}
    out["restarts"] = int(out.get("restarts") or 0)
    out["error"] = str(out.get("error") or "")
    if not supervised:
        out.update(state="unknown (its supervisor is not running)", pid=None)
    return out


def log_tail(path: str, n: int = 10) -> list[str]:
    return tail_lines(path, n)


# ---- the supervisor ------------------------------------------------------------------------------


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(composenet.__file__)))


class SupervisorHandler(HandlerBase):
    """The project's supervisor daemon. One per run: it knows the daemon it started whose
    readiness the executor has not awaited yet (``starting``), so that a rollback stops it."""

    kinds: tuple[str, ...] = ("supervisor",)

    def __init__(self) -> None:
        self.starting: tuple[subprocess.Popen, int] | None = None

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        rec = _live(ctx.project_dir)
        if rec is not None:
            observed.add(Supervisor(ctx.project, held_order(str(p) for p in rec.get("ports", ()))))

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, Supervisor)
        if _live(ctx.project_dir) is not None:  # the second half of a replace (see delete)
            self._hold(ctx, r)
            return
        self._kill_stale(ctx)
        atomic_write(ctx.paths / PORTS, json.dumps({"ports": list(r.ports)}) + "\n")
        ready_r, ready_w = os.pipe()
        logfd = open_log(ctx.paths.log(LOG))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_package_root(), *filter(None, [env.get("PYTHONPATH")])])
        root = os.path.abspath(ctx.project_dir)
        try:
            p = subprocess.Popen([sys.executable, "-m", MODULE, root, ctx.project, str(ready_w)], stdin=subprocess.DEVNULL,
                                 stdout=logfd, stderr=logfd, close_fds=True, pass_fds=(ready_w,), start_new_session=True,
                                 cwd="/", env=env)
        except OSError as e:
            os.close(ready_r)
            raise KernelError(f"cannot start the supervisor of project {ctx.project}: {e.strerror}") from None
        finally:
            os.close(ready_w)
            os.close(logfd)
        proc.adopt(p)
        self.starting = (p, ready_r)
        if not ctx.defer(lambda: self._await_ready(ctx)):
            self._await_ready(ctx)

    def _await_ready(self, ctx: Context) -> None:
        """The supervisor says "ok" once it listens and holds its ports, or why it cannot."""
        if self.starting is None:
            return
        p, ready_r = self.starting
        self.starting = None
        try:
            answer = _read_line(ready_r, SUPERVISOR_START_TIMEOUT)
        finally:
            os.close(ready_r)
        if answer == "ok":
            return
        if p.poll() is None:
            _stop_pid(p.pid, proc.start_time(p.pid))
        proc.forget(p.pid)
        tail = "\n".join("  | " + ln for ln in log_tail(ctx.paths.log(LOG)))
        why = answer.removeprefix("error: ") if answer else f"it did not become ready within {SUPERVISOR_START_TIMEOUT:g} s"
        raise KernelError(f"the supervisor of project {ctx.project} cannot start: {why}"
                          + (f"\n  its log ({ctx.paths.log(LOG)}) ends with:\n{tail}" if tail and not answer else ""))

    def _hold(self, ctx: Context, r: Supervisor) -> None:
        atomic_write(ctx.paths / PORTS, json.dumps({"ports": list(r.ports)}) + "\n")
        try:
            answer = client.request(ctx.project_dir, {"op": "ports"})
        except client.SupervisorError as e:
            raise KernelError(f"supervisor of project {ctx.project}: {e.strerror}") from None
        if not answer.get("ok"):
            raise KernelError(f"supervisor of project {ctx.project}: cannot hold {answer.get('error')}",
                              hint="a program of the host took the port since the plan was made; stop it, or "
                                   "publish another host port")

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        assert isinstance(after, Supervisor)
        self._hold(ctx, after)

    def delete(self, ctx: Context, r: Resource) -> None:
        """Stop the supervisor, unless it still runs services that are wanted (a replace of the
        supervisor resource, when its ports change: then it only lets its ports go)."""
        assert isinstance(r, Supervisor)
        if self.starting is not None:  # started by this run, readiness not awaited: a rollback
            p, ready_r = self.starting
            self.starting = None
            os.close(ready_r)
            _stop_pid(p.pid, proc.start_time(p.pid))
        rec = _live(ctx.project_dir)
        if rec is None:
            return
        if _wanted_services(ctx):
            self._hold(ctx, Supervisor(ctx.project, ()))
            return
        try:
            client.request(ctx.project_dir, {"op": "exit"}, timeout=SUPERVISOR_EXIT_TIMEOUT + KILL_TIMEOUT)
        except client.SupervisorError:
            pass
        pid, start = int(rec["pid"]), int(rec["starttime"])
        if not proc.wait_until(lambda: not proc.alive(pid, start), SUPERVISOR_EXIT_TIMEOUT):
            _stop_pid(pid, start)

    def _kill_stale(self, ctx: Context) -> None:
        """A supervisor whose pidfile says it lives but that is not live (killed, hung) is gone
        or killed; its services are killed by the new one (see composenet.supervisor)."""
        rec = client.read_json(client.pidfile(ctx.project_dir))
        if rec is None:
            return
        try:
            pid, start = int(rec["pid"]), int(rec["starttime"])
        except (KeyError, TypeError, ValueError):
            return
        args = proc.argv(pid) or []
        if proc.alive(pid, start) and MODULE.encode() in args and proc.of_this_host(
                pid, client.pidfile(ctx.project_dir), netns=False):
            _stop_pid(pid, start)


def _live(root: str) -> dict[str, Any] | None:
    """``supervisor.client.live``, and the supervisor is this host's (``proc.of_this_host``: it
    sees this project directory as ours; simulated hosts share pids, paths and command lines)."""
    rec = client.live(root)
    if rec is None or not proc.of_this_host(int(rec["pid"]), client.pidfile(root), netns=False):
        return None
    return rec


def _wanted_services(ctx: Context) -> bool:
    """Whether the supervisor still runs a service whose record is on file (a process the project
    keeps: `down` deletes the records of its processes before the supervisor)."""
    records = read_records(ctx)
    return any(name in records and st.get("state") != "failed"
               and st.get("record") == record_digest(ctx.paths.proc_record(name))
               for name, st in client.states(ctx.project_dir).items())


def _read_line(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _stop_pid(pid: int, start: int | None) -> None:
    """SIGKILL a supervisor that does not answer (its pid checked against its start time), and
    wait for it."""
    if not proc.alive(pid, start):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait_until(lambda: not proc.alive(pid, start), KILL_TIMEOUT)


# ---- the processes ---------------------------------------------------------------------------


class ProcessHandler(HandlerBase):
    """Service processes, through the supervisor. One per run: it remembers the processes it
    started (``started``), which the observe that verifies the plan watches for a failure."""

    kinds: tuple[str, ...] = ("process",)

    def __init__(self) -> None:
        self.started: dict[str, tuple[Process, float]] = {}

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        if self.started:
            self._report(ctx)
        root = ctx.project_dir
        supervised = _live(root) is not None
        states = client.states(root)
        for name, rec in read_records(ctx).items():
            st = states.get(name)
            observed.processes[name] = status_of(st, supervised)
            if not supervised or st is None or st.get("state") not in RUNNING_STATES:
                continue
            if st.get("record") != record_digest(ctx.paths.proc_record(name)):
                continue
            try:
                observed.add(process_from_record(rec))
            except (KeyError, TypeError, ValueError):
                continue  # an unreadable record: the process is stopped by `down`

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, Process)
        if not r.argv:
            raise KernelError(f"process {r.container}: empty command")
        atomic_write(ctx.paths.proc_record(r.container), json.dumps(r.to_json(), sort_keys=True) + "\n")
        failpoint.hit(f"record process {r.container}")
        try:
            answer = client.request(ctx.project_dir, {"op": "start", "container": r.container})
        except client.SupervisorError as e:
            raise KernelError(f"process {r.container}: the supervisor of project {ctx.project} {e.strerror}") from None
        if not answer.get("ok"):
            raise KernelError(f"process {r.container}: {answer.get('error')}")
        self.started[r.container] = (r, time.monotonic())

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        # A running process cannot change its command, environment or namespace in place.
        self.delete(ctx, before)
        self.create(ctx, after)

    def delete(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, Process)
        self.started.pop(r.container, None)
        if _live(ctx.project_dir) is not None:
            timeout = float(r.stop_grace_period) + KILL_TIMEOUT + 5.0
            try:
                answer = client.request(ctx.project_dir, {"op": "stop", "container": r.container}, timeout=timeout)
            except client.SupervisorError as e:
                raise KernelError(f"process {r.container}: the supervisor of project {ctx.project} {e.strerror}") from None
            if not answer.get("ok"):
                raise KernelError(f"process {r.container}: {answer.get('error')}")
        else:  # no supervisor: whatever is left of it goes with its cgroup
            leaf = cgroup.leaf(ctx.project, r.container)
            if leaf is not None:
                cgroup.kill(leaf)
                cgroup.wait_empty(leaf, KILL_TIMEOUT)
                cgroup.remove(leaf)
        failpoint.hit(f"stop process {r.container}")
        try:
            os.unlink(ctx.paths.proc_record(r.container))
        except FileNotFoundError:
            pass

    def _report(self, ctx: Context) -> None:
        """After the plan: the commands this run started that cannot start, or exited non-zero
        within START_WINDOW of their start and are not restarted, are errors (named with the end
        of their log; the other services stay up)."""
        started, self.started = self.started, {}
        root = ctx.project_dir

        def settled() -> bool:
            st = client.states(root)
            now = time.monotonic()
            return all(now - t0 >= START_WINDOW or st.get(name, {}).get("state") in ("failed", "exited")
                       for name, (_r, t0) in started.items())

        last = max(t0 for _r, t0 in started.values())
        proc.wait_until(settled, max(0.0, last + START_WINDOW - time.monotonic()) + 0.05)
        states = client.states(root)
        problems = []
        services = set()
        for name, (r, _t0) in sorted(started.items()):
            st = states.get(name) or {}
            where = f"{r.where}: " if r.where else ""
            if st.get("state") == "failed":
                problems.append(f"{where}service {r.service} ({name}) cannot start: {st.get('error')}")
            elif st.get("state") == "exited" and st.get("exit_code") not in (0, None):
                tail = log_tail(ctx.paths.log(name))
                problems.append(f"{where}service {r.service} ({name}) exited with code {st.get('exit_code')} right "
                                "after its start" + (":\n" + "\n".join("  | " + ln for ln in tail) if tail else ""))
            else:
                continue
            services.add(r.service)
        if problems:
            raise ComposenetError(
                "\n".join(problems),
                hint=f"see `composenet logs {min(services) if len(services) == 1 else 'SERVICE'}`; everything else is up "
                     "and stays so: fix the command and run `composenet up` again")

