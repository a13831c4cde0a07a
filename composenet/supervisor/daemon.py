"""The supervisor daemon: one event loop (poll) over its socket, the signals it gets (through a
wakeup pipe) and its timers (restart backoff, stop grace periods). Single-threaded: services are
forked with a preexec step (composenet.linux.spawn), which is only safe without threads.

Service states (``states/<container>.json``, what `ps` shows): ``running`` (pid, start time),
``restarting`` (exited, its policy starts it again after the backoff), ``exited`` (exit code;
128+N when killed by signal N), ``failed`` (it could not be started: the reason, e.g. no such
executable; never retried by the supervisor: `up` tries again), ``stopping``.

Must not: start anything but the commands `up` recorded, signal anything but its own children
and the members of its project's cgroups, or run code from the project's directory.
"""

from __future__ import annotations

import ctypes
import hashlib
import heapq
import itertools
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from composenet.errors import KernelError
from composenet.linux import caps, cgroup, portholders, proc
from composenet.linux.fileio import atomic_write
from composenet.linux.spawn import open_log, spawn
from composenet.supervisor import DEFAULT_PATH, PIDFILE, PORTS, SOCKET, STATES, policy
from composenet.supervisor.client import read_json, socket_path
from composenet.supervisor.holder import Holder

PR_SET_CHILD_SUBREAPER = 36
KILL_TIMEOUT = 5.0  # after SIGKILL: how long a cgroup may take to empty


def log(message: str) -> None:
    """One line in logs/supervisor.log (the daemon's stdout)."""
    sys.stdout.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + message + "\n")
    sys.stdout.flush()


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the code, or 128+N for a death by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


@dataclass
class Service:
    """One container's command and what became of it."""

    name: str
    record: dict[str, Any]
    digest: str  # of the record file: the state says which record it is the state of
    policy: policy.Policy
    grace: float
    state: str = "starting"
    pid: int = 0
    starttime: int = -1
    popen: Any = None
    exit_code: int | None = None
    restarts: int = 0  # all restarts since `up` started it (on-failure:N counts these)
    series: int = 0  # restarts in a row without a long run (the backoff counts these)
    error: str = ""
    started: float = 0.0
    stopping: bool = False
    deadline: float = 0.0
    waiters: list[socket.socket] = field(default_factory=list)
    timer: int = 0


