"""Executor: run a Plan's steps through a run's handlers, journaled with their inverses.

On failure the journal is rolled back in reverse and the error names the failed step and the
kernel's message. Everything is validated before the first step (the caller builds the plan from
a validated project, and checks the ruleset with ``nft -c``). The handlers are an argument
(``kernel.handlers.default_handlers()`` in a real run): the journal, the rollback and the deferred
checks are tested with fake handlers, without root.

Must not: know what a resource kind means (the handlers do), or decide what to change (the plan
does).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from composenet.core.plan import Action, Plan, Step
from composenet.core.render import describe
from composenet.core.resources import Address, Netns, Resource, Route
from composenet.errors import ComposenetError, KernelError
from composenet.kernel.context import Context, Handlers

Progress = Callable[[int, int, str], None]
Journal = list[tuple[str, Resource, Resource | None]]  # (undo action, resource, previous)
KILL_AFTER_STEP = "COMPOSENET_TEST_KILL_AFTER_STEP"  # test hook: SIGKILL ourselves after step k


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


def _run_step(ctx: Context, handlers: Handlers, step: Step, journal: Journal) -> None:
    """One step through its handler; what it finished goes into ``journal`` with its inverse."""
    c = step.change
    h = handlers.for_kind(c.kind)
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


def apply(ctx: Context, plan: Plan, handlers: Handlers, implied: set[str] | None = None,
          progress: Progress | None = None) -> None:
    """Run ``plan``'s steps (those in ``implied`` are done by the kernel itself and skipped) and
    the checks handlers defer; on any failure roll back what was done and raise KernelError."""
    implied = implied or set()
    journal: Journal = []
    total = len(plan.steps)
    kill_after = int(os.environ.get(KILL_AFTER_STEP, "0") or 0)
    deferred: list[Callable[[], None]] = []  # what handlers hand over through ctx.defer()
    pending: list[tuple[int, Callable[[], None]]] = []  # (step that deferred it, check)

    def fail(n: int, e: Exception) -> KernelError:
        ctx.deferred = None  # the rollback's own calls do their work at once
        pending.clear()  # what they waited for is stopped by the rollback
        c = plan.steps[n - 1].change
        msg = str(e) if isinstance(e, ComposenetError) else f"{type(e).__name__}: {e}"
        undone, failed = rollback(ctx, journal, handlers)
        failed += restore_implied(ctx, plan, handlers)
        left = verify_rollback(ctx, plan, handlers)
        detail = f"step {n}/{total} failed: {c.action.value} {describe(c.resource)}: {msg}"
        detail += f"\n  rolled back {undone} completed step(s)"
        if failed:
            detail += "; rollback failed for:\n    " + "\n    ".join(failed)
        if left:
            detail += "\n  the kernel is not as it was before this run:\n    " + "\n    ".join(left)
            return KernelError(detail, hint="run `composenet plan` to see what differs; `composenet up` with the "
                                            "previous compose file restores it")
        detail += "\n  the kernel was read back: it is as it was before this run"
        return KernelError(detail, hint="nothing else was changed; fix the cause and run `composenet up` again")

    def wait_pending() -> None:
        while pending:
            n, check = pending.pop(0)
            try:
                check()
            except Exception as e:
                raise fail(n, e) from e

    ctx.deferred = deferred
    try:
        for n, step in _execution_order(plan):
            c = step.change
            if progress:
                progress(n, total, f"{c.action.symbol} {describe(c.resource)}")
            if c.key in implied:
                # The kernel deletes it with its namespace; a rollback re-creates the namespace
                # and must put this back too (if it is gone by then: "restore", see rollback).
                if c.before is not None:
                    journal.append(("restore", c.before, None))
                continue
            if c.kind == "process":
                wait_pending()  # a service starts with its resolver answering
            try:
                _run_step(ctx, handlers, step, journal)
            except Exception as e:
                raise fail(n, e) from e
            pending += [(n, check) for check in deferred]
            deferred.clear()
            if kill_after and n == kill_after:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        wait_pending()
    finally:
        ctx.deferred = None


def rollback(ctx: Context, journal: Journal, handlers: Handlers) -> tuple[int, list[str]]:
    """Undo ``journal`` in reverse; returns (undone, descriptions of what could not be undone)."""
    done = 0
    failed: list[str] = []
    # Batched work the handlers still owe (kernel: deletes of marked links) happens first, so that
    # re-creating one of them finds its name free.
    for h in handlers:
        try:
            h.flush(ctx)
        except Exception as e:  # noqa: BLE001 -- keep undoing; the creates below will say what is wrong
            failed.append(f"finish deletes: {e}")

    def undo(action: str, r: Resource, prev: Resource | None) -> None:
        h = handlers.for_kind(r.kind)
        if action == "delete":
            h.delete(ctx, r)
        elif action == "create":
            h.create(ctx, r)
        elif action == "restore":  # what the kernel deleted by itself, if it did: the read-back says
            try:
                h.create(ctx, r)
            except Exception:  # noqa: BLE001 -- still there (the namespace was never deleted)
                pass
        else:
            assert prev is not None
            h.update(ctx, r, prev)

    # An undo can need what a later one restores: the old default route of a service moved to
    # another network (its step ran after the address and veth steps) needs the old veth and
    # address back first. So what fails is tried once more after the others.
    retry: Journal = []
    for entry in reversed(journal):
        try:
            undo(*entry)
            done += entry[0] != "restore"  # not a step that ran: the kernel's own delete
        except Exception:  # noqa: BLE001 -- keep undoing the rest; tried again below
            retry.append(entry)
    for entry in retry:
        try:
            undo(*entry)
            done += 1
        except Exception as e:  # report what could not be undone
            failed.append(f"{entry[0]} {describe(entry[1])}: {e}")
    return done, failed


def restore_implied(ctx: Context, plan: Plan, handlers: Handlers) -> list[str]:
    """After the journal is undone: put back what the kernel removed by itself while the steps
    ran, which no journal entry holds: every route the plan found in place (the kernel drops a
    route with its device or its link's last address, also when the step that would have
    re-added it never ran). Re-adding one that is there changes nothing (create-or-replace)."""
    failed: list[str] = []
    for s in plan.steps:
        r = s.change.before
        if not isinstance(r, Route):
            continue
        try:
            handlers.for_kind(r.kind).update(ctx, r, r)
        except Exception as e:  # noqa: BLE001 -- report it with the others
            failed.append(f"re-add {describe(r)}: {e}")
    return failed


def verify_rollback(ctx: Context, plan: Plan, handlers: Handlers) -> list[str]:
    """Read the project back and compare what the plan touched with what it found: each resource
    it changed must be as it was (present, with the same attributes), each one it created gone.
    Returns what differs (empty: the rollback is verified)."""
    from composenet.kernel.observe import observe_project  # deferred: observe imports the handlers registry

    try:
        observed = observe_project(ctx, handlers)
    except Exception as e:  # noqa: BLE001 -- cannot verify: say so
        return [f"could not read the kernel back: {e}"]
    left: list[str] = []
    seen: set[str] = set()
    for s in plan.steps:
        key, want = s.change.key, s.change.before
        if key in seen:
            continue
        seen.add(key)
        have = observed.resources.get(key)
        if want is None and have is not None:
            left.append(f"still there: {describe(have)}")
        elif want is not None and have is None:
            left.append(f"missing: {describe(want)}")
        elif want is not None and have is not None and want.compared() != have.compared():
            left.append(f"differs: {describe(want)}")
    return left
