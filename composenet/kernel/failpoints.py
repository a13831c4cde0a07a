"""Failpoints at step granularity (composenet.linux.failpoint): when a test armed them, every
handler of the run is wrapped so that each create, update, delete and flush it finishes, and each
check it hands the executor, counts as one operation. The operations inside a step (a link made
but not yet labelled, a process started but not yet recorded, ...) are counted where they happen.

Must not: change what a handler does, or be in effect when no failpoint is armed (then
``wrap`` returns the handlers as they are).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from composenet.core.plan import Plan
from composenet.core.resources import Resource
from composenet.core.state import ObservedState
from composenet.kernel.context import Context, Handler
from composenet.linux import failpoint


class Counted:
    """A handler whose finished operations are failpoints."""

    def __init__(self, inner: Handler):
        self.inner = inner
        self.kinds = inner.kinds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _counting(self, ctx: Context, op: str, call: Callable[[], None]) -> None:
        before = len(ctx.deferred) if ctx.deferred is not None else 0
        call()
        if ctx.deferred is not None:  # checks handed over by this call count when they finish
            for i in range(before, len(ctx.deferred)):
                ctx.deferred[i] = _counted_check(ctx.deferred[i], f"finish {op}")
        failpoint.hit(op)

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        self.inner.observe(ctx, observed)

    def check(self, ctx: Context, plan: Plan) -> None:
        self.inner.check(ctx, plan)

    def create(self, ctx: Context, r: Resource) -> None:
        self._counting(ctx, f"create {r.key}", lambda: self.inner.create(ctx, r))

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        self._counting(ctx, f"update {after.key}", lambda: self.inner.update(ctx, before, after))

    def delete(self, ctx: Context, r: Resource) -> None:
        self._counting(ctx, f"delete {r.key}", lambda: self.inner.delete(ctx, r))

    def flush(self, ctx: Context) -> None:
        self.inner.flush(ctx)
        failpoint.hit(f"flush {','.join(self.kinds)}")


def _counted_check(check: Callable[[], None], op: str) -> Callable[[], None]:
    def run() -> None:
        check()
        failpoint.hit(op)
    return run


def wrap(handlers: Iterable[Handler]) -> list[Handler]:
    """``handlers``, each wrapped in Counted when a failpoint is armed."""
    hs = list(handlers)
    return [Counted(h) for h in hs] if failpoint.active() else hs
