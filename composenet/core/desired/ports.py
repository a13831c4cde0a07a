"""Published ports: the host port of each, the DNAT maps the ruleset is built from, and the
exposure table the plan shows. Pure; no I/O.

Owns: which endpoint a service publishes from (its first non-internal bridge, by gw_priority),
the host address (the port's, else the network's ``host_binding_ipv4``, else every address), and
the host port: a fixed one (refused when another composenet project publishes it), else one of
the range (or of the ephemeral range) this service already had, else the first free one. Fixed
ports are placed before ranges, so a range never takes a port the file names.

A fixed host port that a program of the host holds (ObservedState.host_ports) is refused, located
at the port; ranges and ephemeral ports skip such ports.

Also (issue 14): each port's source allowlist (the port's ``x-composenet-allow``, else the
service's, else the network's ``com.composenet.publish.allow``); ``--publish-localhost-only``
(Project.publish_localhost_only: 127.0.0.1 for ports without their own host_ip); what the
network's gateway modes make of a port (routed: no host port, no DNAT; isolated: not
published); and the exposure table's words for all of it, with the host firewall the observed
state names (its input rules never see published ports).

Must not: write rules (core/ruleset.py does, from the PortMaps) or check the file (the validator
reported ports with network_mode, and clashes inside the file).
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from composenet.core.desired.common import warn
from composenet.core.desired.containers import Container, Endpoint, by_service
from composenet.core.desired.networks import NetPlan, trusted_interfaces
from composenet.core.model import Port, Project, Service
from composenet.core.resources import NftTable
from composenet.core.resources.services import held_order
from composenet.core.ruleset import PortMap, parse_port
from composenet.core.state import ObservedState
from composenet.errors import InputError, Problem

EPHEMERAL_FIRST, EPHEMERAL_LAST = 32768, 60999  # Linux's default ip_local_port_range, as Docker


ALLOW_OPT = "com.composenet.publish.allow"  # a network's source allowlist (driver_opts or labels)


class _Request(NamedTuple):
    """One port to publish: ``host_ip`` None is every address (of family ``fam_only`` when not 0)."""

    svc: Service
    port: Port
    host_ip: str | None
    eps: list[Endpoint]  # the endpoint of each replica it is published from
    fam_only: int
    allow: tuple[str, ...] = ()  # the only sources that may reach it (empty: every source)
    allow_from: str = ""  # where the allowlist is written (port, service, network NAME)
    localhost_only: bool = False  # 127.0.0.1 because of --publish-localhost-only


def publish_ports(project: Project, nets: dict[str, NetPlan], containers: list[Container], observed: ObservedState,
                  warnings: list[str]) -> tuple[list[PortMap], list[dict[str, Any]]]:
    """(DNAT maps, exposure rows) of every published port of the project."""
    prev = _observed_port_set(observed)
    in_use = _ports_in_use(observed)
    held = _host_held(observed)
    claimed: set[tuple[str, int, str]] = set()  # (proto, port, host_ip)
    maps: list[PortMap] = []
    exposure: list[dict[str, Any]] = []
    fixed, floating = _requests(project, nets, containers, warnings)
    for req in fixed + floating:
        if _is_fixed(req.port):
            host_port = _fixed_port(req, in_use)
            if (req.svc.name, req.port.protocol, host_port) in prev:
                _warn_held(req, host_port, held, warnings)  # published already: a late squatter
            else:
                _refuse_held(req, host_port, held)
        else:
            host_port = _free_port(req, prev, in_use, claimed, warnings, held)
            if not host_port:
                continue
        claimed.add((req.port.protocol, host_port, req.host_ip or "*"))
        maps += _port_maps(req, host_port)
        exposure.append(_exposure_row(req, host_port, observed.host_firewall))
    return maps, exposure


def _is_fixed(port: Port) -> bool:
    return bool(port.published) and "-" not in (port.published or "")


def _requests(project: Project, nets: dict[str, NetPlan], containers: list[Container],
              warnings: list[str]) -> tuple[list[_Request], list[_Request]]:
    """(fixed host ports, ranges and ephemeral ones), services by name, ports in file order."""
    replicas = by_service(containers)
    fixed: list[_Request] = []
    floating: list[_Request] = []
    for svc in sorted(project.services, key=lambda s: s.name):
        if not svc.ports:
            continue
        if svc.network_mode:
            continue  # the validator reported it, located (an error, or a warning for `none`)
        eps = _published_endpoints(replicas.get(svc.name, []))
        if not eps:
            if not all(nets[a.network].net.internal for a in svc.networks if a.network in nets):
                # Only-internal is the validator's located warning; this is the other case.
                warn(warnings, svc.ports[0].pos or svc.pos, f"services.{svc.name}.ports", "none of its networks is a "
                     "bridge composenet manages and the host can reach (gateway mode isolated, macvlan, ipvlan, none); "
                     "its ports are not published")
            continue
        for port in svc.ports:
            host_ip, fam_only = _host_address(port, eps[0], project.publish_localhost_only)
            allow, allow_from = _allowlist(svc, port, eps[0])
            req = _Request(svc, port, host_ip, eps, fam_only, allow, allow_from,
                           project.publish_localhost_only and port.host_ip is None)
            (fixed if _is_fixed(port) else floating).append(req)
    return fixed, floating


def _published_endpoints(replicas: list[Container]) -> list[Endpoint]:
    """Per replica, the endpoint its ports are published from: on a bridge (its project's or an
    external one) that is not internal, highest gw_priority first, then interface order."""
    eps = []
    for c in replicas:
        cand = [e for e in c.endpoints if not e.network.net.internal and e.network.kind in ("bridge", "external")
                and e.network.bridge and not _isolated(e.network)]
        if cand:
            eps.append(sorted(cand, key=lambda e: (-e.gw_priority, e.index))[0])
    return eps


def allow_option(text: str | None) -> tuple[str, ...]:
    """A network's ``com.composenet.publish.allow`` (comma-separated CIDRs; the validator
    located any invalid one) as canonical CIDRs."""
    out: list[str] = []
    for item in (text or "").split(","):
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            continue
    return tuple(dict.fromkeys(out))


def _allowlist(svc: Service, port: Port, ep: Endpoint) -> tuple[tuple[str, ...], str]:
    """(the sources allowed to reach ``port``, where that is written): the port's own
    ``x-composenet-allow``, else the service's, else the publishing network's
    ``com.composenet.publish.allow`` (driver_opts, else labels); ((), "") for every source."""
    if port.allow is not None:
        return port.allow, "port"
    if svc.publish_allow is not None:
        return svc.publish_allow, "service"
    net = ep.network.net
    text = net.opt(ALLOW_OPT) or dict(net.labels).get(ALLOW_OPT)
    if text:
        return allow_option(text), f"network {net.name}"
    return (), ""


def _isolated(np: NetPlan) -> bool:
    """Every family of the network in gateway mode isolated: nothing outside reaches it."""
    return all(np.mode(v) == "isolated" for v, sub in ((4, np.subnet4), (6, np.subnet6)) if sub is not None)


def _host_address(port: Port, ep: Endpoint, localhost_only: bool = False) -> tuple[str | None, int]:
    """(host address or None for every one, the only family of "every address" or 0 for both).
    ``localhost_only`` (--publish-localhost-only): a port without its own host_ip is published
    on 127.0.0.1, whatever the network's host_binding_ipv4."""
    host_ip = port.host_ip
    if host_ip is None and localhost_only:
        return "127.0.0.1", 0
    if host_ip is None:
        default_ip = ep.network.net.opt("com.docker.network.bridge.host_binding_ipv4")
        if default_ip and default_ip not in ("0.0.0.0",):
            host_ip = default_ip
    if host_ip in ("0.0.0.0", "::"):
        return None, 4 if host_ip == "0.0.0.0" else 6
    return host_ip, 0


