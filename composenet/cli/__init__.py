"""Command-line interface: typer wiring only. Parse arguments, call the pipeline, map errors to
exit codes (0 ok, 1 error, 2 plan has changes with --detailed-exitcode).

``app`` (cli.app) holds the global options in a ``Session`` (cli.session); the commands live in
cli.project (config, validate, plan, up, down), cli.status (ps, port, exec, logs), cli.check,
cli.graph, cli.host (ls, version) and cli.network (`composenet network ...`). Every module here imports only typer and light modules at import
time, so that `composenet --help` starts fast; each command imports what it runs. ``main``
ends the process without the interpreter's tear-down (see ``_end``).
"""

from __future__ import annotations

import atexit
import os
import sys

import typer

# The import order is the order `composenet --help` lists the commands in.
# isort: off
from composenet.cli import project, status  # noqa: F401 -- registers their commands
from composenet.cli import check, graph  # noqa: F401 -- registers them, listed after logs
from composenet.cli import host  # noqa: F401 -- registers ls and version
from composenet.cli import network, node
# isort: on
from composenet.cli.app import app
from composenet.errors import ComposenetError

app.add_typer(network.app, name="network")
app.add_typer(node.app, name="node")


def main() -> None:
    """Entry point (the `composenet` script, `python -m composenet`; never call it in-process:
    it ends the process): run the app; never show a Python traceback unless COMPOSENET_DEBUG
    is set."""
    try:
        _main()
    except SystemExit as e:
        _end(e.code)
        raise
    _end(0)


def _end(code: object) -> None:
    """Exit now with ``code``, once stdout and stderr are flushed, skipping the interpreter's
    tear-down: freeing every module and object one by one and a last garbage collection cost
    10-30 ms per run (more after a big plan), and the kernel frees the memory at once. Only when
    nothing else could need the tear-down: no other thread, no atexit callback (composenet
    registers none; a library might), every file closed by its ``with``. Otherwise (or for an
    exit message rather than a status) it returns and the normal exit follows."""
    exit_status = 0 if code is None else code
    ncallbacks = getattr(atexit, "_ncallbacks", None)
    threading = sys.modules.get("threading")
    if (not isinstance(exit_status, int) or ncallbacks is None or ncallbacks()
            or (threading is not None and threading.active_count() > 1)):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: the normal exit reports it as Python does
        return
    os._exit(exit_status & 0xFF)


def _main() -> None:
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
