"""`config`, `validate`, `plan`, `up` and `down`: the commands that read the compose files (down
only when no -p names the project) and run the pipeline. Imports of the loader and the pipeline
are inside the commands: `composenet --help` must not pay for them."""

# No `from __future__ import annotations`: typer would evaluate each string annotation twice
# (inspect.signature, get_type_hints) every time it builds the commands, ~8 ms a start.

from enum import Enum
from typing import Annotated

import typer

from composenet.cli.app import app
from composenet.cli.help import Format, echo_err, examples, fail, read_json, write_file
from composenet.cli.session import session

# `plan` and `up` take it alike (cli.session.Session.load: None keeps what the last `up` recorded).
LocalhostOnly = Annotated[bool | None, typer.Option(
    "--publish-localhost-only/--no-publish-localhost-only",
    help="Publish every port without its own host_ip on 127.0.0.1 only (also COMPOSENET_PUBLISH_LOCALHOST_ONLY=1); "
         "`up` records the choice, later runs keep it until --no-publish-localhost-only.",
    show_default=False,
)]


class ConfigFormat(str, Enum):
    yaml = "yaml"
    json = "json"


@app.command(short_help="Print the normalised project, like `docker compose config`.", epilog=examples(
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
    from composenet.compose.render_config import render_config  # deferred: the loader (yaml)

    project = session().load()
    for w in project.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(render_config(project, format.value, ignored=ignored), nl=False)


@app.command(short_help="Check the compose files; print only the problems.", epilog=examples(
    "composenet validate  # FILE:LINE:COL per problem",
    "composenet -f compose.yaml --env-file prod.env validate",
))
def validate() -> None:
    """Check the compose files and print only the problems (exit 1 if any)."""
    project = session().load()
    for w in project.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"{project.name}: valid ({len(project.services)} services, {len(project.networks)} networks)")


@app.command(short_help="Show what `up` would change, without changing anything.", epilog=examples(
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
    publish_localhost_only: LocalhostOnly = None,
) -> None:
    """Show what `up` would change in this kernel, without changing anything (a dry run).

    Changes are grouped by network and service with + (create), ~ (update in place), -/+ (replace) and - (remove), each with its reason; then the exposure table (which host address:port reaches which service) and a summary line."""  # noqa: E501 -- one line: help text keeps newlines

    from composenet.cli.upview import ignored_note  # deferred: only plan and up print it
    from composenet.core.render import render_json, render_text  # deferred: the pipeline
    from composenet.core.state import ObservedState, ObservedStateError  # deferred: the pipeline
    from composenet.pipeline import check_ruleset, make_plan  # deferred: the pipeline

    project = session().load(publish_localhost_only)
    note = ignored_note(project.ignored)
    if note:
        echo_err(note)
    upstreams = session().upstreams()
    ctx = session().context(project.name)
    if observed_file:
        try:
            observed = ObservedState.from_json(read_json(observed_file, "observed state"))
        except ObservedStateError as e:
            fail(f"{observed_file}: not a recorded observed state (see schemas/observed.schema.json):\n"
                 + "\n".join(f"  {observed_file}: {p}" for p in e.problems))
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            fail(f"{observed_file}: not a recorded observed state ({type(e).__name__}: {e})")
    elif offline:
        from composenet.kernel.cluster import offline_cluster  # deferred: the kernel layer

        # With a store, a cluster network is planned as the record the first host would create.
        observed = ObservedState(offline=True, cluster=offline_cluster())
    else:
        from composenet.kernel import links  # deferred: the kernel layer
        from composenet.kernel.observe import observe_project  # deferred: the kernel layer

        links.check_mount_namespace()
        observed = observe_project(ctx)
    try:
        planned = make_plan(project, project.name, observed, upstreams, ctx.run_dir)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        if not observed_file:
            raise
        # A hand-edited or damaged recording: its values are only used while planning.
        fail(f"{observed_file}: not a recorded observed state ({type(e).__name__}: {e})")
    # The kernel's parser checks the ruleset (`nft -c`) only when the plan loads it: otherwise
    # this very ruleset is loaded already, so the kernel accepted it (`up` checks likewise).
    loads_ruleset = any(c.kind == "nft" and c.after is not None for c in planned.plan.changes)
    if planned.ruleset and loads_ruleset and not offline and not observed_file:
        err = check_ruleset(planned.ruleset)
        if err:
            fail(f"nft rejected the generated ruleset:\n{err}")
    if format == Format.json:
        typer.echo(render_json(planned.plan, planned.ruleset), nl=False)
    else:
        typer.echo(render_text(planned.plan, planned.ruleset if show_ruleset else None), nl=False)
    if out:
        write_file(out, render_json(planned.plan, planned.ruleset), "the plan to")
    if detailed_exitcode and not planned.plan.empty:
        raise typer.Exit(2)


@app.command(short_help="Build the stack in the kernel, or bring it up to date.", epilog=examples(
    "composenet up",
    "composenet -p webapp -f compose.yaml up -q",
    "composenet up -v --timings  # every step, then the time of each phase",
    "composenet plan --out plan.json  # review it, then:",
    "composenet up --plan plan.json  # applies it only if nothing changed since",
))
def up(
    plan_file: Annotated[
        str | None, typer.Option("--plan", help="Apply this saved plan (`plan --out`), only if the kernel still matches it.")
    ] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only warnings and errors.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Print every step as it runs.")] = False,
    timings: Annotated[bool, typer.Option("--timings", help="Print the time of each phase: load, observe, plan, "
                                                            "apply (by kind), verify.")] = False,
    publish_localhost_only: LocalhostOnly = None,
) -> None:
    """Build the stack in the kernel: namespaces, bridges, veths, addresses, routes, nftables,
    DNS resolvers, then start the service commands. Running it again changes only what differs.
    It prints a line per network and per service it changed (every step with -v).

    A command that cannot start, or exits non-zero right after its start, is an error of that
    service (its last log lines are shown; `composenet logs SERVICE` has the rest): the other
    services stay up and nothing is rolled back. Run `up` again once it is fixed. A command that
    exits 0 (a one-shot) is fine: `ps` shows it as exited (code 0)."""
    import time  # deferred: only up measures

    from composenet.cli.upview import UpView, ignored_note  # deferred: only up prints it
    from composenet.pipeline import run_apply  # deferred: the pipeline

    t0 = time.monotonic()
    project = session().load(publish_localhost_only)
    load = time.monotonic() - t0
    note = ignored_note(project.ignored)
    if note and not quiet:
        echo_err(note)
    saved = None
    if plan_file:
        from composenet.core.plan import saved_plan_problem  # deferred: the pipeline

        saved = read_json(plan_file, "saved plan")
        problem = saved_plan_problem(saved)
        if problem:
            fail(f"{plan_file}: {problem}")
        if saved.get("project") != project.name:
            fail(f"the saved plan is for project {saved.get('project')!r}, not {project.name!r}")
    view = UpView(echo_err, verbose=verbose, quiet=quiet)
    ctx = session().context(project.name)
    try:
        planned = run_apply(ctx, project, project.name, session().upstreams(), echo_err, quiet, saved,
                            report=view.make_report())
    finally:
        view.clear()
        ctx.close()
    view.summary(planned.plan)
    if timings:
        for line in view.timings(load):
            echo_err(line)
    if not planned.plan.empty and not quiet:
        from composenet.core.render import counts  # deferred: the pipeline

        n = counts(planned.plan)
        typer.echo(f'Project "{project.name}" is up: {n["add"]} added, {n["change"]} changed, '
                   f'{n["replace"]} replaced, {n["remove"]} removed.')


@app.command(short_help="Remove everything the project owns in the kernel.",
             epilog=examples("composenet down", "composenet -p webapp down  # without the compose file"))
def down(
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only warnings and errors.")] = False,
) -> None:
    """Remove everything the project owns in the kernel: processes, resolver, nftables table,
    veths, bridges, namespaces, /etc/netns files and runtime files. Works from kernel labels
    alone, so `composenet -p NAME down` works even when the compose file changed or is gone."""
    from composenet.errors import InputError, Problem  # deferred: only on errors
    from composenet.pipeline import run_apply  # deferred: the pipeline

    try:
        ctx, name = session().project_context()
    except InputError as e:
        if [p.rule for p in e.problems] != ["CS-FILE-01"]:
            raise
        raise InputError([Problem(e.problems[0].message, rule="CS-FILE-01", hint=(
            "name the project instead: `composenet -p NAME down` (`composenet ls` lists the projects "
            "of this host), or pass -f FILE"))]) from None
    try:  # down wants nothing, so it needs no upstream servers
        planned = run_apply(ctx, None, name, None, echo_err, quiet)
    finally:
        ctx.close()
    if not planned.plan.empty and not quiet:
        typer.echo(f'Project "{name}" is down: {len(planned.plan.steps)} step(s).')
