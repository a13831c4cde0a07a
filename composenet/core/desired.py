"""Project -> DesiredState: every kernel resource the compose file asks for. Pure; no I/O.

The observed state is an input only for stability and constraints: existing networks keep their
subnets, existing endpoints keep their addresses, ephemeral host ports keep their numbers, and
automatic subnets avoid host routes, host addresses and other projects' networks.

Names follow Docker: network ``<project>_<key>`` (or ``name:``), container and namespace
``<project>-<service>-<n>`` (or ``container_name``); container interfaces eth0, eth1, ... in the
service's network order (or ``interface_name``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field, replace

from composenet.core import ipam, overlay
from composenet.core.model import Attachment, Network, Pos, Project, Service
from composenet.core.resources import (
    LABEL_PREFIX,
    VXLAN_LABEL_SUFFIX,
    Address,
    Bridge,
    DnsRecords,
    Macvlan,
    Netns,
    NetnsFile,
    NftTable,
    Process,
    Resolver,
    Route,
    Sysctl,
    Veth,
    Vxlan,
    bridge_ifname,
    nft_table_name,
    resolver_listeners,
    veth_ifname,
    vxlan_ifname,
)
from composenet.core.ruleset import NetRules, PortMap, build, parse_port
from composenet.core.state import DesiredState, ObservedState
from composenet.errors import InputError, Problem
from composenet.paths import RUN_DIR, ProjectPaths

EPHEMERAL_FIRST, EPHEMERAL_LAST = 32768, 60999  # Linux's default ip_local_port_range, as Docker
NETNS_DNS_ADDRESS = "127.0.0.11"  # the resolver inside a macvlan container's namespace (Docker's)
LOCAL_TTL = 5  # seconds; short so that scaling and restarts show quickly (Docker uses 600)

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def _warn(warnings: list[str], pos: Pos | None, path: str, message: str) -> None:
    """A planner warning located as the loader's are: ``FILE:LINE:COL: key.path: message``.
    ``pos`` is the best position the model keeps for ``path`` (as ``load.locate`` gives the
    deepest known one): a network's, service's or port's; None (e.g. the implicit default
    network) leaves just the key path."""
    where = f"{pos}: " if pos else ""
    warnings.append(f"{where}{path}: {message}")


@dataclass
class NetPlan:
    """A managed network after IPAM."""

    net: Network
    kind: str  # bridge | macvlan | none | host | external
    bridge: str = ""
    subnet4: ipaddress.IPv4Network | None = None
    gateway4: str | None = None
    subnet6: ipaddress.IPv6Network | None = None
    gateway6: str | None = None
    pool4: ipam.Pool | None = None
    pool6: ipam.Pool | None = None
    mtu: int = 1500
    vxlan: overlay.VxlanOpts | None = None  # driver overlay with peers: the bridge's VXLAN port


@dataclass
class Endpoint:
    network: NetPlan
    ifname: str  # inside the namespace
    ipv4: str | None
    ipv6: str | None
    mac: str
    aliases: tuple[str, ...]
    gw_priority: int
    index: int


@dataclass
class Container:
    name: str
    service: Service
    index: int
    ns: str  # namespace it lives in ("" = host)
    own_ns: bool
    hostname: str
    endpoints: list[Endpoint] = field(default_factory=list)


@dataclass(frozen=True)
class Upstreams:
    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    text: str = ""  # the host's resolv.conf text, for network_mode none (Docker copies it)


def parse_resolv_conf(text: str) -> Upstreams:
    servers, search, options = [], [], []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            servers.append(parts[1])
        elif parts[0] in ("search", "domain"):
            search = parts[1:]
        elif parts[0] == "options":
            options += parts[1:]
    return Upstreams(tuple(servers), tuple(search), tuple(options), text)


def _opt_bool(v: str | None, default: bool) -> bool:
    if v is None:
        return default
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def _observed_bridge_addrs(observed: ObservedState, bridge: str) -> list[str]:
    return sorted(r.cidr for r in observed.resources.values() if isinstance(r, Address) and r.ns == "" and r.ifname == bridge)


def _observed_member_subnets(observed: ObservedState, project: str) -> dict[str, list[str]]:
    """Subnets the project's containers still hold on each network, by network name, sorted:
    the CIDR prefix of every observed address on a container's end of one of the network's
    veths (label ``composenet:<project>/<container>/<network>``). They stand in for the subnet of
    a network whose bridge is gone (deleted by hand), so that it keeps its subnet and the
    containers their addresses."""
    by_if: dict[tuple[str, str], str] = {}
    prefix = f"{LABEL_PREFIX}{project}/"
    for r in observed.resources.values():
        if isinstance(r, Veth) and r.label.startswith(prefix + r.ns + "/"):
            by_if[(r.ns, r.peer)] = r.label[len(prefix + r.ns + "/"):]
    out: dict[str, set[str]] = {}
    for r in observed.resources.values():
        if isinstance(r, Address) and r.ns and (r.ns, r.ifname) in by_if:
            try:
                net = ipaddress.ip_interface(r.cidr).network
            except ValueError:
                continue
            if net.prefixlen < net.max_prefixlen and not net.is_link_local:
                out.setdefault(by_if[(r.ns, r.ifname)], set()).add(str(net))
    return {name: sorted(nets, key=lambda c: (ipaddress.ip_network(c).version, ipaddress.ip_network(c)))
            for name, nets in out.items()}


def _observed_endpoint_addrs(observed: ObservedState) -> dict[tuple[str, str], list[str]]:
    """Addresses the kernel has on each container interface, by (namespace, ifname), sorted:
    one pass over the observed state (not one per endpoint, which is quadratic)."""
    out: dict[tuple[str, str], list[str]] = {}
    for r in observed.resources.values():
        if isinstance(r, Address) and r.ns:
            out.setdefault((r.ns, r.ifname), []).append(r.cidr.split("/")[0])
    for addrs in out.values():
        addrs.sort()
    return out


def _observed_port_set(observed: ObservedState) -> set[tuple[str, str, int]]:
    out = set()
    for r in observed.resources.values():
        if isinstance(r, NftTable):
            for ident in r.rules:
                rule = parse_port(ident)
                if rule is not None:
                    out.add((rule.service, rule.protocol, rule.host_port))
    return out


def container_names(project: Project, svc: Service) -> list[str]:
    if svc.container_name:
        return [svc.container_name]
    return [f"{project.name}-{svc.name}-{i}" for i in range(1, svc.replicas + 1)]


def desire(project: Project, observed: ObservedState, upstreams: Upstreams, run_dir: str = RUN_DIR) -> DesiredState:
    """Build the desired state of ``project`` given what is observed."""
    d = DesiredState(project=project.name)
    d.warnings.extend(project.warnings)
    p = project.name

    # ---- networks and IPAM -------------------------------------------------------------
    used_by = {a.network for s in project.services for a in s.networks}
    nets: dict[str, NetPlan] = {}
    taken: list[str] = []
    for n in project.networks:
        for ic in n.ipam:
            if ic.subnet:
                taken.append(ic.subnet)
    avoid = list(observed.host_routes) + list(observed.host_addresses) + list(observed.foreign_subnets)
    # Subnets the project's existing bridges already hold are taken before any new allocation,
    # so adding a network never steals the subnet of one that exists.
    # A network whose bridge is gone (deleted by hand) keeps the subnet its containers' addresses
    # still imply: also taken first, and its previous subnet below.
    member_subnets = _observed_member_subnets(observed, p)
    for n in project.networks:
        br = n.opt("com.docker.network.bridge.name") or bridge_ifname(p, n.name)
        held = [str(ipaddress.ip_interface(a).network) for a in _observed_bridge_addrs(observed, br)]
        if not held and not n.external and n.driver not in ("none", "host", "macvlan"):
            held = member_subnets.get(n.name, [])
        taken += held
    for n in sorted(project.networks, key=lambda n: n.key):
        if n.external:
            nets[n.key] = _external(n, p, observed, d.warnings)
            continue
        if n.driver in ("none", "host"):
            nets[n.key] = NetPlan(n, n.driver)
            continue
        if n.key not in used_by and n.driver != "macvlan":
            # Docker creates declared networks even when unused; so do we (a bridge and a
            # listener of the resolver, for other projects' containers that attach to it).
            pass
        kind = "macvlan" if n.driver == "macvlan" else "bridge"
        vx = overlay.vxlan_opts(n, observed.host_addresses)
        if n.driver == "overlay" and vx is None:
            _warn(d.warnings, n.pos, f"networks.{n.key}.driver", "driver overlay is built as a local bridge (single host)")
        br = n.opt("com.docker.network.bridge.name") or bridge_ifname(p, n.name)
        np = NetPlan(n, kind, bridge=br if kind == "bridge" else "", vxlan=vx)
        if vx is not None:
            np.mtu = overlay.DEFAULT_MTU
        mtu = n.opt("com.docker.network.driver.mtu") or n.opt("driver_mtu") or n.opt("mtu")
        if mtu:
            try:
                np.mtu = int(mtu)
            except ValueError:
                _warn(d.warnings, n.pos, f"networks.{n.key}.driver_opts", f"ignoring invalid mtu {mtu!r}")
        v4 = [ic for ic in n.ipam if ic.subnet and ipaddress.ip_network(ic.subnet, strict=False).version == 4]
        v6 = [ic for ic in n.ipam if ic.subnet and ipaddress.ip_network(ic.subnet, strict=False).version == 6]
        prev = _observed_bridge_addrs(observed, br) if kind == "bridge" else []
        if kind == "bridge" and not prev:
            # No bridge address (the bridge was deleted by hand): the subnets its containers'
            # addresses imply, with their first hosts as the gateways (the automatic default).
            prev = [f"{ipam.first_host(net)}/{net.prefixlen}"
                    for net in map(ipaddress.ip_network, member_subnets.get(n.name, []))]
        prev4 = [a for a in prev if ipaddress.ip_interface(a).version == 4]
        prev6 = [a for a in prev if ipaddress.ip_interface(a).version == 6]
        if n.enable_ipv4:
            if v4:
                ic = v4[0]
                np.subnet4 = ipaddress.IPv4Network(ic.subnet, strict=False)
                np.gateway4 = ic.gateway or ipam.first_host(np.subnet4)
                np.pool4 = ipam.Pool(np.subnet4, np.gateway4, ic.ip_range, [ip for _, ip in ic.aux_addresses])
            else:
                if prev4:
                    iface = ipaddress.IPv4Interface(prev4[0])
                    np.subnet4, np.gateway4 = iface.network, str(iface.ip)
                else:
                    np.subnet4 = ipam.allocate_subnet(taken, avoid)
                    np.gateway4 = ipam.first_host(np.subnet4)
                np.pool4 = ipam.Pool(np.subnet4, np.gateway4)
            taken.append(str(np.subnet4))
        ipv6_opt = _opt_bool(n.opt("com.docker.network.enable_ipv6"), False)
        if n.enable_ipv6 or ipv6_opt or v6:
            if v6:
                ic = v6[0]
                np.subnet6 = ipaddress.IPv6Network(ic.subnet, strict=False)
                np.gateway6 = ic.gateway or ipam.first_host(np.subnet6)
                np.pool6 = ipam.Pool(np.subnet6, np.gateway6, ic.ip_range, [ip for _, ip in ic.aux_addresses])
            else:
                if prev6:
                    iface6 = ipaddress.IPv6Interface(prev6[0])
                    np.subnet6, np.gateway6 = iface6.network, str(iface6.ip)
                else:
                    np.subnet6 = ipam.ula_subnet(p, n.name)
                    np.gateway6 = ipam.first_host(np.subnet6)
                np.pool6 = ipam.Pool(np.subnet6, np.gateway6)
        for used in observed.networks.get(n.name, {}).get("used", ()) if kind == "bridge" else ():
            for pool in (np.pool4, np.pool6):
                if pool is not None:
                    pool.claim(used)  # an endpoint of another project (external user) holds it
        nets[n.key] = np

    # ---- containers ----------------------------------------------------------------------
    containers: list[Container] = []
    by_service: dict[str, list[Container]] = {}
    services = sorted(project.services, key=lambda s: s.name)
    # Services that own a namespace first, so that service:X sharers can find X's.
    for svc in services:
        mode = svc.network_mode
        names = container_names(project, svc)
        for i, cname in enumerate(names, start=1):
            hostname = svc.hostname or cname
            if mode == "host":
                c = Container(cname, svc, i, "", False, hostname)
            elif mode and (mode.startswith("service:") or mode.startswith("container:")):
                c = Container(cname, svc, i, "", False, hostname)  # ns resolved below
            else:
                c = Container(cname, svc, i, cname, True, hostname)
            containers.append(c)
            by_service.setdefault(svc.name, []).append(c)
    for c in containers:
        mode = c.service.network_mode or ""
        if mode.startswith("service:"):
            target = by_service.get(mode.split(":", 1)[1], [])
            if target:
                c.ns = target[0].ns
                if not c.service.hostname:
                    c.hostname = target[0].hostname  # Docker copies the hostname (DOCKER-BEHAVIOUR (d))
        elif mode.startswith("container:"):
            c.ns = mode.split(":", 1)[1]
            _warn(d.warnings, c.service.pos, f"services.{c.service.name}.network_mode",
                  f"network_mode {mode} joins the namespace /run/netns/{c.ns}, which must exist at up time")

    # Addresses: statics first (all containers), then previously observed, then dynamic.
    endpoint_specs: list[tuple[Container, int, NetPlan, Attachment]] = []
    conn_specs: set[tuple[str, int]] = set()  # (container, eth) added by `network connect`
    for c in containers:
        if not c.own_ns:
            continue
        eth = 0
        for att in c.service.networks:
            target_net = nets.get(att.network)
            if target_net is None or target_net.kind in ("none", "host") or (
                    target_net.kind == "external" and not target_net.bridge):
                continue
            endpoint_specs.append((c, eth, target_net, att))
            eth += 1
        # Endpoints `composenet network connect` added to this container, after the file's.
        for conn in observed.connections:
            if conn.get("container") != c.name:
                continue
            target_net = _connected_network(str(conn.get("network", "")), project, nets, observed, d.warnings)
            if target_net is None or any(x is c and np_ is target_net for x, _e, np_, _a in endpoint_specs):
                continue
            att = Attachment(network=target_net.net.key, aliases=tuple(str(a) for a in conn.get("aliases", ())),
                             ipv4_address=conn.get("ipv4") or None)
            conn_specs.add((c.name, eth))
            endpoint_specs.append((c, eth, target_net, att))
            eth += 1
    for c, _eth, np, att in endpoint_specs:
        if c.service.replicas == 1 or c.index == 1 or (c.name, _eth) in conn_specs:
            if att.ipv4_address and np.pool4 is not None:
                np.pool4.claim(att.ipv4_address)
            if att.ipv6_address and np.pool6 is not None:
                np.pool6.claim(att.ipv6_address)
    resolved: dict[tuple[str, int], tuple[str | None, str | None]] = {}
    observed_addrs = _observed_endpoint_addrs(observed)
    for c, eth, np, att in endpoint_specs:
        ifname = att.interface_name or f"eth{eth}"
        prev = observed_addrs.get((c.ns, ifname), [])
        a4 = a6 = None
        if (c.index == 1 or (c.name, eth) in conn_specs) and att.ipv4_address:
            a4 = att.ipv4_address
        elif np.pool4 is not None:
            for a in prev:
                if ipaddress.ip_address(a).version == 4 and np.pool4.claim(a):
                    a4 = a
                    break
        if c.index == 1 and att.ipv6_address:
            a6 = att.ipv6_address
        elif np.pool6 is not None:
            for a in prev:
                if ipaddress.ip_address(a).version == 6 and np.pool6.claim(a):
                    a6 = a
                    break
        resolved[(c.name, eth)] = (a4, a6)
    for c, eth, np, att in endpoint_specs:
        a4, a6 = resolved[(c.name, eth)]
        if a4 is None and np.pool4 is not None:
            a4 = np.pool4.next()
        if a6 is None and np.pool6 is not None:
            a6 = np.pool6.next()
        mac = att.mac_address or (c.service.mac_address if eth == 0 else None) or ipam.mac_for(a4, c.name + "/" + np.net.name)
        c.endpoints.append(
            Endpoint(np, att.interface_name or f"eth{eth}", a4, a6, mac.lower(), att.aliases, att.gw_priority, eth)
        )

    # ---- resources ----------------------------------------------------------------------
    bridges = [np for np in nets.values() if np.kind == "bridge"]
    if bridges:
        d.add(Sysctl("", "net.ipv4.ip_forward", "1"))
        if any(np.subnet6 for np in bridges):
            d.add(Sysctl("", "net.ipv6.conf.all.forwarding", "1"))
    for np in bridges:
        mac = ipam.mac_for(np.gateway4, np.net.name)
        d.add(Bridge(np.bridge, f"{LABEL_PREFIX}{p}/{np.net.name}", np.net.name, np.mtu, mac))
        if np.vxlan is not None:
            vx = np.vxlan
            d.add(Vxlan(vxlan_ifname(p, np.net.name), f"{LABEL_PREFIX}{p}/{np.net.name}{VXLAN_LABEL_SUFFIX}",
                        np.net.name, np.bridge, vx.vni, vx.port, vx.local, vx.peers, np.mtu))
        if np.subnet4 is not None and np.gateway4:
            d.add(Address("", np.bridge, f"{np.gateway4}/{np.subnet4.prefixlen}"))
        if np.subnet6 is not None and np.gateway6:
            d.add(Address("", np.bridge, f"{np.gateway6}/{np.subnet6.prefixlen}"))
            d.add(Sysctl("", f"net.ipv6.conf.{np.bridge}.accept_ra", "0", np.bridge))
            d.add(Sysctl("", f"net.ipv6.conf.{np.bridge}.accept_dad", "0", np.bridge))
        # 127.0.0.1:PORT published ports are DNATed to a container behind this bridge.
        d.add(Sysctl("", f"net.ipv4.conf.{np.bridge}.route_localnet", "1", np.bridge))

    for c in containers:
        if not c.own_ns:
            continue
        d.add(Netns(c.name, p, c.service.name))
        for ep in c.endpoints:
            np = ep.network
            label = f"{LABEL_PREFIX}{p}/{c.name}/{np.net.name}"
            if np.kind in ("bridge", "external"):
                icc = _opt_bool(np.net.opt("com.docker.network.bridge.enable_icc"), True)
                d.add(Veth(veth_ifname(p, c.name, np.net.name), label, c.name, ep.ifname, np.bridge, np.mtu, ep.mac,
                           hairpin=True, isolated=not icc))
            else:
                parent = np.net.opt("parent") or "eth0"
                mode = np.net.opt("macvlan_mode") or "bridge"
                d.add(Macvlan(c.name, ep.ifname, label, parent, mode, np.mtu, ep.mac))
            if ep.ipv4 and np.subnet4 is not None:
                d.add(Address(c.name, ep.ifname, f"{ep.ipv4}/{np.subnet4.prefixlen}"))
            if ep.ipv6 and np.subnet6 is not None:
                d.add(Address(c.name, ep.ifname, f"{ep.ipv6}/{np.subnet6.prefixlen}"))
        # Default route: highest gw_priority; ties go to a non-internal network, then eth order.
        if c.endpoints:
            gw = sorted(c.endpoints, key=lambda e: (-e.gw_priority, e.network.net.internal, e.index))[0]
            if gw.network.gateway4 and gw.ipv4:
                d.add(Route(c.name, "0.0.0.0/0", gw.network.gateway4, gw.ifname))
            v6eps = [e for e in c.endpoints if e.ipv6 and e.network.gateway6]
            if v6eps:
                gw6 = sorted(v6eps, key=lambda e: (-e.gw_priority, e.network.net.internal, e.index))[0]
                # The kernel gives IPv6 routes metric 1024 when none is set; say so, so a re-read matches.
                d.add(Route(c.name, "::/0", gw6.network.gateway6, gw6.ifname, 1024))

    # ---- resolver and per-namespace files ------------------------------------------------
    # Every network the project owns is served by its resolver: its own containers', and those
    # of other projects that attach to it (external: true, network connect; dns/peers.py).
    resolver_nets = [np for np in bridges if np.gateway4]
    listeners = [
        {"network": np.net.name, "address": np.gateway4, "port": 53, "internal": np.net.internal}
        for np in sorted(resolver_nets, key=lambda n: n.net.name)
    ]
    # A container on one of the project's macvlan networks cannot reach the bridge gateways (a
    # macvlan link never talks to its parent's host): the resolver listens inside its namespace
    # on 127.0.0.11, as Docker's embedded DNS, and answers it with that container's view.
    ns_listeners = [
        {"netns": c.ns, "container": c.name, "network": mv.network.net.name}
        for c in containers
        if c.own_ns and c.service.network_mode != "none"
        for mv in [next((ep for ep in c.endpoints if ep.network.kind == "macvlan" and not ep.network.net.external),
                        None)]
        if mv is not None
    ]
    in_ns = {li["container"] for li in ns_listeners}
    for c in containers:
        if not c.own_ns:
            continue
        svc = c.service
        if svc.network_mode == "none" or not c.endpoints:
            resolv = upstreams.text if upstreams.text else "".join(f"nameserver {s}\n" for s in upstreams.servers)
        else:
            # The project's own resolver first; else the resolver of the first external network
            # (its owner's, which answers for every project's containers on it).
            first = next((ep for ep in c.endpoints if ep.network in resolver_nets), None) or next(
                (ep for ep in c.endpoints if ep.network.kind == "external" and ep.network.bridge
                 and ep.network.gateway4 and ep.ipv4), None)
            lines = []
            if c.name in in_ns:
                lines.append(f"nameserver {NETNS_DNS_ADDRESS}")
            elif first is not None:
                lines.append(f"nameserver {first.network.gateway4}")
            else:
                lines += [f"nameserver {s}" for s in (svc.dns or upstreams.servers)]
            domains = svc.dns_search or upstreams.search
            if domains:
                lines.append("search " + " ".join(domains))
            opts = ["ndots:0"] + [o for o in svc.dns_opt if not o.startswith("ndots:")]
            if any(o.startswith("ndots:") for o in svc.dns_opt):
                opts = list(svc.dns_opt)
            lines.append("options " + " ".join(opts))
            resolv = "\n".join(lines) + "\n"
        d.add(NetnsFile(c.name, "resolv.conf", resolv))
        hosts = HOSTS_HEADER
        host_names = c.hostname if not svc.domainname else f"{c.hostname}.{svc.domainname}\t{c.hostname}"
        for ep in c.endpoints:
            for addr in (ep.ipv4, ep.ipv6):
                if addr:
                    hosts += f"{addr}\t{host_names}\n"
        for host, ip in svc.extra_hosts:
            hosts += f"{ip}\t{host}\n"
        d.add(NetnsFile(c.name, "hosts", hosts))

    if listeners or ns_listeners:
        cfg: dict = {
            "project": p,
            "ttl": LOCAL_TTL,
            "pidfile": ProjectPaths(run_dir, p).dns_pid,
            "upstreams": list(upstreams.servers),
            "listeners": listeners,
            "containers": [
                {
                    "name": c.name,
                    "service": c.service.name,
                    "hostname": c.service.hostname,
                    "register": c.own_ns,
                    "upstreams": list(c.service.dns) or list(upstreams.servers),
                    "links": [[alias, target] for target, alias in c.service.links],
                    "endpoints": [
                        {
                            "network": ep.network.net.name,
                            "ipv4": ep.ipv4,
                            "ipv6": ep.ipv6,
                            "aliases": list(ep.aliases),
                            "internal": ep.network.net.internal,
                        }
                        for ep in c.endpoints
                    ],
                }
                for c in containers
                if c.endpoints
            ],
        }
        if ns_listeners:
            cfg["namespaces"] = ns_listeners
        text = json.dumps(cfg, indent=1, sort_keys=True) + "\n"
        d.add(Resolver(p, resolver_listeners(cfg), text,
                       hashlib.sha256(text.encode()).hexdigest()))
    # Endpoints on networks other projects own: published for the owner's resolver (and those of
    # the other projects attached), composenet/dns/peers.py.
    foreign = [(c, [ep for ep in c.endpoints if ep.network.kind == "external" and ep.network.bridge])
               for c in containers if c.own_ns]
    foreign = [(c, eps) for c, eps in foreign if eps]
    if foreign:
        records = {
            "project": p,
            "containers": [
                {
                    "name": c.name,
                    "service": c.service.name,
                    "hostname": c.service.hostname,
                    "register": True,
                    "upstreams": list(c.service.dns) or list(upstreams.servers),
                    "links": [[alias, target] for target, alias in c.service.links],
                    "endpoints": [
                        {"network": ep.network.net.name, "ipv4": ep.ipv4, "ipv6": ep.ipv6,
                         "aliases": list(ep.aliases), "internal": ep.network.net.internal}
                        for ep in eps
                    ],
                }
                for c, eps in foreign
            ],
        }
        rtext = json.dumps(records, indent=1, sort_keys=True) + "\n"
        d.add(DnsRecords(p, tuple(sorted({ep.network.net.name for _c, eps in foreign for ep in eps})), rtext,
                         hashlib.sha256(rtext.encode()).hexdigest(), tuple(c.name for c, _eps in foreign)))

    # ---- processes -------------------------------------------------------------------------
    for c in containers:
        argv = c.service.argv
        if not argv:
            continue
        after: list[str] = []
        for dep in c.service.depends_on:
            after += [x.name for x in by_service.get(dep, [])]
        if c.service.network_mode and c.service.network_mode.startswith("service:"):
            target = by_service.get(c.service.network_mode.split(":", 1)[1], [])
            after += [x.name for x in target[:1]]
        after = sorted(set(a for a in after if a != c.name and any(x.name == a and x.service.argv for x in containers)))
        d.add(Process(c.name, c.service.name, c.ns, tuple(argv), tuple(c.service.environment),
                      c.service.working_dir, c.service.user, c.hostname if c.ns or c.own_ns else None,
                      c.service.stop_grace_period, tuple(after)))

    # ---- published ports and the nft table -------------------------------------------------
    port_maps, exposure = _ports(project, nets, containers, observed, d.warnings)
    net_rules = []
    for np in bridges:
        subnets = tuple(str(s) for s in (np.subnet4, np.subnet6) if s is not None)
        masq = _opt_bool(np.net.opt("com.docker.network.bridge.enable_ip_masquerade"), True)
        net_rules.append(NetRules(np.net.name, np.bridge, subnets, tuple(x for x in (np.gateway4,) if x),
                                  np.net.internal, masq, np in resolver_nets))
    if net_rules or port_maps:
        text, idents = build(nft_table_name(p), net_rules, port_maps)
        d.add(NftTable("inet", nft_table_name(p), idents, text))

    # ---- presentation ----------------------------------------------------------------------
    for key in sorted(nets):
        np = nets[key]
        d.networks.append({
            "key": key, "name": np.net.name, "driver": np.net.driver, "kind": np.kind, "bridge": np.bridge,
            "subnet": str(np.subnet4) if np.subnet4 else None, "gateway": np.gateway4,
            "subnet6": str(np.subnet6) if np.subnet6 else None, "gateway6": np.gateway6,
            "internal": np.net.internal, "mtu": np.mtu,
            **({"vxlan": {"vni": np.vxlan.vni, "port": np.vxlan.port, "local": np.vxlan.local,
                          "peers": list(np.vxlan.peers)}} if np.vxlan is not None else {}),
        })
    for c in containers:
        d.containers.append({
            "name": c.name, "service": c.service.name, "index": c.index, "ns": c.ns,
            "network_mode": c.service.network_mode,
            "endpoints": [{"network": ep.network.net.name, "ifname": ep.ifname, "ipv4": ep.ipv4, "ipv6": ep.ipv6,
                           "mac": ep.mac} for ep in c.endpoints],
        })
    d.exposure = exposure
    return d


def _connected_network(name: str, project: Project, nets: dict[str, NetPlan], observed: ObservedState,
                       warnings: list[str]) -> NetPlan | None:
    """The network a `network connect` record names: one of the project's (by name), else another
    composenet network, planned as external (kept in ``nets`` under ``@NAME``). Gone: a warning."""
    for np in nets.values():
        if np.net.name == name and (np.kind in ("bridge", "macvlan") or (np.kind == "external" and np.bridge)):
            return np
    key = "@" + name
    if key not in nets:
        if name not in observed.networks or observed.networks[name].get("owner") == project.name:
            warnings.append(f"network {name!r} (connected with `composenet network connect`) does not exist any "
                            "more; its endpoints are left out")
            return None
        nets[key] = _external(Network(key=key, name=name, external=True), project.name, observed, warnings)
    return nets[key]


def _external(n: Network, project: str, observed: ObservedState, warnings: list[str]) -> NetPlan:
    """An ``external: true`` network: another project's network or a standalone one (``composenet
    network create``), found by its label (ObservedState.networks). Its bridge, addresses and
    rules belong to its owner: this project only attaches endpoints, with addresses from its
    subnet that no other endpoint holds. Missing: an error at the network's key (CS-NET-12)."""
    found = observed.networks.get(n.name)
    if found is None or found.get("owner") == project:
        if observed.offline:
            _warn(warnings, n.pos, f"networks.{n.key}.external", f"external network {n.name!r} is assumed to exist "
                  "(offline plan); services are not attached to it in this plan")
            return NetPlan(n, "external")
        pos = n.pos
        raise InputError([Problem(
            f"external network {n.name!r} does not exist" + (" (it is this project's own network)" if found else ""),
            file=pos.file if pos else None, line=pos.line if pos else None, col=pos.col if pos else None,
            path=f"networks.{n.key}.external",
            hint=f"create it first: `composenet network create {n.name}`, or bring up the project that defines it",
            rule="CS-NET-12")])
    if found.get("driver") == "macvlan":
        # A standalone macvlan network: each endpoint is a macvlan link on its parent, as for a
        # macvlan network of the file (no bridge, no resolver, no NAT).
        opts = (("macvlan_mode", str(found.get("mode") or "bridge")), ("parent", str(found.get("parent", ""))))
        np = NetPlan(replace(n, driver="macvlan", driver_opts=opts), "macvlan")
        text = (f"external network {n.name!r} (it is a standalone network) is not served by this project's "
                "resolver; its containers resolve names on their other networks")
        if n.key.startswith("@"):  # "@NAME": attached by `network connect`, not in the file
            warnings.append(f"network {n.name}: {text}")
        else:
            _warn(warnings, n.pos, f"networks.{n.key}", text)
    else:
        np = NetPlan(n, "external", bridge=str(found["bridge"]))
    # Names on it are served by its owner's resolver (a standalone network's: its pseudo-project's),
    # which merges this project's records of its endpoints there (the dnsrecords resource).
    used = [str(a) for a in found.get("used", ())]
    for cidr in found.get("cidrs", ()):
        iface = ipaddress.ip_interface(cidr)
        if iface.version == 4 and np.subnet4 is None:
            np.subnet4, np.gateway4 = ipaddress.IPv4Network(iface.network), str(iface.ip)
            np.pool4 = ipam.Pool(np.subnet4, np.gateway4, reserved=[a for a in used if ":" not in a])
        elif iface.version == 6 and np.subnet6 is None:
            np.subnet6, np.gateway6 = ipaddress.IPv6Network(iface.network), str(iface.ip)
            np.pool6 = ipam.Pool(np.subnet6, np.gateway6, reserved=[a for a in used if ":" in a])
    return np


