"""`composenet check`: probe every expectation of a running project from inside its namespaces,
and say why each one that fails does.

``run_check`` observes the project and plans it against the kernel (the addresses it holds),
reads the listening sockets of every namespace (composenet.kernel.checkstate), derives the
expectations (composenet.core.checks), runs the probes in parallel on a bounded pool of threads,
judges each outcome and hands the failures to the diagnosis (composenet.kernel.diagnose).
Bounded in time: every probe by ``timeout``; the probes run ``workers`` at a time.

Must not: change the kernel. The only thing it adds is the diagnosis's short-lived trace
tables, which it removes (composenet.kernel.trace).
"""

from __future__ import annotations

from composenet.core.checkreport import Result
from composenet.core.checks import Selection, derive
from composenet.core.desired import Upstreams
from composenet.core.model import Project
from composenet.kernel.checkstate import (
    DEFAULT_TIMEOUT,
    DEFAULT_WORKERS,
    facts,
    judge,
    probe_all,
    read_kernel,
)
from composenet.kernel.context import Context
from composenet.kernel.diagnose import diagnose

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_WORKERS", "run_check"]


def run_check(ctx: Context, project: Project, upstreams: Upstreams, selection: Selection | None = None,
              timeout: float = DEFAULT_TIMEOUT, workers: int = DEFAULT_WORKERS, explain: bool = False) -> list[Result]:
    """Every expectation of ``project`` (those ``selection`` names), probed, judged and, where it
    fails, diagnosed; in output order. ``explain``: trace the blocked ones that hold too, to name
    the rule that blocks them (for a pair named on the command line)."""
    k = read_kernel(ctx, project, upstreams, workers)
    expects = derive(project, k.desired, facts(k, upstreams), selection)
    outcomes = probe_all(expects, timeout, workers)
    results = [judge(e, outcomes.get(e), k) for e in expects]
    return diagnose(k, results, outcomes, timeout, workers, explain)
