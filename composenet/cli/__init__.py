"""Command-line interface: typer wiring only. Parse arguments, call the pipeline, map errors to
exit codes (0 ok, 1 error, 2 plan has changes with --detailed-exitcode). Imports of the
pipeline are lazy so that `composenet --help` starts fast."""

from __future__ import annotations

import os
import sys
from enum import Enum
from typing import Annotated, NoReturn

import typer

from composenet.cli.help import Format, examples
from composenet.compose.options import LoadOptions

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
    from composenet.compose.project import load_project

    return load_project(G.opts)


@app.command(epilog=examples(
    "composenet config  # ./compose.yaml, as YAML",
    "composenet -f compose.yaml -f prod.yaml config  # several files, merged",
    "composenet --profile debug config --format json",
    "composenet config --ignored  # keys not interpreted",
))
def config(
    format: Annotated[ConfigFormat, typer.Option("--format", help="Output format.")] = ConfigFormat.yaml,
    ignored: Annotated[
        bool, typer.Option("--ignored", help="List the keys composenet accepts but does not interpret.")
    ] = False,
) -> None:
    """Print the normalised project (like `docker compose config`; networking in long form)."""
    from composenet.compose.render_config import render_config

    project = _load()
    for w in project.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(render_config(project, format.value, ignored=ignored), nl=False)


@app.command(epilog=examples(
    "composenet validate  # FILE:LINE:COL per problem",
    "composenet -f compose.yaml --env-file prod.env validate",
))
def validate() -> None:
    """Check the compose files and print only the problems (exit 1 if any)."""
    project = _load()
    for w in project.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"{project.name}: valid ({len(project.services)} services, {len(project.networks)} networks)")


def _context(project_name: str):
    from composenet.kernel.context import Context
    from composenet.paths import run_dir as default_run_dir

    run_dir = default_run_dir()
    return Context(project=project_name, run_dir=run_dir, resolv_conf=G.resolv_conf or "/etc/resolv.conf")


def _named_project() -> str:
    """The project `-p NAME` names, refused if invalid (Compose does not normalise -p)."""
    from composenet.compose.options import name_problem
    from composenet.errors import InputError, Problem

    name = G.opts.project_name or ""
    err = name_problem(name)
    if err:
        raise InputError([Problem(err, rule="CS-NAME-03")]) from None
    return name


def _project_context():
    """(ctx, project name) for commands that work from kernel labels alone (down, ps, port,
    exec, logs): `-p NAME` is enough and the compose file is not even read; without -p the
    file gives the name."""
    if G.opts.project_name:
        name = _named_project()
    else:
        name = _load().name
    return _context(name), name


def _read_json(path: str, what: str):
    """A JSON file given on the command line; a clear error (never a traceback) if it is not."""
    import json as _json

    try:
        with open(path, encoding="utf-8") as f:
            return _json.load(f)
    except OSError as e:
        fail(f"cannot read {what} {path}: {e.strerror or e}")
    except (UnicodeDecodeError, ValueError) as e:
        fail(f"{path}: not a JSON {what}: {e}")


