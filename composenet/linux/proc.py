"""Processes as /proc shows them: identity (state and start time, so a reused pid is never taken
for the process we started), command line, network namespace, process groups, and stopping a
group (SIGTERM, a grace period, then SIGKILL). Also the children this process started and has
not reaped yet (a dead child stays a zombie, "alive" to kill(pid, 0), until its parent waits).

Must not: know about projects, records or resources (composenet.kernel does), start processes
(composenet.linux.spawn does), or signal a pid without checking that it is the process meant.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

from composenet.errors import KernelError

KILL_TIMEOUT = 5.0  # after SIGKILL: how long the kernel may take to tear a process down
POLL = 0.02

# Children started by this process, by pid: polled to reap them (a dead child stays a zombie,
# "alive" to kill(pid, 0), until its parent waits for it) and kept so that Popen does not warn.
_children: dict[int, subprocess.Popen] = {}


def adopt(p: subprocess.Popen) -> None:
    """Keep child ``p`` until it is found dead (``alive`` reaps it)."""
    _children[p.pid] = p


def forget(pid: int) -> None:
    """Stop keeping child ``pid`` (its caller has waited for it)."""
    _children.pop(pid, None)


# ---- identity -------------------------------------------------------------------------------


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


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments separated by spaces ("" if unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def argv(pid: int) -> list[bytes] | None:
    """The NUL-separated fields of /proc/<pid>/cmdline (the last one is empty), or None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


def pids() -> list[int]:
    """Every process id in /proc."""
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def host_netns() -> int:
    """Identity (inode) of the network namespace this thread runs in."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def pid_netns(pid: int) -> int | None:
    """Identity (inode) of the network namespace of process ``pid``; None if it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def of_this_host(pid: int, path: str, netns: bool = True) -> bool:
    """Whether process ``pid`` is of this host: it sees the directory of ``path`` as the very
    directory this process sees (same device and inode through /proc/PID/root, which follows its
    own mount namespace) and (``netns``, for daemons that belong to a network namespace, as the
    cluster agent) it runs in this thread's network namespace. Several hosts simulated on one
    machine (each its own network and mount namespace, with a private /run/composenet) share one
    pid namespace, the paths and the command lines: a pid, a pidfile or a command line alone
    would let one host stop another's daemon."""
    if netns and pid_netns(pid) != host_netns():
        return False
    where = os.path.dirname(os.path.abspath(path))
    try:
        mine = os.stat(where)
        theirs = os.stat(f"/proc/{pid}/root{where}")
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


# ---- process groups and stopping ------------------------------------------------------------


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


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
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
    if wait_until(gone, grace):
        return
    _signal_group(pid, signal.SIGKILL)
    if not wait_until(gone, KILL_TIMEOUT):
        raise KernelError(f"{what} (pid {pid}) is still running {KILL_TIMEOUT:g} s after SIGKILL")
