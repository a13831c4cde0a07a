"""The runtime directory ``<run_dir>/<project>/`` and the per-project lock.

Owns: atomic writes into the project's runtime directory, the exclusive lock that serialises
runs on one project, the host-wide subnet lock, and removing the directory after ``down``. Its
layout (file names) is composenet.paths'.

Must not: touch the kernel (namespaces, links, nft) or decide what is stale by itself: whether a
record still refers to something alive is asked of the module that owns that record.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from composenet.errors import LockError
from composenet.kernel.context import Context
from composenet.linux.netns import is_netns
from composenet.paths import FILES_RECORDS, IPAM_LOCK, NETNS_RECORDS, PROC_RECORDS, RECORD_DIRS, netns_path

LOCK_MESSAGE_AFTER = 1.0  # seconds before telling the user we are waiting
LOCK_POLL = 0.05


def project_dir(ctx: Context) -> str:
    return ctx.project_dir


def touch(path: str) -> None:
    """Create ``path`` empty if it does not exist (and its directory if missing)."""
    if os.path.exists(path):  # a stat is far cheaper than an open with O_CREAT
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, flags, 0o644)
    os.close(fd)


def ensure_project_dir(ctx: Context, *sub: str) -> str:
    """Create ``<run_dir>/<project>[/sub...]`` (mode 0755) and return its path."""
    path = os.path.join(ctx.project_dir, *sub)
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path


def atomic_write(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename,
    so readers see the old or the new content, never a partial one (not durable: no fsync)."""
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        try:
            fd = os.open(tmp, flags, mode)
        except FileNotFoundError:  # the directory first, only when missing: a mkdir per write
            os.makedirs(d, mode=0o755, exist_ok=True)  # costs as much as the write itself
            fd = os.open(tmp, flags, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not narrow it: processes of any user read it
            os.write(fd, text.encode())
            # No fsync: the rename alone makes the swap atomic for readers, and nothing written
            # here has to survive a power loss (namespaces and processes do not survive a reboot).
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _lock_holder(path: str) -> str:
    try:
        with open(path) as f:
            pid = f.read().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _wait_flock(fd: int, path: str, start: float, told: bool, timeout: float | None, message_after: float,
                say: Callable[[str], None], gave_up: Callable[[str], str], waiting: Callable[[str], str]) -> bool:
    """Take the exclusive flock on ``fd`` (the lock file ``path``), polling while another run holds
    it: LockError after ``timeout`` seconds since ``start`` (if given), ``say`` the ``waiting``
    message once after ``message_after`` seconds (not again when ``told``). ``gave_up`` and
    ``waiting`` make the messages from the holder's " (pid N)". Returns the new ``told``."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return told
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise LockError(f"cannot lock {path}: {e.strerror}") from None
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            raise LockError(gave_up(_lock_holder(path)), hint=f"wait for it to finish, or check {path}",
                            retryable=True)
        if not told and waited >= message_after:
            say(waiting(_lock_holder(path)))
            told = True
        time.sleep(LOCK_POLL)


@contextmanager
def _holding(fd: int) -> Iterator[None]:
    """The body, with our pid in the locked file ``fd`` (emptied again afterwards)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    try:
        yield
    finally:
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass


@contextmanager
def project_lock(ctx: Context, echo: Callable[[str], None] | None = None,
                 message_after: float = LOCK_MESSAGE_AFTER, timeout: float | None = None) -> Iterator[None]:
    """Hold the project's exclusive lock for the body: runs on one project are serialised.

    Waits as long as the other run takes (its ``timeout`` seconds, if given: then LockError),
    saying so on stderr after ``message_after`` seconds. The lock file may be removed by
    ``remove_project_dir`` while held (after ``down``); a waiter that then gets the lock on the
    removed file notices (its inode is no longer the path's) and locks the new file instead, so
    two runs never both hold "the" lock."""
    say = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    start = time.monotonic()
    told = False
    while True:
        ensure_project_dir(ctx)
        path = ctx.paths.lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            told = _wait_flock(
                fd, path, start, told, timeout, message_after, say,
                gave_up=lambda holder: (f"another composenet run holds the lock of project {ctx.project}"
                                        f"{holder}; gave up after {timeout:g} s"),
                waiting=lambda holder: f"waiting for another composenet run on project {ctx.project}{holder}")
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # removed (or replaced) while we waited: lock the current file
                os.close(fd)
                fd = -1
                continue
            with _holding(fd):
                yield
            return
        finally:
            if fd >= 0:
                os.close(fd)  # closing the last fd releases the flock


@contextmanager
def ipam_lock(ctx: Context, echo: Callable[[str], None] | None = None,
              message_after: float = LOCK_MESSAGE_AFTER, timeout: float | None = None) -> Iterator[None]:
    """Hold the host-wide address lock ``<run_dir>/.ipam.lock`` for the body.

    `up` holds it from observing the host's subnets until its bridges carry their addresses
    (the whole run), so two projects brought up at once never pick the same automatic subnet.
    Take it after the project lock (never the other way round): `down` takes only the project
    lock, so no two runs can wait for each other. The file is never removed."""
    say = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    os.makedirs(ctx.run_dir, mode=0o755, exist_ok=True)
    path = os.path.join(ctx.run_dir, IPAM_LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _wait_flock(
            fd, path, time.monotonic(), False, timeout, message_after, say,
            gave_up=lambda holder: f"another composenet run{holder} is choosing subnets; gave up after {timeout:g} s",
            waiting=lambda holder: f"waiting for another composenet run{holder} to choose its subnets")
        with _holding(fd):
            yield
    finally:
        os.close(fd)  # releases the flock


def remove_project_dir(ctx: Context) -> list[str]:
    """After ``down``: remove the project's runtime directory, keeping only records that still
    refer to something alive (a namespace still mounted, /etc/netns files still there, a process
    or resolver still running), so a later ``down`` finds them. Returns what was kept (empty when
    the directory is gone).

    Logs, the lock, the applied-state record and any other bookkeeping go: after ``down`` nothing
    of the project is left. Called with the lock held: see project_lock for why that is safe."""
    from composenet.kernel import files, processes, resolver

    root = ctx.project_dir
    if not os.path.isdir(root):
        return []
    live: set[str] = set()
    for path in _record_paths(ctx):
        if _record_is_live(ctx, path, files, processes):
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


def _record_paths(ctx: Context) -> list[str]:
    out = []
    for sub in RECORD_DIRS:
        d = ctx.paths / sub
        try:
            out += [os.path.join(d, n) for n in os.listdir(d) if not n.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            pass
    return out


def _record_is_live(ctx: Context, path: str, files, processes) -> bool:  # type: ignore[no-untyped-def]
    sub, name = os.path.basename(os.path.dirname(path)), os.path.basename(path)
    if sub == NETNS_RECORDS:
        return is_netns(netns_path(name))
    if sub == FILES_RECORDS:
        return files.has_files(name)
    if sub == PROC_RECORDS:
        return processes.record_alive(path)
    return False
