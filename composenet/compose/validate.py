"""Semantic checks a JSON schema cannot express, on the built model (CS-SNET-03, CS-NM-*, CS-NET-*).

Owns: cross-references (networks, services, links, depends_on, ``service:X``), addresses against
subnets, published-port clashes, names that are not valid DNS names, container_name rules, and
the warning about ports on internal-only services; names that become kernel or file names are
names.py's. Every finding is located through the merged
document. Must not: parse raw values (modelbuild does) or touch the kernel.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from composenet.compose.modelbuild import Ctx, required_deps
from composenet.compose.names import check_names
from composenet.compose.ports import parse_allow
from composenet.compose.values import ValueProblem
from composenet.core import ipam, overlay
from composenet.core.desired.common import ENDPOINT_SYSCTLS, endpoint_sysctls
from composenet.core.desired.networks import (
    GATEWAY_MODE_OPTS,
    GATEWAY_MODES,
    IPVLAN_FLAGS,
    IPVLAN_MODES,
    TRUSTED_OPT,
)
from composenet.core.desired.ports import ALLOW_OPT
from composenet.core.model import Network, Port, Service

# One DNS label: letters, digits, '-' and '_' (Docker's resolver serves names with '_'), not
# starting or ending with '-', at most 63 characters.
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def dns_name_ok(name: str, strict: bool = False) -> bool:
    """A name made of valid DNS labels separated by dots (RFC 1123 when ``strict``)."""
    if not name or len(name) > 253:
        return False
    rx = _HOST_LABEL if strict else _LABEL
    return all(rx.match(label) for label in name.split("."))


def _subnets(net: Network) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c.subnet) for c in net.ipam if c.subnet and ipam.explicit(c.subnet)]


def check(ctx: Ctx, services: Mapping[str, Service], bodies: Mapping[str, Any], networks: Mapping[str, Network],
          disabled: set[str]) -> None:
    _check_networks(ctx, networks)
    check_names(ctx, services, networks)
    _check_services(ctx, services, bodies, networks, disabled)
    _check_addresses(ctx, services, networks)
    _check_ports(ctx, services, networks)


# driver_opts composenet reads: a bad value is an error here, not a kernel error during `up`.
_BOOLS = ("1", "true", "yes", "on", "0", "false", "no", "off")  # as core.desired.common.opt_bool reads them
_BOOL_OPTS = ("com.docker.network.bridge.enable_icc", "com.docker.network.bridge.enable_ip_masquerade",
              "com.docker.network.enable_ipv6")
_IFNAME_OPTS = ("com.docker.network.bridge.name", "parent")


def _ifname_ok(name: str) -> bool:
    """What the kernel accepts as a link name (dev_valid_name): 1-15 bytes, no '/', ':' or space."""
    return (0 < len(name.encode()) <= 15 and name not in (".", "..")
            and not any(c in name for c in "/:") and not any(c.isspace() for c in name))


def _check_driver_opts(ctx: Ctx, key: str, net: Network) -> None:
    for name, value in net.driver_opts:
        path = ("networks", key, "driver_opts", name)
        v = (value or "").strip()
        if name in _BOOL_OPTS and v.lower() not in _BOOLS:
            ctx.err(path, f"{value!r} is not a boolean", hint="use true or false")
        elif name in ("com.docker.network.driver.mtu", "driver_mtu", "mtu") and not (
                v.isascii() and v.isdigit() and 68 <= int(v) <= 65535):
            ctx.err(path, f"MTU {value!r} is not a number from 68 to 65535")
        elif name == "com.docker.network.bridge.host_binding_ipv4" and not _is_ip(v):
            ctx.err(path, f"{value!r} is not an IP address", hint="e.g. 127.0.0.1 or 0.0.0.0")
        elif name == "ipvlan_mode" and net.driver == "ipvlan" and v.lower() not in IPVLAN_MODES:
            ctx.err(path, f"unknown ipvlan mode {value!r}", hint="use " + ", ".join(IPVLAN_MODES))
        elif name == "ipvlan_flag" and net.driver == "ipvlan" and v.lower() not in IPVLAN_FLAGS:
            ctx.err(path, f"unknown ipvlan flag {value!r}", hint="use " + ", ".join(IPVLAN_FLAGS))
        elif name == TRUSTED_OPT and not all(_ifname_ok(x) for x in v.split(":")):
            bad = next(x for x in v.split(":") if not _ifname_ok(x))
            ctx.err(path, f"{bad!r} is not a valid interface name",
                    hint="host interface names separated by ':', e.g. eth0:wg0")
        elif name in _IFNAME_OPTS and not _ifname_ok(v):
            ctx.err(path, f"{value!r} is not a valid interface name",
                    hint="1 to 15 bytes, without '/', ':' or spaces")
        elif name in overlay.OPTIONS:
            _check_vxlan_opt(ctx, net, path, name, v)
        elif name in GATEWAY_MODE_OPTS.values() and v.lower() not in GATEWAY_MODES:
            ctx.err(path, f"unknown gateway mode {value!r}", hint="use " + ", ".join(GATEWAY_MODES))
        elif name in GATEWAY_MODE_OPTS.values() and net.driver not in ("bridge", "overlay"):
            ctx.err(path, f"a gateway mode needs driver: bridge (the network's driver is {net.driver})")
    for where, pairs in (("driver_opts", net.driver_opts), ("labels", net.labels)):
        for name, value in pairs:
            if name == ALLOW_OPT:
                try:
                    parse_allow(value or "")
                except ValueProblem as e:
                    ctx.err(("networks", key, where, name), e.message, e.hint)
    if net.driver == "overlay" and net.opt(overlay.PEERS) is not None:
        v4 = [c for c in net.ipam if ipam.explicit(c.subnet) and ipaddress.ip_network(str(c.subnet)).version == 4]
        if not v4 or not net.enable_ipv4:
            ctx.err(("networks", key, "driver_opts", overlay.PEERS),
                    "an overlay network with VXLAN peers needs an explicit IPv4 subnet (ipam.config[].subnet)",
                    hint="addresses must agree across hosts: give every host the same subnet, and each host its "
                         "own ip_range (e.g. ip_range: ${OVERLAY_RANGE}) or static ipv4_address values")


def _check_vxlan_opt(ctx: Ctx, net: Network, path: tuple[Any, ...], name: str, v: str) -> None:
    if net.driver != "overlay":
        ctx.err(path, f"{name} needs driver: overlay (the network's driver is {net.driver})",
                hint="set driver: overlay on this network, or remove the option")
    elif name == overlay.PEERS:
        peers = overlay.split_peers(v)
        if not peers:
            ctx.err(path, "no VXLAN peer addresses", hint="comma-separated IPv4 addresses of the other hosts")
        for p in peers:
            if not overlay.is_ipv4(p):
                ctx.err(path, f"VXLAN peer {p!r} is not an IPv4 address",
                        hint="comma-separated IPv4 underlay addresses of the other hosts, e.g. 192.0.2.2,192.0.2.3")
    elif name == overlay.VNI and not overlay.int_in(v, 1, overlay.VNI_MAX):
        ctx.err(path, f"VXLAN id {v!r} is not a number from 1 to {overlay.VNI_MAX}")
    elif name == overlay.PORT and not overlay.int_in(v, 1, 65535):
        ctx.err(path, f"VXLAN port {v!r} is not a number from 1 to 65535", hint="the standard port is 4789")
    elif name == overlay.LOCAL and not overlay.is_ipv4(v):
        ctx.err(path, f"VXLAN local address {v!r} is not an IPv4 address",
                hint="this host's underlay address, e.g. 192.0.2.1")


def _is_ip(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def _check_networks(ctx: Ctx, networks: Mapping[str, Network]) -> None:
    seen: list[tuple[Any, str, int]] = []
    for key, net in sorted(networks.items()):
        if net.external:
            continue
        _check_driver_opts(ctx, key, net)
        _check_families(ctx, key, net)
        for i, c in enumerate(net.ipam):
            path = ("networks", key, "ipam", "config", i)
            if not c.subnet:
                if c.gateway or c.ip_range:
                    ctx.err(path, "gateway and ip_range need a subnet in the same block", rule="CS-NET-17")
                continue
            sub = ipaddress.ip_network(c.subnet)
            if not _carries_hosts(ctx, path, c, sub):
                continue
            if c.gateway:
                gw = ipaddress.ip_address(c.gateway)
                if gw.version != sub.version or gw not in sub:
                    ctx.err(path + ("gateway",), f"gateway {gw} is outside the subnet {sub}", rule="CS-NET-17")
            if c.ip_range:
                rng = ipaddress.ip_network(c.ip_range)
                if rng.version != sub.version or not rng.subnet_of(sub):  # type: ignore[arg-type]
                    ctx.err(path + ("ip_range",), f"ip_range {rng} is outside the subnet {sub}", rule="CS-NET-17")
            for host, ip in c.aux_addresses:
                a = ipaddress.ip_address(ip)
                if a.version != sub.version or a not in sub:
                    ctx.err(path + ("aux_addresses", host), f"aux address {a} is outside the subnet {sub}",
                            rule="CS-NET-17")
            for other, okey, oi in seen:
                if other.version == sub.version and other.overlaps(sub):
                    where = f"networks.{okey}.ipam.config[{oi}]"
                    ctx.err(path + ("subnet",), f"subnet {sub} overlaps {other} ({where})",
                            hint="give each network its own address range")
            seen.append((sub, key, i))


def _check_families(ctx: Ctx, key: str, net: Network) -> None:
    """``enable_ipv4: false`` (Docker 28, IPv6-only networks): IPv6 must be on, and no IPv4
    subnet may be given."""
    if net.enable_ipv4 or net.driver in ("none", "host"):
        return
    v6 = net.enable_ipv6 or (net.opt("com.docker.network.enable_ipv6") or "").lower() in ("1", "true") or any(
        c.subnet and ":" in c.subnet for c in net.ipam)
    if not v6:
        ctx.err(("networks", key, "enable_ipv4"), "a network with enable_ipv4: false needs IPv6",
                hint="add enable_ipv6: true (an IPv6-only network), or remove enable_ipv4: false")
    for i, c in enumerate(net.ipam):
        if c.subnet and ":" not in c.subnet:
            ctx.err(("networks", key, "ipam", "config", i, "subnet"), f"IPv4 subnet {c.subnet} on a network with "
                    "enable_ipv4: false", hint="remove the IPv4 block, or remove enable_ipv4: false")


_NO_HOSTS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "is 'this network' (0.0.0.0/8)"), ("127.0.0.0/8", "is loopback (127.0.0.0/8)"),
    ("224.0.0.0/4", "is multicast (224.0.0.0/4)"), ("240.0.0.0/4", "is reserved (240.0.0.0/4)"),
    ("::1/128", "is loopback (::1)"), ("ff00::/8", "is multicast (ff00::/8)"))


def _carries_hosts(ctx: Ctx, path: tuple[Any, ...], c: Any, sub: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """False (after an error) when the subnet cannot carry a bridge network's hosts, or is a
    size request (``0.0.0.0/24``: Docker 29's "a /24 from the default pools") with fields that
    need a literal subnet. A size request itself is fine."""
    size = ipam.size_request(str(sub))
    if size is not None:
        for k in ("gateway", "ip_range"):
            if getattr(c, k):
                ctx.err(path + (k,), f"{k} needs a literal subnet: {sub} asks for any /{size} from the default pools",
                        hint=f"write the subnet itself (e.g. 10.1.0.0/{size}) to choose the {k}", rule="CS-NET-17")
        for host, _ in c.aux_addresses:
            ctx.err(path + ("aux_addresses", host), f"aux addresses need a literal subnet: {sub} asks for any "
                    f"/{size} from the default pools", rule="CS-NET-17")
        return False
    lo, hi = ipam.SIZE4 if sub.version == 4 else ipam.SIZE6
    zero = "0.0.0.0" if sub.version == 4 else "::"
    if int(sub.network_address) == 0:
        ctx.err(path + ("subnet",), f"subnet {sub} cannot carry hosts: a size request from the default pools "
                f"is {zero}/{lo} to {zero}/{hi}", hint=f"e.g. {zero}/{24 if sub.version == 4 else 64} for any "
                f"/{24 if sub.version == 4 else 64} from the default pools, or a literal subnet", rule="CS-NET-17")
        return False
    for cidr, why in _NO_HOSTS:
        special = ipaddress.ip_network(cidr)
        if special.version == sub.version and sub.subnet_of(special):  # type: ignore[arg-type]
            ctx.err(path + ("subnet",), f"subnet {sub} cannot carry hosts: it {why}",
                    hint="use a private range such as 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16", rule="CS-NET-17")
            return False
    if sub.num_addresses <= 2 and not c.gateway:
        ctx.err(path + ("subnet",), f"subnet {sub} has no room for a gateway and a host",
                hint=f"use a /{sub.max_prefixlen - 2} or larger, or give the gateway (the subnet's one address "
                     "for it) explicitly", rule="CS-NET-17")
        return False
    return True


def _check_services(ctx: Ctx, services: Mapping[str, Service], bodies: Mapping[str, Any],
                    networks: Mapping[str, Network], disabled: set[str]) -> None:
    refs = _Refs(ctx, set(bodies), disabled)  # every enabled service, even one whose own values were invalid
    container_names: dict[str, str] = {}
    for name, svc in sorted(services.items()):
        body = bodies.get(name) or {}
        path = ("services", name)
        if not dns_name_ok(name):
            ctx.err(path, f"service name {name!r} is not a valid DNS name", key=True,
                    hint="use letters, digits and '-'; each dot-separated part at most 63 characters")
        _check_service_networks(ctx, refs, path, svc, body, networks)
        _check_links_and_deps(ctx, refs, path, name, svc, body)
        for key, rule in (("hostname", "CS-NAME-11"), ("domainname", "CS-NAME-11")):
            v = getattr(svc, key)
            if v is not None and not dns_name_ok(v, strict=True):
                ctx.err(path + (key,), f"{key} {v!r} is not a valid RFC 1123 host name", rule=rule)
        _check_container_name(ctx, path, name, svc, container_names)
        if svc.ports:
            _check_ports_mode(ctx, path, svc, networks)
    _check_cycles(ctx, services)


class _Refs:
    """Checks that a service a reference names is enabled; says why not, located at the reference."""

    def __init__(self, ctx: Ctx, names: set[str], disabled: set[str]):
        self.ctx = ctx
        self.names = names
        self.disabled = disabled

    def check(self, path: tuple[Any, ...], target: str, what: str, rule: str, required: bool = True) -> bool:
        """Whether ``target`` is an enabled service; an error when not and ``required``."""
        if target in self.names:
            return True
        if target in self.disabled:
            if required:
                self.ctx.err(path, f"{what} {target!r} is disabled by its profiles",
                             hint="enable its profile with --profile or COMPOSE_PROFILES", rule="CS-PROF-04")
        elif required:
            self.ctx.err(path, f"{what} {target!r} is not defined", rule=rule)
        return False


def _check_service_networks(ctx: Ctx, refs: _Refs, path: tuple[Any, ...], svc: Service, body: Any,
                            networks: Mapping[str, Network]) -> None:
    """network_mode against networks, service:X's target, each network's existence and aliases."""
    mode = svc.network_mode
    if mode is not None and body.get("networks"):
        ctx.err(path + ("networks",), f"networks cannot be combined with network_mode {mode}",
                hint="remove one of them", rule="CS-NM-06", key=True)
    if mode and mode.startswith("service:"):
        refs.check(path + ("network_mode",), mode.split(":", 1)[1], "network_mode service", "CS-NM-08")
    for att in svc.networks:
        if att.network not in networks and att.network != "default":
            ctx.err(path + ("networks", att.network), f"network {att.network!r} is not defined",
                    hint=f"declare it under the top-level `networks:` ({', '.join(sorted(networks)) or 'none'}"
                    " are)", rule="CS-SNET-03", key=True)
        for alias in att.aliases:
            if not dns_name_ok(alias):
                ctx.err(path + ("networks", att.network, "aliases"),
                        f"alias {alias!r} is not a valid DNS name", rule="CS-SNET-04")


def _check_links_and_deps(ctx: Ctx, refs: _Refs, path: tuple[Any, ...], name: str, svc: Service,
                          body: Any) -> None:
    """links name enabled services under valid aliases; depends_on targets exist (or are optional)."""
    for i, (target, alias) in enumerate(svc.links):
        refs.check(path + ("links", i), target, "linked service", "CS-LINK-01")
        if not dns_name_ok(alias):
            ctx.err(path + ("links", i), f"link alias {alias!r} is not a valid DNS name", rule="CS-LINK-01")
    for dep, required in required_deps(body).items():
        if dep == name:
            ctx.err(path + ("depends_on",), f"service {name!r} depends on itself")
        elif not refs.check(path + ("depends_on",), dep, "depends_on service", "CS-PROF-04", required) and not required:
            ctx.warn(path + ("depends_on",), f"optional dependency {dep!r} is not enabled; ignored")


def _check_container_name(ctx: Ctx, path: tuple[Any, ...], name: str, svc: Service,
                          container_names: dict[str, str]) -> None:
    """A valid, unique container_name, on a service of one replica (CS-NAME-10)."""
    cn = svc.container_name
    if cn is None:
        return
    if not _CONTAINER_NAME.match(cn):
        ctx.err(path + ("container_name",), f"container_name {cn!r} is invalid",
                hint="start with a letter or digit; then letters, digits, '_', '.', '-'", rule="CS-NAME-10")
    elif cn in container_names:
        ctx.err(path + ("container_name",),
                f"container_name {cn!r} is already used by service {container_names[cn]!r}", rule="CS-NAME-10")
    else:
        container_names[cn] = name
    if svc.replicas > 1:
        ctx.err(path + ("container_name",), f"a service with container_name cannot have {svc.replicas} "
                "replicas", hint="remove container_name or scale to 1", rule="CS-NAME-10")


def _check_ports_mode(ctx: Ctx, path: tuple[Any, ...], svc: Service, networks: Mapping[str, Network]) -> None:
    """Ports of a service that cannot publish them: an error (network_mode host, service:,
    container:) or a warning (none, or only internal networks)."""
    mode = svc.network_mode
    if mode == "host":
        ctx.err(path + ("ports",), "ports cannot be published with network_mode host",
                hint="the service already listens on the host's addresses", rule="CS-NM-07", key=True)
    elif mode and mode.split(":", 1)[0] in ("service", "container"):
        ctx.err(path + ("ports",), f"ports cannot be published with network_mode {mode}",
                hint="publish them on the service that owns the network namespace", key=True)
    elif mode == "none":
        ctx.warn(path + ("ports",), "ports are ignored with network_mode none", key=True)
    elif svc.networks and all(networks.get(a.network) is not None and networks[a.network].internal
                              for a in svc.networks):
        ctx.warn(path + ("ports",), "the service is only on internal networks: its ports are not "
                 "published (Docker drops them silently)", key=True)


def _check_cycles(ctx: Ctx, services: Mapping[str, Service]) -> None:
    """service:X chains and depends_on (explicit and implicit) must not loop."""
    graph = {n: [d for d in s.depends_on if d in services] for n, s in services.items()}
    state: dict[str, int] = {}
    reported: set[frozenset[str]] = set()
    for start in sorted(graph):
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        trail: list[str] = []
        while stack:
            node, idx = stack.pop()
            if idx == 0:
                state[node] = 1
                trail.append(node)
            deps = graph[node]
            if idx < len(deps):
                stack.append((node, idx + 1))
                nxt = deps[idx]
                if state.get(nxt) == 1:
                    cyc = trail[trail.index(nxt):] + [nxt]
                    key = frozenset(cyc)
                    if key not in reported:
                        reported.add(key)
                        svc = services[cyc[0]]
                        what = ("network_mode" if (svc.network_mode or "").startswith("service:")
                                and svc.network_mode == f"service:{cyc[1]}" else "depends_on")
                        ctx.err(("services", cyc[0], what), "dependency cycle: " + " -> ".join(cyc),
                                hint="links, depends_on and network_mode service:X must not form a loop",
                                rule="CS-NM-08")
                elif not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                trail.pop()


def _check_addresses(ctx: Ctx, services: Mapping[str, Service], networks: Mapping[str, Network]) -> None:
    used: dict[tuple[str, str], str] = {}
    for name, svc in sorted(services.items()):
        for att in svc.networks:
            opts = dict(att.driver_opts)
            if ENDPOINT_SYSCTLS in opts:
                try:
                    endpoint_sysctls(opts[ENDPOINT_SYSCTLS])
                except ValueError as e:
                    ctx.err(("services", name, "networks", att.network, "driver_opts", ENDPOINT_SYSCTLS), str(e),
                            hint="e.g. net.ipv4.conf.IFNAME.forwarding=1,net.ipv6.conf.IFNAME.accept_ra=2")
            net = networks.get(att.network)
            if net is None or net.external:
                continue
            subs = _subnets(net)
            for key, addr in (("ipv4_address", att.ipv4_address), ("ipv6_address", att.ipv6_address)):
                if addr is None:
                    continue
                path = ("services", name, "networks", att.network, key)
                ip = ipaddress.ip_address(addr)
                same = [s for s in subs if s.version == ip.version]
                if not same:
                    ctx.err(path, f"static address {ip} needs an IPv{ip.version} subnet in networks.{att.network}"
                            ".ipam.config", rule="CS-SNET-07")
                    continue
                inside = [s for s in same if ip in s]
                if not inside:
                    ctx.err(path, f"static address {ip} is outside the subnet "
                            f"{', '.join(map(str, same))} of network {att.network!r}", rule="CS-SNET-07")
                    continue
                sub = inside[0]
                if ip.version == 4 and sub.prefixlen < 31 and ip in (sub.network_address, sub.broadcast_address):
                    ctx.err(path, f"static address {ip} is the {'network' if ip == sub.network_address else 'broadcast'}"
                            f" address of {sub}", rule="CS-SNET-07")
                for c in net.ipam:
                    if c.gateway and ipaddress.ip_address(c.gateway) == ip:
                        ctx.err(path, f"static address {ip} is the gateway of network {att.network!r}",
                                rule="CS-SNET-07")
                    if any(ipaddress.ip_address(a) == ip for _, a in c.aux_addresses):
                        ctx.err(path, f"static address {ip} is reserved in aux_addresses", rule="CS-SNET-07")
                if (att.network, str(ip)) in used:
                    ctx.err(path, f"static address {ip} is also given to service {used[(att.network, str(ip))]!r}",
                            rule="CS-SNET-07")
                else:
                    used[(att.network, str(ip))] = name
                if svc.replicas > 1:
                    ctx.err(path, f"a static address cannot be shared by {svc.replicas} replicas", rule="CS-SNET-07")


def _host_ports(p: Port) -> range | None:
    if p.published is None:
        return None
    lo, _, hi = p.published.partition("-")
    if hi and hi != lo:
        return None  # one free port of a range (CS-PORT-05): not a fixed claim
    return range(int(lo), int(lo) + 1)


def _ips_overlap(a: str | None, b: str | None) -> bool:
    if a is None or b is None or a == b:
        return True
    ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    if ia.version != ib.version:
        return False
    return ia.is_unspecified or ib.is_unspecified


def _check_ports(ctx: Ctx, services: Mapping[str, Service], networks: Mapping[str, Network]) -> None:
    # (host port, protocol) -> earlier claims in order: a clash is looked up, not scanned for.
    claims: dict[tuple[int, str], list[tuple[str, Port, str | None]]] = {}
    for name, svc in sorted(services.items()):
        if svc.network_mode is not None:
            continue
        for p in svc.ports:
            r = _host_ports(p)
            if r is None:
                continue
            port = r.start
            same = claims.setdefault((port, p.protocol), [])
            for oname, op, ohip in same:
                if _ips_overlap(ohip, p.host_ip):
                    where = op.pos.path if op.pos else f"services.{oname}.ports"
                    loc = f" ({op.pos})" if op.pos else ""
                    path = tuple(_split(p.pos.path)) if p.pos else ("services", name, "ports")
                    ctx.err(path, f"host port {p.host_ip or '*'}:{port}/{p.protocol} is already published by "
                            f"{where}{loc}", hint="publish it once, or on different host addresses")
                    break
            else:
                same.append((name, p, p.host_ip))
    _ = networks


def _split(path: str) -> list[Any]:
    out: list[Any] = []
    for m in re.finditer(r'\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]|\.?([A-Za-z0-9_-]+)', path):
        if m.group(1) is not None:
            out.append(m.group(1))
        elif m.group(2) is not None:
            out.append(int(m.group(2)))
        else:
            out.append(m.group(3))
    return out
