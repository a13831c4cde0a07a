"""Failpoints for the crash tests: composenet kills itself with SIGKILL right after its k-th
kernel or process operation, as a power cut or an OOM kill would, so that the tests can prove
that every point of `up` and `down` leaves a state the next run converges from.

Only the test harness sets the variables, and they are read once, at import, and removed from
the environment, so the daemons composenet starts (resolver, supervisor) never inherit them:

    COMPOSENET_FAILPOINT=k               SIGKILL right after operation number k (1-based)
    COMPOSENET_FAILPOINT_TRACE=FILE      append "n operation" for every operation (discovery)

An operation is one call of ``hit`` (a namespace made, a link created, its label written, a
handler step finished, a process started, ...): the code calls it right after each change that
a crash could separate from the next one. SIGKILL (not an exception, not ``os._exit``): nothing
runs afterwards, no ``finally``, no buffered output is written, exactly as in a real crash.

Must not: change anything, or be enabled by anything but the two variables.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "COMPOSENET_FAILPOINT"
TRACE_ENV = "COMPOSENET_FAILPOINT_TRACE"


def _target(text: str | None) -> int:
    try:
        return max(0, int(text or "0"))
    except ValueError:
        return 0


_TARGET = _target(os.environ.pop(ENV, None))
_TRACE = os.environ.pop(TRACE_ENV, None) or None
_count = 0


def active() -> bool:
    """True when a test armed a failpoint or asked for the trace."""
    return bool(_TARGET or _TRACE)


def hit(op: str) -> None:
    """One operation has just been done: counted, traced, and the process killed if it is the
    k-th. A no-op (one comparison) when no failpoint is armed."""
    global _count
    if not _TARGET and not _TRACE:
        return
    _count += 1
    if _TRACE:
        with open(_TRACE, "a") as f:
            f.write(f"{_count} {op}\n")
    if _count == _TARGET:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
