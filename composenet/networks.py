"""`composenet network` operations: standalone networks and endpoints added to running containers.

A standalone network (made by `network create NAME`) is a project of its own, named ``-NAME``
(``paths.standalone_project``): its bridge is labelled ``composenet:-NAME/NAME`` and it goes
through the same pipeline as a project, with a tiny desired state of one network and no services
(bridge, gateway address, sysctls, nft table with its masquerade and isolation rules, and a
resolver on its gateway that answers for the containers every project attaches to it). `rm` is
that project's `down`. Its options are kept in ``<run dir>/-NAME/network.json`` for `inspect`
and `ls` (and as the only trace of a macvlan network, which has no kernel object until a
container attaches).

Projects use standalone networks (and each other's) with ``external: true``; `rm` and `prune`
only touch standalone ones (a project's networks go with `composenet -p NAME down`), and
nothing without a composenet label.

`connect` / `disconnect` work on a running project: they edit the project's record of added
endpoints (``connections.json``, read back by observe as ObservedState.connections, so a later
`up` keeps them) and apply the project's plan: the endpoint, its addresses and its DNS names come
and go together.

Layer: beside ``pipeline`` (it runs the pipeline); below ``cli``. Must not: print (callers pass
an ``echo``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from composenet.core.desired import Upstreams, container_names
from composenet.core.model import IpamConfig, Network, Project, Service
from composenet.errors import ComposenetError
from composenet.kernel import links, rundir
from composenet.kernel.cleanup import remove_project_dir
from composenet.kernel.context import Context
from composenet.kernel.netinfo import networks
from composenet.kernel.observe import read_connections
from composenet.linux.fileio import atomic_write
from composenet.paths import netns_path, standalone_project
from composenet.pipeline import run_apply

Echo = Callable[[str], None]
NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")  # Docker's network name rule, bounded


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise ComposenetError(f"invalid network name {name!r}",
                              hint="start with a letter or digit; then letters, digits, '_', '.', '-' (at most 64)")


def create(name: str, driver: str, options: dict[str, str], ipam: list[dict[str, str | None]], internal: bool,
           ipv6: bool, run_dir: str, upstreams: Upstreams, echo: Echo) -> None:
    """Create standalone network ``name``; ``ipam`` entries are {subnet, gateway, ip_range}."""
    check_name(name)
    if driver == "macvlan" and not options.get("parent"):
        raise ComposenetError("a macvlan network needs its parent interface", hint="add -o parent=IFACE")
    links.check_mount_namespace()
    nets = networks(run_dir)
    if name in nets:
        raise ComposenetError(f"network {name!r} already exists",
                              hint="`composenet network inspect " + name + "` shows it")
    for c in ipam:
        sub = ipaddress.ip_network(str(c["subnet"]))
        for other in nets.values():
            for s in (other["subnet"], other["subnet6"]):
                if s and ipaddress.ip_network(s).version == sub.version and ipaddress.ip_network(s).overlaps(sub):
                    raise ComposenetError(f"subnet {sub} overlaps {s} of network {other['name']!r}")
    net = Network(
        key=name, name=name, driver=driver, driver_opts=tuple(sorted(options.items())), internal=internal,
        enable_ipv6=ipv6 or any(":" in str(c["subnet"]) for c in ipam),
        ipam=tuple(IpamConfig(subnet=c["subnet"], gateway=c["gateway"], ip_range=c["ip_range"]) for c in ipam),
    )
    p = standalone_project(name)
    project = Project(name=p, working_dir=os.getcwd(), networks=(net,))
    ctx = Context(project=p, run_dir=run_dir)
    try:
        # A bridge network gets a resolver of its own (the pseudo-project's), which answers for
        # every project's containers attached to it (composenet/dns/peers.py); it forwards
        # other names to the host's upstream servers.
        planned = run_apply(ctx, project, p, upstreams, echo, quiet=True)
        np = next((n for n in planned.desired.networks if n["name"] == name), {})

        def ip_range(v6: bool) -> str | None:
            return next((c["ip_range"] for c in ipam if (":" in str(c["subnet"])) == v6), None)

        spec = {
            "name": name, "driver": driver, "internal": internal, "options": options,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host_netns": os.stat("/proc/thread-self/ns/net").st_ino,
            "ipam": [{"subnet": s, "gateway": g, "ip_range": r} for s, g, r in (
                (np.get("subnet"), np.get("gateway"), ip_range(False)),
                (np.get("subnet6"), np.get("gateway6"), ip_range(True)),
            ) if s] or ipam,
        }
        atomic_write(ctx.paths.network_spec, json.dumps(spec, indent=1, sort_keys=True) + "\n")
    finally:
        ctx.close()


def remove(name: str, nets: dict[str, dict[str, Any]], run_dir: str, echo: Echo) -> None:
    """Remove standalone network ``name`` (``nets``: what ``netinfo.networks`` listed)."""
    n = nets.get(name)
    if n is None:
        raise ComposenetError(f"no such network: {name}", hint="`composenet network ls` lists them")
    if n["project"] is not None:
        raise ComposenetError(f"network {name!r} belongs to project {n['project']!r}; it is removed with its project",
                              hint=f"composenet -p {n['project']} down")
    if n["containers"]:
        eps = n["containers"]
        if _connected_by_hand(run_dir, name, eps):
            hint = "detach them first: " + "; ".join(
                f"composenet network disconnect {name} {e['name']}" for e in eps)
        else:
            hint = "bring down the projects using it first: " + "; ".join(
                sorted({f"composenet -p {e['project']} down" for e in eps if e.get("project")}))
        raise ComposenetError(f"network {name!r} has active endpoints: {', '.join(e['name'] for e in eps)}", hint=hint)
    p = standalone_project(name)
    ctx = Context(project=p, run_dir=run_dir)
    try:
        run_apply(ctx, None, p, Upstreams(), echo, quiet=True)
        with rundir.project_lock(ctx):  # a macvlan network has only its spec: remove it too
            remove_project_dir(ctx)
    finally:
        ctx.close()


def _connected_by_hand(run_dir: str, network: str, endpoints: list[dict[str, Any]]) -> bool:
    """Whether every endpoint of ``network`` was attached by `network connect` (not by a file)."""
    for e in endpoints:
        ctx = Context(project=str(e.get("project") or ""), run_dir=run_dir)
        try:
            if not any(r.get("container") == e["name"] and r.get("network") == network for r in read_connections(ctx)):
                return False
        finally:
            ctx.close()
    return True


def prune(run_dir: str, echo: Echo) -> list[str]:
    """Remove every standalone network no container uses; returns their names."""
    nets = networks(run_dir)
    gone = []
    for name, n in nets.items():
        if n["project"] is None and not n["containers"]:
            remove(name, nets, run_dir, echo)
            gone.append(name)
    return gone


def _live_service(project: Project, container: str) -> Service:
    """The service of running ``container`` of ``project``."""
    for svc in project.services:
        if container in container_names(project, svc):
            break
    else:
        raise ComposenetError(f"container {container!r} is not one of project {project.name!r}'s",
                              hint="run it from the project's directory, or pass -f FILE / -p NAME")
    if svc.network_mode:
        raise ComposenetError(f"container {container!r} has network_mode {svc.network_mode}: it cannot be connected")
    if not os.path.exists(netns_path(container)):
        raise ComposenetError(f"container {container!r} is not running", hint="`composenet up` first")
    return svc


def _apply_connections(project: Project, ctx: Context, records: list[dict[str, Any]], upstreams: Upstreams,
                       echo: Echo) -> None:
    """Write the record, apply the project's plan; on failure put the old record back."""
    path = ctx.paths.connections
    before = read_connections(ctx)

    def write(recs: list[dict[str, Any]]) -> None:
        if recs:
            atomic_write(path, json.dumps(recs, indent=1, sort_keys=True) + "\n")
        elif os.path.exists(path):
            os.unlink(path)

    write(records)
    try:
        run_apply(ctx, project, project.name, upstreams, echo, quiet=True)
    except BaseException:
        write(before)
        raise


