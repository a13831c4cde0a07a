"""cgroup v2 groups for service processes: where the hierarchy is mounted, composenet's part of it,
and the group operations (make, join before exec, list, kill every member, wait until empty,
remove). Without a cgroup v2 hierarchy, the fallback: an environment marker every service
process carries, found again through /proc.

Layout under the cgroup v2 mount (``/sys/fs/cgroup`` on a systemd host, ``/sys/fs/cgroup/unified``
on a hybrid one)::

    composenet/h<mount ns>-<net ns>/<project>/supervisor       the project's supervisor
    composenet/h<mount ns>-<net ns>/<project>/c-<container>    a service's processes

The host part tells apart the composenet "hosts" that share one cgroup tree and one pid
namespace (test sandboxes, containers): the mount and network namespace composenet runs in,
which is also where the project's namespaces and links are. Processes live only in the leaves
(no controller is enabled anywhere, but the "no internal processes" rule would forbid it
otherwise). Every name below the host part is free of dots, so it can never be taken for one of
the cgroup's own files (``cgroup.procs``, ``memory.max``).

The fallback marker is ``COMPOSENET_MARK=<host>/<project>/<container>`` in the environment of a
service process (inherited by its children unless they clear it), read back from
/proc/<pid>/environ; with the mount namespace compared too, it is never taken for another
host's process.

Must not: know what a project or a container is beyond its name, or signal anything but the
members of a group (or the holders of a marker) it was asked about.
"""

from __future__ import annotations

import errno
import os
import signal
import time

ROOT = "composenet"
MARK_ENV = "COMPOSENET_MARK"
SUPERVISOR = "supervisor"
KILL_TIMEOUT = 5.0

_mount: list[str | None] = []


def mount_point(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The cgroup v2 mount point (``/sys/fs/cgroup`` if mounted there, else the first one, e.g.
    ``/sys/fs/cgroup/unified`` on a hybrid host), or None when there is none (cached)."""
    if _mount:
        return _mount[0]
    found: list[str] = []
    try:
        with open(mountinfo) as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                if post.split(" ", 1)[0] == "cgroup2":
                    found.append(pre.split()[4])
    except OSError:
        pass
    mp = "/sys/fs/cgroup" if "/sys/fs/cgroup" in found else (found[0] if found else None)
    if mp is not None and not os.access(mp, os.W_OK):
        mp = None
    _mount.append(mp)
    return mp


def host_id() -> str:
    """This composenet host: its mount and network namespaces."""
    return f"h{os.stat('/proc/self/ns/mnt').st_ino}-{os.stat('/proc/thread-self/ns/net').st_ino}"


def project_path(project: str) -> str | None:
    """The project's group (not created here), or None without cgroup v2."""
    mp = mount_point()
    return None if mp is None else os.path.join(mp, ROOT, host_id(), project)


def leaf(project: str, container: str) -> str | None:
    p = project_path(project)
    return None if p is None else os.path.join(p, f"c-{container}")


def supervisor_path(project: str) -> str | None:
    p = project_path(project)
    return None if p is None else os.path.join(p, SUPERVISOR)


def mark(project: str, container: str) -> str:
    """The fallback marker's value for a container of ``project``."""
    return f"{host_id()}/{project}/{container}"


# ---- groups ---------------------------------------------------------------------------------


def make(path: str) -> None:
    """Make the group and its parents. A parent another project's `down` prunes at the same
    moment (see prune) is made again: bounded retries."""
    for attempt in range(3):
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == 2:
                raise


def open_procs(path: str) -> int:
    """An fd on the group's cgroup.procs (close-on-exec): a child writes "0" to it to join the
    group before exec (``join``). The group is made if missing."""
    make(path)
    return os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)


def join(procs_fd: int) -> None:
    """Move the calling process into the group of ``procs_fd`` (see open_procs)."""
    os.write(procs_fd, b"0")


def join_path(path: str) -> None:
    fd = open_procs(path)
    try:
        join(fd)
    finally:
        os.close(fd)


def members(path: str) -> list[int]:
    """Pids in the group and every group below it ([] if it does not exist)."""
    out: list[int] = []
    for dirpath, _dirs, _files in os.walk(path):
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                out += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(out))


def populated(path: str) -> bool:
    """True while a process lives in the group or below it (False if it does not exist)."""
    try:
        with open(os.path.join(path, "cgroup.events")) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == "populated":
                    return v.strip() == "1"
    except OSError:
        return False
    return bool(members(path))


def kill(path: str, exclude: int = 0) -> None:
    """SIGKILL every process of the group and below (``cgroup.kill``: also those forked while
    it runs). ``exclude``: a pid to spare (the caller, when it is a member); then, or on a
    kernel without cgroup.kill, each member is killed by pid."""
    if not os.path.isdir(path):
        return
    if not exclude:
        try:
            with open(os.path.join(path, "cgroup.kill"), "w") as f:
                f.write("1")
            return
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EINVAL, errno.EACCES):
                raise
    for _ in range(20):  # bounded: members may fork while we kill
        pids = [p for p in members(path) if p != exclude]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def signal_members(path: str, sig: int) -> None:
    for pid in members(path):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_empty(path: str, timeout: float = KILL_TIMEOUT, exclude: int = 0) -> bool:
    """Wait (bounded) until no process but ``exclude`` is left in the group."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        left = [p for p in members(path) if p != exclude] if exclude else ([1] if populated(path) else [])
        if not left:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def remove(path: str) -> bool:
    """Remove the group and the groups below it (they must be empty); True when gone."""
    if not os.path.isdir(path):
        return True
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return not os.path.isdir(path)


def prune(path: str) -> None:
    """Remove ``path``'s empty parent groups up to composenet's root (other projects' and other
    hosts' keep theirs)."""
    mp = mount_point()
    if mp is None:
        return
    top = os.path.join(mp, ROOT)
    d = os.path.dirname(path)
    while d.startswith(top) and len(d) >= len(top):
        try:
            os.rmdir(d)
        except OSError:
            return
        d = os.path.dirname(d)


# ---- the fallback marker ------------------------------------------------------------------------


def marked(prefix: str) -> list[int]:
    """Pids whose environment holds ``COMPOSENET_MARK=<prefix>...`` and that run in this mount
    namespace (so never another host's), zombies excluded."""
    want = f"{MARK_ENV}={prefix}".encode()
    try:
        mine = os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return []
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.stat(f"/proc/{d}/ns/mnt").st_ino != mine:
                continue
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{d}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X") and any(v.startswith(want) for v in env.split(b"\0")):
            out.append(int(d))
    return out
