"""Executor: run a Plan's steps through the per-kind handlers, journaled with their inverses.

On failure the journal is rolled back in reverse and the error names the failed step and the
kernel's message. Everything is validated before the first step (the caller builds the plan from
a validated project, and checks the ruleset with ``nft -c``).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from composenet.core.plan import Action, Plan, Step
from composenet.core.resources import Address, Netns, Resource
from composenet.errors import ComposenetError, KernelError
from composenet.kernel.context import Context

Progress = Callable[[int, int, str], None]
_DEFER_KEY = "apply.deferred"


def _execution_order(plan: Plan) -> list[tuple[int, Step]]:
    """The plan's steps (numbered from 1) in the order they run: the plan's order, except that
    starting the resolver moves up to right after the last step it needs (the bridges and
    their gateway addresses, which it binds to, and the namespaces it listens in), so that its
    start-up (a Python process, ~0.1 s) overlaps the containers' steps instead of ending the run. Services still start
    after it answers (apply waits for it before the first process step)."""
    steps = list(enumerate(plan.steps, start=1))
    r = next((i for i, (_n, s) in enumerate(steps) if s.change.kind == "resolver"
              and s.change.action in (Action.create, Action.replace)), None)
    if r is None:
        return steps
    # A listener inside a container's namespace (``network=address@namespace``) needs the namespace.
    resolver = steps[r][1].change.after
    in_ns = {li.rpartition("@")[2] for li in getattr(resolver, "listeners", ()) if "@" in li}
    needs = [i for i, (_n, s) in enumerate(steps[:r]) if s.change.action != Action.delete
             and (s.change.kind == "bridge" or (isinstance(s.change.after, Address) and not s.change.after.ns)
                  or (isinstance(s.change.after, Netns) and s.change.after.name in in_ns))]
    first_create = next((i for i, (_n, s) in enumerate(steps) if s.change.action != Action.delete), r)
    at = max([first_create - 1, *needs]) + 1
    if at >= r:
        return steps
    return [*steps[:at], steps[r], *steps[at:r], *steps[r + 1 :]]


def defer(ctx: Context, check: Callable[[], None]) -> bool:
    """For a handler whose create started something that becomes ready on its own (the
    resolver daemon): hand the executor the ``check`` that waits for it and raises KernelError
    if it failed. The executor runs it before the next service process starts and before the
    plan ends, and counts a failure as one of the step that deferred it (rolled back like any
    other). Returns False outside the executor: then the caller checks at once."""
    pending = ctx.cache.get(_DEFER_KEY)
    if pending is None:
        return False
    pending.append(check)
    return True


def apply(ctx: Context, plan: Plan, implied: set[str] | None = None, progress: Progress | None = None) -> None:
    from composenet.core.render import describe
    from composenet.kernel.observe import handler_for

    implied = implied or set()
    journal: list[tuple[str, Resource, Resource | None]] = []  # (undo action, resource, previous)
    total = len(plan.steps)
    kill_after = int(os.environ.get("COMPOSENET_TEST_KILL_AFTER_STEP", "0") or 0)
    deferred: list[Callable[[], None]] = []  # what handlers hand over through defer()
    pending: list[tuple[int, Callable[[], None]]] = []  # (step that deferred it, check)

    def fail(n: int, e: Exception) -> KernelError:
        ctx.cache.pop(_DEFER_KEY, None)  # the rollback's own calls check at once
        pending.clear()  # what they waited for is stopped by the rollback
        c = plan.steps[n - 1].change
        msg = str(e) if isinstance(e, ComposenetError) else f"{type(e).__name__}: {e}"
        undone, failed = rollback(ctx, journal)
        detail = f"step {n}/{total} failed: {c.action.value} {describe(c.resource)}: {msg}"
        detail += f"\n  rolled back {undone} completed step(s)"
        if failed:
            detail += "; rollback failed for:\n    " + "\n    ".join(failed)
        return KernelError(detail, hint="nothing else was changed; fix the cause and run `composenet up` again")

    def wait_pending() -> None:
        while pending:
            n, check = pending.pop(0)
            try:
                check()
            except Exception as e:
                raise fail(n, e) from e

    ctx.cache[_DEFER_KEY] = deferred
    try:
        for n, step in _execution_order(plan):
            c = step.change
            if progress:
                progress(n, total, f"{c.action.symbol} {describe(c.resource)}")
            if c.key in implied:
                continue
            if c.kind == "process":
                wait_pending()  # a service starts with its resolver answering
            h = handler_for(c.kind)
            try:
                if c.action == Action.create:
                    assert c.after is not None
                    h.create(ctx, c.after)
                    journal.append(("delete", c.after, None))
                elif c.action == Action.delete:
                    assert c.before is not None
                    h.delete(ctx, c.before)
                    journal.append(("create", c.before, None))
                elif c.action == Action.update:
                    assert c.before is not None and c.after is not None
                    h.update(ctx, c.before, c.after)
                    journal.append(("update", c.after, c.before))
                else:
                    assert c.before is not None and c.after is not None
                    h.delete(ctx, c.before)
                    journal.append(("create", c.before, None))
                    h.create(ctx, c.after)
                    journal.append(("delete", c.after, None))
            except Exception as e:
                raise fail(n, e) from e
            pending += [(n, check) for check in deferred]
            deferred.clear()
            if kill_after and n == kill_after:  # test hook: crash convergence (kill after step k)
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        wait_pending()
    finally:
        ctx.cache.pop(_DEFER_KEY, None)


def rollback(ctx: Context, journal: list[tuple[str, Resource, Resource | None]]) -> tuple[int, list[str]]:
    from composenet.core.render import describe
    from composenet.kernel.observe import handler_for, handlers

    done = 0
    failed: list[str] = []
    # Batched deletes the handlers still owe (kernel: marked links) happen first, so that
    # re-creating one of them finds its name free.
    for h in handlers():
        flush = getattr(h, "flush", None)
        if flush is not None:
            try:
                flush(ctx)
            except Exception as e:  # noqa: BLE001 -- keep undoing; the creates below will say what is wrong
                failed.append(f"finish deletes: {e}")
    def undo(action: str, r: Resource, prev: Resource | None) -> None:
        h = handler_for(r.kind)
        if action == "delete":
            h.delete(ctx, r)
        elif action == "create":
            h.create(ctx, r)
        else:
            assert prev is not None
            h.update(ctx, r, prev)

    # An undo can need what a later one restores: the old default route of a service moved to
    # another network (its step ran after the address and veth steps) needs the old veth and
    # address back first. So what fails is tried once more after the others.
    retry: list[tuple[str, Resource, Resource | None]] = []
    for entry in reversed(journal):
        try:
            undo(*entry)
            done += 1
        except Exception:  # noqa: BLE001 -- keep undoing the rest; tried again below
            retry.append(entry)
    for entry in retry:
        try:
            undo(*entry)
            done += 1
        except Exception as e:  # report what could not be undone
            failed.append(f"{entry[0]} {describe(entry[1])}: {e}")
    return done, failed
