"""`composenet ls` (this host's projects) and `composenet version`: about the host and
composenet itself, no compose file needed."""

# No `from __future__ import annotations`: typer would evaluate each string annotation twice
# (inspect.signature, get_type_hints) every time it builds the commands, ~8 ms a start.

import json
from typing import Annotated, Any

import typer

from composenet.cli.app import app
from composenet.cli.help import Format, examples


def _project_row(run_dir: str, name: str, nets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from composenet.kernel import status  # deferred: the kernel layer
    from composenet.kernel.context import Context  # deferred: the kernel layer

    ctx = Context(project=name, run_dir=run_dir)
    try:
        cs = status.status(ctx)
    finally:
        ctx.close()
    states: dict[str, int] = {}
    for c in cs:
        states[c.state] = states.get(c.state, 0) + 1
    return {
        "name": name,
        "status": ", ".join(f"{s}({n})" for s, n in sorted(states.items())) or "no containers",
        "networks": sorted(n for n, v in nets.items() if v.get("project") == name),
        "containers": [c.container for c in cs],
    }


@app.command("ls", short_help="List this host's projects.", epilog=examples(
    "composenet ls",
    "composenet ls -q",
    "composenet ls --format json",
))
def ls(
    format: Annotated[Format, typer.Option("--format", help="text (a table) or json.")] = Format.text,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only the names.")] = False,
) -> None:
    """List the projects that are up on this host (like `docker compose ls`): name, status (its
    containers by state), networks and containers. `composenet -p NAME down` removes one."""
    from composenet import paths  # deferred: light, but only ls needs it
    from composenet.kernel.netinfo import host_projects, networks  # deferred: the kernel layer

    where = paths.run_dir()
    names = host_projects(where)
    if quiet:
        for n in names:
            typer.echo(n)
        return
    nets = networks(where)
    rows = [_project_row(where, n, nets) for n in names]
    if format == Format.json:
        typer.echo(json.dumps(rows, indent=1, sort_keys=True))
        return
    table = [("NAME", "STATUS", "NETWORKS", "CONTAINERS")] + [
        (r["name"], r["status"], ",".join(r["networks"]) or "-", str(len(r["containers"]))) for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
    for t in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip())


@app.command("version", short_help="Print composenet's version.", epilog=examples(
    "composenet version",
    "composenet --version",
))
def version(
    format: Annotated[Format, typer.Option("--format", help="text or json.")] = Format.text,
) -> None:
    """Print composenet's version (and, with --format json, Python's)."""
    import platform  # deferred: only version needs it

    from composenet import __version__  # deferred: as above

    if format == Format.json:
        typer.echo(json.dumps({"version": __version__, "python": platform.python_version()}))
    else:
        typer.echo(f"composenet {__version__}")
