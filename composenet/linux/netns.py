"""Network namespaces without fork or `ip`: create, delete, enter, and the mount-namespace check.

Owns: the libc calls (setns, unshare, mount, umount2, sethostname: composenet.linux.spawn makes
them through ``libc`` and ``check`` here too) and the /run/netns layout that ``ip netns`` shares
(a bind mount of a namespace file on /run/netns/<name>, /run/netns itself a shared mount point so
the bind mounts propagate to every mount namespace), including the "dead" files a crash leaves
there (a plain file where no namespace is mounted: ``file_state``; removed by ``create`` and
``delete``).

Must not: talk netlink (composenet.kernel does), know about resources or projects, or leave the
calling thread in another namespace: every function that enters a namespace returns to the
thread's own namespace before it returns, also on errors.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from composenet.errors import ComposenetError
from composenet.linux import failpoint
from composenet.paths import NETNS_DIR, netns_path

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0

# The libc functions composenet calls (also composenet.procs, in the child before exec).
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
libc.unshare.argtypes = [ctypes.c_int]
libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

_run_netns_ready = False


def check(rc: int, what: str) -> None:
    """Raise OSError (errno and ``what``) when a libc call returned non-zero."""
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace ``fd`` refers to (Python 3.11 has no
    os.setns). The network namespace is per thread, so other threads are not affected."""
    check(libc.setns(fd, CLONE_NEWNET), "setns")


def is_netns(path: str) -> bool:
    """True if ``path`` is a namespace file bind-mounted in place (what `ip netns add` leaves),
    not a plain file left by a crash: namespace files live on nsfs, whose device differs from
    the file system of /run."""
    return file_state(path) == "live"


def file_state(path: str) -> str:
    """``live`` (a namespace is mounted there), ``dead`` (a plain file: what a crash between
    creating the file and mounting on it, or between unmounting and unlinking it, leaves;
    setns on it fails with EINVAL) or ``missing``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "dead"
    try:
        nsfs = os.stat("/proc/self/ns/net").st_dev
    except OSError:  # pragma: no cover - /proc is always there where composenet runs
        return "dead"
    return "live" if st.st_dev == nsfs else "dead"


def open_netns(name: str) -> int:
    """An O_RDONLY fd on the namespace; the caller closes it (an open fd keeps the namespace alive)."""
    return os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside namespace ``name`` ("" = stay where we are).

    Used for what is bound to the namespace of the thread that creates it: netlink sockets and
    files opened under /proc/sys/net."""
    if not name:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = open_netns(name)
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _return_home(home)
    finally:
        os.close(home)


def _return_home(home: int) -> None:
    try:
        setns(home)
    except OSError as e:  # pragma: no cover - setns to an fd we hold does not fail in practice
        # Going on in the wrong namespace would change the wrong kernel state: stop here.
        os.write(2, f"composenet: cannot return to its own network namespace: {e}\n".encode())
        os._exit(70)


def netlink_socket() -> socket.socket:
    """A NETLINK_ROUTE socket in the calling thread's current network namespace."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)


def socket_in(name: str) -> socket.socket:
    """A NETLINK_ROUTE socket bound for life to namespace ``name`` ("" = the current one):
    a socket belongs to the namespace it was created in, so enter, create, return."""
    with entered(name):
        return netlink_socket()


def _ensure_run_netns() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so the bind mounts made
    below propagate to every mount namespace (and `ip netns exec` sees them)."""
    global _run_netns_ready
    if _run_netns_ready:
        return
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    d = NETNS_DIR.encode()
    if libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
        if ctypes.get_errno() != errno.EINVAL:
            check(-1, f"make {NETNS_DIR} shared")
        # Not a mount point yet: bind it onto itself, then make it shared.
        check(libc.mount(d, d, b"none", MS_BIND | MS_REC, None), f"bind {NETNS_DIR}")
        check(libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None), f"make {NETNS_DIR} shared")
    _run_netns_ready = True


