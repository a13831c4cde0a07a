"""`ps`, `port`, `exec` and `logs`: read what runs; never change the project. They work from
kernel labels alone, so `-p NAME` is enough and the compose file is not read."""

# No `from __future__ import annotations`: typer would evaluate each string annotation twice
# (inspect.signature, get_type_hints) every time it builds the commands, ~8 ms a start.

from typing import Annotated

import typer

from composenet.cli.app import app
from composenet.cli.help import Format, examples
from composenet.cli.session import session


@app.command(short_help="List the project's containers, addresses and ports.",
             epilog=examples("composenet ps", "composenet -p shop ps --format json"))
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


@app.command(short_help="Print the host address:port published for a port.",
             epilog=examples("composenet port web 80", "composenet port dns 53 --protocol udp --index 2"))
def port(
    service: Annotated[str, typer.Argument(help="Service name.")],
    private_port: Annotated[int, typer.Argument(metavar="PORT", help="Container port.")],
    protocol: Annotated[str, typer.Option("--protocol", help="tcp, udp or sctp.")] = "tcp",
    index: Annotated[int | None, typer.Option("--index", help="Replica (default: the first).")] = None,
) -> None:
    """Print the host address:port published for a container port (like `docker port`),
    ephemeral ports included."""
    from composenet.kernel import status  # deferred: the kernel layer

    ctx, _name = session().project_context()
    try:
        for line in status.port_lines(ctx, service, private_port, protocol, index):
            typer.echo(line)
    finally:
        ctx.close()


@app.command(name="exec", short_help="Run a command in a container's namespace.", epilog=examples("composenet exec web -- ip addr",
                                            "composenet exec db --index 2 -- getent hosts web"))
def exec_(
    service: Annotated[str, typer.Argument(help="Service name.")],
    cmd: Annotated[list[str], typer.Argument(metavar="-- CMD [ARGS]...", help="Command to run.")],
    index: Annotated[int | None, typer.Option("--index", help="Replica (default: the first).")] = None,
) -> None:
    """Run a command in a container's namespace, with its resolv.conf, hosts and hostname, in
    the foreground; exits with the command's status. Example: `composenet exec web -- ip addr`."""
    from composenet.kernel import status  # deferred: the kernel layer

    ctx, _name = session().project_context()
    try:
        rc = status.exec_in(ctx, service, list(cmd), index)
    finally:
        ctx.close()
    raise typer.Exit(rc)


@app.command(short_help="Print the output of a service's command.",
             epilog=examples("composenet logs web", "composenet logs -f worker"))
def logs(
    service: Annotated[str, typer.Argument(help="Service name.")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new output until Ctrl-C.")] = False,
) -> None:
    """Print the output of a service's command (every replica; lines prefixed with the
    container name when there are several)."""
    from composenet.kernel import status  # deferred: the kernel layer

    ctx, _name = session().project_context()
    status.logs(ctx, service, follow)
