"""Command-line interface: typer wiring only. Parse arguments, call the pipeline, map errors to
exit codes (0 ok, 1 error, 2 plan has changes with --detailed-exitcode).

``app`` (cli.app) holds the global options in a ``Session`` (cli.session); the commands live in
cli.project (config, validate, plan, up, down), cli.status (ps, port, exec, logs) and cli.network
(`composenet network ...`). Every module here imports only typer and light modules at import
time, so that `composenet --help` starts fast; each command imports what it runs.
"""

from __future__ import annotations

import os
import sys

import typer

from composenet.cli import network, project, status  # noqa: F401 -- registers their commands
from composenet.cli.app import app
from composenet.errors import ComposenetError

app.add_typer(network.app, name="network")


def main() -> None:
    """Entry point: run the app; never show a Python traceback unless COMPOSENET_DEBUG is set."""
    try:
        app()
    except ComposenetError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # pragma: no cover - last-resort guard: no traceback for users
        if os.environ.get("COMPOSENET_DEBUG"):
            raise
        typer.echo(f"internal error: {type(e).__name__}: {e} (set COMPOSENET_DEBUG=1 for details)", err=True)
        sys.exit(1)