def _same_addresses(a: str | None, b: str | None) -> bool:
    """Whether host addresses ``a`` and ``b`` of two published ports overlap (None: all)."""
    if a is None or b is None:
        return True
    try:
        ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    return ia == ib or ia.is_unspecified or ib.is_unspecified


def _ports(project: Project, nets: dict[str, NetPlan], containers: list[Container], observed: ObservedState,
           warnings: list[str]) -> tuple[list[PortMap], list[dict]]:
    prev = _observed_port_set(observed)
    in_use: dict[tuple[str, int], list[str | None]] = {}  # (proto, port) -> host addresses (None: all)
    for item in observed.ports_in_use:
        proto, _, rest = item.partition("/")
        num, _, ip = rest.partition("@")
        if num.isdigit():
            in_use.setdefault((proto, int(num)), []).append(ip or None)
    claimed: set[tuple[str, int, str]] = set()  # (proto, port, host_ip)
    maps: list[PortMap] = []
    exposure: list[dict] = []
    by_service: dict[str, list[Container]] = {}
    for c in containers:
        by_service.setdefault(c.service.name, []).append(c)

    fixed: list[tuple] = []
    floating: list[tuple] = []
    for svc in sorted(project.services, key=lambda s: s.name):
        if not svc.ports:
            continue
        if svc.network_mode:
            continue  # the validator reported it, located (an error, or a warning for `none`)
        cs = by_service.get(svc.name, [])
        eps = []
        for c in cs:
            cand = [e for e in c.endpoints if not e.network.net.internal and e.network.kind in ("bridge", "external")
                    and e.network.bridge]
            if cand:
                eps.append(sorted(cand, key=lambda e: (-e.gw_priority, e.index))[0])
        if not eps:
            if not all(nets[a.network].net.internal for a in svc.networks if a.network in nets):
                # Only-internal is the validator's located warning; this is the other case.
                _warn(warnings, svc.ports[0].pos or svc.pos, f"services.{svc.name}.ports", "none of its networks is a bridge "
                      "composenet manages; its ports are not published")
            continue
        default_ip = None
        for port in svc.ports:
            host_ip = port.host_ip
            if host_ip is None:
                default_ip = eps[0].network.net.opt("com.docker.network.bridge.host_binding_ipv4")
                if default_ip and default_ip not in ("0.0.0.0",):
                    host_ip = default_ip
            if host_ip in ("0.0.0.0", "::"):
                fam_only = 4 if host_ip == "0.0.0.0" else 6
                host_ip = None
            else:
                fam_only = 0
            entry = (svc, port, host_ip, eps, fam_only)
            if port.published and "-" not in port.published:
                fixed.append(entry)
            else:
                floating.append(entry)
    for svc, port, host_ip, eps, fam_only in fixed + floating:
        hip_key = host_ip or "*"
        if port.published and "-" not in port.published:
            host_port = int(port.published)
            taken = [ip for ip in in_use.get((port.protocol, host_port), []) if _same_addresses(ip, host_ip)]
            if taken:
                pos = port.pos or svc.pos
                raise InputError([Problem(
                    f"host port {host_ip or '*'}:{host_port}/{port.protocol} is already published by another "
                    "composenet project" + (f" (on {taken[0]})" if taken[0] else ""),
                    file=pos.file if pos else None, line=pos.line if pos else None, col=pos.col if pos else None,
                    path=port.pos.path if port.pos else f"services.{svc.name}.ports",
                    hint="publish another host port, or take the other project down first")])
        else:
            if port.published:
                lo, hi = (int(x) for x in port.published.split("-", 1))
            else:
                lo, hi = EPHEMERAL_FIRST, EPHEMERAL_LAST
            host_port = 0
            # Stable: a port this service already had in the range for this protocol.
            for s, proto, hp in sorted(prev):
                if s == svc.name and proto == port.protocol and lo <= hp <= hi and (proto, hp, hip_key) not in claimed:
                    host_port = hp
                    break
            if not host_port:
                for hp in range(lo, hi + 1):
                    if (port.protocol, hp) in in_use or (port.protocol, hp, hip_key) in claimed or (
                        port.protocol, hp, "*") in claimed:
                        continue
                    host_port = hp
                    break
            if not host_port:
                _warn(warnings, port.pos or svc.pos, port.pos.path if port.pos else f"services.{svc.name}.ports",
                      f"no free host port in {lo}-{hi}/{port.protocol}")
                continue
        claimed.add((port.protocol, host_port, hip_key))
        fams = []
        if host_ip is not None:
            fams = [6 if ":" in host_ip else 4]
        else:
            fams = [4, 6] if fam_only == 0 else [fam_only]
        for fam in fams:
            targets = tuple(
                t for t in ((e.ipv4 if fam == 4 else e.ipv6) for e in eps) if t
            )
            if not targets:
                continue
            maps.append(PortMap(svc.name, host_ip, host_port, port.protocol, targets, port.target, fam))
        scope = "host loopback only" if host_ip and ipaddress.ip_address(host_ip).is_loopback else (
            f"address {host_ip} only" if host_ip else "every host address, from anywhere")
        exposure.append({
            "service": svc.name, "host_ip": host_ip or "*", "host_port": host_port, "protocol": port.protocol,
            "target_port": port.target, "network": eps[0].network.net.name,
            "targets": [e.ipv4 or e.ipv6 for e in eps], "scope": scope,
        })
    return maps, exposure