def create(name: str, prepare: Callable[[socket.socket], None] | None = None) -> socket.socket:
    """Create namespace ``name`` at /run/netns/<name> and return a netlink socket inside it.

    Like `ip netns add`, without fork: the calling thread unshares a new network namespace,
    opens the socket there, lets ``prepare(sock)`` set the namespace up (lo up) while nothing
    else can see it, bind-mounts its own namespace file onto /run/netns/<name> and returns to its
    original namespace. So a namespace is either not visible at all or fully prepared: a crash
    before the mount frees it with the thread, and leaves at most a plain (dead) file.

    A dead file left at the path by a crash is removed first (the caller holds the project's
    lock, and the name is the project's); a mounted namespace there is an error
    (FileExistsError)."""
    _ensure_run_netns()
    path = netns_path(name)
    for _ in range(2):
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
            break
        except FileExistsError:
            if file_state(path) == "live":
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path) from None
            _remove_file(path)  # dead: a crash left it; nothing can enter it
    else:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
    failpoint.hit(f"netns file {name}")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            check(libc.unshare(CLONE_NEWNET), "unshare")
        except OSError:
            _unlink(path)
            raise
        sock: socket.socket | None = None
        mounted = False
        try:
            sock = netlink_socket()
            if prepare is not None:
                prepare(sock)
            check(libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                  f"bind-mount {path}")
            mounted = True
        except BaseException:
            if sock is not None:
                sock.close()
                sock = None
            raise
        finally:
            _return_home(home)
            if sock is None:  # undo: nothing half-made stays behind
                if mounted:
                    libc.umount2(path.encode(), MNT_DETACH)
                _unlink(path)
        return sock
    finally:
        os.close(home)


def delete(name: str) -> None:
    """Remove /run/netns/<name>: unmount every namespace mounted there (a retry that mounted
    again stacks mounts; only the top one is visible), then unlink the file. The kernel destroys
    the namespace, and the veth peers and macvlans in it, once nothing else holds it
    (asynchronously). A dead file (see file_state) is just unlinked."""
    _remove_file(netns_path(name))


def _remove_file(path: str) -> None:
    for _ in range(64):  # bounded: each round removes one stacked mount
        if libc.umount2(path.encode(), MNT_DETACH) != 0:
            if ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
                check(-1, f"umount {path}")
            break
        failpoint.hit(f"netns umount {os.path.basename(path)}")
    _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


ALLOW_PRIVATE_MOUNTNS = "COMPOSENET_ALLOW_PRIVATE_MOUNTNS"


def check_mount_namespace() -> None:
    """Refuse to run in a private mount namespace (e.g. under `ip netns exec`): the namespaces
    composenet bind-mounts under /run/netns would exist only there and vanish on exit, leaving
    links and processes nobody can find.

    Override with COMPOSENET_ALLOW_PRIVATE_MOUNTNS=1 when the mount namespace is meant to stay:
    a simulated host (tests/integration/cluster_lab.py) is a process holding its own network and
    mount namespaces, with private /run/netns, /run/composenet and /etc/netns, so that several
    hosts run one project name on one machine; everything composenet creates there lives as long
    as the holder."""
    if os.environ.get(ALLOW_PRIVATE_MOUNTNS) == "1":
        return
    try:
        mine = os.readlink("/proc/self/ns/mnt")
        init = os.readlink("/proc/1/ns/mnt")
        private = mine != init
        detail = f"{mine}, PID 1 has {init}"
    except OSError:
        # PID 1's namespace is not readable (some sandboxes deny it): judge by propagation.
        # /run/netns is a shared mount where namespaces are made to be seen everywhere; in a
        # mount namespace of its own (`ip netns exec`: slave, `unshare -m`: private) it is not.
        private = _run_netns_propagation() not in (None, "shared")
        detail = f"{NETNS_DIR} is not a shared mount here"
    if private:
        raise ComposenetError(
            f"composenet runs in a private mount namespace ({detail}): the network "
            f"namespaces it creates under {NETNS_DIR} would vanish when it exits",
            hint="run it directly or with `nsenter --net=/run/netns/NAME`, not under `ip netns exec`; "
            f"set {ALLOW_PRIVATE_MOUNTNS}=1 if this mount namespace is meant to stay (a simulated host: "
            "see tests/integration/cluster_lab.py)",
        )


def _run_netns_propagation() -> str | None:
    """"shared", "slave" or "private" for the /run/netns mount point; None if it is not one."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(" - ", 1)[0].split()
        if len(fields) >= 5 and fields[4] == NETNS_DIR:
            tags = fields[6:]
            if any(t.startswith("shared:") for t in tags):
                return "shared"
            return "slave" if any(t.startswith("master:") for t in tags) else "private"
    return None
