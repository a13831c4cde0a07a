"""Starting, finding, signalling and stopping this host's cluster agent (for `up`, `down` and
the tests). Light: imports neither the store client nor pyroute2.

The agent of this host is the pid in ``files.agent_pidfile`` when that process runs as
``AGENT_MODULE``, in this network namespace, and sees this run directory as we do
(``linux.proc.of_this_host``): simulated hosts on one machine share pids and paths, and must
never stop each other's agents.

* :func:`ensure_agent` (or :class:`EarlyStart`, which does not wait at once): the agent runs
  with this config (started, or restarted when the config
  changed), ready (its pidfile written: registered and first listing applied), or StoreError
  with the end of its log;
* :func:`reload_agent`: SIGHUP (re-publish this host's records from the projects' files,
  re-apply) and wait, bounded, until it logs "applied" after "reloading";
* :func:`stop_agent`: SIGTERM (the agent revokes the node's lease: the host leaves the cluster at
  once), then SIGKILL after a grace period.

Must not: start a second agent for a host, or signal a process that is not this host's agent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import AbstractContextManager

import composenet
from composenet.cluster import files
from composenet.cluster.errors import StoreError
from composenet.cluster.settings import ClusterSettings
from composenet.linux import proc
from composenet.linux.fileio import atomic_write, read_json, tail_lines
from composenet.linux.spawn import open_log

AGENT_MODULE = "composenet.cluster.agent"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
RELOAD_TIMEOUT = 3.0


def agent_config(settings: ClusterSettings, advertise: str, run_dir: str) -> dict:
    """The agent's config for these settings (``advertise``: the resolved VTEP address)."""
    return {"store": str(settings.store), "ca": settings.store.ca, "cert": settings.store.cert,
            "key": settings.store.key, "node": settings.node, "advertise": advertise, "ttl": settings.ttl,
            "run_dir": run_dir}


def agent_pid(run_dir: str) -> int | None:
    """The live agent of this host (see the module doc), or None."""
    path = files.agent_pidfile(run_dir)
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    if proc.alive(pid) and AGENT_MODULE in proc.cmdline(pid) and proc.of_this_host(pid, path):
        return pid
    return None


def foreign_agent(run_dir: str) -> int | None:
    """A live agent named by the pidfile that is NOT this host's: another network namespace
    shares this run directory (give each host its own: COMPOSENET_RUN_DIR, or the simulated-host
    recipe's private /run/composenet)."""
    path = files.agent_pidfile(run_dir)
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    if proc.alive(pid) and AGENT_MODULE in proc.cmdline(pid) and not proc.of_this_host(pid, path):
        return pid
    return None


def shared_run_dir_error(run_dir: str, pid: int) -> StoreError:
    return StoreError(f"the run directory {run_dir} holds the cluster agent of another host (pid {pid}, another "
                      "network namespace): each host needs its own run directory",
                      hint="set COMPOSENET_RUN_DIR per host (or give each simulated host a private /run/composenet)")


def _log_tail(path: str, n: int = 12) -> str:
    return "\n".join("  | " + ln for ln in tail_lines(path, n))


