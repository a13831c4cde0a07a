"""`composenet network`: ls, inspect, create, rm, prune, connect, disconnect (the `docker
network` command set). Argument parsing only: what the commands do is composenet.networks, what
they list is composenet.kernel.netinfo."""

# No `from __future__ import annotations`: typer would evaluate each string annotation twice
# (inspect.signature, get_type_hints) every time it builds the commands, ~8 ms a start.

import ipaddress
import json
from enum import Enum
from typing import Annotated, Any, NoReturn

import typer

from composenet import paths
from composenet.cli.help import Format, echo_err, examples
from composenet.cli.session import session
from composenet.errors import ComposenetError

app = typer.Typer(
    name="network",
    help="Manage composenet networks: standalone ones (usable as `external: true` by projects) "
         "and, read-only, those of projects.",
    short_help="Manage networks, like `docker network`.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class Driver(str, Enum):
    bridge = "bridge"
    macvlan = "macvlan"


def _fail(message: str, hint: str | None = None) -> NoReturn:
    raise ComposenetError(message, hint=hint)


def _check_name(name: str) -> None:
    from composenet.networks import check_name  # deferred: the kernel layer

    check_name(name)


def _networks() -> dict[str, dict[str, Any]]:
    from composenet.kernel.netinfo import networks  # deferred: the kernel layer

    return networks(paths.run_dir())


# ---- commands ------------------------------------------------------------------------------


@app.command("ls", short_help="List standalone and project networks.", epilog=examples(
    'composenet network ls',
    'composenet network ls -q',
    'composenet network ls --format json',
))
def ls(
    format: Annotated[Format, typer.Option("--format", help="text (a table) or json.")] = Format.text,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only the names.")] = False,
) -> None:
    """List composenet networks: standalone ones and those of projects."""
    nets = _networks()
    if format == Format.json:
        typer.echo(json.dumps(list(nets.values()), indent=1, sort_keys=True))
        return
    if quiet:
        for name in nets:
            typer.echo(name)
        return
    rows = [("NAME", "DRIVER", "SCOPE", "PROJECT", "SUBNET", "CONTAINERS")]
    for n in nets.values():
        subnets = ",".join(s for s in (n["subnet"], n["subnet6"]) if s) or "-"
        rows.append((n["name"], n["driver"], n["scope"], n["project"] or "-", subnets, str(len(n["containers"]))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@app.command("inspect", short_help="Print networks and their containers as JSON.", epilog=examples(
    'composenet network inspect shared',
    'composenet network inspect webapp_front webapp_data',
))
def inspect(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Network name(s).")],
) -> None:
    """Print networks as JSON: driver, subnets, gateways, options, and the containers attached with their addresses."""
    nets = _networks()
    missing = [n for n in names if n not in nets]
    if missing:
        _fail(f"no such network: {', '.join(missing)}", hint="`composenet network ls` lists them")
    typer.echo(json.dumps([nets[n] for n in names], indent=1, sort_keys=True))


def _split_opts(opts: list[str]) -> dict[str, str]:
    out = {}
    for o in opts:
        key, eq, value = o.partition("=")
        if not eq or not key:
            _fail(f"invalid option {o!r}", hint="write -o KEY=VALUE")
        out[key] = value
    return out


def _ipam(subnets: list[str], gateways: list[str], ranges: list[str]) -> list[dict[str, str | None]]:
    if len(gateways) > len(subnets) or len(ranges) > len(subnets):
        _fail("each --gateway and --ip-range needs a --subnet (in the same order)")
    out: list[dict[str, str | None]] = []
    for i, s in enumerate(subnets):
        try:
            sub = ipaddress.ip_network(s, strict=False)
            gw = ipaddress.ip_address(gateways[i]) if i < len(gateways) else None
            rng = ipaddress.ip_network(ranges[i], strict=False) if i < len(ranges) else None
        except ValueError as e:
            return _fail(f"invalid address: {e}")
        if gw is not None and (gw.version != sub.version or gw not in sub):
            _fail(f"gateway {gw} is outside the subnet {sub}")
        if rng is not None and (rng.version != sub.version or not rng.subnet_of(sub)):  # type: ignore[arg-type]
            _fail(f"ip-range {rng} is outside the subnet {sub}")
        out.append({"subnet": str(sub), "gateway": str(gw) if gw else None, "ip_range": str(rng) if rng else None})
    return out


@app.command("create", short_help="Create a standalone network (`external: true`).", epilog=examples(
    'composenet network create shared',
    'composenet network create --subnet 10.40.0.0/24 --gateway 10.40.0.254 lab',
    'composenet network create --internal --ipv6 backplane',
    'composenet network create -d macvlan -o parent=eth1 --subnet 192.0.2.0/24 lan',
    '(then in a compose file: networks: {shared: {external: true}})',
))
def create(
    name: Annotated[str, typer.Argument(help="Network name.")],
    driver: Annotated[Driver, typer.Option("-d", "--driver", help="bridge or macvlan (-o parent=IFACE).")] = Driver.bridge,
    subnet: Annotated[list[str] | None, typer.Option("--subnet", help="Subnet (CIDR); repeat for IPv4 + IPv6.")] = None,
    gateway: Annotated[list[str] | None, typer.Option("--gateway", help="Gateway of the matching --subnet.")] = None,
    ip_range: Annotated[list[str] | None, typer.Option("--ip-range", help="Allocate from this part of the matching --subnet.")] = None,
    internal: Annotated[bool, typer.Option("--internal", help="No traffic in or out of the network.")] = False,
    ipv6: Annotated[bool, typer.Option("--ipv6", help="Dual stack (an IPv6 ULA subnet unless one is given).")] = False,
    opt: Annotated[list[str] | None, typer.Option("-o", "--opt", help="Driver option KEY=VALUE (as driver_opts).")] = None,
) -> None:
    """Create a standalone network; projects attach to it with `external: true`."""
    from composenet.networks import create as create_network  # deferred: the kernel layer

    s = session()
    _check_name(name)
    create_network(name, driver.value, _split_opts(opt or []), _ipam(subnet or [], gateway or [], ip_range or []),
                   internal, ipv6, paths.run_dir(), s.upstreams(), echo_err)
    typer.echo(name)


@app.command("rm", short_help="Remove standalone networks.", epilog=examples(
    'composenet network rm shared',
    'composenet network rm lab backplane',
))
def rm(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Network name(s).")],
) -> None:
    """Remove standalone networks (refused while containers are attached)."""
    from composenet.networks import remove  # deferred: the kernel layer

    nets = _networks()
    for name in names:
        remove(name, nets, paths.run_dir(), echo_err)
        typer.echo(name)


@app.command("prune", short_help="Remove the standalone networks no container uses.", epilog=examples(
    'composenet network prune',
))
def prune(
    format: Annotated[Format, typer.Option("--format", help="text or json (the removed names).")] = Format.text,
) -> None:
    """Remove every standalone composenet network no container uses. Project networks and anything without a composenet label are left alone."""
    from composenet.networks import prune as prune_networks  # deferred: the kernel layer

    gone = prune_networks(paths.run_dir(), echo_err)
    if format == Format.json:
        typer.echo(json.dumps(gone))
    elif gone:
        typer.echo("Deleted Networks:\n" + "\n".join(gone))


@app.command("connect", short_help="Attach a running container to one more network.", epilog=examples(
    'composenet -f compose.yaml network connect shared webapp-web-1',
    'composenet -p webapp network connect --alias api --ip 10.40.0.10 lab webapp-web-1',
))
def connect(
    network: Annotated[str, typer.Argument(help="Network name (`composenet network ls`).")],
    container: Annotated[str, typer.Argument(help="Container of a running project, e.g. PROJECT-web-1.")],
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Extra DNS name on this network.")] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="IPv4 address in the network's subnet.")] = None,
) -> None:
    """Attach a running container to one more network (a new ethN); a later `up` keeps it."""
    from composenet.networks import connect as connect_container  # deferred: the kernel layer

    s = session()
    project = s.load()
    ctx = s.context(project.name)
    try:
        connect_container(project, ctx, network, container, list(alias or []), ip, s.upstreams(), echo_err)
    finally:
        ctx.close()


@app.command("disconnect", short_help="Detach a container from a network.", epilog=examples(
    'composenet -p webapp network disconnect lab webapp-web-1',
))
def disconnect(
    network: Annotated[str, typer.Argument(help="Network name.")],
    container: Annotated[str, typer.Argument(help="Container of a running project.")],
) -> None:
    """Detach a container from a network `connect` attached it to."""
    from composenet.networks import disconnect as disconnect_container  # deferred: the kernel layer

    s = session()
    project = s.load()
    ctx = s.context(project.name)
    try:
        disconnect_container(project, ctx, network, container, s.upstreams(), echo_err)
    finally:
        ctx.close()
