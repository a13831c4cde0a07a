"""What the host holds besides the project's own resources: the host facts IPAM and external
networks need (``host_facts``, an observe-only handler ``HostFacts``), and every composenet
network of this host as `composenet network ls/inspect` show them.

A network is a labelled bridge of any project (``composenet:<owner>/<network>``, with the
containers attached, read from their namespaces by the veth peer's label), merged with the specs
standalone networks keep in their run directory (``network.json``; a macvlan network has no
kernel object until a container attaches, so its spec and the labelled macvlan links in other
projects' recorded namespaces are all there is).

Owns: the constraint fields of ObservedState (host routes and addresses, foreign subnets and
links, other networks and the addresses used on them, the host's bound sockets), reading standalone specs
(``standalone_specs``) and the merged view (``networks``). Must not: change anything, or report
anything as a resource of the project (kernel.readback does).
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import TYPE_CHECKING, Any

from composenet.core.resources import LABEL_PREFIX, Resource
from composenet.core.state import ObservedState
from composenet.dns.peers import host_netns
from composenet.dns.running import resolver_pid
from composenet.kernel import firewall, intents, ipvlan
from composenet.kernel.context import Context, HandlerBase
from composenet.kernel.namespaces import recorded_namespaces
from composenet.kernel.normalise import is_link_local, label_parts, on_loopback
from composenet.kernel.rtnl import nl
from composenet.linux import netns, portholders
from composenet.linux.netlink import RTN_BROADCAST, RTN_MULTICAST, Addr, Link
from composenet.paths import ProjectPaths, list_projects, standalone_project
from composenet.supervisor import client as supervisor_client

if TYPE_CHECKING:
    from composenet.core.model import Project

PROJECT_NETWORKS = "networks.json"  # in a project's run directory: its networks as the file says
PROJECT_SOURCE = "source.json"  # in a project's run directory: its compose files and directory


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def record_project_networks(ctx: Context, project: Project, rows: list[dict[str, Any]]) -> None:
    """Keep what `network inspect` shows of the project's own networks and the kernel does not
    hold (internal, attachable, labels, options, aux addresses, ip_range, parent, creation time):
    ``<project dir>/networks.json``, written after each successful `up` (``rows``: the plan's
    network rows, for allocated subnets). A network keeps its first creation time."""
    from composenet.linux.fileio import atomic_write  # deferred: only `up` writes it

    path = ctx.paths / PROJECT_NETWORKS
    before = read_project_networks(path)
    by_name = {r.get("name"): r for r in rows}
    out = {}
    for net in project.networks:
        if net.external or net.driver not in ("bridge", "macvlan"):
            continue
        row = by_name.get(net.name, {})
        old = before.get(net.name, {})
        v4 = next((c for c in net.ipam if c.subnet and ":" not in c.subnet), None)
        v6 = next((c for c in net.ipam if c.subnet and ":" in c.subnet), None)
        out[net.name] = {
            "name": net.name, "key": net.key, "driver": net.driver, "internal": net.internal,
            "attachable": net.attachable, "labels": dict(net.labels), "options": dict(net.driver_opts),
            "parent": (net.opt("parent") or "eth0") if net.driver == "macvlan" else None,
            "aux_addresses": {k: v for c in net.ipam for k, v in c.aux_addresses},
            "ipam": [{"subnet": s, "gateway": g, "ip_range": r} for s, g, r in (
                (row.get("subnet"), row.get("gateway"), v4.ip_range if v4 else None),
                (row.get("subnet6"), row.get("gateway6"), v6.ip_range if v6 else None)) if s],
            "created": old.get("created") if old.get("driver") == net.driver else None,
            "host_netns": host_netns(),
        }
        out[net.name]["created"] = out[net.name]["created"] or _now()
    atomic_write(path, json.dumps(out, indent=1, sort_keys=True) + "\n")
    source = {"files": list(project.files), "working_dir": project.working_dir, "host_netns": host_netns(),
              "publish_localhost_only": project.publish_localhost_only,
              # What `exec` runs with in a service without a command (no process record): as
              # the file said at this `up`, as a container keeps the config it was created with.
              "exec": {svc.name: {"env": [list(kv) for kv in svc.environment], "cwd": svc.working_dir,
                                  "user": svc.user, "cap_add": list(svc.cap_add), "cap_drop": list(svc.cap_drop),
                                  "privileged": svc.privileged} for svc in project.services}}
    atomic_write(ctx.paths / PROJECT_SOURCE, json.dumps(source, indent=1, sort_keys=True) + "\n")


def project_source(run_dir: str, project: str) -> dict[str, Any] | None:
    """The compose files and directory of the last successful `up` of ``project`` (for commands
    given a container name but no -f / -p), or None."""
    try:
        with open(ProjectPaths(run_dir, project) / PROJECT_SOURCE) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def host_projects(run_dir: str) -> list[str]:
    """The projects of this host (made in this network namespace: the run directory is shared
    by every namespace of the machine), sorted."""
    here = host_netns()
    bridges = {n["project"] for n in networks(run_dir).values() if n.get("project")}
    out = []
    for p in list_projects(run_dir):
        if p.startswith("-"):
            continue
        source = project_source(run_dir, p)
        if (source.get("host_netns") == here) if source and "host_netns" in source else p in bridges:
            out.append(p)
    return sorted(out)


def container_project(run_dir: str, container: str) -> list[str]:
    """The projects of this host that recorded a namespace named ``container``."""
    return [p for p in list_projects(run_dir) if not p.startswith("-") and container in recorded_namespaces(run_dir, p)]


def read_project_networks(path: str) -> dict[str, dict[str, Any]]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def project_specs(run_dir: str) -> dict[str, dict[str, Any]]:
    """Every project's recorded networks (``record_project_networks``), by network name, each
    with its ``project``."""
    out = {}
    here = host_netns()
    for p in list_projects(run_dir):
        if p.startswith("-"):
            continue
        for name, spec in read_project_networks(ProjectPaths(run_dir, p) / PROJECT_NETWORKS).items():
            if spec.get("host_netns", here) == here:  # the run directory is shared by every namespace
                out[name] = {**spec, "project": p}
    return out


def read_spec(run_dir: str, project: str) -> dict[str, Any] | None:
    try:
        with open(ProjectPaths(run_dir, project).network_spec) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def standalone_specs(run_dir: str) -> dict[str, dict[str, Any]]:
    """Standalone networks' specs, by network name: those made in this network namespace (the
    runtime directory is shared by every namespace of the machine; a network is not)."""
    out = {}
    here = host_netns()
    for p in list_projects(run_dir):
        if p.startswith("-"):
            spec = read_spec(run_dir, p)
            if spec is not None and spec.get("name") == p[1:] and spec.get("host_netns", here) == here:
                out[p[1:]] = spec
    return out


def networks(run_dir: str) -> dict[str, dict[str, Any]]:
    """Every composenet network: labelled bridges (any project, with their endpoints) merged
    with the standalone specs. Each: name, driver, scope ("swarm" for a cluster network, which a
    project of this host's cluster.json lists; "local" otherwise), project (None: standalone),
    bridge, subnet, gateway, subnet6, gateway6, ip_range, internal, ipv6, options, containers."""
    netns.check_mount_namespace()
    ctx = Context(project="-", run_dir=run_dir)  # owns nothing: every network is "another project's"
    try:
        seen = composenet_networks(ctx)
    finally:
        ctx.close()
    specs = standalone_specs(run_dir)
    owned = project_specs(run_dir)
    ctx = Context(project="-", run_dir=run_dir)
    try:
        seen.update(macvlan_networks(ctx, {k: v for k, v in specs.items() if v.get("driver") == "macvlan"
                                           and k not in seen}))
        seen.update(macvlan_networks(ctx, {k: v for k, v in owned.items() if v.get("driver") == "macvlan"
                                           and k not in seen and k not in specs}))
    finally:
        ctx.close()
    for name, spec in owned.items():
        net = seen.get(name)
        if net is not None and net.get("owner") in (spec["project"], "-" + name):
            specs.setdefault(name, spec)
    out: dict[str, dict[str, Any]] = {}
    from composenet.cluster.files import cluster_networks  # deferred: `network ls`/`inspect` only

    swarm = cluster_networks(run_dir)
    for name in sorted(set(seen) | set(specs)):
        net = seen.get(name, {})
        spec = specs.get(name, {})
        if not net and spec.get("driver", "bridge") == "bridge":
            continue  # a spec whose bridge is not in this namespace: not a network here
        out[name] = _describe(name, net, spec)
        if name in swarm and net:  # a cluster network (the cluster store spans it): Docker's swarm scope
            out[name].update(scope="swarm", driver="overlay")
    return out


def _describe(name: str, net: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    owner = str(net.get("owner", standalone_project(name)))
    v4 = [ipaddress.ip_interface(c) for c in net.get("cidrs", ()) if ":" not in c]
    v6 = [ipaddress.ip_interface(c) for c in net.get("cidrs", ()) if ":" in c]
    ipam = {c.get("subnet"): c for c in spec.get("ipam", ())}
    sub4 = str(v4[0].network) if v4 else next((s for s in ipam if s and ":" not in s), None)
    sub6 = str(v6[0].network) if v6 else next((s for s in ipam if s and ":" in s), None)
    return {
        "name": name,
        "driver": spec.get("driver", "bridge"),
        "scope": "local",
        "project": None if owner.startswith("-") else owner,
        "bridge": net.get("bridge"),
        "parent": spec.get("parent") or (spec.get("options") or {}).get("parent")
        if spec.get("driver") == "macvlan" else None,
        "created": spec.get("created"),
        "attachable": bool(spec.get("attachable")),
        "labels": dict(spec.get("labels") or {}),
        "aux_addresses": dict(spec.get("aux_addresses") or {}),
        "subnet": sub4,
        "gateway": str(v4[0].ip) if v4 else (ipam.get(sub4) or {}).get("gateway"),
        "ip_range": (ipam.get(sub4) or {}).get("ip_range"),
        "subnet6": sub6,
        "gateway6": str(v6[0].ip) if v6 else (ipam.get(sub6) or {}).get("gateway"),
        "internal": bool(spec.get("internal")),
        "ipv6": bool(sub6),
        "options": dict(spec.get("options", {})),
        "containers": [dict(e) for e in net.get("endpoints", ())],
    }


# ---- host facts and other projects' networks, from the kernel -----------------------------------


def host_facts(ctx: Context, observed: ObservedState) -> None:
    """Fill the constraint fields of ``observed`` from the namespace composenet runs in:
    host_routes, host_addresses, foreign_subnets, foreign_links (see ObservedState)."""
    host = nl(ctx, "")
    links, _real = intents.adopt(host.links(), intents.pending(ctx), "", ctx.project)
    owned = {lk.index for lk in links if label_parts(lk.alias, ctx.project) is not None}
    by_index = {lk.index: lk for lk in links}
    routes: set[str] = set()
    for rt in host.routes():
        if rt.dst_len == 0 or rt.oif in owned or rt.type in (RTN_BROADCAST, RTN_MULTICAST):
            continue
        cidr = rt.cidr
        if not is_link_local(cidr):
            routes.add(cidr)
    addresses: set[str] = set()
    foreign: set[str] = set()
    host_addrs = host.addrs()
    for a in host_addrs:
        lk = by_index.get(a.index)
        if not a.address or a.index in owned or on_loopback(lk) or is_link_local(a.cidr):
            continue
        addresses.add(a.cidr)
        if lk is not None and lk.kind == "bridge" and lk.alias.startswith(LABEL_PREFIX):
            foreign.add(str(ipaddress.ip_interface(a.cidr).network))
    observed.host_routes = tuple(sorted(routes))
    observed.host_addresses = tuple(sorted(addresses))
    observed.foreign_subnets = tuple(sorted(foreign))
    observed.foreign_links = tuple(sorted(lk.name for lk in links if lk.index not in owned))
    observed.networks = _composenet_networks(ctx, links, host_addrs)


def composenet_networks(ctx: Context) -> dict[str, dict[str, Any]]:
    """Every composenet bridge network of the host namespace, as in ObservedState.networks, each
    with ``endpoints`` too: every container attached (any project), for `composenet network`."""
    host = nl(ctx, "")
    return _composenet_networks(ctx, host.links(), host.addrs(), endpoints=True)


def macvlan_networks(ctx: Context, specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Standalone macvlan networks (``composenet network create --driver macvlan``): they have no
    kernel object of their own, so they are described by their specs, in the shape of
    ObservedState.networks plus ``driver``, ``parent``, ``mode`` and ``endpoints``. ``used`` and
    ``endpoints`` come from the macvlan links labelled ``composenet:<project>/<container>/<net>``
    in the namespaces other projects recorded (this project's own are observed as resources)."""
    out = {name: _macvlan_network(name, spec) for name, spec in sorted(specs.items())}
    if not out:
        return out
    for q in list_projects(ctx.run_dir):
        if q == ctx.project:
            continue
        for ns in recorded_namespaces(ctx.run_dir, q):
            if netns.is_netns(netns.netns_path(ns)):
                _add_macvlan_endpoints(ctx, out, q, ns)
    return out


def _macvlan_network(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A standalone macvlan network as its spec describes it, with no endpoint yet."""
    cidrs = []
    for c in spec.get("ipam", ()):
        if c.get("subnet") and c.get("gateway"):
            cidrs.append(f"{c['gateway']}/{ipaddress.ip_network(c['subnet'], strict=False).prefixlen}")
    opts = spec.get("options", {})
    return {"driver": "macvlan", "owner": spec.get("project") or "-" + name, "bridge": None, "cidrs": cidrs, "used": [],
            "endpoints": [], "parent": str(spec.get("parent") or opts.get("parent", "")), "mode": str(opts.get("macvlan_mode", "bridge"))}


def _add_macvlan_endpoints(ctx: Context, nets: dict[str, dict[str, Any]], project: str, ns: str) -> None:
    """Add to ``nets`` the endpoints project ``project`` has in namespace ``ns``: its macvlan
    links labelled with one of those networks, and their addresses."""
    try:
        n = nl(ctx, ns)
        links = [lk for lk in n.links() if lk.kind == "macvlan" and lk.alias.startswith(f"{LABEL_PREFIX}{project}/")]
        addrs = n.addrs() if links else []
    except OSError:
        return
    for lk in links:
        net = nets.get(lk.alias.rsplit("/", 1)[1])
        if net is None:
            continue
        mine = [a.address for a in addrs if a.index == lk.index and a.address and not is_link_local(a.cidr)]
        net["used"] = sorted(set(net["used"]) | set(mine))
        net["endpoints"].append({"name": ns, "project": project, "ifname": lk.name, "mac": lk.mac,
                                 "ipv4": next((a for a in mine if ":" not in a), None),
                                 "ipv6": next((a for a in mine if ":" in a), None)})


def _composenet_networks(ctx: Context, links: list[Link], addrs: list[Addr],
                         endpoints: bool = False) -> dict[str, dict[str, Any]]:
    """Every composenet bridge network of the host namespace (ObservedState.networks): found by
    the ``composenet:<owner>/<network>`` label; ``used`` lists the addresses other projects'
    endpoints hold on it, read from their namespaces (the veth peer carries the same label).
    With ``endpoints``, also every attached container: ``{name, project, ifname, mac, ipv4,
    ipv6}`` (this reads every endpoint's namespace, so observe does not ask for it)."""
    out: dict[str, dict[str, Any]] = {}
    by_index: dict[int, dict[str, Any]] = {}
    for lk in links:
        if lk.kind != "bridge" or not lk.alias.startswith(LABEL_PREFIX):
            continue
        owner, _, name = lk.alias[len(LABEL_PREFIX):].partition("/")
        if not owner or not name or "/" in name:
            continue
        cidrs = sorted(a.cidr for a in addrs if a.index == lk.index and a.address and not is_link_local(a.cidr))
        out[name] = by_index[lk.index] = {"bridge": lk.name, "owner": owner, "cidrs": cidrs, "used": []}
        if endpoints:
            out[name]["endpoints"] = []
    for lk in links:
        net = by_index.get(lk.master)
        if net is None or lk.kind != "veth" or not lk.alias.startswith(LABEL_PREFIX):
            continue
        owner, _, rest = lk.alias[len(LABEL_PREFIX):].partition("/")
        container = rest.split("/")[0]
        if (owner == ctx.project and not endpoints) or not container or not netns.is_netns(netns.netns_path(container)):
            continue
        try:
            n = nl(ctx, container)
            peer = next((x for x in n.links() if x.alias == lk.alias), None)
            mine = [a.address for a in n.addrs() if peer and a.index == peer.index and not is_link_local(a.cidr)]
        except OSError:
            continue  # the namespace went away meanwhile
        if owner != ctx.project:
            net["used"] += mine
        if endpoints:
            net["endpoints"].append({
                "name": container, "project": owner, "ifname": peer.name if peer else "",
                "mac": peer.mac if peer else None,
                "ipv4": next((a for a in mine if ":" not in a), None), "ipv6": next((a for a in mine if ":" in a), None),
            })
    for net in out.values():
        net["used"] = sorted(set(net["used"]))
        if endpoints:
            net["endpoints"].sort(key=lambda e: e["name"])
    return out


def host_ports(ctx: Context) -> list[dict[str, Any]]:
    """The bound TCP and UDP sockets of the namespace composenet runs in, with the process that
    holds each (ObservedState.host_ports), except those of composenet's own daemons (every
    project's supervisor, which holds its published ports, and resolver): a project's own ports
    are not in its way, and another project's are ports_in_use already."""
    try:
        socks = portholders.bound()
    except OSError:
        return []
    ours: set[int] = set()
    for q in list_projects(ctx.run_dir):
        sup = supervisor_client.live(ProjectPaths(ctx.run_dir, q).root)
        for pid in ([int(sup["pid"])] if sup else []) + [p for p in [resolver_pid(ctx.run_dir, q)] if p]:
            ours |= portholders.socket_inodes(pid)
    rest = [s for s in socks if s.inode not in ours]
    who = portholders.owners(s.inode for s in rest)
    return [{"proto": s.proto, "address": s.address, "port": s.port, "v6only": s.v6only,
             "pid": who[s.inode][0] if s.inode in who else None,
             "process": who[s.inode][1] if s.inode in who else None} for s in rest]


class HostFacts(HandlerBase):
    """An observe-only handler: the host facts IPAM and external networks need (routes,
    addresses, other composenet networks, standalone macvlan networks): see ObservedState."""

    kinds: tuple[str, ...] = ()

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        host_facts(ctx, observed)
        observed.host_ports = host_ports(ctx)
        observed.host_firewall = firewall.host_firewall()  # docker hook: issue 14
        observed.ipvlan_missing = ipvlan.missing_reason()  # docker hook: issue 14
        macvlans = {k: v for k, v in standalone_specs(ctx.run_dir).items()
                    if v.get("driver") == "macvlan" and k not in observed.networks}
        observed.networks.update(macvlan_networks(ctx, macvlans))

    def create(self, ctx: Context, r: Resource) -> None:
        raise NotImplementedError("host facts are only observed")

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        raise NotImplementedError("host facts are only observed")

    def delete(self, ctx: Context, r: Resource) -> None:
        raise NotImplementedError("host facts are only observed")
