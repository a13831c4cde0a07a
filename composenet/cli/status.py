"""`ps`, `port`, `exec` and `logs`: read what runs; never change the project. They work from
kernel labels alone, so `-p NAME` is enough and the compose file is not read."""

# No `from __future__ import annotations`: typer would evaluate each string annotation twice
# (inspect.signature, get_type_hints) every time it builds the commands, ~8 ms a start.

import os
from typing import Annotated

import typer

from composenet.cli.app import app
from composenet.cli.help import Format, examples, fail
from composenet.cli.session import session


@app.command(short_help="List the project's containers, addresses and ports.",
             epilog=examples("composenet ps", "composenet -p webapp ps --format json"))
def ps(
    format: Annotated[Format, typer.Option("--format", help="text (a table) or json.")] = Format.text,
) -> None:
    """List the project's containers: service, namespace, addresses per network, published
    ports, what the command runs as (user and capabilities) and its state: running (pid),
    restarting, exited (code N), failed to start, or no command."""
    from composenet.kernel import status  # deferred: the kernel layer

    ctx, _name = session().project_context()
    try:
        typer.echo(status.ps(ctx, format.value), nl=False)
    finally:
        ctx.close()


@app.command(short_help="Print the host address:ports published for a container.",
             epilog=examples("composenet port web  # every published port of web",
                             "composenet port web 8000",
                             "composenet port web 8000/tcp --index 1  # PORT/PROTO: 53/udp for a UDP port"))
def port(
    service: Annotated[str, typer.Argument(help="Service name.")],
    private_port: Annotated[str | None, typer.Argument(metavar="[PORT[/PROTO]]",
                                                       help="Container port, e.g. 80 or 53/udp.")] = None,
    protocol: Annotated[str | None, typer.Option("--protocol", help="tcp (default), udp or sctp.")] = None,
    index: Annotated[int | None, typer.Option("--index", help="Replica (default: the first).")] = None,
) -> None:
    """Print the host address:port published for a container port (like `docker port`),
    ephemeral ports included; without a port, every published port of the container."""
    from composenet.kernel import status  # deferred: the kernel layer

    number, proto = None, protocol or "tcp"
    if private_port is not None:
        text, slash, given = private_port.partition("/")
        if slash and protocol and given != protocol:
            fail(f"{private_port} and --protocol {protocol} disagree")
        proto = given if slash else proto
        if not text.isdigit() or not 0 < int(text) < 65536 or proto not in ("tcp", "udp", "sctp"):
            fail(f"invalid port {private_port!r}: write PORT or PORT/PROTO (tcp, udp or sctp), e.g. 53/udp")
        number = int(text)
    ctx, _name = session().project_context()
    try:
        for line in status.port_lines(ctx, service, number, proto, index):
            typer.echo(line)
    finally:
        ctx.close()


@app.command(name="exec", short_help="Run a command in a container, as docker compose exec.",
             context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
             epilog=examples("composenet exec web ip -4 addr",
                             "composenet exec --index 1 db getent hosts web",
                             "composenet exec -u root -w /tmp -e DEBUG=1 web env",
                             "composenet exec --privileged web ip route add 10.9.0.0/24 dev eth0"))
def exec_(
    service: Annotated[str, typer.Argument(help="Service name.")],
    cmd: Annotated[list[str], typer.Argument(metavar="CMD [ARGS]...", help="Command to run (everything after SERVICE).")],
    index: Annotated[int | None, typer.Option("--index", help="Replica (default: the first).")] = None,
    user: Annotated[str | None, typer.Option("-u", "--user", help="Run as this user (default: the service's `user`).")] = None,
    workdir: Annotated[str | None, typer.Option("-w", "--workdir", help="Directory (default: the service's `working_dir`).")] = None,
    env: Annotated[list[str] | None, typer.Option("-e", "--env", help="Set KEY=VALUE (over the service's environment).")] = None,
    privileged: Annotated[bool, typer.Option("--privileged", help="Every capability (default: the service's, as its command).")] = False,
) -> None:
    """Run a command in a container's namespace, with its resolv.conf, hosts and hostname, and,
    as `docker compose exec`, the service's environment (environment, env_file), working_dir and
    user, and with the service's capabilities (Docker's default set, its cap_add/cap_drop/privileged;
    no_new_privs), not yours; in the foreground; exits with the command's status. Options go before SERVICE:
    everything after it is the command (`composenet exec web ip -4 addr`)."""
    from composenet.kernel import status  # deferred: the kernel layer

    argv = list(cmd)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    extra = {}
    for e in env or []:
        key, eq, value = e.partition("=")
        if not key:
            fail(f"invalid -e {e!r}: write KEY=VALUE")
        extra[key] = value if eq else os.environ.get(key, "")
    ctx, _name = session().project_context()
    try:
        rc = status.exec_in(ctx, service, argv, index, user, workdir, extra, privileged)
    finally:
        ctx.close()
    raise typer.Exit(rc)


@app.command(short_help="Print the output of a service's command.",
             epilog=examples("composenet logs web", "composenet logs -f web  # until Ctrl-C"))
def logs(
    service: Annotated[str, typer.Argument(help="Service name.")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new output until Ctrl-C.")] = False,
) -> None:
    """Print the output of a service's command (every replica; lines prefixed with the
    container name when there are several)."""
    from composenet.kernel import status  # deferred: the kernel layer

    ctx, _name = session().project_context()
    status.logs(ctx, service, follow)
