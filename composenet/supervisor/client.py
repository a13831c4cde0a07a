"""Talking to a project's supervisor from outside it (composenet.kernel.processes, `ps`): its
pidfile and whether it is the live supervisor, the state files of the services, and requests
over its socket.

A request is one JSON object on one line, the answer too: ``{"op": "start", "container": C}``,
``{"op": "stop", "container": C}``, ``{"op": "ports"}`` (hold what supervisor-ports.json lists
now), ``{"op": "exit"}``. Answers carry ``"ok"`` and, when false, ``"error"``.

Must not: start, signal or stop a supervisor (kernel.processes does), or change its files.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from composenet.linux import proc
from composenet.supervisor import MODULE, PIDFILE, SOCKET, STATES


class SupervisorError(OSError):
    """The supervisor could not be reached, or did not answer in time."""


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pidfile(root: str) -> str:
    return os.path.join(root, PIDFILE)


def live(root: str) -> dict[str, Any] | None:
    """The pidfile of the project's supervisor when it is alive: the pid runs, started at the
    recorded time (not a reused pid), not a zombie, and runs this module on this directory."""
    rec = read_json(pidfile(root))
    if rec is None:
        return None
    try:
        pid, start = int(rec["pid"]), int(rec["starttime"])
    except (KeyError, TypeError, ValueError):
        return None
    if not proc.alive(pid, start):
        return None
    args = proc.argv(pid) or []
    if MODULE.encode() not in args or os.path.abspath(root).encode() not in args:
        return None
    return rec


def states(root: str) -> dict[str, dict[str, Any]]:
    """The state of every service the supervisor manages (or managed, when it died), by container."""
    d = os.path.join(root, STATES)
    try:
        names = sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for n in names:
        if n.endswith(".json") and not n.startswith("."):
            rec = read_json(os.path.join(d, n))
            if rec is not None:
                out[str(rec.get("container", n[:-5]))] = rec
    return out


def socket_path(root: str, dirfd: int) -> str:
    """The socket's path through ``dirfd`` (an fd on ``root``) when the real one is longer than
    a unix socket address may be (108 bytes)."""
    real = os.path.join(root, SOCKET)
    return real if len(real.encode()) < 100 else f"/proc/self/fd/{dirfd}/{SOCKET}"


def request(root: str, msg: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send ``msg``; the answer. SupervisorError when the supervisor cannot be reached or does
    not answer within ``timeout`` seconds."""
    dirfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        s.connect(socket_path(root, dirfd))
        s.sendall(json.dumps(msg).encode() + b"\n")
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            s.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise SupervisorError(e.errno or 0, f"the supervisor does not answer ({e.strerror or e})") from None
    finally:
        s.close()
        os.close(dirfd)
    try:
        answer = json.loads(data)
    except ValueError:
        raise SupervisorError(0, "the supervisor closed the connection without an answer") from None
    return answer if isinstance(answer, dict) else {"ok": False, "error": "malformed answer"}