def connect(project: Project, ctx: Context, network: str, container: str, aliases: list[str], ip: str | None,
            upstreams: Upstreams, echo: Echo) -> None:
    """Attach running ``container`` of ``project`` to ``network`` (a new ethN)."""
    svc = _live_service(project, container)
    names = {n.name for n in project.networks}
    if network not in names and network not in networks(ctx.run_dir):
        raise ComposenetError(f"no such network: {network}", hint="`composenet network ls` lists them")
    if any(project.network(a.network).name == network for a in svc.networks if a.network in
           {n.key for n in project.networks}):
        raise ComposenetError(f"container {container!r} is already on network {network!r} (from the compose file)")
    records = read_connections(ctx)
    if any(r.get("container") == container and r.get("network") == network for r in records):
        raise ComposenetError(f"container {container!r} is already connected to network {network!r}")
    if ip is not None:
        try:
            if ipaddress.ip_address(ip).version != 4:
                raise ValueError(ip)
        except ValueError:
            raise ComposenetError(f"invalid IPv4 address {ip!r}") from None
    records.append({"container": container, "network": network, "aliases": list(aliases), "ipv4": ip})
    _apply_connections(project, ctx, records, upstreams, echo)


def disconnect(project: Project, ctx: Context, network: str, container: str, upstreams: Upstreams,
               echo: Echo) -> None:
    """Detach ``container`` from a network `connect` attached it to."""
    _live_service(project, container)
    records = read_connections(ctx)
    keep = [r for r in records if not (r.get("container") == container and r.get("network") == network)]
    if len(keep) == len(records):
        if any(project.network(a.network).name == network for a in _live_service(project, container).networks):
            raise ComposenetError(f"container {container!r} is on network {network!r} from the compose file",
                                  hint="networks from the compose file go away by editing the file and running `up`")
        raise ComposenetError(f"container {container!r} is not connected to network {network!r} (already "
                              "disconnected?)", hint=f"`composenet network inspect {network}` lists its containers")
    _apply_connections(project, ctx, keep, upstreams, echo)
