"""The typer application and its global options (-f, -p, --env-file, --profile,
--project-directory, --resolv-conf, --store, --node, --advertise-addr), kept in a ``Session`` in typer's context. Command modules
(``cli.project``, ``cli.status``, ``cli.network``) add their commands to ``app``."""

# No `from __future__ import annotations`: typer would evaluate each string annotation twice
# (inspect.signature, get_type_hints) every time it builds the commands, ~8 ms a start.

from typing import Annotated

import typer

from composenet.cli.session import Session, cluster_options
from composenet.compose.options import LoadOptions

app = typer.Typer(
    name="composenet",
    # One sentence per line, kept as written (click's "\b"): rewrapped, a sentence would break
    # wherever the terminal's width falls.
    help=(
        "\b\n"
        "Build the networks of Compose files in the Linux kernel; no container engine.\n"
        "Each service replica gets a network namespace, each network a bridge.\n"
        "Veth pairs link them; nftables publishes ports and isolates networks.\n"
        "A DNS resolver per network answers for the services on it.\n\n"
        "\b\n"
        "Typical use: `composenet plan` (review what would change), then `up`, `ps`,\n"
        "`check` and `down`; `composenet ls` lists this host's projects."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from composenet import __version__  # deferred: only --version needs it

        typer.echo(f"composenet {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
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
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)
    ] = False,
    resolv_conf: Annotated[
        str | None,
        typer.Option(
            "--resolv-conf",
            envvar="COMPOSENET_RESOLV_CONF",
            help="Upstream DNS servers for names outside the project (default /etc/resolv.conf).",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", envvar="COMPOSENET_STORE", show_envvar=False,
                     help="Cluster store for overlay networks across hosts: etcd://HOST:PORT[,...] "
                          "(env COMPOSENET_STORE)."),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option("--node", envvar="COMPOSENET_NODE", show_envvar=False,
                     help="This host's name in the cluster (default: the hostname; env COMPOSENET_NODE)."),
    ] = None,
    advertise_addr: Annotated[
        str | None,
        typer.Option("--advertise-addr", envvar="COMPOSENET_ADVERTISE_ADDR", show_envvar=False,
                     help="This host's underlay IPv4 for VXLAN (default: the source of the route to the "
                          "store; env COMPOSENET_ADVERTISE_ADDR)."),
    ] = None,
) -> None:
    ctx.obj = Session(
        LoadOptions(
            files=tuple(file or ()),
            project_name=project_name,
            env_files=tuple(env_file or ()),
            profiles=tuple(profile or ()),
            cwd=project_directory,
        ),
        resolv_conf,
        cluster_options(store, node, advertise_addr),
    )
