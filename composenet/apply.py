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

from composenet.errors import ComposenetError, KernelError
from composenet.handlers import Context
from composenet.plan import Action, Plan
from composenet.resources import Resource

Progress = Callable[[int, int, str], None]


def apply(ctx: Context, plan: Plan, implied: set[str] | None = None, progress: Progress | None = None) -> None:
    from composenet.observe import handler_for
    from composenet.render import describe

    implied = implied or set()
    journal: list[tuple[str, Resource, Resource | None]] = []  # (undo action, resource, previous)
    total = len(plan.steps)
    kill_after = int(os.environ.get("COMPOSENET_TEST_KILL_AFTER_STEP", "0") or 0)
    for n, step in enumerate(plan.steps, start=1):
        c = step.change
        if progress:
            progress(n, total, f"{c.action.symbol} {describe(c.resource)}")
        if c.key in implied:
            continue
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
            msg = str(e) if isinstance(e, ComposenetError) else f"{type(e).__name__}: {e}"
            undone, failed = rollback(ctx, journal)
            detail = f"step {n}/{total} failed: {c.action.value} {describe(c.resource)}: {msg}"
            detail += f"\n  rolled back {undone} completed step(s)"
            if failed:
                detail += "; rollback failed for:\n    " + "\n    ".join(failed)
            raise KernelError(detail, hint="nothing else was changed; fix the cause and run `composenet up` again") from e
        if kill_after and n == kill_after:  # test hook: crash convergence (kill after step k)
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def rollback(ctx: Context, journal: list[tuple[str, Resource, Resource | None]]) -> tuple[int, list[str]]:
    from composenet.observe import handler_for
    from composenet.render import describe

    done = 0
    failed: list[str] = []
    for action, r, prev in reversed(journal):
        h = handler_for(r.kind)
        try:
            if action == "delete":
                h.delete(ctx, r)
            elif action == "create":
                h.create(ctx, r)
            else:
                assert prev is not None
                h.update(ctx, r, prev)
            done += 1
        except Exception as e:  # keep undoing the rest; report what could not be undone
            failed.append(f"{action} {describe(r)}: {e}")
    return done, failed
