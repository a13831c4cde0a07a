"""Restart policies of service processes, as Compose and Docker define them. Pure.

``restart``: ``"no"`` (never; the default), ``always`` (whatever the exit code), ``on-failure``
or ``on-failure:N`` (when the exit code is not 0; at most N restarts, i.e. N + 1 runs, as
Docker counts), ``unless-stopped`` (as ``always`` here: it differs from ``always`` only across
a daemon restart after `docker stop`, and composenet has no `stop`; a supervisor that is gone
restarts nothing, and `up` starts what is not running).

Backoff, as Docker: the n-th restart in a row waits 0.1 s x 2^(n-1), at most 60 s; a run that
lasted ``RESET_AFTER`` seconds or more starts the series again.

Must not: know about processes or time sources (the daemon asks with the numbers it has).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0
MODES = ("no", "always", "on-failure", "unless-stopped")
_SYNTAX = re.compile(r"^(no|always|unless-stopped|on-failure(?::([0-9]+))?)$")


@dataclass(frozen=True)
class Policy:
    mode: str = "no"
    max_retries: int | None = None  # on-failure:N

    def __str__(self) -> str:
        return f"{self.mode}:{self.max_retries}" if self.max_retries is not None else self.mode

    def restarts(self, exit_code: int, restarts: int) -> bool:
        """Whether a process that exited with ``exit_code``, after ``restarts`` restarts in a row
        already, is started again."""
        if self.mode in ("always", "unless-stopped"):
            return True
        if self.mode == "on-failure":
            return exit_code != 0 and (self.max_retries is None or restarts < self.max_retries)
        return False


def parse(text: str | None) -> Policy:
    """``no`` | ``always`` | ``on-failure[:N]`` | ``unless-stopped`` (None: ``no``); ValueError
    with the accepted forms otherwise."""
    if text is None:
        return Policy()
    m = _SYNTAX.match(text.strip())
    if not m:
        raise ValueError(f"restart policy {text!r} is not one of \"no\", always, on-failure[:N], unless-stopped")
    if m.group(1).startswith("on-failure"):
        return Policy("on-failure", int(m.group(2)) if m.group(2) is not None else None)
    return Policy(m.group(1))


def delay(restarts: int) -> float:
    """Seconds to wait before restart number ``restarts`` (1-based) of a series."""
    return min(MAX_DELAY, FIRST_DELAY * 2 ** max(0, restarts - 1))
