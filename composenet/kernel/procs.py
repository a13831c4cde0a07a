"""Handlers for the ``resolver`` and ``process`` resources, and spawning a command inside a
service's namespace (also used by ``composenet exec``).

Owns:
- the resolver daemon's life: its config ``<project dir>/dns.json``, start (detached, waiting for
  its pidfile, which it writes once every listener is bound), reload (SIGHUP), stop;
- service processes: start as host processes inside the service's network namespace, with their
  own UTS namespace (hostname) and mount namespace (the /etc/netns/<ns> files bind-mounted over
  /etc, as `ip netns exec` does), environment, cwd and user; records
  ``<project dir>/proc/<container>.json`` (the resource, pid and the process start time, so a
  reused pid is never taken for the service); stop (SIGTERM to the process group, SIGKILL after
  the grace period);
- logs: ``<project dir>/logs/<container>.log`` and ``dns.log`` (appended).

Must not: fork helpers or run `ip netns exec` (the namespace is entered in the child between
fork and exec), or signal a pid without checking that it still is the process we started.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import composenet
from composenet.core.resources import (
    DnsRecords,
    Process,
    Resolver,
    Resource,
    resolver_listeners,
    resource_from_json,
)
from composenet.core.state import ObservedState
from composenet.dns import peers
from composenet.errors import KernelError
from composenet.kernel import rundir
from composenet.kernel.context import Context
from composenet.linux.netns import CLONE_NEWNET, MNT_DETACH, MS_BIND, MS_REC, check, libc
from composenet.paths import DNS_LOG, etc_netns_dir, netns_path

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RESOLVER_MODULE = "composenet.dns.server"
RESOLVER_START_TIMEOUT = 5.0
RESOLVER_STOP_TIMEOUT = 2.0
RESOLVER_RELOAD_TIMEOUT = 2.0
KILL_TIMEOUT = 5.0  # after SIGKILL: how long the kernel may take to tear a process down
POLL = 0.02

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 0x1
MS_SLAVE = 1 << 19

# Children started by this process, by pid: polled to reap them (a dead child stays a zombie,
# "alive" to kill(pid, 0), until its parent waits for it) and kept so that Popen does not warn.
_children: dict[int, subprocess.Popen] = {}


# ---- process identity -----------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) from /proc/<pid>/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])  # field 3 = state, field 22 = starttime


def start_time(pid: int) -> int | None:
    st = _stat(pid)
    return st[1] if st else None


def _reap(pid: int) -> None:
    p = _children.pop(pid, None)
    if p is not None:
        p.poll()
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def alive(pid: int, starttime: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie: a zombie child of ours is reaped) and, when given,
    started at ``starttime`` (clock ticks since boot), i.e. the pid was not reused."""
    if pid <= 0:
        return False
    st = _stat(pid)
    if st is None:
        _children.pop(pid, None)
        return False
    if st[0] in ("Z", "X"):
        _reap(pid)
        return False
    return starttime is None or st[1] == starttime