def _write(path: str, text: str, what: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        fail(f"cannot write {what} {path}: {e.strerror or e}")


def _echo_err(text: str) -> None:
    typer.echo(text, err=True)


@app.command(epilog=examples(
    "composenet plan  # against this kernel (root)",
    "composenet plan --offline  # against an empty kernel, anywhere",
    "composenet plan --detailed-exitcode  # exit 0 none, 1 error, 2 changes",
    "composenet plan --out plan.json && composenet up --plan plan.json",
    "composenet plan --format json --show-ruleset",
))
def plan(
    format: Annotated[Format, typer.Option("--format", help="text (for review) or json (schemas/plan.schema.json).")] = Format.text,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 0 when there is nothing to do, 1 on error, 2 when there are changes.")
    ] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="Plan against an empty kernel and no host routes (golden files, review anywhere).")
    ] = False,
    observed_file: Annotated[
        str | None, typer.Option("--observed", help="Plan against a recorded observed state (JSON) instead of this kernel.")
    ] = None,
    out: Annotated[str | None, typer.Option("--out", help="Also save the plan as JSON, for `up --plan FILE`.")] = None,
    show_ruleset: Annotated[bool, typer.Option("--show-ruleset", help="Append the nftables ruleset `up` would load.")] = False,
) -> None:
    """Show what `up` would change in this kernel, without changing anything (a dry run).

    Changes are grouped by network and service with + (create), ~ (update in place), -/+ (replace) and - (remove), each with its reason; then the exposure table (which host address:port reaches which service) and a summary line."""  # noqa: E501 -- one line: help text keeps newlines

    from composenet.core.render import render_json, render_text
    from composenet.core.state import ObservedState, ObservedStateError
    from composenet.pipeline import check_ruleset, make_plan, read_upstreams

    project = _load()
    upstreams = read_upstreams(G.resolv_conf)
    ctx = _context(project.name)
    if observed_file:
        try:
            observed = ObservedState.from_json(_read_json(observed_file, "observed state"))
        except ObservedStateError as e:
            fail(f"{observed_file}: not a recorded observed state (see schemas/observed.schema.json):\n"
                 + "\n".join(f"  {observed_file}: {p}" for p in e.problems))
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            fail(f"{observed_file}: not a recorded observed state ({type(e).__name__}: {e})")
    elif offline:
        observed = ObservedState(offline=True)
    else:
        from composenet.kernel import links
        from composenet.kernel.observe import observe_project

        links.check_mount_namespace()
        observed = observe_project(ctx)
    try:
        planned = make_plan(project, project.name, observed, upstreams, ctx.run_dir)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        if not observed_file:
            raise
        # A hand-edited or damaged recording: its values are only used while planning.
        fail(f"{observed_file}: not a recorded observed state ({type(e).__name__}: {e})")
    if planned.ruleset and not offline and not observed_file:
        err = check_ruleset(planned.ruleset)
        if err:
            fail(f"nft rejected the generated ruleset:\n{err}")
    if format == Format.json:
        typer.echo(render_json(planned.plan, planned.ruleset), nl=False)
    else:
        typer.echo(render_text(planned.plan, planned.ruleset if show_ruleset else None), nl=False)
    if out:
        _write(out, render_json(planned.plan, planned.ruleset), "the plan to")
    if detailed_exitcode and not planned.plan.empty:
        raise typer.Exit(2)


@app.command(epilog=examples(
    "composenet up",
    "composenet -p shop -f compose.yaml up -q",
    "composenet plan --out plan.json  # review it, then:",
    "composenet up --plan plan.json  # applies it only if nothing changed since",
))
def up(
    plan_file: Annotated[
        str | None, typer.Option("--plan", help="Apply this saved plan (`plan --out`), only if the kernel still matches it.")
    ] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only warnings and errors.")] = False,
) -> None:
    """Build the stack in the kernel: namespaces, bridges, veths, addresses, routes, nftables,
    DNS resolvers, then start the service commands. Running it again changes only what differs."""

    from composenet.pipeline import read_upstreams, run_apply

    project = _load()
    saved = None
    if plan_file:
        from composenet.core.plan import saved_plan_problem

        saved = _read_json(plan_file, "saved plan")
        problem = saved_plan_problem(saved)
        if problem:
            fail(f"{plan_file}: {problem}")
        if saved.get("project") != project.name:
            fail(f"the saved plan is for project {saved.get('project')!r}, not {project.name!r}")
    ctx = _context(project.name)
    try:
        planned = run_apply(ctx, project, project.name, read_upstreams(G.resolv_conf), _echo_err, quiet, saved)
    finally:
        ctx.close()
    if not planned.plan.empty and not quiet:
        from composenet.core.render import counts

        n = counts(planned.plan)
        typer.echo(f'Project "{project.name}" is up: {n["add"]} added, {n["change"]} changed, '
                   f'{n["replace"]} replaced, {n["remove"]} removed.')


