"""The locks of the run directory: the per-project lock that serialises runs on one project, and
the host-wide subnet lock that `up` holds while it chooses and assigns subnets.

Must not: touch the kernel (namespaces, links, nft) or anything in the run directory but the lock
files. The layout (file names) is composenet.paths'; removing a project's directory after
``down`` is kernel.cleanup's.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from composenet.errors import LockError
from composenet.kernel.context import Context
from composenet.paths import IPAM_LOCK

LOCK_MESSAGE_AFTER = 1.0  # seconds before telling the user we are waiting
LOCK_POLL = 0.05




def ensure_project_dir(ctx: Context, *sub: str) -> str:
    """Create ``<run_dir>/<project>[/sub...]`` (mode 0755) and return its path."""
    path = os.path.join(ctx.project_dir, *sub)
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path




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