def _group_exists(pgid: int) -> bool:
    """True while a member of process group ``pgid`` still runs. Zombies do not count: a
    daemon started by an earlier run has been re-parented to init (or a subreaper), which may
    take a second or more to reap it, and a zombie holds no socket, file or namespace."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(_live_in_group(pgid))


def _live_in_group(pgid: int) -> Iterator[int]:
    """Pids of non-zombie processes in group ``pgid`` (one pass over /proc)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        yield pgid  # cannot tell: assume it runs
        return
    for d in names:
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(b")") + 2 :].split(None, 3)
        if len(rest) >= 3 and rest[2] == str(pgid).encode() and rest[0] not in (b"Z", b"X"):
            yield int(d)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll ``cond`` until true or ``timeout`` seconds passed (bounded in time and count). The
    first polls come quickly (1 ms, doubling up to POLL): a process usually exits, or a
    resolver gets ready, within a few milliseconds."""
    deadline = time.monotonic() + max(0.0, timeout)
    delay = 0.001
    for _ in range(int(timeout / POLL) + 12):
        if cond():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, POLL)
    return cond()


def stop_group(pid: int, starttime: int | None, grace: float, what: str) -> None:
    """SIGTERM the process group of ``pid`` (a session leader we started), wait up to ``grace``
    seconds for the leader and every member to exit, then SIGKILL the group and wait for it."""
    if not alive(pid, starttime):
        return

    def gone() -> bool:
        return not alive(pid, starttime) and not _group_exists(pid)

    _signal_group(pid, signal.SIGTERM)
    if _wait(gone, grace):
        return
    _signal_group(pid, signal.SIGKILL)
    if not _wait(gone, KILL_TIMEOUT):
        raise KernelError(f"{what} (pid {pid}) is still running {KILL_TIMEOUT:g} s after SIGKILL")


def _log_tail(path: str, n: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("  | " + ln for ln in lines[-n:])


def _open_log(path: str) -> int:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


# ---- spawning in a namespace ----------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_user(spec: str) -> Credentials:
    """``name``, ``uid``, ``uid:gid``, ``name:group`` -> ids, looked up in the host's passwd and
    group databases (composenet runs host processes). A numeric uid without a passwd entry gets
    gid 0, as Docker does."""
    name, _, group = spec.partition(":")
    username: str | None = None
    try:
        if name.isdigit():
            uid = int(name)
            try:
                pw = pwd.getpwuid(uid)
                gid, username = pw.pw_gid, pw.pw_name
            except KeyError:
                gid = 0
        else:
            pw = pwd.getpwnam(name)
            uid, gid, username = pw.pw_uid, pw.pw_gid, pw.pw_name
    except KeyError:
        raise KernelError(f"user {name!r} (user: {spec}) does not exist on this host") from None
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise KernelError(f"group {group!r} (user: {spec}) does not exist on this host") from None
    groups = tuple(os.getgrouplist(username, gid)) if username else (gid,)
    return Credentials(uid, gid, groups)


def etc_binds(ns: str) -> list[tuple[str, str]]:
    """(source, target) bind mounts `ip netns exec` makes: every /etc/netns/<ns>/<f> over
    /etc/<f>, for the targets that exist."""
    d = etc_netns_dir(ns)
    try:
        names = sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [(os.path.join(d, n), f"/etc/{n}") for n in names if os.path.lexists(f"/etc/{n}")]


def spawn(argv: list[str] | tuple[str, ...], *, ns: str, hostname: str | None, env: dict[str, str],
          cwd: str | None = None, user: str | None = None, stdin: Any = subprocess.DEVNULL,
          stdout: Any = None, stderr: Any = None, new_session: bool = True, what: str = "") -> subprocess.Popen:
    """Start ``argv`` inside namespace /run/netns/<ns> ("" = the current network namespace),
    in a new UTS namespace with ``hostname`` (if given) and, when ``ns`` is set, a new mount
    namespace where / is a slave (nothing propagates back), /sys shows the namespace's devices
    and the /etc/netns/<ns> files are bind-mounted over /etc: what `ip netns exec` does, done in
    the child between fork and exec. Then drop to ``user`` and chdir to ``cwd`` (default /).

    Raises KernelError naming the step when the namespace cannot be entered or the command
    cannot be executed."""
    what = what or argv[0]
    creds = resolve_user(user) if user else None
    nsfd = -1
    binds: list[tuple[str, str]] = []
    if ns:
        try:
            nsfd = os.open(netns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise KernelError(f"{what}: cannot open network namespace {netns_path(ns)}: {e.strerror}") from None
        binds = etc_binds(ns)
    # Child -> parent channel for the reason of a failure before exec (both ends close on exec).
    err_r, err_w = os.pipe()
    directory = cwd or "/"

    def child() -> None:  # runs in the forked child, before exec
        step = "setns"
        try:
            if nsfd >= 0:
                check(libc.setns(nsfd, CLONE_NEWNET), f"enter network namespace {ns}")
            flags = (CLONE_NEWNS if nsfd >= 0 else 0) | (CLONE_NEWUTS if hostname is not None else 0)
            if flags:
                step = "unshare"
                check(libc.unshare(flags), "unshare")
            if nsfd >= 0:
                step = "mount"
                check(libc.mount(b"", b"/", b"none", MS_SLAVE | MS_REC, None), "make / a slave mount")
                # /sys of the new network namespace (its /sys/class/net); as `ip netns exec`.
                ro = os.statvfs("/sys").f_flag & os.ST_RDONLY
                if libc.umount2(b"/sys", MNT_DETACH) == 0:
                    libc.mount(ns.encode(), b"/sys", b"sysfs", MS_RDONLY if ro else 0, None)
                for src, dst in binds:
                    check(libc.mount(src.encode(), dst.encode(), b"none", MS_BIND, None), f"bind {src} on {dst}")
            if hostname is not None:
                step = "sethostname"
                b = hostname.encode()
                check(libc.sethostname(b, len(b)), f"set hostname {hostname!r}")
            if creds is not None:
                step = "setuid"
                os.setgroups(list(creds.groups))
                os.setgid(creds.gid)
                os.setuid(creds.uid)
            step = "chdir"
            os.chdir(directory)
        except OSError as e:
            text = e.strerror or str(e)
            if step == "chdir":
                text = f"working directory {directory}: {e.strerror}"
            os.write(err_w, text.encode()[:4000])
            raise

    full = [str(a) for a in argv]
    try:
        p = subprocess.Popen(full, env=env, stdin=stdin, stdout=stdout, stderr=stderr, close_fds=True,
                             start_new_session=new_session, preexec_fn=child)
    except subprocess.SubprocessError:
        os.close(err_w)
        reason = os.read(err_r, 4096).decode(errors="replace") or "failed before exec"
        raise KernelError(f"{what}: cannot start {full[0]!r}: {reason}") from None
    except OSError as e:
        os.close(err_w)
        raise KernelError(f"{what}: cannot execute {full[0]!r}: {e.strerror}",
                          hint="check the service's command/entrypoint and that it exists on this host") from None
    finally:
        for fd in (err_r, err_w, nsfd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
    return p


def command_env(env: tuple[tuple[str, str], ...] | dict[str, str]) -> dict[str, str]:
    """The environment exactly as given, plus a default PATH when it has none."""
    out = dict(env)
    out.setdefault("PATH", DEFAULT_PATH)
    return out


# ---- processes ------------------------------------------------------------------------------


def _proc_dir(ctx: Context) -> str:
    return ctx.paths.proc_records


def _record_path(ctx: Context, container: str) -> str:
    return ctx.paths.proc_record(container)


def read_record(path: str) -> dict[str, Any] | None:
    data = peers.read_json(path)
    return data if data is not None and data.get("kind") == "process" else None


def read_records(ctx: Context) -> dict[str, dict[str, Any]]:
    """Process records by container name, whether the process still runs or not."""
    out = {}
    d = _proc_dir(ctx)
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
        return alive(int(rec["pid"]), int(rec["starttime"]))
    except (KeyError, TypeError, ValueError):
        return False


def record_alive(path: str) -> bool:
    """For rundir.remove_project_dir: does this process record refer to a running process?"""
    rec = read_record(path)
    return rec is not None and record_running(rec)


def process_from_record(rec: dict[str, Any]) -> Process:
    data = {k: v for k, v in rec.items() if k not in ("pid", "starttime")}
    r = resource_from_json(data)
    assert isinstance(r, Process)
    return r


class ProcessHandler:
    kinds: tuple[str, ...] = ("process",)

    def flush(self, ctx: Context) -> None:
        """Nothing is batched: every call completes at once."""

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
        logfd = _open_log(ctx.paths.log(r.container))
        try:
            p = spawn(r.argv, ns=r.ns, hostname=r.hostname, env=command_env(r.env), cwd=r.cwd, user=r.user,
                      stdout=logfd, stderr=logfd, what=f"process {r.container}")
        finally:
            os.close(logfd)
        _children[p.pid] = p
        st = start_time(p.pid)
        rec = {**r.to_json(), "pid": p.pid, "starttime": st if st is not None else -1}
        try:
            rundir.atomic_write(_record_path(ctx, r.container), json.dumps(rec, sort_keys=True) + "\n")
        except OSError as e:
            stop_group(p.pid, st, 0.0, f"process {r.container}")
            raise KernelError(f"process {r.container}: cannot write its record: {e.strerror}") from None

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        # A running process cannot change its command, environment or namespace in place.
        self.delete(ctx, before)
        self.create(ctx, after)

    def delete(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, Process)
        path = _record_path(ctx, r.container)
        rec = read_record(path)
        if rec is not None:
            try:
                pid, st = int(rec["pid"]), int(rec["starttime"])
            except (KeyError, TypeError, ValueError):
                pid, st = 0, 0
            if pid > 0:
                stop_group(pid, st, float(rec.get("stop_grace_period", r.stop_grace_period)), f"process {r.container}")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# ---- the resolver ---------------------------------------------------------------------------


def resolver_config_path(ctx: Context) -> str:
    return ctx.paths.dns_config


def _pidfile_of(config_text: str, ctx: Context) -> str:
    try:
        pf = json.loads(config_text).get("pidfile")
    except (ValueError, AttributeError):
        pf = None
    return str(pf) if pf else ctx.paths.dns_pid


def resolver_pidfile(ctx: Context) -> str:
    try:
        with open(resolver_config_path(ctx)) as f:
            return _pidfile_of(f.read(), ctx)
    except OSError:
        return ctx.paths.dns_pid


def _daemon_pid(pidfile: str) -> int | None:
    """The pid in ``pidfile`` if it is a live resolver daemon."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    if alive(pid) and RESOLVER_MODULE in _cmdline(pid):
        return pid
    return None


