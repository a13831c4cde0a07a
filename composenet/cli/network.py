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


def _known_network(name: str, project: Any) -> None:
    if name in {n.name for n in project.networks}:
        return
    nets = _networks()
    if name not in nets:
        _fail(f"no such network: {name}", hint=did_you_mean(name, list(nets) + [n.name for n in project.networks])
              or "`composenet network ls` lists them")


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


@app.command("inspect", short_help="Print networks as docker network inspect does.", epilog=examples(
    'composenet network inspect shared',
    'composenet network inspect webapp_front webapp_data',
    "composenet network inspect shared --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}'",
    "composenet network inspect shared -f '{{json .Containers}}'",
))
def inspect(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Network name(s).")],
    template: Annotated[str | None, typer.Option(
        "-f", "--format", help="json, or a Go template applied to each network ({{.Name}}, {{json .IPAM}}, "
        "{{range .Containers}}{{.IPv4Address}} {{end}}).")] = None,
) -> None:
    """Print networks as `docker network inspect` does: Name, Id, Created, Driver, IPAM.Config,
    Internal, Attachable, Containers{ID: {Name, IPv4Address, ...}}, Options, Labels."""
    from composenet.core.gotemplate import TemplateError  # deferred: only inspect renders templates
    from composenet.core.netinspect import render_format, render_json  # deferred: as above

    nets = _networks()
    missing = [n for n in names if n not in nets]
    if missing:
        _fail(f"no such network: {', '.join(missing)}", hint=did_you_mean(missing[0], nets)
              or "`composenet network ls` lists them")
    chosen = [_with_cluster(nets[n]) for n in names]
    if template is None:
        typer.echo(render_json(chosen), nl=False)
        return
    try:
        typer.echo(render_format(chosen, template), nl=False)
    except TemplateError as e:
        _fail(f"--format: {e}", hint="supported: {{.A.B}}, {{json .A}}, {{range .A}}...{{end}}, {{index .A \"k\"}}, "
              "{{if}}/{{with}}/{{else}}, pipes; json, index, len, join, lower, upper, eq, ne, not")


def _with_cluster(net: dict[str, Any]) -> dict[str, Any]:
    """A cluster network (SCOPE swarm) with its nodes and endpoints on every host, from the
    cluster store when one is set (``cluster``: {"nodes": {node: vtep}, "endpoints": [...]}); a
    store that does not answer is a warning, the local view is printed."""
    settings = session().cluster if net.get("scope") == "swarm" else None
    if settings is None:
        return net
    from composenet.cluster.client import Store  # deferred: the store client (etcd3gw, requests)
    from composenet.cluster.errors import StoreError  # deferred: with the client
    from composenet.cluster.registry import Registry  # deferred: with the client

    try:
        st = Registry(Store(settings.store), settings.node).network_state(net["name"])
    except StoreError as e:
        echo_err(f"warning: cluster store: {e.message}; network {net['name']}: this host's endpoints only")
        return net
    return {**net, "cluster": {
        "nodes": {node: m.vtep for node, m in sorted(st.members.items())},
        "endpoints": [{"container": e.container, "service": e.service, "ipv4": e.ipv4, "mac": e.mac, "node": e.node,
                       "aliases": list(e.aliases)}
                      for e in sorted(st.endpoints, key=lambda e: (e.node, e.container))]}}


def did_you_mean(name: str, known: Any) -> str | None:
    """"did you mean X?" for a misspelt name among ``known``, or None."""
    import difflib  # deferred: only on errors

    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}? (`composenet network ls` lists them)" if close else None


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
    'composenet network prune -f',
))
def prune(
    format: Annotated[Format, typer.Option("--format", help="text or json (the removed names).")] = Format.text,
    force: Annotated[bool, typer.Option("-f", "--force", help="Do not ask (asked only on a terminal).")] = False,
) -> None:
    """Remove every standalone composenet network no container uses. Project networks and anything without a composenet label are left alone. On a terminal it asks first, unless -f."""
    import sys  # deferred: only prune asks

    from composenet.networks import prune as prune_networks  # deferred: the kernel layer

    if not force and sys.stdin.isatty():
        unused = [n for n, v in _networks().items() if v["project"] is None and not v["containers"]]
        if not unused:
            typer.echo("No unused standalone network.")
            return
        typer.echo("WARNING! This will remove the standalone networks no container uses: " + ", ".join(unused))
        if not typer.confirm("Are you sure you want to continue?", default=False):
            raise typer.Exit(1)
    gone = prune_networks(paths.run_dir(), echo_err)
    if format == Format.json:
        typer.echo(json.dumps(gone))
    elif gone:
        typer.echo("Deleted Networks:\n" + "\n".join(gone))