def _fixed_port(req: _Request, in_use: dict[tuple[str, int], list[str | None]]) -> int:
    """The port the file names; an error when another composenet project publishes it."""
    svc, port, host_ip = req.svc, req.port, req.host_ip
    assert port.published is not None  # a fixed port (_is_fixed): one number
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
    return host_port


def _free_port(req: _Request, prev: set[tuple[str, str, int]], in_use: dict[tuple[str, int], list[str | None]],
               claimed: set[tuple[str, int, str]], warnings: list[str],
               held: dict[tuple[str, int], list[dict[str, Any]]] | None = None) -> int:
    """A port of the range (or of the ephemeral range): the one this service had, else the
    first free one; 0 (and a warning) when none is free."""
    svc, port = req.svc, req.port
    hip_key = req.host_ip or "*"
    if port.published:
        lo, hi = (int(x) for x in port.published.split("-", 1))
    else:
        lo, hi = EPHEMERAL_FIRST, EPHEMERAL_LAST
    # Stable: a port this service already had in the range for this protocol.
    for s, proto, hp in sorted(prev):
        if s == svc.name and proto == port.protocol and lo <= hp <= hi and (proto, hp, hip_key) not in claimed:
            return hp
    for hp in range(lo, hi + 1):
        if (port.protocol, hp) in in_use or (port.protocol, hp, hip_key) in claimed or (
                port.protocol, hp, "*") in claimed or _holders(req, hp, held or {}):
            continue
        return hp
    warn(warnings, port.pos or svc.pos, port.pos.path if port.pos else f"services.{svc.name}.ports",
         f"no free host port in {lo}-{hi}/{port.protocol}")
    return 0


