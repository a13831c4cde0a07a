"""Errors users see. Each carries a kind, a message, a location and a hint; never a traceback.

Exit codes (cli): 0 ok, 1 error, 2 kept for "plan has changes" (--detailed-exitcode).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located problem in the input: ``FILE:LINE:COL: key.path: message (hint: ...)``."""

    message: str
    file: str | None = None
    line: int | None = None
    col: int | None = None
    path: str | None = None  # key path, e.g. services.web.ports[1]
    hint: str | None = None
    rule: str | None = None  # Compose spec rule id, e.g. CS-NET-07

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.col is not None:
                    where += f":{self.col}"
            where += ": "
        text = where + (f"{self.path}: " if self.path else "") + self.message
        if self.rule:
            text += f" [{self.rule}]"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class ComposenetError(Exception):
    """Base error. ``kind`` groups errors (input, kernel, lock, plan); ``hint`` says what to do."""

    kind = "error"

    def __init__(self, message: str, hint: str | None = None, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class InputError(ComposenetError):
    """The compose input is invalid: carries every problem found in one run."""

    kind = "input"

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return self.message


class KernelError(ComposenetError):
    """A kernel operation failed. Names the step and the kernel's message."""

    kind = "kernel"


class LockError(ComposenetError):
    kind = "lock"


class PlanError(ComposenetError):
    """The plan cannot be built or applied (cycle, stale saved plan, ...)."""

    kind = "plan"
