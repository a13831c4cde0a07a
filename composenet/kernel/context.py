"""The contract between the executor and the code that touches the kernel: the run's ``Context``
and the ``Handler`` protocol, one handler per group of resource kinds, collected in a
``Handlers`` registry that the executor and observe are given.

Before the first step, every handler's ``check(ctx, plan)`` may refuse the plan (nothing has been
changed yet). ``kernel.apply`` then runs the plan's steps by calling, for each change, the handler registered for the
resource's kind: ``create(ctx, after)``, ``update(ctx, before, after)`` or ``delete(ctx, before)``
(a replace is delete then create). Each call must either succeed completely or raise
``KernelError`` having changed nothing it cannot undo; the executor journals each finished call
with its inverse and rolls the journal back on failure, after ``flush(ctx)`` has finished what a
handler batched (e.g. link deletes). A handler whose create started something that becomes ready
on its own hands the executor a check through ``ctx.defer``.

``observe(ctx, observed)`` adds to ``observed.resources`` every object of the handler's kinds that
the project ``ctx.project`` owns (selected by label), built as the same Resource classes
``core.desired`` builds, with kernel noise normalised away; and may add host facts to the
constraint fields of ObservedState. A handler with no kinds only observes (host facts).

Handlers may keep state for one run (what they batched, a daemon still starting): a registry is
made per run (``kernel.handlers.default_handlers()``) and used for its observe and its apply.

Must not: know any resource kind itself (the handlers do), or touch the kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from composenet.core.plan import Plan
from composenet.core.resources import Resource
from composenet.core.state import ObservedState
from composenet.linux.netlink import NL
from composenet.paths import RUN_DIR, ProjectPaths


@dataclass
class Context:
    """Per-run context: the project, where its files live, the upstream resolvers, the run's
    sockets (one netlink socket and one pyroute2 IPRoute per namespace, closed by ``close()``)
    and, while the executor runs, the checks handlers deferred (``defer``)."""

    project: str
    run_dir: str = RUN_DIR  # /run/composenet; the project's directory is run_dir/project
    resolv_conf: str = "/etc/resolv.conf"  # upstream servers for the resolver
    netlink: dict[str, NL] = field(default_factory=dict)  # namespace ("" = ours) -> socket
    pyroute: dict[str, Any] = field(default_factory=dict)  # namespace -> pyroute2 IPRoute
    # Set by the executor for the length of a plan: checks handlers hand over (see defer).
    deferred: list[Callable[[], None]] | None = None

    @property
    def project_dir(self) -> str:
        return f"{self.run_dir}/{self.project}"

    @property
    def paths(self) -> ProjectPaths:
        """The project's files in the run directory (composenet.paths)."""
        return ProjectPaths(self.run_dir, self.project)

    def defer(self, check: Callable[[], None]) -> bool:
        """For a handler whose create started something that becomes ready on its own (the
        resolver daemon) or that batched work to finish later (link deletes): hand the executor
        the ``check`` that waits for it or finishes it and raises KernelError if that failed.
        The executor runs it before the next service process starts and before the plan ends,
        and counts a failure as one of the step that deferred it (rolled back like any other).
        Returns False outside the executor: then the caller does the work at once."""
        if self.deferred is None:
            return False
        self.deferred.append(check)
        return True

    def drop_sockets(self, ns: str) -> None:
        """Close this run's sockets in ``ns``: an open socket keeps a deleted namespace alive."""
        for socks in (self.netlink, self.pyroute):
            s = socks.pop(ns, None)
            if s is not None:
                s.close()

    def close(self) -> None:
        for ns in sorted({*self.netlink, *self.pyroute}):
            self.drop_sockets(ns)


class Handler(Protocol):
    """What the executor and observe call. ``kinds`` lists the resource kinds it creates,
    updates and deletes (empty: it only observes host facts)."""

    kinds: tuple[str, ...]

    def observe(self, ctx: Context, observed: ObservedState) -> None: ...

    def create(self, ctx: Context, r: Resource) -> None: ...

    def update(self, ctx: Context, before: Resource, after: Resource) -> None: ...

    def delete(self, ctx: Context, r: Resource) -> None: ...

    def check(self, ctx: Context, plan: Plan) -> None:
        """Before any step of ``plan`` runs: raise ComposenetError if this handler's part of it
        cannot be applied here (e.g. nft rejects the ruleset, a private mount namespace), so
        that nothing is half-applied. Must not change anything."""
        ...

    def flush(self, ctx: Context) -> None:
        """Finish what this run batched (e.g. deletes) now: before a rollback re-creates what
        was deleted, so that names are free."""
        ...


class HandlerBase:
    """Defaults for the Handler methods most handlers do not need: nothing to check before a
    plan, nothing batched to flush."""

    def check(self, ctx: Context, plan: Plan) -> None:
        return None

    def flush(self, ctx: Context) -> None:
        return None


class Handlers:
    """The handlers of one run, by resource kind, in observe order."""

    def __init__(self, handlers: Iterable[Handler]):
        self._all = list(handlers)
        self._by_kind: dict[str, Handler] = {}
        for h in self._all:
            for kind in h.kinds:
                if kind in self._by_kind:
                    raise ValueError(f"two handlers for resource kind {kind!r}")
                self._by_kind[kind] = h

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._all)

    def for_kind(self, kind: str) -> Handler:
        h = self._by_kind.get(kind)
        if h is None:
            raise KeyError(f"no handler for resource kind {kind!r}")
        return h