def _resolvers_reading(config: str) -> list[int]:
    """Live resolver daemons started on ``config`` (by their command line), ready or not."""
    want = [RESOLVER_MODULE.encode(), config.encode()]
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[-3:-1] == want and alive(int(d)):
            out.append(int(d))
    return out


def resolver_pid(ctx: Context) -> int | None:
    return _daemon_pid(resolver_pidfile(ctx))


def resolver_alive(ctx: Context) -> bool:
    return resolver_pid(ctx) is not None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _package_root() -> str:
    """The directory that holds the ``composenet`` package (a checkout's root, or site-packages)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(composenet.__file__)))


class ResolverHandler:
    """The project's resolver daemon. One per run: it knows the daemon it started whose readiness
    the executor has not awaited yet (``starting``), so that a rollback stops it."""

    kinds: tuple[str, ...] = ("resolver",)

    def __init__(self) -> None:
        self.starting: subprocess.Popen | None = None

    def flush(self, ctx: Context) -> None:
        """Nothing is batched: every call completes at once."""

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        path = resolver_config_path(ctx)
        try:
            with open(path) as f:
                text = f.read()
            cfg = json.loads(text)
        except (OSError, ValueError):
            return
        if not isinstance(cfg, dict) or _daemon_pid(_pidfile_of(text, ctx)) is None:
            return
        try:
            listeners = resolver_listeners(cfg)
        except (KeyError, TypeError, AttributeError):
            listeners = ()
        observed.add(Resolver(ctx.project, listeners, text, hashlib.sha256(text.encode()).hexdigest()))

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, Resolver)
        path = resolver_config_path(ctx)
        pidfile = _pidfile_of(r.config, ctx)
        old = _daemon_pid(pidfile)
        if old is not None:  # left by a crash with its config gone: it holds the listeners
            stop_group(old, None, RESOLVER_STOP_TIMEOUT, "the old DNS resolver")
        for pid in _resolvers_reading(path):  # started by a run that crashed before it was ready
            stop_group(pid, None, RESOLVER_STOP_TIMEOUT, "the old DNS resolver")
        _unlink(pidfile)
        rundir.atomic_write(path, r.config)
        log = ctx.paths.log(DNS_LOG)
        logfd = _open_log(log)
        env = dict(os.environ)
        # The daemon runs from / (it must not keep a directory busy): make the package importable.
        env["PYTHONPATH"] = os.pathsep.join([_package_root(), *filter(None, [env.get("PYTHONPATH")])])
        try:
            p = subprocess.Popen([sys.executable, "-m", RESOLVER_MODULE, path], stdin=subprocess.DEVNULL,
                                 stdout=logfd, stderr=logfd, close_fds=True, start_new_session=True, cwd="/", env=env)
        except OSError as e:
            _unlink(path)
            raise KernelError(f"cannot start the DNS resolver: {e.strerror}") from None
        finally:
            os.close(logfd)
        _children[p.pid] = p
        # Under the executor, the wait for readiness (the daemon's start-up, tens of ms) overlaps
        # the next steps; the executor waits before the first service process starts and before
        # it finishes (apply.defer). Called directly, create waits here.
        self.starting = p
        if not ctx.defer(lambda: self._await_ready(ctx, p, path, pidfile, log)):
            self._await_ready(ctx, p, path, pidfile, log)

    def _await_ready(self, ctx: Context, p: subprocess.Popen, path: str, pidfile: str, log: str) -> None:
        def ready() -> bool:
            return p.poll() is not None or _daemon_pid(pidfile) == p.pid

        _wait(ready, RESOLVER_START_TIMEOUT)
        if self.starting is p:
            self.starting = None
        if _daemon_pid(pidfile) == p.pid:
            _notify_peers(ctx, _config_networks(path))
            return
        rc = p.poll()
        if rc is None:
            stop_group(p.pid, None, 0.0, "the DNS resolver")
            why = f"did not become ready within {RESOLVER_START_TIMEOUT:g} s"
        else:
            why = f"exited with status {rc}"
            _children.pop(p.pid, None)
        _unlink(path)
        _unlink(pidfile)
        tail = _log_tail(log)
        raise KernelError(f"the DNS resolver of project {ctx.project} {why}" + (f"; its log ({log}) ends with:\n{tail}" if tail else ""))

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        assert isinstance(after, Resolver)
        pid = resolver_pid(ctx)
        if pid is None or _pidfile_of(after.config, ctx) != resolver_pidfile(ctx):
            if pid is not None:
                self.delete(ctx, before)
            self.create(ctx, after)
            return
        log = ctx.paths.log(DNS_LOG)
        try:
            offset = os.path.getsize(log)
        except OSError:
            offset = 0
        before_text = _read_text(resolver_config_path(ctx))
        rundir.atomic_write(resolver_config_path(ctx), after.config)
        os.kill(pid, signal.SIGHUP)
        # The daemon says "reloaded" or "reload failed" in its log; wait a little for either so
        # a config it rejects is an error of this step, not a silent keep-the-old-one.
        outcome: list[str] = []

        def answered() -> bool:
            text = peers.read_from(log, offset)
            if text is None:
                return False
            for line in text.splitlines():
                if "reload failed" in line or "reloaded" in line:
                    outcome.append(line)
                    return True
            return not alive(pid)

        _wait(answered, RESOLVER_RELOAD_TIMEOUT)
        if outcome and "reload failed" in outcome[0]:
            raise KernelError(f"the DNS resolver of project {ctx.project} rejected its new configuration: {outcome[0]}")
        if not alive(pid):
            raise KernelError(f"the DNS resolver of project {ctx.project} exited on reload:\n{_log_tail(log)}")
        _notify_peers(ctx, _config_networks(before_text) | _config_networks(after.config, text=True))

    def delete(self, ctx: Context, r: Resource) -> None:
        starting, self.starting = self.starting, None
        if starting is not None and starting.poll() is None:  # started, readiness not awaited yet
            stop_group(starting.pid, start_time(starting.pid), RESOLVER_STOP_TIMEOUT, "the DNS resolver")
        pidfile = resolver_pidfile(ctx)
        pid = _daemon_pid(pidfile)
        if pid is not None:
            stop_group(pid, start_time(pid), RESOLVER_STOP_TIMEOUT, "the DNS resolver")
        networks = _config_networks(resolver_config_path(ctx))
        _unlink(resolver_config_path(ctx))
        _unlink(pidfile)
        _notify_peers(ctx, networks)


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _config_networks(source: str, text: bool = False) -> set[str]:
    """The networks a resolver config (a path, or its ``text``) listens on: what other projects'
    resolvers read of it (composenet.dns.peers)."""
    try:
        cfg = json.loads(source if text else _read_text(source))
    except ValueError:
        return set()
    return peers.listener_networks(cfg) if isinstance(cfg, dict) else set()


def _notify_peers(ctx: Context, networks: set[str]) -> None:
    """Tell the resolvers of the other projects on ``networks`` that this project's names there
    changed (they reload; bounded wait). Best effort: their periodic re-scan is the fallback."""
    try:
        peers.notify(ctx.run_dir, ctx.project, networks)
    except OSError:
        pass


# ---- names on other projects' networks (composenet.dns.peers) --------------------------------


def peers_path(ctx: Context) -> str:
    return ctx.paths.dns_peers


class PeersHandler:
    """The ``dnsrecords`` resource: ``<project dir>/dns-peers.json``, the project's endpoints on
    networks other projects own, with the host namespace's identity added (the runtime directory
    is shared by every namespace of the machine). Writing or removing it signals the resolvers
    that serve those networks."""

    kinds: tuple[str, ...] = ("dnsrecords",)

    def flush(self, ctx: Context) -> None:
        """Nothing is batched: every call completes at once."""

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        data = _read_text(peers_path(ctx))
        try:
            rec = json.loads(data)
        except ValueError:
            return
        if not isinstance(rec, dict) or rec.get("host_netns") != peers.host_netns():
            return
        rec.pop("host_netns")
        text = json.dumps(rec, indent=1, sort_keys=True) + "\n"
        containers = [c for c in rec.get("containers", ()) if isinstance(c, dict)]
        nets = sorted({str(ep.get("network")) for c in containers for ep in c.get("endpoints", ())
                       if isinstance(ep, dict)})
        observed.add(DnsRecords(ctx.project, tuple(nets), text, hashlib.sha256(text.encode()).hexdigest(),
                                tuple(str(c.get("name")) for c in containers)))

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, DnsRecords)
        rec = json.loads(r.records)
        rec["host_netns"] = peers.host_netns()
        rundir.atomic_write(peers_path(ctx), json.dumps(rec, indent=1, sort_keys=True) + "\n")
        _notify_peers(ctx, set(r.networks))

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        assert isinstance(before, DnsRecords) and isinstance(after, DnsRecords)
        self.create(ctx, after)
        _notify_peers(ctx, set(before.networks) - set(after.networks))

    def delete(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, DnsRecords)
        _unlink(peers_path(ctx))
        _notify_peers(ctx, set(r.networks))