class Daemon:
    def __init__(self, root: str, project: str):
        self.root = os.path.abspath(root)
        self.project = project
        self.services: dict[str, Service] = {}
        self.by_pid: dict[int, Service] = {}
        self.holder = Holder()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.live_timers: set[int] = set()
        self.seq = itertools.count(1)
        self.poller = select.poll()
        self.clients: dict[int, tuple[socket.socket, bytearray]] = {}
        self.exit_waiters: list[socket.socket] | None = None
        self.running = True
        self.cg = cgroup.project_path(project)
        self.listener: socket.socket | None = None
        self.wake_r = -1
        self.dirfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    # ---- start-up ---------------------------------------------------------------------------
    def setup(self) -> list[tuple[str, str]]:
        """Join the supervisor's cgroup, become the subreaper, kill what an earlier supervisor of
        the project left, listen, hold the ports. Returns the ports that could not be held."""
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if self.cg is not None:
            cgroup.join_path(os.path.join(self.cg, cgroup.SUPERVISOR))
        self.kill_leftovers()
        self.signals()
        path = socket_path(self.root, self.dirfd)
        try:
            os.unlink(os.path.join(self.root, SOCKET))
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        self.listener.bind(path)
        os.chmod(os.path.join(self.root, SOCKET), 0o600)
        self.listener.listen(64)
        self.poller.register(self.listener.fileno(), select.POLLIN)
        failed = self.hold_ports()
        self.write_pidfile()
        log(f"supervisor of project {self.project} ready (pid {os.getpid()}, "
            + (f"cgroup {self.cg}" if self.cg else "no cgroup v2: processes are found by their COMPOSENET_MARK") + ")")
        return failed

    def kill_leftovers(self) -> None:
        """Services a dead supervisor left running (they kept their cgroups or marks): killed,
        so that a service never runs twice; `up` starts them again."""
        if self.cg is not None:
            try:
                entries = sorted(os.listdir(self.cg))
            except OSError:
                entries = []
            for e in entries:
                p = os.path.join(self.cg, e)
                if os.path.isdir(p):
                    me = os.getpid() if e == cgroup.SUPERVISOR else 0
                    cgroup.kill(p, exclude=me)
                    cgroup.wait_empty(p, KILL_TIMEOUT, exclude=me)
                    if not me:
                        cgroup.remove(p)
        else:
            for pid in cgroup.marked(f"{cgroup.host_id()}/{self.project}/"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def signals(self) -> None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r = r
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)
        self.poller.register(r, select.POLLIN)

    def write_pidfile(self) -> None:
        me = os.getpid()
        atomic_write(os.path.join(self.root, PIDFILE), json.dumps({
            "pid": me, "starttime": proc.start_time(me), "project": self.project, "cgroup": self.cg,
            "ports": self.holder.specs()}, sort_keys=True) + "\n")

    def hold_ports(self) -> list[tuple[str, str]]:
        data = read_json(os.path.join(self.root, PORTS)) or {}
        wanted = [str(p) for p in data.get("ports", ())]
        failed = self.holder.hold(wanted)
        for spec, why in failed:
            log(f"cannot hold {spec}: {why}")
        return failed

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        while self.running:
            timeout = -1
            if self.timers:
                timeout = max(0, int((self.timers[0][0] - time.monotonic()) * 1000) + 1)
            for fd, _ev in self.poller.poll(timeout):
                if fd == self.wake_r:
                    self.on_signals()
                elif self.listener is not None and fd == self.listener.fileno():
                    self.accept()
                elif fd in self.clients:
                    self.read_client(fd)
            self.fire_timers()

    def at(self, delay: float, fn: Callable[[], None]) -> int:
        n = next(self.seq)
        heapq.heappush(self.timers, (time.monotonic() + delay, n, fn))
        self.live_timers.add(n)
        return n

    def cancel(self, n: int) -> None:
        self.live_timers.discard(n)

    def fire_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, n, fn = heapq.heappop(self.timers)
            if n in self.live_timers:
                self.live_timers.discard(n)
                fn()

    def on_signals(self) -> None:
        try:
            data = os.read(self.wake_r, 4096)
        except BlockingIOError:
            data = b""
        sigs = set(data)
        if signal.SIGCHLD in sigs:
            self.reap()
        if signal.SIGHUP in sigs:
            self.hold_ports()
            self.write_pidfile()
        if sigs & {signal.SIGTERM, signal.SIGINT}:
            self.begin_exit(None)

    # ---- requests -----------------------------------------------------------------------------
    def accept(self) -> None:
        assert self.listener is not None
        for _ in range(64):
            try:
                conn, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            uid = struct_ucred_uid(conn)
            if uid not in (0, os.getuid()):
                conn.close()
                continue
            conn.setblocking(False)
            self.clients[conn.fileno()] = (conn, bytearray())
            self.poller.register(conn.fileno(), select.POLLIN)

    def read_client(self, fd: int) -> None:
        conn, buf = self.clients[fd]
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        buf += chunk
        if chunk and b"\n" not in buf and len(buf) < 1 << 20:
            return
        self.poller.unregister(fd)
        del self.clients[fd]
        try:
            req = json.loads(bytes(buf).split(b"\n", 1)[0])
        except ValueError:
            req = None
        if not isinstance(req, dict):
            reply(conn, {"ok": False, "error": "not a request"})
            return
        self.handle(req, conn)

    def handle(self, req: dict[str, Any], conn: socket.socket) -> None:
        op = req.get("op")
        name = str(req.get("container", ""))
        if op == "start":
            reply(conn, self.start(name))
        elif op == "stop":
            self.stop(name, conn)
        elif op == "ports":
            failed = self.hold_ports()
            self.write_pidfile()
            reply(conn, {"ok": not failed, "held": self.holder.specs(),
                         "error": "; ".join(port_problem(s, w) for s, w in failed)})
        elif op == "exit":
            self.begin_exit(conn)
        elif op == "status":
            reply(conn, {"ok": True, "services": {n: self.state_of(s) for n, s in self.services.items()}})
        else:
            reply(conn, {"ok": False, "error": f"unknown request {op!r}"})

    # ---- services -----------------------------------------------------------------------------
    def start(self, name: str) -> dict[str, Any]:
        """Start (or start again) the service recorded as ``proc/<name>.json``."""
        path = os.path.join(self.root, "proc", f"{name}.json")
        try:
            with open(path, "rb") as f:
                text = f.read()
            record = json.loads(text)
            pol = policy.parse(record.get("restart") or "no")
        except (OSError, ValueError) as e:
            return {"ok": False, "error": f"cannot read the record of {name}: {e}"}
        digest = hashlib.sha256(text).hexdigest()[:16]
        old = self.services.get(name)
        if old is not None:
            if old.stopping:
                return {"ok": False, "error": f"{name} is being stopped"}
            if old.state == "running" and old.digest == digest:
                return {"ok": True, **self.state_of(old)}
            if old.state == "running":
                return {"ok": False, "error": f"{name} runs another command; stop it first"}
            self.cancel(old.timer)
        s = Service(name, record, digest, pol, float(record.get("stop_grace_period", 10.0)))
        self.services[name] = s
        self.launch(s)
        return {"ok": True, **self.state_of(s)}

    def leaf(self, name: str) -> str | None:
        return None if self.cg is None else os.path.join(self.cg, f"c-{name}")

    def launch(self, s: Service) -> None:
        """Fork and exec the service's command; its state says how it went."""
        r = s.record
        leaf = self.leaf(s.name)
        if leaf is not None and cgroup.populated(leaf):  # what its previous run left
            cgroup.kill(leaf)
            cgroup.wait_empty(leaf, KILL_TIMEOUT)
        env = {str(k): str(v) for k, v in r.get("env", ())}
        env.setdefault("PATH", DEFAULT_PATH)
        if leaf is None:
            env[cgroup.MARK_ENV] = cgroup.mark(self.project, s.name)
        request = caps.Request(tuple(r.get("cap_add", ())), tuple(r.get("cap_drop", ())), bool(r.get("privileged")))
        logfd = open_log(os.path.join(self.root, "logs", f"{s.name}.log"))
        try:
            p = spawn([str(a) for a in r.get("argv", ())], ns=str(r.get("ns", "")), hostname=r.get("hostname"),
                      env=env, cwd=r.get("cwd"), user=r.get("user"), stdout=logfd, stderr=logfd,
                      what=s.name, cgroup_dir=leaf, capabilities=request)
        except KernelError as e:
            s.state, s.pid, s.error = "failed", 0, e.message.removeprefix(f"{s.name}: ")
            log(f"{s.name}: {e.message}")
            self.write_state(s)
            return
        finally:
            os.close(logfd)
        s.popen, s.pid, s.state, s.error = p, p.pid, "running", ""
        s.starttime = proc.start_time(p.pid) or -1
        s.started = time.monotonic()
        self.by_pid[p.pid] = s
        log(f"{s.name}: started pid {p.pid}" + (f" (restart {s.restarts})" if s.restarts else ""))
        self.write_state(s)

    def reap(self) -> None:
        for _ in range(100_000):  # bounded: each round reaps one child
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            s = self.by_pid.pop(pid, None)
            if s is not None:
                if s.popen is not None:
                    s.popen.returncode = os.waitstatus_to_exitcode(status)
                self.exited(s, exit_code(status))

    def exited(self, s: Service, code: int) -> None:
        """The service's main process ended: what it left in its cgroup goes too (as when a
        container's first process ends); then restart, or record the exit."""
        s.exit_code, s.pid = code, 0
        self.kill_rest(s)
        log(f"{s.name}: exited with code {code}")
        if s.stopping:
            self.cancel(s.timer)
            s.deadline = time.monotonic() + KILL_TIMEOUT
            self.until_empty(s)
            return
        if time.monotonic() - s.started >= policy.RESET_AFTER:
            s.series = 0
        if s.policy.restarts(code, s.restarts):
            s.restarts += 1
            s.series += 1
            s.state = "restarting"
            s.timer = self.at(policy.delay(s.series), lambda: self.restart(s))
        else:
            s.state = "exited"
        self.write_state(s)

    def kill_rest(self, s: Service) -> None:
        leaf = self.leaf(s.name)
        if leaf is not None:
            cgroup.kill(leaf)
        elif s.popen is not None:
            try:
                os.killpg(s.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def restart(self, s: Service) -> None:
        if self.services.get(s.name) is s and not s.stopping and s.state == "restarting":
            self.launch(s)

    def stop(self, name: str, conn: socket.socket | None) -> None:
        """SIGTERM the service's process group; SIGKILL its cgroup after its grace period; answer
        ``conn`` once nothing of it is left."""
        s = self.services.get(name)
        if s is None:
            if conn is not None:
                reply(conn, {"ok": True, "exit_code": None})
            return
        if conn is not None:
            s.waiters.append(conn)
        if s.stopping:
            return
        s.stopping = True
        self.cancel(s.timer)
        if s.pid:
            s.state = "stopping"
            self.write_state(s)
            try:
                os.killpg(s.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            s.timer = self.at(s.grace, lambda: self.force(s))
        else:
            self.kill_rest(s)
            s.deadline = time.monotonic() + KILL_TIMEOUT
            self.until_empty(s)

    def force(self, s: Service) -> None:
        if not s.pid:
            return
        log(f"{s.name}: still running {s.grace:g} s after SIGTERM: SIGKILL")
        try:
            os.killpg(s.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.kill_rest(s)
        s.timer = self.at(KILL_TIMEOUT, lambda: self.finish(s, f"{s.name} is still running {KILL_TIMEOUT:g} s after SIGKILL"))

    def until_empty(self, s: Service) -> None:
        leaf = self.leaf(s.name)
        if leaf is not None and cgroup.populated(leaf):
            if time.monotonic() < s.deadline:
                cgroup.kill(leaf)
                s.timer = self.at(0.005, lambda: self.until_empty(s))
                return
            self.finish(s, f"processes of {s.name} are still running {KILL_TIMEOUT:g} s after SIGKILL")
            return
        if leaf is None:
            for pid in cgroup.marked(cgroup.mark(self.project, s.name)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.finish(s, None)

    def finish(self, s: Service, error: str | None) -> None:
        self.cancel(s.timer)
        leaf = self.leaf(s.name)
        if leaf is not None and error is None:
            cgroup.remove(leaf)
        try:
            os.unlink(os.path.join(self.root, STATES, f"{s.name}.json"))
        except FileNotFoundError:
            pass
        if self.services.get(s.name) is s:
            del self.services[s.name]
        answer = {"ok": error is None, "exit_code": s.exit_code, **({"error": error} if error else {})}
        for conn in s.waiters:
            reply(conn, answer)
        s.waiters.clear()
        log(f"{s.name}: stopped" + (f" ({error})" if error else ""))
        if self.exit_waiters is not None and not self.services:
            self.complete_exit()

    def begin_exit(self, conn: socket.socket | None) -> None:
        first = self.exit_waiters is None
        if first:
            self.exit_waiters = []
        if conn is not None:
            assert self.exit_waiters is not None
            self.exit_waiters.append(conn)
        if not first:
            return
        log("exiting: stopping every service")
        if not self.services:
            self.complete_exit()
            return
        for name in sorted(self.services):
            self.stop(name, None)

    def complete_exit(self) -> None:
        self.holder.release()
        for f in (PIDFILE, SOCKET):
            try:
                os.unlink(os.path.join(self.root, f))
            except FileNotFoundError:
                pass
        for conn in self.exit_waiters or []:
            reply(conn, {"ok": True})
        log("exited")
        self.running = False

    # ---- state files --------------------------------------------------------------------------
    def state_of(self, s: Service) -> dict[str, Any]:
        return {"container": s.name, "service": s.record.get("service", ""), "state": s.state, "pid": s.pid or None,
                "starttime": s.starttime if s.pid else None, "exit_code": s.exit_code, "restarts": s.restarts,
                "error": s.error, "record": s.digest, "policy": str(s.policy)}

    def write_state(self, s: Service) -> None:
        if self.services.get(s.name) is not s:
            return
        atomic_write(os.path.join(self.root, STATES, f"{s.name}.json"), json.dumps(self.state_of(s), sort_keys=True) + "\n")


def struct_ucred_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    try:
        data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except OSError:
        return -1
    return int.from_bytes(data[4:8], sys.byteorder)


def reply(conn: socket.socket, answer: dict[str, Any]) -> None:
    try:
        conn.setblocking(True)
        conn.settimeout(2.0)
        conn.sendall(json.dumps(answer).encode() + b"\n")
    except OSError:
        pass
    finally:
        conn.close()


def port_problem(spec: str, why: str) -> str:
    """``tcp 0.0.0.0:8080: address already in use (held by pid 123, nginx)`` for a port the
    supervisor could not hold."""
    proto, addr, port = spec.split("/")
    text = f"{proto} {f'[{addr}]' if ':' in addr else addr}:{port}: {why}"
    if why == "address already in use":
        try:
            socks = [s for s in portholders.bound((proto,)) if s.port == int(port)]
            who = portholders.owners(s.inode for s in socks)
        except (OSError, ValueError, KeyError):
            who = {}
        names = sorted({f"pid {pid} ({comm})" for pid, comm in who.values()})
        if names:
            text += f" (held by {', '.join(names)})"
    return text


def main(args: list[str]) -> int:
    """PROJECT_DIR PROJECT READY_FD: set up, tell READY_FD "ok" (or why not), run until told to
    exit."""
    if len(args) != 3:
        print("usage: python -m composenet.supervisor PROJECT_DIR PROJECT READY_FD", file=sys.stderr)
        return 2
    root, project, ready = args[0], args[1], int(args[2])
    os.makedirs(os.path.join(root, STATES), mode=0o755, exist_ok=True)
    d = Daemon(root, project)
    try:
        failed = d.setup()
    except OSError as e:
        os.write(ready, f"error: {e}\n".encode())
        return 1
    if failed:
        os.write(ready, ("error: " + "; ".join(port_problem(s, w) for s, w in failed) + "\n").encode())
        d.complete_exit()
        return 1
    os.write(ready, b"ok\n")
    os.close(ready)
    try:
        d.run()
    except Exception as e:  # noqa: BLE001 -- said in the log; the services die with their cgroup at `down`
        log(f"internal error: {type(e).__name__}: {e}")
        raise
    return 0

