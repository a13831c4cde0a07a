"""`composenet network`: ls, create, inspect, rm, prune (the `docker network` command set).

A standalone network (made by `network create NAME`) is a project of its own, named ``-NAME``
(project names never start with '-', so it cannot clash with one): its bridge is labelled
``composenet:-NAME/NAME`` and it goes through the same pipeline as a project, with a tiny
desired state of one network and no services (bridge, gateway address, sysctls, nft table with
its masquerade and isolation rules, and a resolver on its gateway that answers for the
containers every project attaches to it). `rm` is that project's `down`. Its options are kept in
``<run dir>/-NAME/network.json`` for `inspect` and `ls` (and as the only trace of a macvlan
network, which has no kernel object until a container attaches).

Projects use standalone networks (and each other's) with ``external: true``; `ls` and `inspect`
show every composenet network, a project's too; `rm` and `prune` only touch standalone ones
(a project's networks go with `composenet -p NAME down`), and nothing without a composenet label.

`connect` / `disconnect` work on a running project (found with the global -f/-p options, as for
`up`): they edit the project's record of added endpoints (``connections.json`` in its runtime
directory, read back by observe as ObservedState.connections, so a later `up` keeps them) and
apply the project's plan: the endpoint, its addresses and its DNS names come and go together.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from enum import Enum
from typing import Annotated, Any

import typer

from composenet import paths
from composenet.cli.help import Format, examples
from composenet.paths import ProjectPaths

app = typer.Typer(
    name="network",
    help="Manage composenet networks: standalone ones (usable as `external: true` by projects) "
         "and, read-only, those of projects.",
    no_args_is_help=True,
)

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")  # Docker's network name rule, bounded


class Driver(str, Enum):
    bridge = "bridge"
    macvlan = "macvlan"


def standalone_project(name: str) -> str:
    """The pseudo-project that owns standalone network ``name``."""
    return "-" + name


def _run_dir() -> str:
    return paths.run_dir()


def _context(project: str):  # type: ignore[no-untyped-def]
    from composenet.kernel.context import Context

    return Context(project=project, run_dir=_run_dir())


def _fail(message: str, hint: str | None = None) -> Any:
    from composenet.errors import ComposenetError

    raise ComposenetError(message, hint=hint)


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        _fail(f"invalid network name {name!r}",
              hint="start with a letter or digit; then letters, digits, '_', '.', '-' (at most 64)")


def _read_spec(run_dir: str, project: str) -> dict[str, Any] | None:
    try:
        with open(ProjectPaths(run_dir, project).network_spec) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _host_netns() -> int:
    """Identity (inode) of the network namespace composenet runs in."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def standalone_specs(run_dir: str) -> dict[str, dict[str, Any]]:
    """Standalone networks' specs, by network name: those made in this network namespace (the
    runtime directory is shared by every namespace of the machine; a network is not)."""
    from composenet.paths import list_projects

    out = {}
    here = _host_netns()
    for p in list_projects(run_dir):
        if p.startswith("-"):
            spec = _read_spec(run_dir, p)
            if spec is not None and spec.get("name") == p[1:] and spec.get("host_netns", here) == here:
                out[p[1:]] = spec
    return out


def _networks() -> dict[str, dict[str, Any]]:
    """Every composenet network: labelled bridges (any project, with their endpoints) merged
    with the standalone specs. Each: name, driver, project (None: standalone), bridge, subnet,
    gateway, subnet6, gateway6, ip_range, internal, ipv6, options, containers."""
    from composenet.kernel import links

    links.check_mount_namespace()
    ctx = _context("-")  # owns nothing: every network is "another project's"
    try:
        seen = links.composenet_networks(ctx)
    finally:
        ctx.close()
    specs = standalone_specs(ctx.run_dir)
    ctx = _context("-")
    try:
        seen.update(links.macvlan_networks(ctx, {k: v for k, v in specs.items() if v.get("driver") == "macvlan"
                                                  and k not in seen}))
    finally:
        ctx.close()
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(seen) | set(specs)):
        net = seen.get(name, {})
        spec = specs.get(name, {})
        if not net and spec.get("driver", "bridge") == "bridge":
            continue  # a spec whose bridge is not in this namespace: not a network here
        owner = str(net.get("owner", standalone_project(name)))
        v4 = [ipaddress.ip_interface(c) for c in net.get("cidrs", ()) if ":" not in c]
        v6 = [ipaddress.ip_interface(c) for c in net.get("cidrs", ()) if ":" in c]
        ipam = {c.get("subnet"): c for c in spec.get("ipam", ())}
        sub4 = str(v4[0].network) if v4 else next((s for s in ipam if s and ":" not in s), None)
        sub6 = str(v6[0].network) if v6 else next((s for s in ipam if s and ":" in s), None)
        out[name] = {
            "name": name,
            "driver": spec.get("driver", "bridge"),
            "scope": "local",
            "project": None if owner.startswith("-") else owner,
            "bridge": net.get("bridge"),
            "subnet": sub4,
            "gateway": str(v4[0].ip) if v4 else (ipam.get(sub4) or {}).get("gateway"),
            "ip_range": (ipam.get(sub4) or {}).get("ip_range"),
            "subnet6": sub6,
            "gateway6": str(v6[0].ip) if v6 else (ipam.get(sub6) or {}).get("gateway"),
            "internal": spec.get("internal") if spec else None,
            "ipv6": bool(sub6),
            "options": dict(spec.get("options", {})),
            "containers": [dict(e) for e in net.get("endpoints", ())],
        }
    return out