def _host_held(observed: ObservedState) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The host's bound sockets (ObservedState.host_ports) by (protocol, port)."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for h in observed.host_ports:
        out.setdefault((str(h["proto"]), int(h["port"])), []).append(h)
    return out


def _blocks(h: dict[str, Any], family: int, host_ip: str | None) -> bool:
    """Whether socket ``h`` of the host takes traffic a DNAT of ``host_ip`` (None: every local
    address of ``family``) would take instead, i.e. whether a bind there would fail: same
    address, either side a wildcard, and a dual-stack [::] socket covers IPv4 too."""
    ha = ipaddress.ip_address(str(h["address"]))
    if ha.version == family:
        return host_ip is None or ha.is_unspecified or ipaddress.ip_address(host_ip) == ha
    return family == 4 and ha.is_unspecified and not h.get("v6only", False)


def _holders(req: _Request, host_port: int, held: dict[tuple[str, int], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The host's sockets that hold what publishing ``req`` on ``host_port`` would take."""
    socks = held.get((req.port.protocol, host_port), [])
    if not socks:
        return []
    return [h for m in _port_maps(req, host_port) for h in socks if _blocks(h, m.family, m.host_ip)]


def _held_by(h: dict[str, Any], host_port: int) -> str:
    addr = str(h["address"])
    who = f"pid {h['pid']} ({h.get('process') or '?'})" if h.get("pid") else "a socket no process holds (the kernel's)"
    return f"{f'[{addr}]' if ':' in addr else addr}:{host_port}/{h['proto']} is held by {who}"


def _warn_held(req: _Request, host_port: int, held: dict[tuple[str, int], list[dict[str, Any]]],
               warnings: list[str]) -> None:
    """A port the project publishes already, now held by a host program too (it could bind only
    while the project's supervisor was not holding it): the DNAT rule keeps taking its traffic.
    Said, not refused: refusing would stop `up` from repairing the project and `check` from
    naming the program."""
    found = _holders(req, host_port, held)
    if found:
        warn(warnings, req.port.pos or req.svc.pos, req.port.pos.path if req.port.pos else f"services.{req.svc.name}.ports",
             f"host port {req.host_ip or '*'}:{host_port}/{req.port.protocol} is published by this project, but "
             f"{_held_by(found[0], host_port)}, which gets none of its traffic; stop that program")


def _refuse_held(req: _Request, host_port: int, held: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
    """A fixed host port a program of the host already holds: refused at the port, naming the
    address, protocol and process (Docker: "port is already allocated"), rather than taking
    its traffic away from it silently."""
    found = _holders(req, host_port, held)
    if not found:
        return
    pos = req.port.pos or req.svc.pos
    raise InputError([Problem(
        f"host port {req.host_ip or '*'}:{host_port}/{req.port.protocol} is already in use on this host: "
        f"{_held_by(found[0], host_port)}",
        file=pos.file if pos else None, line=pos.line if pos else None, col=pos.col if pos else None,
        path=req.port.pos.path if req.port.pos else f"services.{req.svc.name}.ports",
        hint="stop that program or move it to another port, or publish another host port "
             "(Docker: port is already allocated)")])


def held_specs(maps: list[PortMap]) -> tuple[str, ...]:
    """What the project's supervisor holds for ``maps``: one ``proto/address/port`` per family
    and address (0.0.0.0 and :: for every address; SCTP ports are not held)."""
    out = set()
    for m in maps:
        if m.protocol in ("tcp", "udp") and not m.routed:
            out.add(f"{m.protocol}/{m.host_ip or ('0.0.0.0' if m.family == 4 else '::')}/{m.host_port}")
    return held_order(out)


def fixed_port_maps(containers: list[Container], localhost_only: bool = False) -> list[PortMap]:
    """The DNAT maps of the ports with a fixed host port (those need no observed state to place),
    as publish_ports makes them."""
    maps: list[PortMap] = []
    for svc_name, replicas in sorted(by_service(containers).items()):
        svc = replicas[0].service
        if svc.network_mode or not svc.ports:
            continue
        eps = _published_endpoints(replicas)
        if not eps:
            continue
        for port in svc.ports:
            if _is_fixed(port):
                host_ip, fam_only = _host_address(port, eps[0], localhost_only)
                allow, where = _allowlist(svc, port, eps[0])
                maps += _port_maps(_Request(svc, port, host_ip, eps, fam_only, allow, where),
                                   int(port.published or 0))
        _ = svc_name
    return maps


def _port_maps(req: _Request, host_port: int) -> list[PortMap]:
    """One DNAT map per address family the port is published on and its endpoints have."""
    if req.host_ip is not None:
        fams = [6 if ":" in req.host_ip else 4]
    else:
        fams = [4, 6] if req.fam_only == 0 else [req.fam_only]
    maps = []
    for fam in fams:
        targets = tuple(t for t in ((e.ipv4 if fam == 4 else e.ipv6) for e in req.eps) if t)
        mode = req.eps[0].network.mode(fam)
        if targets and mode != "isolated":
            maps.append(PortMap(req.svc.name, req.host_ip, host_port, req.port.protocol, targets, req.port.target, fam,
                                req.allow, routed=mode == "routed", bridge=req.eps[0].network.bridge))
    return maps


def _exposure_row(req: _Request, host_port: int, firewall: str = "") -> dict[str, Any]:
    """One row of the exposure table: ``scope`` says in words who can reach the port: which
    host address, which sources (the allowlist and where it is written), and, when the host
    has a firewall, that its input rules do not apply (DNAT happens before input)."""
    host_ip = req.host_ip
    loopback = bool(host_ip) and ipaddress.ip_address(str(host_ip)).is_loopback
    if loopback:
        scope = "host loopback only" + (", by --publish-localhost-only" if req.localhost_only else "")
    else:
        if req.allow:
            who = f"from {', '.join(req.allow)} only ({req.allow_from}'s allowlist)"
            scope = f"address {host_ip}, {who}" if host_ip else f"every host address, {who}"
        else:
            scope = f"address {host_ip} only" if host_ip else "every host address, from anywhere"
        if firewall:
            scope += f"; the host firewall ({firewall}) does not filter it: published ports are DNATed before its input rules"
    if _all_routed(req):
        who = f"from {', '.join(req.allow)} only ({req.allow_from}'s allowlist)" if req.allow else "from anywhere"
        scope = f"no host port, {who}"
    scope += _mode_note(req)
    row: dict[str, Any] = {
        "service": req.svc.name, "host_ip": host_ip or "*", "host_port": host_port, "protocol": req.port.protocol,
        "target_port": req.port.target, "network": req.eps[0].network.net.name,
        "targets": [e.ipv4 or e.ipv6 for e in req.eps], "scope": scope,
    }
    if req.allow:
        row["allow"] = list(req.allow)
    if _all_routed(req):
        row["routed"] = True  # no host port: `check` does not probe one
    return row


def _all_routed(req: _Request) -> bool:
    """Every family the port is published on is in gateway mode routed: no host port at all."""
    np = req.eps[0].network
    fams = [f for f, sub in ((4, np.subnet4), (6, np.subnet6)) if sub is not None and np.mode(f) != "isolated"]
    return bool(fams) and all(np.mode(f) == "routed" for f in fams)


def _mode_note(req: _Request) -> str:
    """What the publishing network's gateway modes make of the port, in words ("" for nat)."""
    np = req.eps[0].network
    notes = []
    for fam, sub in ((4, np.subnet4), (6, np.subnet6)):
        mode = np.mode(fam)
        targets = [t for t in ((e.ipv4 if fam == 4 else e.ipv6) for e in req.eps) if t]
        if sub is None or not targets or mode == "nat":
            continue
        at = ", ".join(f"[{t}]:{req.port.target}" if fam == 6 else f"{t}:{req.port.target}" for t in targets)
        if mode == "routed":
            notes.append(f"IPv{fam} routed (no NAT): reachable directly at {at} from hosts with a route to {sub}")
        elif mode == "nat-unprotected":
            notes.append(f"IPv{fam} nat-unprotected: every port of {', '.join(targets)} is reachable directly from "
                         f"hosts with a route to {sub}, not only this one")
        elif mode == "isolated":
            notes.append(f"IPv{fam} isolated: not published over IPv{fam}")
    trusted = trusted_interfaces(np.net)
    if trusted and not np.net.internal:
        notes.append(f"every port of {', '.join(t for e in req.eps for t in (e.ipv4, e.ipv6) if t)} is reachable "
                     f"directly from host interface{'s' if len(trusted) > 1 else ''} {', '.join(trusted)} "
                     "(trusted_host_interfaces)")
    return "".join(f"; {n}" for n in notes)


def _same_addresses(a: str | None, b: str | None) -> bool:
    """Whether host addresses ``a`` and ``b`` of two published ports overlap (None: all)."""
    if a is None or b is None:
        return True
    try:
        ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    return ia == ib or ia.is_unspecified or ib.is_unspecified


def _ports_in_use(observed: ObservedState) -> dict[tuple[str, int], list[str | None]]:
    """(proto, port) -> host addresses (None: every one) other composenet projects publish."""
    in_use: dict[tuple[str, int], list[str | None]] = {}
    for item in observed.ports_in_use:
        proto, _, rest = item.partition("/")
        num, _, ip = rest.partition("@")
        if num.isdigit():
            in_use.setdefault((proto, int(num)), []).append(ip or None)
    return in_use


def _observed_port_set(observed: ObservedState) -> set[tuple[str, str, int]]:
    """(service, protocol, host port) of every port this project publishes now (its DNAT rules)."""
    out = set()
    for r in observed.resources.values():
        if isinstance(r, NftTable):
            for ident in r.rules:
                rule = parse_port(ident)
                if rule is not None:
                    out.add((rule.service, rule.protocol, rule.host_port))
    return out
