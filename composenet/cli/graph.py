"""`composenet graph`: the project's networks, services, addresses and published ports as a
Mermaid or Graphviz graph (composenet.core.graph), from the kernel when the project is up, from
the file otherwise. Argument parsing, output, and running Graphviz for SVG."""

# No `from __future__ import annotations`: typer would evaluate each string annotation twice
# (inspect.signature, get_type_hints) every time it builds the commands, ~8 ms a start.

import shutil
import subprocess
from enum import Enum
from typing import Annotated

import typer

from composenet.cli.app import app
from composenet.cli.help import echo_err, examples, fail, write_file
from composenet.cli.session import session

DOT_TIMEOUT = 60.0


class GraphFormat(str, Enum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"


def svg(dot_text: str) -> str:
    """``dot -Tsvg``; a clear error when Graphviz is not installed or fails."""
    exe = shutil.which("dot")
    if exe is None:
        fail("--format svg needs Graphviz's `dot`, which is not installed (Debian: apt-get install graphviz); "
             "`--format dot` prints the graph for any Graphviz, `--format mermaid` for Mermaid")
    try:
        r = subprocess.run([exe, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=DOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        fail(f"dot -Tsvg did not finish within {DOT_TIMEOUT:g} s")
    if r.returncode != 0:
        fail(f"dot -Tsvg failed: {r.stderr.strip()}")
    return r.stdout


@app.command(short_help="Draw the networks, services and ports as a graph.", epilog=examples(
    "composenet graph  # Mermaid, live state when the project is up",
    "composenet graph --format dot | dot -Tpng > stack.png",
    "composenet graph --format svg --output stack.svg",
))
def graph(
    format: Annotated[GraphFormat, typer.Option("--format", help="mermaid, dot (Graphviz) or svg (runs `dot`).")]
    = GraphFormat.mermaid,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Draw the project: networks (internal ones dashed), services with their replicas, which
    service is on which network (with its address when the project is up), published ports
    (host address:port -> service port) and `network_mode` shares. When the project is up the
    graph shows the kernel's state (a stopped, missing or drifted object is marked); otherwise
    the file's intent."""
    from composenet.core.graph import build, render_dot, render_mermaid  # deferred: not needed for --help
    from composenet.core.planner import make_plan  # deferred: the planner is heavy
    from composenet.core.state import ObservedState  # deferred: with the planner
    from composenet.errors import ComposenetError  # deferred: with the planner

    s = session()
    project = s.load()
    upstreams = s.upstreams()
    live = None
    why = "the project is not up"
    try:
        from composenet.kernel.topology import live_state  # deferred: the kernel layer is heavy

        ctx = s.context(project.name)
        try:
            live = live_state(ctx, project, upstreams)
        finally:
            ctx.close()
    except (OSError, ComposenetError) as e:
        echo_err(f"note: cannot read the kernel ({e}); showing the file's intent")
        why = "the kernel could not be read"
    if live is not None:
        g = build(project, live[0], live[1])
    else:
        g = build(project, make_plan(project, project.name, ObservedState(offline=True), upstreams).desired,
                  why_intent=why)
    text = render_mermaid(g) if format == GraphFormat.mermaid else render_dot(g)
    if format == GraphFormat.svg:
        text = svg(text)
    if output:
        write_file(output, text, "the graph to")
    else:
        typer.echo(text, nl=False)