def spawn_agent(run_dir: str, config: dict, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Write ``config`` and start the agent on it, detached, without waiting (the caller holds
    the agent lock and awaits it: :func:`await_agent`)."""
    path = files.agent_config_path(run_dir)
    pidfile = files.agent_pidfile(run_dir)
    other = foreign_agent(run_dir)
    if other is not None:
        raise shared_run_dir_error(run_dir, other)
    atomic_write(path, json.dumps(config, indent=1, sort_keys=True) + "\n", mode=0o600)
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    e = dict(os.environ if env is None else env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(composenet.__file__)))
    e["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [e.get("PYTHONPATH")])])
    logfd = open_log(files.agent_log(run_dir))
    try:
        p = subprocess.Popen([sys.executable, "-m", AGENT_MODULE, path], stdin=subprocess.DEVNULL, stdout=logfd,
                             stderr=logfd, close_fds=True, start_new_session=True, cwd="/", env=e)
    except OSError as err:
        raise StoreError(f"cannot start the cluster agent: {err.strerror}") from None
    finally:
        os.close(logfd)
    proc.adopt(p)
    return p


def await_agent(run_dir: str, p: subprocess.Popen, timeout: float = START_TIMEOUT) -> int:
    """Wait until the agent ``p`` is ready (its pidfile written: registered, first listing
    applied); its pid. Raises StoreError (with the end of its log) when it exits or is not ready
    within ``timeout`` (then it is stopped)."""
    log = files.agent_log(run_dir)
    proc.wait_until(lambda: p.poll() is not None or agent_pid(run_dir) == p.pid, timeout)
    if agent_pid(run_dir) == p.pid:
        return p.pid
    rc = p.poll()
    if rc is None:
        proc.stop_group(p.pid, None, 0.0, "the cluster agent")
        why = f"was not ready within {timeout:g} s"
    else:
        why = f"exited with status {rc}"
        proc.forget(p.pid)
    tail = _log_tail(log)
    raise StoreError(f"the cluster agent {why}" + (f"; its log ({log}) ends with:\n{tail}" if tail else ""),
                     hint="is the store reachable, and the node name (--node) unique?")


def start_agent(run_dir: str, config: dict, env: dict[str, str] | None = None,
                timeout: float = START_TIMEOUT) -> int:
    """Write ``config`` and start the agent on it, detached; wait until it is ready. Raises
    StoreError (with the end of its log) when it exits or is not ready within ``timeout``."""
    return await_agent(run_dir, spawn_agent(run_dir, config, env), timeout)


def ensure_agent(run_dir: str, config: dict, env: dict[str, str] | None = None) -> int:
    """The pid of this host's agent running with ``config`` (started or restarted as needed;
    under the host's agent lock, so that two `up`s start one agent)."""
    with files.agent_lock(run_dir):
        pid = agent_pid(run_dir)
        if pid is not None:
            if read_json(files.agent_config_path(run_dir)) == config:
                return pid
            stop_agent(run_dir)
        return start_agent(run_dir, config, env)


class EarlyStart:
    """The agent of a host that runs none, started before the caller needs it (`up` starts it
    before it observes and plans, so that the agent's start-up, ~0.3 s of Python imports,
    overlaps them). Holds the host's agent lock until :meth:`wait` or :meth:`settle`. Inactive
    (``p`` None) when an agent runs already: the caller then uses :func:`ensure_agent`."""

    def __init__(self, run_dir: str, config: dict):
        self.run_dir, self.config = run_dir, config
        self._lock: AbstractContextManager[None] | None = files.agent_lock(run_dir)
        self._lock.__enter__()
        self.p: subprocess.Popen | None = None
        self.pid: int | None = None
        try:
            if agent_pid(run_dir) is None:
                self.p = spawn_agent(run_dir, config)
        except BaseException:
            self._release()
            raise
        if self.p is None:
            self._release()

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.__exit__(None, None, None)

    def wait(self) -> int:
        """The agent's pid once ready (see :func:`await_agent`); the lock is released."""
        assert self.p is not None
        try:
            if self.pid is None:
                self.pid = await_agent(self.run_dir, self.p)
            return self.pid
        finally:
            self._release()

    def settle(self) -> None:
        """The `up` ended without :meth:`wait` (nothing to apply, or it failed before): the agent
        it started is stopped, as if it had not been (the host ran none)."""
        try:
            if self.p is not None and self.pid is None:
                proc.stop_group(self.p.pid, None, STOP_TIMEOUT, "the cluster agent")
                proc.forget(self.p.pid)
        finally:
            self._release()


def reload_agent(run_dir: str, timeout: float = RELOAD_TIMEOUT) -> bool:
    """SIGHUP the agent and wait until it logs "applied" after "reloading"; False if no agent
    runs or it did not answer in time (it will, at its next turn: not an error of the caller)."""
    pid = agent_pid(run_dir)
    if pid is None:
        return False
    log = files.agent_log(run_dir)
    try:
        offset = os.path.getsize(log)
    except OSError:
        offset = 0
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError:
        return False

    def answered() -> bool:
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return False
        started = False
        for line in text.splitlines():
            if "reloading" in line:
                started = True
            elif started and "applied revision" in line:
                return True
        return not proc.alive(pid)

    return proc.wait_until(answered, timeout)


def stop_agent(run_dir: str, grace: float = STOP_TIMEOUT) -> bool:
    """Stop this host's agent (it leaves the cluster); False if none ran."""
    pid = agent_pid(run_dir)
    if pid is None:
        return False
    proc.stop_group(pid, proc.start_time(pid), grace, "the cluster agent")
    return True
