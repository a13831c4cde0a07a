"""What `composenet check` expects of a running project: every reachability the file implies, as
``Expect`` rows the kernel layer probes (composenet.kernel.check). Pure; no I/O.

Derived from the project as planned against the kernel (``DesiredState``: its containers with
their addresses, its networks, its exposure table and the resolver's config, which lists every
container's names) plus the kernel facts a probe needs first (``Facts``: what each namespace
listens on, a host address, the upstream servers):

- every container and every other container it shares a network with: each of the target's
  names in scope (service, container name, hostname, aliases and ``<name>.<network>``) resolves
  to the addresses Docker's rules give (a plain name answers from the asker's first network
  that has it, per record type; a link alias wins); a TCP or UDP connect to each port the target listens on
  (its non-loopback listeners, plus ``expose`` and the targets of ``ports``) succeeds; on a
  network with ``enable_icc`` off, the connect is blocked;
- every pair that shares no network: a connect to each of the target's addresses is blocked
  and none of the target's names resolves (isolation);
- a container only on ``internal`` networks: no egress (a connect to the first upstream DNS
  server) and outside names REFUSED;
- every published port: reachable from the host on 127.0.0.1 and on a host address where the
  file says so, closed where it says so (``host_ip``), and held by no other host process;
- ``depends_on`` between services that share no network: a warning (the name is not in scope).

Must not: probe, read the kernel or decide why something failed (composenet.kernel.check does).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from composenet.core.model import Project
from composenet.core.resources import Resolver
from composenet.core.state import DesiredState

KINDS = ("dns", "tcp", "udp", "egress", "publish", "hostport", "scope")  # also the output order
OUTSIDE_NAME = "example.com"  # asked by internal-only containers: must be REFUSED, never forwarded
MAX_RANGE = 32  # an `expose` range longer than this contributes only the ports found listening
NO_LISTENER_PORT = 9  # isolation probe of a target that listens on nothing (discard)


@dataclass(frozen=True)
class Facts:
    """What the kernel says before anything is probed: the listening sockets of each namespace
    (``(proto, port, local address)``), a host address that is not loopback (None: none), and the
    upstream DNS servers (the egress probe's destination)."""

    listening: dict[str, tuple[tuple[str, int, str], ...]] = field(default_factory=dict)
    host_address: str | None = None
    upstreams: tuple[str, ...] = ()
    host_addresses: tuple[str, ...] = ()  # every IPv4 address of the host but loopback


@dataclass(frozen=True)
class Expect:
    """One expectation. ``src``/``dst`` are container names ("host", "outside", or a service for a
    scope warning); ``src_ns`` the namespace probed from ("" = the host's)."""

    kind: str  # dns | tcp | udp | egress | publish | hostport | scope
    src: str
    dst: str
    network: str | None
    target: str  # what is probed: a DNS name, ADDRESS:PORT, or a host port
    expected: str  # addresses | open | blocked | NXDOMAIN | REFUSED | closed | free | shared network
    src_label: str = ""
    dst_label: str = ""
    src_ns: str = ""
    dst_ns: str = ""  # the target's namespace (the replica a published port lands in: dst_spaces)
    name: str | None = None  # dns
    qtype: str = "A"
    want: tuple[str, ...] = ()  # dns: the addresses expected, sorted
    address: str | None = None  # tcp, udp, egress, publish
    port: int | None = None
    proto: str = "tcp"
    dst_port: int | None = None  # publish: the container port
    dst_spaces: tuple[str, ...] = ()  # publish: the namespaces of the replicas behind it
    dst_addresses: tuple[str, ...] = ()  # publish: their addresses (the DNAT targets), in the same order
    src_service: str = ""
    dst_service: str = ""
    why: str = ""  # what the file says that makes this the expectation (isolation, scope)
    warning: bool = False  # scope: a finding, not a probe

    @property
    def sort_key(self) -> tuple[Any, ...]:
        src = (0, "") if self.src == "host" else (1, self.src_label)
        return (src, KINDS.index(self.kind), self.dst_label, self.network or "", self.target, self.proto)


@dataclass(frozen=True)
class Selection:
    """The arguments of `check`: nothing (everything), one service (what it asks and what it is
    asked), or a pair FROM TO[:PORT] (what FROM asks of TO). "host" names the host."""

    first: str | None = None
    second: str | None = None
    port: int | None = None  # of the one service (as a target) or of TO

    def __bool__(self) -> bool:
        return self.first is not None


class SelectionError(ValueError):
    pass


def parse_selection(args: list[str], services: list[str]) -> Selection:
    """``[]``, ``["web"]``, ``["web:80"]``, ``["web", "db:5432"]``; a service or container name, or
    "host". Raises SelectionError with a clear message."""
    if len(args) > 2:
        raise SelectionError("at most two arguments: SERVICE[:PORT] [SERVICE[:PORT]]")
    parsed: list[tuple[str, int | None]] = []
    for a in args:
        name, colon, port = a.partition(":")
        if colon and not (port.isdigit() and 0 < int(port) < 65536):
            raise SelectionError(f"{a!r}: the port must be a number from 1 to 65535")
        if name not in services and name != "host":
            known = ", ".join(sorted(services)) or "none"
            raise SelectionError(f"no service or container {name!r} in the project (services: {known})")
        parsed.append((name, int(port) if colon else None))
    if not parsed:
        return Selection()
    if len(parsed) == 1:
        return Selection(parsed[0][0], None, parsed[0][1])
    if parsed[0][1] is not None:
        raise SelectionError(f"{args[0]!r}: the first service is the client; give the port on the second "
                             f"(`check {parsed[0][0]} {args[1].partition(':')[0]}:{parsed[0][1]}`)")
    return Selection(parsed[0][0], parsed[1][0], parsed[1][1])


# ---- the project as check sees it ----------------------------------------------------------


@dataclass
class _Ep:
    network: str
    ipv4: str | None
    ipv6: str | None
    aliases: tuple[str, ...]
    internal: bool
    icc: bool


@dataclass
class _Box:
    """A container that owns a namespace (sharers add their ``expose`` to it)."""

    name: str
    service: str
    label: str
    ns: str
    endpoints: list[_Ep]
    hostname: str | None = None
    links: tuple[tuple[str, str], ...] = ()
    register: bool = True
    ports: set[tuple[str, int]] = field(default_factory=set)  # declared: (proto, port)

    def names(self, ep: _Ep) -> list[str]:
        """Docker's names of this container on one endpoint (dns/config.py Container.names)."""
        out = [self.service, self.name] + ([self.hostname] if self.hostname else []) + list(ep.aliases)
        return list(dict.fromkeys(n.lower() for n in out))

    @property
    def networks(self) -> list[str]:
        return list(dict.fromkeys(ep.network for ep in self.endpoints))


def _resolver_config(desired: DesiredState) -> dict[str, Any]:
    r = desired.resources.get(f"resolver:{desired.project}")
    if isinstance(r, Resolver) and r.config:
        try:
            cfg = json.loads(r.config)
            return cfg if isinstance(cfg, dict) else {}
        except ValueError:
            return {}
    return {}


def _expand(spec: str) -> tuple[str, list[int]]:
    """An ``expose`` entry ("80", "8000-8010/udp") -> (protocol, ports); [] for a long range."""
    ports, _, proto = spec.partition("/")
    lo, _, hi = ports.partition("-")
    first, last = int(lo), int(hi or lo)
    return (proto or "tcp"), (list(range(first, last + 1)) if last - first < MAX_RANGE else [])


def _labels(project: Project, rows: list[dict[str, Any]]) -> dict[str, str]:
    """How the output names a container: its service when the service has one replica (or its
    container_name), else ``service-N``."""
    services = {s.name: s for s in project.services}
    out = {}
    for row in rows:
        svc = services.get(row["service"])
        if svc is not None and (svc.replicas == 1 or svc.container_name):
            out[row["name"]] = svc.container_name or svc.name
        else:
            out[row["name"]] = f"{row['service']}-{row['index']}"
    return out


def _boxes(project: Project, desired: DesiredState) -> tuple[list[_Box], dict[str, str]]:
    """Every container that owns a namespace, with its endpoints, names and declared ports; and
    every container's label."""
    cfg = _resolver_config(desired)
    records = {c["name"]: c for c in cfg.get("containers", ()) if isinstance(c, dict)}
    net_rows = {n["name"]: n for n in desired.networks}
    by_name = {n.name: n for n in project.networks}
    labels = _labels(project, desired.containers)
    services = {s.name: s for s in project.services}
    boxes: dict[str, _Box] = {}
    for row in desired.containers:
        mode = row.get("network_mode") or ""
        if row["ns"] != row["name"] or mode in ("host", "none"):
            continue  # a sharer, the host's namespace, or loopback only
        rec = records.get(row["name"], {})
        aliases = {e["network"]: tuple(e.get("aliases", ())) for e in rec.get("endpoints", ())}
        eps = []
        for e in row["endpoints"]:
            net = by_name.get(e["network"])
            icc_opt = net.opt("com.docker.network.bridge.enable_icc") if net is not None else None
            internal = net.internal if net is not None else bool(net_rows.get(e["network"], {}).get("internal"))
            eps.append(_Ep(e["network"], e.get("ipv4"), e.get("ipv6"), aliases.get(e["network"], ()), internal,
                           (icc_opt or "true").lower() not in ("false", "0")))
        if not eps:
            continue
        boxes[row["name"]] = _Box(row["name"], row["service"], labels[row["name"]], row["ns"], eps,
                                  rec.get("hostname"), tuple((a, t) for a, t in rec.get("links", ())),
                                  bool(rec.get("register", True)))
    for row in desired.containers:  # declared ports, sharers' to the namespace owner
        box = boxes.get(row["ns"])
        svc = services.get(row["service"])
        if box is None or svc is None:
            continue
        for spec in svc.expose:
            proto, ports = _expand(spec)
            box.ports |= {(proto, p) for p in ports}
        box.ports |= {(p.protocol, p.target) for p in svc.ports if p.protocol in ("tcp", "udp")}
    return [boxes[k] for k in sorted(boxes)], labels


def _ports(box: _Box, facts: Facts) -> list[tuple[str, int]]:
    """The ports to probe on a container: declared ones, and every non-loopback listener."""
    found = {(proto, port) for proto, port, local in facts.listening.get(box.ns, ())
             if not _loopback(local)}
    return sorted(box.ports | found, key=lambda pp: (pp[1], pp[0]))


def _loopback(address: str) -> bool:
    try:
        a = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(a, "ipv4_mapped", None)
    return a.is_loopback or bool(mapped and mapped.is_loopback)


# ---- names: Docker's scoping rules, independent of the resolver's code ----------------------


@dataclass(frozen=True)
class _Answer:
    network: str | None  # the asker's network the answer comes from (None: a link alias)
    holders: tuple[str, ...]  # the containers it names
    v4: tuple[str, ...]
    v6: tuple[str, ...]


class _Names:
    """Which names an asker can resolve, and to what (composenet/dns/zone.py's documented rules,
    written again here from the config data: check must not agree with a resolver bug)."""

    def __init__(self, boxes: list[_Box]):
        self.registered = [b for b in boxes if b.register]

    def answer(self, asker: _Box, name: str) -> _Answer | None:
        """What ``name`` answers for ``asker``, or None when it is not in its scope. A link alias
        wins; then a plain name from the asker's first network that has it; then
        ``<name>.<network>`` for one of the asker's networks."""
        name = name.lower().rstrip(".")
        nets = asker.networks
        for alias, service in asker.links:
            if alias.lower() == name:
                found = self._link(nets, service)
                if found is not None:
                    return found
        hits = [found for net in nets if (found := self._on(net, name)) is not None]
        if hits:
            # Per record type, the first of the asker's networks where the name has an address
            # of that family (an IPv4-only first network does not hide a dual-stack one's AAAA).
            return _Answer(hits[0].network, hits[0].holders, next((h.v4 for h in hits if h.v4), ()),
                           next((h.v6 for h in hits if h.v6), ()))
        for net in nets:
            if name.endswith("." + net.lower()):
                found = self._on(net, name[: -len(net) - 1])
                if found is not None:
                    return found
        return None

    def _on(self, net: str, name: str) -> _Answer | None:
        hits = [(b, ep) for b in self.registered for ep in b.endpoints if ep.network == net and name in b.names(ep)]
        if not hits:
            return None
        return _Answer(net, tuple(b.name for b, _ep in hits), tuple(sorted({ep.ipv4 for _b, ep in hits if ep.ipv4})),
                       tuple(sorted({ep.ipv6 for _b, ep in hits if ep.ipv6})))

    def _link(self, nets: list[str], service: str) -> _Answer | None:
        hits = []
        for b in self.registered:
            if b.service != service:
                continue
            shared = [ep for net in nets for ep in b.endpoints if ep.network == net]
            if shared:
                hits.append((b, next((ep.ipv4 for ep in shared if ep.ipv4), None),
                             next((ep.ipv6 for ep in shared if ep.ipv6), None)))
        if not hits:
            return None
        return _Answer(None, tuple(b.name for b, _a4, _a6 in hits), tuple(sorted({a4 for _b, a4, _a6 in hits if a4})),
                       tuple(sorted({a6 for _b, _a4, a6 in hits if a6})))


def scope_reason(asker: str, asker_nets: list[str], target: str, target_nets: list[str]) -> str:
    """Why a name of ``target`` is not in ``asker``'s scope, and which networks would put it there."""
    mine = ", ".join(asker_nets) or "no network"
    theirs = ", ".join(target_nets) or "no network"
    return (f"not in {asker}'s scope: {asker} is on {mine}, {target} on {theirs}; "
            f"attaching {asker} to {' or '.join(target_nets) or 'a network of ' + target} would put it there")


# ---- deriving ----------------------------------------------------------------------------------


def derive(project: Project, desired: DesiredState, facts: Facts, selection: Selection | None = None) -> list[Expect]:
    """Every expectation of the project (those ``selection`` names), sorted for output."""
    boxes, labels = _boxes(project, desired)
    names = _Names(boxes)
    out: list[Expect] = []
    for asker in boxes:
        for target in boxes:
            if target is asker:
                continue
            shared = [n for n in asker.networks if n in target.networks]
            if shared:
                out += _reach(asker, target, shared, facts)
            else:
                out += _isolation(asker, target, facts)
        out += _dns(asker, boxes, names)
        if all(ep.internal for ep in asker.endpoints):
            out += _internal(asker, facts)
    out += _published(desired, labels, facts)
    out += _depends(project, boxes)
    if selection:
        out = [e for e in out if _selected(e, selection, project)]
    return sorted(set(out), key=lambda e: e.sort_key)


def _reach(asker: _Box, target: _Box, shared: list[str], facts: Facts) -> list[Expect]:
    """A connect to each port of ``target`` on each shared network's address."""
    out = []
    for ep in target.endpoints:
        if ep.network not in shared or not ep.ipv4:
            continue
        mine = next(e for e in asker.endpoints if e.network == ep.network)
        icc = ep.icc and mine.icc
        for proto, port in _ports(target, facts):
            out.append(Expect(proto, asker.name, target.name, ep.network, f"{ep.ipv4}:{port}",
                              "open" if icc else "blocked", asker.label, target.label, asker.ns, target.ns,
                              address=ep.ipv4, port=port, proto=proto, src_service=asker.service,
                              dst_service=target.service,
                              why="" if icc else f"enable_icc is off on {ep.network}"))
    return out


def _isolation(asker: _Box, target: _Box, facts: Facts) -> list[Expect]:
    """A connect to each of ``target``'s addresses, on one port it listens on: blocked."""
    ports = [p for p in _ports(target, facts) if p[0] == "tcp"]
    port = ports[0][1] if ports else NO_LISTENER_PORT
    why = (f"{asker.label} and {target.label} share no network ({asker.label}: {', '.join(asker.networks)}; "
           f"{target.label}: {', '.join(target.networks)})")
    return [Expect("tcp", asker.name, target.name, ep.network, f"{ep.ipv4}:{port}", "blocked", asker.label,
                   target.label, asker.ns, target.ns, address=ep.ipv4, port=port, src_service=asker.service,
                   dst_service=target.service, why=why)
            for ep in target.endpoints if ep.ipv4]


def _dns(asker: _Box, boxes: list[_Box], names: _Names) -> list[Expect]:
    """Each name of every other container: its addresses when in scope, else NXDOMAIN."""
    queries: dict[str, _Box] = {}  # name -> a container it names (the first seen)
    for target in boxes:
        if target is asker or not target.register:
            continue
        for ep in target.endpoints:
            for n in target.names(ep):
                queries.setdefault(n, target)
                queries.setdefault(f"{n}.{ep.network.lower()}", target)
    for alias, service in asker.links:  # its link aliases (DNS-only, for the linking container)
        linked = next((b for b in boxes if b.service == service and b is not asker), None)
        if linked is not None:
            queries.setdefault(alias.lower(), linked)
    by_name = {b.name: b for b in boxes}
    out = []
    for qname in sorted(queries):
        target = queries[qname]
        ans = names.answer(asker, qname)
        if ans is None:
            shared = [n for n in asker.networks if n in target.networks]
            net = next((n for n in target.networks if qname.endswith("." + n.lower())), None)
            why = (f"{qname} names {target.label} on {net}, which {asker.label} is not on" if shared and net
                   else scope_reason(asker.label, asker.networks, target.label, target.networks))
            out.append(Expect("dns", asker.name, target.name, None, qname, "NXDOMAIN", asker.label, target.label,
                              asker.ns, target.ns, name=qname, src_service=asker.service,
                              dst_service=target.service, why=why))
            continue
        holders = [by_name[h] for h in ans.holders if h in by_name]
        if holders == [asker]:
            continue  # only its own name
        others = [h for h in holders if h is not asker] or holders
        dst = others[0]
        label = dst.label if len(holders) == 1 else (
            dst.service if len({h.service for h in holders}) == 1 else ", ".join(sorted(h.label for h in holders)))
        for qtype, want in (("A", ans.v4), ("AAAA", ans.v6)):
            if want or qtype == "A":
                out.append(Expect("dns", asker.name, dst.name, ans.network, qname, ", ".join(want) or "no address",
                                  asker.label, label, asker.ns, dst.ns, name=qname, qtype=qtype, want=want,
                                  src_service=asker.service, dst_service=dst.service))
    return out


def _internal(asker: _Box, facts: Facts) -> list[Expect]:
    """A container only on internal networks: no egress, outside names refused."""
    why = f"{asker.label} is only on internal networks ({', '.join(asker.networks)})"
    out = [Expect("dns", asker.name, "outside", None, OUTSIDE_NAME, "REFUSED", asker.label, "outside", asker.ns,
                  name=OUTSIDE_NAME, src_service=asker.service, why=why)]
    if facts.upstreams:
        up = facts.upstreams[0]
        out.append(Expect("egress", asker.name, "outside", None, f"{up}:53", "blocked", asker.label, "outside",
                          asker.ns, address=up, port=53, src_service=asker.service, why=why))
    return out


def _published(desired: DesiredState, labels: dict[str, str], facts: Facts) -> list[Expect]:
    """Per published IPv4 port: open where the file publishes it, closed on the host's other
    addresses, and held by no other host process."""
    by_addr = {e["ipv4"]: c for c in desired.containers for e in c["endpoints"] if e.get("ipv4")}
    out = []
    for row in desired.exposure:
        if row.get("routed"):
            continue  # gateway mode routed: no host port (reached at the container's own address)
        host_ip, port, proto = row["host_ip"], row["host_port"], row["protocol"]
        if (host_ip != "*" and ":" in host_ip) or proto not in ("tcp", "udp"):
            continue  # IPv6 host addresses and SCTP are not probed
        replicas = [by_addr[t] for t in row["targets"] if t in by_addr]
        pairs = sorted({(by_addr[t]["ns"], t) for t in row["targets"] if t in by_addr})  # aligned: ns, address
        spaces = tuple(ns for ns, _t in pairs)
        dst = replicas[0]["name"] if len(replicas) == 1 else row["service"]
        common = {"src_label": "host", "dst_label": labels.get(dst, row["service"]), "dst_ns": spaces[0] if spaces else "",
                  "port": port, "proto": proto, "dst_port": row["target_port"], "dst_spaces": spaces,
                  "dst_addresses": tuple(t for _ns, t in pairs), "dst_service": row["service"]}
        where = f"{'every host address' if host_ip == '*' else host_ip}:{port}/{proto}"
        for addr, want in _publish_probes(host_ip, facts):
            warning = want == "open" and addr not in ("127.0.0.1", *facts.host_addresses) and not _loopback(addr)
            out.append(Expect("publish", "host", dst, row["network"], f"{addr}:{port}", want, address=addr,
                              why=f"published on {where}" + (f"; {addr} is not an address of this host"
                                                             if warning else ""), warning=warning, **common))
        out.append(Expect("hostport", "host", dst, row["network"], f"{host_ip}:{port}/{proto}", "free",
                          address=None if host_ip == "*" else host_ip, why=f"published on {where}", **common))
    return out


def _publish_probes(host_ip: str, facts: Facts) -> list[tuple[str, str]]:
    """(host address, open | closed) to probe for a port published on ``host_ip`` ("*": all)."""
    mine = facts.host_address
    if host_ip == "*":
        return [("127.0.0.1", "open")] + ([(mine, "open")] if mine else [])
    probes = [(host_ip, "open")]
    if not _loopback(host_ip):
        probes.append(("127.0.0.1", "closed"))
    if mine and mine != host_ip:
        probes.append((mine, "closed"))
    return probes


def _depends(project: Project, boxes: list[_Box]) -> list[Expect]:
    """A service that depends on one it shares no network with cannot ask it anything by name."""
    nets: dict[str, set[str]] = {}
    for b in boxes:
        nets.setdefault(b.service, set()).update(b.networks)
    out = []
    for svc in project.services:
        mode = svc.network_mode or ""
        if svc.name not in nets or mode:
            continue
        for dep in svc.depends_on:
            if dep not in nets or mode == f"service:{dep}" or nets[svc.name] & nets[dep]:
                continue
            why = scope_reason(svc.name, sorted(nets[svc.name]), dep, sorted(nets[dep]))
            out.append(Expect("scope", svc.name, dep, None, dep, "shared network", svc.name, dep,
                              src_service=svc.name, dst_service=dep, why=f"{svc.name} depends on {dep}; {dep} is {why}",
                              warning=True))
    return out


def _selected(e: Expect, sel: Selection, project: Project) -> bool:
    def matches(arg: str | None, container: str, service: str) -> bool:
        return arg is not None and arg in (container, service)

    def port_ok() -> bool:
        return sel.port is None or e.kind in ("dns", "scope") or sel.port in (e.port, e.dst_port)

    if sel.second is None:
        if matches(sel.first, e.src, e.src_service):
            return True
        return matches(sel.first, e.dst, e.dst_service) and port_ok()
    return matches(sel.first, e.src, e.src_service) and matches(sel.second, e.dst, e.dst_service) and port_ok()