def _echo(text: str) -> None:
    typer.echo(text, err=True)


# ---- commands ------------------------------------------------------------------------------


@app.command("ls", epilog=examples(
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


@app.command("inspect", epilog=examples(
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


@app.command("create", epilog=examples(
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
    from composenet import cli
    from composenet.core.model import IpamConfig, Network, Project
    from composenet.kernel import links
    from composenet.kernel.rundir import atomic_write
    from composenet.pipeline import read_upstreams, run_apply

    _check_name(name)
    options = _split_opts(opt or [])
    ipam = _ipam(subnet or [], gateway or [], ip_range or [])
    if driver == Driver.macvlan and not options.get("parent"):
        _fail("a macvlan network needs its parent interface", hint="add -o parent=IFACE")
    links.check_mount_namespace()
    nets = _networks()
    if name in nets:
        _fail(f"network {name!r} already exists", hint="`composenet network inspect " + name + "` shows it")
    for c in ipam:
        sub = ipaddress.ip_network(str(c["subnet"]))
        for other in nets.values():
            for s in (other["subnet"], other["subnet6"]):
                if s and ipaddress.ip_network(s).version == sub.version and ipaddress.ip_network(s).overlaps(sub):
                    _fail(f"subnet {sub} overlaps {s} of network {other['name']!r}")
    net = Network(
        key=name, name=name, driver=driver.value, driver_opts=tuple(sorted(options.items())), internal=internal,
        enable_ipv6=ipv6 or any(":" in str(c["subnet"]) for c in ipam),
        ipam=tuple(IpamConfig(subnet=c["subnet"], gateway=c["gateway"], ip_range=c["ip_range"]) for c in ipam),
    )
    p = standalone_project(name)
    project = Project(name=p, working_dir=os.getcwd(), networks=(net,))
    ctx = _context(p)
    try:
        # A bridge network gets a resolver of its own (the pseudo-project's), which answers for
        # every project's containers attached to it (composenet/dns/peers.py); it forwards
        # other names to the host's upstream servers.
        planned = run_apply(ctx, project, p, read_upstreams(cli.G.resolv_conf), _echo, quiet=True)
        np = next((n for n in planned.desired.networks if n["name"] == name), {})
        spec = {
            "name": name, "driver": driver.value, "internal": internal, "options": options,
            "host_netns": _host_netns(),
            "ipam": [{"subnet": s, "gateway": g, "ip_range": r} for s, g, r in (
                (np.get("subnet"), np.get("gateway"), next((c["ip_range"] for c in ipam if ":" not in str(c["subnet"])), None)),
                (np.get("subnet6"), np.get("gateway6"), next((c["ip_range"] for c in ipam if ":" in str(c["subnet"])), None)),
            ) if s] or ipam,
        }
        atomic_write(ctx.paths.network_spec, json.dumps(spec, indent=1, sort_keys=True) + "\n")
    finally:
        ctx.close()
    typer.echo(name)


def _remove(name: str, nets: dict[str, dict[str, Any]]) -> None:
    from composenet.core.desired import Upstreams
    from composenet.kernel import rundir
    from composenet.pipeline import run_apply

    n = nets.get(name)
    if n is None:
        _fail(f"no such network: {name}", hint="`composenet network ls` lists them")
        return
    if n["project"] is not None:
        _fail(f"network {name!r} belongs to project {n['project']!r}; it is removed with its project",
              hint=f"composenet -p {n['project']} down")
    if n["containers"]:
        _fail(f"network {name!r} has active endpoints: {', '.join(e['name'] for e in n['containers'])}",
              hint="bring down the projects using it first")
    p = standalone_project(name)
    ctx = _context(p)
    try:
        run_apply(ctx, None, p, Upstreams(), _echo, quiet=True)
        with rundir.project_lock(ctx):  # a macvlan network has only its spec: remove it too
            rundir.remove_project_dir(ctx)
    finally:
        ctx.close()


@app.command("rm", epilog=examples(
    'composenet network rm shared',
    'composenet network rm lab backplane',
))
def rm(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Network name(s).")],
) -> None:
    """Remove standalone networks (refused while containers are attached)."""
    nets = _networks()
    for name in names:
        _remove(name, nets)
        typer.echo(name)


@app.command("prune", epilog=examples(
    'composenet network prune',
))
def prune(
    format: Annotated[Format, typer.Option("--format", help="text or json (the removed names).")] = Format.text,
) -> None:
    """Remove every standalone composenet network no container uses. Project networks and anything without a composenet label are left alone."""
    nets = _networks()
    gone = []
    for name, n in nets.items():
        if n["project"] is None and not n["containers"]:
            _remove(name, nets)
            gone.append(name)
    if format == Format.json:
        typer.echo(json.dumps(gone))
    elif gone:
        typer.echo("Deleted Networks:\n" + "\n".join(gone))


def _live_project(container: str):  # type: ignore[no-untyped-def]
    """(project, ctx, service) for ``container`` of the project the global options name."""
    from composenet import cli
    from composenet.core.desired import container_names

    project = cli._load()
    for svc in project.services:
        if container in container_names(project, svc):
            break
    else:
        return _fail(f"container {container!r} is not one of project {project.name!r}'s",
                     hint="run it from the project's directory, or pass -f FILE / -p NAME")
    if svc.network_mode:
        _fail(f"container {container!r} has network_mode {svc.network_mode}: it cannot be connected")
    if not os.path.exists(paths.netns_path(container)):
        _fail(f"container {container!r} is not running", hint="`composenet up` first")
    return project, cli._context(project.name), svc


def _apply_connections(project, ctx, records: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    """Write the record, apply the project's plan; on failure put the old record back."""
    from composenet import cli
    from composenet.kernel.observe import connections_path, read_connections
    from composenet.kernel.rundir import atomic_write
    from composenet.pipeline import read_upstreams, run_apply

    path = connections_path(ctx)
    before = read_connections(ctx)

    def write(recs: list[dict[str, Any]]) -> None:
        if recs:
            atomic_write(path, json.dumps(recs, indent=1, sort_keys=True) + "\n")
        elif os.path.exists(path):
            os.unlink(path)

    write(records)
    try:
        run_apply(ctx, project, project.name, read_upstreams(cli.G.resolv_conf), _echo, quiet=True)
    except BaseException:
        write(before)
        raise
    finally:
        ctx.close()


@app.command("connect", epilog=examples(
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
    from composenet.kernel.observe import read_connections

    project, ctx, svc = _live_project(container)
    names = {n.name for n in project.networks}
    if network not in names and network not in _networks():
        _fail(f"no such network: {network}", hint="`composenet network ls` lists them")
    if any(project.network(a.network).name == network for a in svc.networks if a.network in
           {n.key for n in project.networks}):
        _fail(f"container {container!r} is already on network {network!r} (from the compose file)")
    records = read_connections(ctx)
    if any(r.get("container") == container and r.get("network") == network for r in records):
        _fail(f"container {container!r} is already connected to network {network!r}")
    if ip is not None:
        try:
            if ipaddress.ip_address(ip).version != 4:
                raise ValueError(ip)
        except ValueError:
            _fail(f"invalid IPv4 address {ip!r}")
    records.append({"container": container, "network": network, "aliases": list(alias or []), "ipv4": ip})
    _apply_connections(project, ctx, records)


@app.command("disconnect", epilog=examples(
    'composenet -p webapp network disconnect lab webapp-web-1',
))
def disconnect(
    network: Annotated[str, typer.Argument(help="Network name.")],
    container: Annotated[str, typer.Argument(help="Container of a running project.")],
) -> None:
    """Detach a container from a network `connect` attached it to."""
    from composenet.kernel.observe import read_connections

    project, ctx, _svc = _live_project(container)
    records = read_connections(ctx)
    keep = [r for r in records if not (r.get("container") == container and r.get("network") == network)]
    if len(keep) == len(records):
        _fail(f"container {container!r} was not connected to network {network!r} with `network connect`",
              hint="networks from the compose file go away by editing the file and running `up`")
    _apply_connections(project, ctx, keep)
