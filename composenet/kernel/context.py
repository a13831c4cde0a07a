"""The contract between the executor and the code that touches the kernel, one handler per
resource kind.

``apply.py`` runs a Plan's steps by calling, for each change, the handler registered for the
resource's kind: ``create(ctx, after)``, ``update(ctx, before, after)`` or ``delete(ctx, before)``
(a replace is delete then create). Each call must either succeed completely or raise
``KernelError`` having changed nothing it cannot undo; the executor journals each finished
call with its inverse and rolls the journal back on failure.

``observe(ctx, observed)`` adds to ``observed.resources`` every object of the handler's kinds that
the project ``ctx.project`` owns (selected by label), built as the same Resource classes
``desired`` builds, with kernel noise normalised away; and may add host facts to the
constraint fields of ObservedState.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from composenet.core.resources import Resource
from composenet.core.state import ObservedState
from composenet.paths import RUN_DIR, ProjectPaths


@dataclass
class Context:
    """Per-run executor context. ``cache`` lets handlers keep per-run objects (e.g. one netlink
    socket per namespace) and is closed by ``close()``."""

    project: str
    run_dir: str = RUN_DIR  # /run/composenet; the project's directory is run_dir/project
    resolv_conf: str = "/etc/resolv.conf"  # upstream servers for the resolver
    cache: dict[str, Any] = field(default_factory=dict)
    closers: list[Any] = field(default_factory=list)

    @property
    def project_dir(self) -> str:
        return f"{self.run_dir}/{self.project}"

    @property
    def paths(self) -> ProjectPaths:
        """The project's files in the run directory (composenet.paths)."""
        return ProjectPaths(self.run_dir, self.project)

    def close(self) -> None:
        while self.closers:
            fn = self.closers.pop()
            try:
                fn()
            except Exception:  # pragma: no cover - best effort at exit
                pass


class Handler(Protocol):
    kinds: tuple[str, ...]

    def observe(self, ctx: Context, observed: ObservedState) -> None: ...

    def create(self, ctx: Context, r: Resource) -> None: ...

    def update(self, ctx: Context, before: Resource, after: Resource) -> None: ...

    def delete(self, ctx: Context, r: Resource) -> None: ...