@app.command(epilog=examples("composenet down", "composenet -p shop down  # without the compose file"))
def down(
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only warnings and errors.")] = False,
) -> None:
    """Remove everything the project owns in the kernel: processes, resolver, nftables table,
    veths, bridges, namespaces, /etc/netns files and runtime files. Works from kernel labels
    alone, so `composenet -p NAME down` works even when the compose file changed or is gone."""
    from composenet.pipeline import run_apply

    ctx, name = _project_context()
    try:  # down wants nothing, so it needs no upstream servers
        planned = run_apply(ctx, None, name, None, _echo_err, quiet)
    finally:
        ctx.close()
    if not planned.plan.empty and not quiet:
        typer.echo(f'Project "{name}" is down: {len(planned.plan.steps)} step(s).')


# ---- ps, port, exec, logs (composenet.status): read what runs; never change the project ----


@app.command(epilog=examples("composenet ps", "composenet -p shop ps --format json"))
def ps(
    format: Annotated[Format, typer.Option("--format", help="text (a table) or json.")] = Format.text,
) -> None:
    """List the project's containers: service, namespace, addresses per network, published
    ports and the state of the service's command (running pid / exited / no command)."""
    from composenet.core import status

    ctx, _name = _project_context()
    try:
        typer.echo(status.ps(ctx, format.value), nl=False)
    finally:
        ctx.close()


@app.command(epilog=examples("composenet port web 80", "composenet port dns 53 --protocol udp --index 2"))
def port(
    service: Annotated[str, typer.Argument(help="Service name.")],
    private_port: Annotated[int, typer.Argument(metavar="PORT", help="Container port.")],
    protocol: Annotated[str, typer.Option("--protocol", help="tcp, udp or sctp.")] = "tcp",
    index: Annotated[int | None, typer.Option("--index", help="Replica (default: the first).")] = None,
) -> None:
    """Print the host address:port published for a container port (like `docker port`),
    ephemeral ports included."""
    from composenet.core import status

    ctx, _name = _project_context()
    try:
        for line in status.port_lines(ctx, service, private_port, protocol, index):
            typer.echo(line)
    finally:
        ctx.close()


@app.command(name="exec", epilog=examples("composenet exec web -- ip addr",
                                            "composenet exec db --index 2 -- getent hosts web"))
def exec_(
    service: Annotated[str, typer.Argument(help="Service name.")],
    cmd: Annotated[list[str], typer.Argument(metavar="-- CMD [ARGS]...", help="Command to run.")],
    index: Annotated[int | None, typer.Option("--index", help="Replica (default: the first).")] = None,
) -> None:
    """Run a command in a container's namespace, with its resolv.conf, hosts and hostname, in
    the foreground; exits with the command's status. Example: `composenet exec web -- ip addr`."""
    from composenet.core import status

    ctx, _name = _project_context()
    try:
        rc = status.exec_in(ctx, service, list(cmd), index)
    finally:
        ctx.close()
    raise typer.Exit(rc)


@app.command(epilog=examples("composenet logs web", "composenet logs -f worker"))
def logs(
    service: Annotated[str, typer.Argument(help="Service name.")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new output until Ctrl-C.")] = False,
) -> None:
    """Print the output of a service's command (every replica; lines prefixed with the
    container name when there are several)."""
    from composenet.core import status

    ctx, _name = _project_context()
    status.logs(ctx, service, follow)


# ---- network ls/create/inspect/rm/prune (composenet.netcmd): standalone networks ----

from composenet.cli import network as netcmd  # noqa: E402 -- typer and stdlib only at import: stays fast

app.add_typer(netcmd.app, name="network")


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
