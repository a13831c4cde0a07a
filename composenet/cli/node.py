"""`composenet node ls`: the nodes of the cluster store (``--store`` / COMPOSENET_STORE), as
composenet.cluster.registry reports them. Argument parsing and printing only."""

# No `from __future__ import annotations`: typer evaluates string annotations (see cli.app).

import json
from typing import Annotated

import typer

from composenet.cli.help import Format, examples
from composenet.cli.session import session
from composenet.errors import ComposenetError

app = typer.Typer(
    name="node",
    help="The hosts of the cluster store (overlay networks across hosts).",
    short_help="List the cluster's nodes.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _ago(seconds: int | None) -> str:
    return "-" if seconds is None else f"{seconds}s ago"


@app.command("ls", short_help="List the nodes the cluster store knows.", epilog=examples(
    'composenet --store etcd://10.99.0.1:2379 node ls',
    'composenet node ls --format json  # the store named by COMPOSENET_STORE',
))
def ls(
    format: Annotated[Format, typer.Option("--format", help="text (a table) or json.")] = Format.text,
) -> None:
    """Every node registered in the cluster store: its name, underlay address, when its agent
    last renewed its lease, its overlay networks and how many containers it publishes."""
    from composenet.cluster.client import Store  # deferred: the store client (etcd3gw, requests)
    from composenet.cluster.registry import Registry  # deferred: with the client

    settings = session().cluster
    if settings is None:
        raise ComposenetError("no cluster store is set", hint="pass --store etcd://HOST:PORT or set COMPOSENET_STORE")
    rows = Registry(Store(settings.store), settings.node).nodes()
    if format == Format.json:
        typer.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    table = [("NODE", "ADDRESS", "LAST SEEN", "NETWORKS", "CONTAINERS")]
    for r in rows:
        table.append((r.node, r.address, _ago(r.last_seen), ",".join(r.networks) or "-", str(r.containers)))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
