"""`composenet check`: does the kernel do what the compose file says? Every expected reachability
probed from inside the namespaces, every failure with its reason (composenet.kernel.check).
Argument parsing and output only."""

# No `from __future__ import annotations`: typer would evaluate each string annotation twice
# (inspect.signature, get_type_hints) every time it builds the commands, ~8 ms a start.

import signal
from enum import Enum
from types import FrameType
from typing import Annotated

import typer

from composenet.cli.app import app
from composenet.cli.help import examples, fail
from composenet.cli.session import session


class CheckFormat(str, Enum):
    text = "text"
    json = "json"
    junit = "junit"


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: the trace tables are removed on the way out


@app.command(short_help="Probe what the file implies and say why it fails.", epilog=examples(
    "composenet check  # everything the file implies",
    "composenet check web db:5432  # why can (or can't) web reach db on 5432?",
    "composenet check host web  # web's published ports, from the host",
    "composenet check --format junit > check.xml  # for CI",
    "composenet -p webapp check --timeout 1 --format json",
))
def check(
    targets: Annotated[list[str] | None, typer.Argument(
        metavar="[SERVICE[:PORT] [SERVICE[:PORT]]]",
        help="One service: what it asks and what it is asked. Two: what the first asks of the second "
             "(and that port only). A container name works too; `host` names the host.")] = None,
    format: Annotated[CheckFormat, typer.Option("--format", help="text, json (one object per action) or junit.")]
    = CheckFormat.text,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, max=60.0, help="Seconds each probe may take.")] = 2.0,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=256, help="Probes run at a time.")] = 32,
) -> None:
    """Probe, from inside the namespaces, every reachability the compose file implies, and say
    why each one that does not hold fails.

    Names resolve to the right addresses with the container's own resolver; each port a container
    listens on (and its `expose` and published ports) answers to every container it shares a
    network with; containers that share no network are isolated (connects blocked, names not
    resolving); internal-only containers have no egress; published ports answer on the host
    addresses the file says and only there. A failure names its cause: a name not in scope (and
    which networks would put it there), nothing listening (and what does), a process that
    exited, a composenet rule (by its cn: comment) or another table that drops it, a route,
    address or rule missing (`composenet up` repairs it), a host port held by another process.

    With one SERVICE (or container, or `host`): what it asks and what it is asked; with two:
    what the first asks of the second (and only that PORT), each line saying why it holds.
    Changes nothing but short-lived nftables trace rules, removed afterwards. Exit 0 when every
    expectation holds, 1 otherwise."""
    from composenet.core.checkreport import exit_code, render  # deferred: not needed for --help
    from composenet.core.checks import SelectionError, parse_selection  # deferred: not needed for --help
    from composenet.core.desired import container_names  # deferred: the planner is heavy
    from composenet.kernel.check import run_check  # deferred: the kernel layer is heavy

    s = session()
    project = s.load()
    names = [svc.name for svc in project.services] + [c for svc in project.services
                                                       for c in container_names(project, svc)]
    try:
        selection = parse_selection(list(targets or []), names)
    except SelectionError as e:
        fail(str(e))
    ctx = s.context(project.name)
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = run_check(ctx, project, s.upstreams(), selection, timeout, jobs, explain=bool(targets))
    finally:
        signal.signal(signal.SIGTERM, old)
        ctx.close()
    typer.echo(render(format.value, project.name, results, explain=bool(targets)), nl=False)
    raise typer.Exit(exit_code(results))