def _project_of(container: str) -> tuple[Any, str]:
    """(project, container) for connect/disconnect: from -f (or -p with a compose file here),
    else from the project that owns a namespace named ``container`` on this host (its compose
    files as its last `up` recorded them). A service name with one container stands for it."""
    from composenet.cli.session import Session  # deferred: as the kernel imports
    from composenet.compose.options import LoadOptions  # deferred: as above
    from composenet.kernel.netinfo import container_project, project_source  # deferred: the kernel layer

    s = session()
    if s.opts.files:
        project = s.load()
    else:
        found = [s.opts.project_name] if s.opts.project_name else container_project(paths.run_dir(), container)
        if len(found) > 1:
            _fail(f"container {container!r} is in several projects: {', '.join(found)}", hint="name one with -p NAME")
        source = project_source(paths.run_dir(), found[0]) if found and found[0] else None
        if source is None:
            project = s.load()  # the compose file of this directory (a service name, or -p NAME)
        else:
            opts = LoadOptions(files=tuple(source.get("files") or ()), project_name=found[0],
                               env_files=s.opts.env_files, profiles=s.opts.profiles,
                               cwd=source.get("working_dir"))
            project = Session(opts, s.resolv_conf).load()
    return project, _container_of(project, container)


def _container_of(project: Any, name: str) -> str:
    from composenet.core.desired import container_names  # deferred: the core layer

    every = [c for svc in project.services for c in container_names(project, svc)]
    if name in every:
        return name
    svc = next((x for x in project.services if x.name == name), None)
    if svc is not None:
        names = container_names(project, svc)
        if len(names) == 1:
            return names[0]
        _fail(f"service {name!r} has {len(names)} containers: name one", hint=", ".join(names))
    import difflib  # deferred: only on errors

    close = difflib.get_close_matches(name, every + [x.name for x in project.services], n=3, cutoff=0.6)
    _fail(f"no container or service {name!r} in project {project.name!r}",
          hint=f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "`composenet ps` lists them")


@app.command("connect", short_help="Attach a running container to one more network.", epilog=examples(
    'composenet network connect shared webapp-web-1',
    'composenet network connect --alias api --ip 10.40.0.10 lab webapp-web-1',
    'composenet network connect shared web  # a service with one container, from its directory',
))
def connect(
    network: Annotated[str, typer.Argument(help="Network name (`composenet network ls`).")],
    container: Annotated[str, typer.Argument(help="Container of a running project (PROJECT-web-1), or a service "
                                             "of this directory's project that has one container.")],
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Extra DNS name on this network.")] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="IPv4 address in the network's subnet.")] = None,
) -> None:
    """Attach a running container to one more network (a new ethN); a later `up` keeps it."""
    from composenet.networks import connect as connect_container  # deferred: the kernel layer

    s = session()
    project, container = _project_of(container)
    _known_network(network, project)
    ctx = s.context(project.name)
    try:
        connect_container(project, ctx, network, container, list(alias or []), ip, s.upstreams(), echo_err)
    finally:
        ctx.close()


@app.command("disconnect", short_help="Detach a container from a network.", epilog=examples(
    'composenet network disconnect lab webapp-web-1',
))
def disconnect(
    network: Annotated[str, typer.Argument(help="Network name.")],
    container: Annotated[str, typer.Argument(help="Container of a running project (or a service with one).")],
) -> None:
    """Detach a container from a network `connect` attached it to."""
    from composenet.networks import disconnect as disconnect_container  # deferred: the kernel layer

    s = session()
    project, container = _project_of(container)
    ctx = s.context(project.name)
    try:
        disconnect_container(project, ctx, network, container, s.upstreams(), echo_err)
    finally:
        ctx.close()
