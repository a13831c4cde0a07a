"""Small file primitives every layer that keeps files uses: atomic replacement, create-if-missing,
and reading a JSON object leniently. No knowledge of what the files mean.
"""

from __future__ import annotations

import json
import os
from typing import Any


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


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON object in file ``path``; None when it cannot be read or is not an object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def tail_lines(path: str, n: int, window: int = 8192) -> list[str]:
    """The last ``n`` lines of the file's last ``window`` bytes (a log), [] when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - window))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    return lines[-n:]
