"""Command-line interface: typer wiring only. Parse arguments, call the pipeline, map errors to
exit codes (0 ok, 1 error, 2 plan has changes with --detailed-exitcode). Imports of the
pipeline are lazy so that `composenet --help` starts fast."""

from __future__ import annotations

import os
import sys
from enum import Enum
from typing import Annotated, NoReturn

import typer

from composenet.options import LoadOptions

app = typer.Typer(
    name="composenet",
    help=(
        "Build the networks of Compose files directly in the Linux kernel: a network namespace "
        "per service replica, a bridge per network, veth pairs, nftables for published ports "
        "and isolation, a DNS resolver per network. No container engine.\n\n"
        "Typical use: `composenet plan` (review what would change), `composenet up`, "
        "`composenet ps`, `composenet down`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    text = "text"
    json = "json"


class ConfigFormat(str, Enum):
    yaml = "yaml"
    json = "json"


class _Globals:
    opts = LoadOptions()
    resolv_conf: str | None = None


G = _Globals()


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.callback()
def _global(
    file: Annotated[
        list[str] | None,
        typer.Option("-f", "--file", help="Compose file; repeat to merge several (later files override)."),
    ] = None,
    project_name: Annotated[
        str | None, typer.Option("-p", "--project-name", help="Project name (default: `name:` or the directory).")
    ] = None,
    env_file: Annotated[
        list[str] | None, typer.Option("--env-file", help="Read variables from this file instead of .env.")
    ] = None,
    profile: Annotated[list[str] | None, typer.Option("--profile", help="Enable services of this profile.")] = None,
    project_directory: Annotated[
        str | None, typer.Option("--project-directory", help="Working directory (default: the current one).")
    ] = None,
    resolv_conf: Annotated[
        str | None,
        typer.Option(
            "--resolv-conf",
            envvar="COMPOSENET_RESOLV_CONF",
            help="Upstream DNS servers for names outside the project (default /etc/resolv.conf).",
        ),
    ] = None,
) -> None:
    G.opts = LoadOptions(
        files=tuple(file or ()),
        project_name=project_name,
        env_files=tuple(env_file or ()),
        profiles=tuple(profile or ()),
        cwd=project_directory,
    )
    G.resolv_conf = resolv_conf


def _load():
    from composenet.project import load_project

    return load_project(G.opts)


@app.command()
def config(
    format: Annotated[ConfigFormat, typer.Option("--format", help="Output format.")] = ConfigFormat.yaml,
    ignored: Annotated[
        bool, typer.Option("--ignored", help="List the keys composenet accepts but does not interpret.")
    ] = False,
) -> None:
    """Print the normalised project (like `docker compose config`; networking in long form)."""
    from composenet.render_config import render_config

    project = _load()
    for w in project.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(render_config(project, format.value, ignored=ignored), nl=False)


@app.command()
def validate() -> None:
    """Check the compose files and print only the problems (exit 1 if any)."""
    project = _load()
    for w in project.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"{project.name}: valid ({len(project.services)} services, {len(project.networks)} networks)")


def main() -> None:
    """Entry point: run the app; never show a Python traceback unless COMPOSENET_DEBUG is set."""
    from composenet.errors import ComposenetError

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
