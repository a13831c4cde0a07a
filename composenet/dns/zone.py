"""DNS config -> precomputed answer tables, and the per-query decision (pure; no I/O).

Owns: validating the resolver's JSON config (the contract in ``composenet/dns/__init__.py``),
Docker's name semantics (which names a container sees and what they answer), the wire encoding
of every local answer, and :func:`respond`, which turns one query packet into a response packet,
a "forward this" decision or nothing. It must not open sockets, read clocks or files, or keep
state between calls: the daemon (``server.py``) does all I/O and swaps whole :class:`Zone`
objects on reload.

Why precompute: the hot path must not build dnslib objects per query. Every answer a view can
give is stored as wire bytes keyed by the lower-cased question section (qname + qtype + qclass),
so a local answer costs one hand-parsed qname walk, one ``bytes.lower()``, one dict lookup and
one concatenation (query ID + precomputed flags/counts + the asker's own question bytes + the
precomputed records); a plain lower-case query (one question and nothing else, what stub
resolvers send) skips the walk and the ``lower()``: its question bytes are the key as they are.
Answer names are compression pointers to the question (``0xC00C``), so the records do not
depend on the case the asker used.

Decisions (documented choices):

* TTL of local answers: the config's ``ttl`` (default 5 s). Docker uses 600 s, which keeps
  stale addresses of replaced containers in client caches for ten minutes; aardvark uses 0,
  which defeats client caches entirely. 5 s is short enough that ``up``/``scale`` changes show
  almost at once, long enough for a burst of lookups from one client to hit its cache.
* Flags of local answers: QR, RA, and RD copied from the query; AA off (Docker's QR,RD,RA).
* A name with records on several of the asker's networks answers from the first of the asker's
  networks (endpoint order) that has it, as Docker does (``web`` seen from web is its eth0 IP).
* Several records (scaled service, shared alias): all of them, in an order picked at random per
  query among precomputed permutations (all of them for up to 5 records, 120 random ones above).
* Known name, other type (AAAA on IPv4-only, MX, TXT, ...): NOERROR with no answers. ``ANY``
  returns the A and AAAA records.
* Project names the asker cannot see -- any name of any container (registered or not), any
  link alias, any ``<name>.<network>`` for a network of the project, the network names
  themselves, and the reverse names of every project address -- are NXDOMAIN at once, never
  forwarded (Docker forwards them, leaking the project's names upstream).
* Other names: forwarded, except from a container whose endpoints are all internal (REFUSED at
  once; Docker stays silent for 5 s). A query from an unknown source address (the host itself,
  or an address of the listener's network not in the config yet) is answered as if from a
  member of the listener's network, with the top-level upstreams; the daemon gives any other
  source nothing at all (``server.py``: not an open resolver).
* Malformed queries: shorter than a header or with QR=1 (a response): dropped silently, so
  two resolvers can never loop; opcode other than QUERY: NOTIMP; no or several questions, a
  broken qname: FORMERR. A local answer too big for the asker's UDP payload size (512 or its
  EDNS size) is sent with TC=1 and no records, so the client retries over TCP.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composenet.errors import ComposenetError

DEFAULT_TTL = 5
DEFAULT_PORT = 53
NETNS_ADDRESS = "127.0.0.11"  # a namespace listener's address inside the container (Docker's)
DEFAULT_FORWARD_TIMEOUT = 2.0

QTYPE_A = 1
QTYPE_PTR = 12
QTYPE_AAAA = 28
QTYPE_OPT = 41
QTYPE_ANY = 255
QCLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

MAX_PERMUTED = 5  # up to 5 records: every order is precomputed (120 at most)
RANDOM_ORDERS = 120  # above: this many random orders

_rand = random.random
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # header bytes 4..12: QD=1, AN=NS=AR=0


class ConfigError(ComposenetError):
    """The resolver config is unusable; the message names the file and the key."""

    kind = "dns-config"


# -- wire helpers ------------------------------------------------------------------------------


def encode_name(name: str) -> bytes:
    """``"Web.Split_Frontend."`` -> ``b"\\x03web\\x0fsplit_frontend\\x00"`` (lower-cased).

    Raises ValueError for names that cannot be a DNS name (empty label, label > 63 bytes,
    name > 255 bytes, non-ASCII).
    """
    text = name.rstrip(".").lower()
    if not text:
        raise ValueError("empty name")
    out = bytearray()
    for label in text.split("."):
        raw = label.encode("ascii")
        if not raw or len(raw) > 63:
            raise ValueError(f"bad label {label!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError("name longer than 255 bytes")
    return bytes(out)


def decode_name(wire: bytes) -> str:
    """Inverse of :func:`encode_name` for an uncompressed name (used for logs and tests)."""
    labels = []
    i = 0
    while wire[i]:
        n = wire[i]
        labels.append(wire[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += n + 1
    return ".".join(labels) + "."


def _header(rcode: int, ancount: int, rd: bool) -> bytes:
    """Flags and counts (bytes 2..12 of the header): QR, RA, RD as asked, AA off."""
    flags = 0x8080 | (0x0100 if rd else 0) | rcode
    return struct.pack("!HHHHH", flags, 1, ancount, 0, 0)


def _rr(qtype: int, ttl: int, rdata: bytes) -> bytes:
    """One answer record whose owner is a pointer to the question name at offset 12."""
    return b"\xc0\x0c" + struct.pack("!HHIH", qtype, QCLASS_IN, ttl, len(rdata)) + rdata


def _orders(records: list[bytes]) -> tuple[bytes, ...]:
    """The precomputed answer sections a query picks from at random (see module doc)."""
    if len(records) <= 1:
        return (b"".join(records),)
    if len(records) <= MAX_PERMUTED:
        return tuple(b"".join(p) for p in itertools.permutations(records))
    rng = random.Random(len(records))
    orders = {b"".join(records)}
    work = list(records)
    for _ in range(RANDOM_ORDERS * 4):
        if len(orders) >= RANDOM_ORDERS:
            break
        rng.shuffle(work)
        orders.add(b"".join(work))
    return tuple(sorted(orders))


# An entry of a view table: (flags+counts without RD, flags+counts with RD, answer orders).
Entry = tuple[bytes, bytes, tuple[bytes, ...]]


def _entry(rcode: int, records: list[bytes]) -> Entry:
    return (_header(rcode, len(records), False), _header(rcode, len(records), True), _orders(records))


# -- the model the config describes ------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    network: str
    address: str
    port: int
    internal: bool

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class NsListener:
    """A listener inside one container's network namespace (/run/netns/<netns>), for containers
    on a macvlan network, which cannot reach the bridge gateways: every query arriving on it is
    from that container (``container``), whatever its source address."""

    netns: str
    container: str
    network: str  # for logs
    address: str
    port: int


@dataclass(frozen=True)
class Endpoint:
    network: str
    ipv4: str | None
    ipv6: str | None
    aliases: tuple[str, ...]
    internal: bool


@dataclass(frozen=True)
class Container:
    name: str
    service: str
    hostname: str | None
    register: bool
    upstreams: tuple[str, ...] | None
    links: tuple[tuple[str, str], ...]
    endpoints: tuple[Endpoint, ...]

    def names(self, endpoint: Endpoint) -> list[str]:
        """The DNS names of this container on one of its endpoints (Docker's Aliases)."""
        out = [self.service, self.name]
        if self.hostname:
            out.append(self.hostname)
        out += endpoint.aliases
        return out


@dataclass
class View:
    """What one asker sees. ``table`` holds every local answer by lower-cased question bytes;
    ``names`` the visible names (NOERROR-empty for types not in the table); ``project`` every
    name of the project (NXDOMAIN when not visible); ``networks`` the project's network names
    as last labels (``x.<network>`` is a project name)."""

    table: dict[bytes, Entry]
    names: frozenset[bytes]
    project: frozenset[bytes]
    networks: frozenset[bytes]
    upstreams: tuple[str, ...]
    refuse: bool  # every endpoint internal: never forward


@dataclass
class Zone:
    project: str
    ttl: int
    pidfile: str
    forward_timeout: float
    upstreams: tuple[str, ...]
    listeners: tuple[Listener, ...]
    containers: tuple[Container, ...]
    views: dict[str, View]  # by source address (compressed text form)
    listener_views: dict[str, View]  # by listener address: askers we do not know
    warnings: list[str] = field(default_factory=list)
    ns_listeners: tuple[NsListener, ...] = ()
    ns_views: dict[str, View] = field(default_factory=dict)  # by namespace name: its container's

    def view_for(self, source: str, listener_address: str) -> View:
        view = self.views.get(source)
        if view is None:
            view = self.listener_views[listener_address]
        return view


# -- config parsing ----------------------------------------------------------------------------


class _Reader:
    """Typed access to the JSON config; every error names ``file: key.path``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {message}",
                           hint="the planner writes this file; re-run `composenet up` to rewrite it")

    def get(self, obj: dict, key: str, path: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in obj or obj[key] is None:
            if default is ...:
                raise self.fail(f"{path}{key}", "missing")
            return default
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            raise self.fail(f"{path}{key}", f"expected {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def ip(self, value: Any, path: str, version: int | None = None) -> str:
        try:
            addr = ipaddress.ip_address(value)
        except (ValueError, TypeError):
            raise self.fail(path, f"{value!r} is not an IP address") from None
        if version is not None and addr.version != version:
            raise self.fail(path, f"{value!r} is not an IPv{version} address")
        return addr.compressed

    def upstream(self, value: Any, path: str) -> str:
        try:
            parse_upstream(value)
        except (ValueError, TypeError):
            raise self.fail(path, f"{value!r} is not an upstream server (IP, IP:PORT or [IPv6]:PORT)") from None
        return str(value)

    def name(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a name, got {value!r}")
        return value


def parse_upstream(text: str) -> tuple[str, int]:
    """``"198.51.100.53"``, ``"198.51.100.53:5353"``, ``"2001:db8::1"``, ``"[2001:db8::1]:53"``."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
        if rest and not rest.startswith(":"):
            raise ValueError(text)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    else:
        host, port = text, DEFAULT_PORT
    addr = ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(text)
    return addr.compressed, port


def load_config(path: str | Path) -> dict:
    """Read the JSON config; errors name the file (and the line for JSON syntax errors)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the DNS config: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return data


def _parse_namespaces(r: _Reader, config: dict) -> list[NsListener]:
    out = []
    seen: set[str] = set()
    for i, obj in enumerate(r.get(config, "namespaces", "", list, [])):
        p = f"namespaces[{i}]."
        if not isinstance(obj, dict):
            raise r.fail(p[:-1], "expected an object")
        lst = NsListener(netns=r.get(obj, "netns", p, str), container=r.get(obj, "container", p, str),
                         network=r.get(obj, "network", p, str, ""),
                         address=r.ip(r.get(obj, "address", p, str, NETNS_ADDRESS), p + "address"),
                         port=r.get(obj, "port", p, int, DEFAULT_PORT))
        if not lst.netns or "/" in lst.netns or lst.netns in (".", ".."):
            raise r.fail(p + "netns", f"{lst.netns!r} is not a namespace name")
        if not 0 < lst.port < 65536:
            raise r.fail(p + "port", f"{lst.port} is not a port")
        if lst.netns in seen:
            raise r.fail(p + "netns", f"{lst.netns} is listed twice")
        seen.add(lst.netns)
        out.append(lst)
    return out


def _parse(config: dict, source: str) -> tuple[dict[str, Any], list[Listener], list[Container]]:
    r = _Reader(source)
    top: dict[str, Any] = {
        "project": r.get(config, "project", "", str),
        "ttl": r.get(config, "ttl", "", int, DEFAULT_TTL),
        "pidfile": r.get(config, "pidfile", "", str),
        "forward_timeout": float(r.get(config, "forward_timeout", "", (int, float), DEFAULT_FORWARD_TIMEOUT)),
    }
    if not 0 <= top["ttl"] <= 2**31 - 1:
        raise r.fail("ttl", f"{top['ttl']} is out of range")
    if not 0.05 <= top["forward_timeout"] <= 60:
        raise r.fail("forward_timeout", "must be between 0.05 and 60 seconds")
    top["upstreams"] = tuple(r.upstream(u, f"upstreams[{i}]")
                             for i, u in enumerate(r.get(config, "upstreams", "", list, [])))
    listeners = []
    seen: set[tuple[str, int]] = set()
    for i, obj in enumerate(r.get(config, "listeners", "", list)):
        p = f"listeners[{i}]."
        if not isinstance(obj, dict):
            raise r.fail(p[:-1], "expected an object")
        lst = Listener(network=r.get(obj, "network", p, str),
                       address=r.ip(r.get(obj, "address", p, str), p + "address"),
                       port=r.get(obj, "port", p, int, DEFAULT_PORT),
                       internal=r.get(obj, "internal", p, bool, False))
        if not 0 < lst.port < 65536:
            raise r.fail(p + "port", f"{lst.port} is not a port")
        if (lst.address, lst.port) in seen:
            raise r.fail(p + "address", f"{lst.address}:{lst.port} is listed twice")
        seen.add((lst.address, lst.port))
        listeners.append(lst)
    containers = []
    for i, obj in enumerate(r.get(config, "containers", "", list, [])):
        p = f"containers[{i}]."
        if not isinstance(obj, dict):
            raise r.fail(p[:-1], "expected an object")
        endpoints = []
        for j, ep in enumerate(r.get(obj, "endpoints", p, list, [])):
            q = f"{p}endpoints[{j}]."
            if not isinstance(ep, dict):
                raise r.fail(q[:-1], "expected an object")
            v4 = r.get(ep, "ipv4", q, str, None)
            v6 = r.get(ep, "ipv6", q, str, None)
            endpoints.append(Endpoint(
                network=r.get(ep, "network", q, str),
                ipv4=r.ip(v4, q + "ipv4", 4) if v4 is not None else None,
                ipv6=r.ip(v6, q + "ipv6", 6) if v6 is not None else None,
                aliases=tuple(r.name(a, f"{q}aliases[{k}]") for k, a in enumerate(r.get(ep, "aliases", q, list, []))),
                internal=r.get(ep, "internal", q, bool, False)))
        links = []
        for k, link in enumerate(r.get(obj, "links", p, list, [])):
            if not (isinstance(link, list) and len(link) == 2 and all(isinstance(x, str) for x in link)):
                raise r.fail(f"{p}links[{k}]", f"expected [alias, service], got {link!r}")
            links.append((link[0], link[1]))
        ups = r.get(obj, "upstreams", p, list, None)
        containers.append(Container(
            name=r.get(obj, "name", p, str),
            service=r.get(obj, "service", p, str),
            hostname=r.get(obj, "hostname", p, str, None) or None,
            register=r.get(obj, "register", p, bool, True),
            upstreams=None if ups is None else tuple(r.upstream(u, f"{p}upstreams[{k}]") for k, u in enumerate(ups)),
            links=tuple(links),
            endpoints=tuple(endpoints)))
    top["namespaces"] = _parse_namespaces(r, config)
    return top, listeners, containers


# -- table building ----------------------------------------------------------------------------


def _reverse(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


class _Builder:
    def __init__(self, ttl: int, containers: list[Container], warnings: list[str]):
        self.ttl = ttl
        self.containers = containers
        self.warnings = warnings
        self.registered = [c for c in containers if c.register]
        self._wire_cache: dict[str, bytes | None] = {}
        self._tables: dict[tuple, tuple[dict[bytes, Entry], frozenset[bytes]]] = {}

    def wire(self, name: str) -> bytes | None:
        """Wire form of a name, or None (with one warning) if it cannot be a DNS name."""
        if name not in self._wire_cache:
            try:
                self._wire_cache[name] = encode_name(name)
            except (ValueError, UnicodeError) as e:
                self.warnings.append(f"name {name!r} is not usable in DNS ({e}); it is not resolvable")
                self._wire_cache[name] = None
        return self._wire_cache[name]

    def project_names(self, listeners: list[Listener]) -> tuple[frozenset[bytes], frozenset[bytes]]:
        names: set[bytes] = set()
        networks = {lst.network for lst in listeners}
        for c in self.containers:
            for ep in c.endpoints:
                networks.add(ep.network)
                for n in c.names(ep):
                    names.update(w for w in (self.wire(n), self.wire(f"{n}.{ep.network}")) if w)
                for a in (ep.ipv4, ep.ipv6):
                    if a:
                        w = self.wire(_reverse(a))
                        if w:
                            names.add(w)
            for alias, _target in c.links:
                w = self.wire(alias)
                if w:
                    names.add(w)
        net_labels = set()
        for net in networks:
            w = self.wire(net)
            if w:
                names.add(w)
                if w.count(0) == 1 and len(w) - 2 == w[0]:  # a single label: usable as a suffix
                    net_labels.add(w[1:-1])
        return frozenset(names), frozenset(net_labels)

    def table(self, networks: tuple[str, ...], links: tuple[tuple[str, str], ...]
              ) -> tuple[dict[bytes, Entry], frozenset[bytes]]:
        """The answer table of an asker on ``networks`` (in its endpoint order) with ``links``.

        Askers with the same networks and links share one table (memoised)."""
        key = (networks, links)
        if key not in self._tables:
            self._tables[key] = self._build_table(networks, links)
        return self._tables[key]

    def _build_table(self, networks: tuple[str, ...], links: tuple[tuple[str, str], ...]
                     ) -> tuple[dict[bytes, Entry], frozenset[bytes]]:
        # name -> (v4 list, v6 list), from the first of the asker's networks that has the name
        plain: dict[bytes, tuple[list[str], list[str]]] = {}
        qualified: dict[bytes, tuple[list[str], list[str]]] = {}
        ptr: dict[bytes, bytes] = {}
        for net in networks:
            on_net: dict[bytes, tuple[list[str], list[str]]] = {}
            for c in self.registered:
                for ep in c.endpoints:
                    if ep.network != net:
                        continue
                    for n in c.names(ep):
                        for wire, target in ((self.wire(n), on_net), (self.wire(f"{n}.{net}"), qualified)):
                            if wire is None:
                                continue
                            v4, v6 = target.setdefault(wire, ([], []))
                            if ep.ipv4 and ep.ipv4 not in v4:
                                v4.append(ep.ipv4)
                            if ep.ipv6 and ep.ipv6 not in v6:
                                v6.append(ep.ipv6)
                    target_name = self.wire(f"{c.name}.{net}")
                    for a in (ep.ipv4, ep.ipv6):
                        rev = self.wire(_reverse(a)) if a else None
                        if rev and target_name and rev not in ptr:
                            ptr[rev] = target_name
            for wire, addrs in on_net.items():
                plain.setdefault(wire, addrs)
        for alias, service in links:
            alias_wire = self.wire(alias)
            if alias_wire is None:
                continue
            link_v4: list[str] = []
            link_v6: list[str] = []
            for c in self.registered:
                if c.service != service:
                    continue
                for net in networks:  # the target's address on the first network it shares
                    shared = next((e for e in c.endpoints if e.network == net), None)
                    if shared is not None:
                        if shared.ipv4:
                            link_v4.append(shared.ipv4)
                        if shared.ipv6:
                            link_v6.append(shared.ipv6)
                        break
            if link_v4 or link_v6:
                plain[alias_wire] = (link_v4, link_v6)
        table: dict[bytes, Entry] = {}
        ttl = self.ttl
        empty = _entry(RCODE_NOERROR, [])
        for records in (plain, qualified):
            for wire, (addrs4, addrs6) in records.items():
                rrs4 = [_rr(QTYPE_A, ttl, ipaddress.IPv4Address(x).packed) for x in addrs4]
                rrs6 = [_rr(QTYPE_AAAA, ttl, ipaddress.IPv6Address(x).packed) for x in addrs6]
                table[wire + struct.pack("!HH", QTYPE_A, QCLASS_IN)] = (
                    _entry(RCODE_NOERROR, rrs4) if rrs4 else empty)
                table[wire + struct.pack("!HH", QTYPE_AAAA, QCLASS_IN)] = (
                    _entry(RCODE_NOERROR, rrs6) if rrs6 else empty)
                table[wire + struct.pack("!HH", QTYPE_ANY, QCLASS_IN)] = _entry(RCODE_NOERROR, rrs4 + rrs6)
        for rev, ptr_target in ptr.items():
            table[rev + struct.pack("!HH", QTYPE_PTR, QCLASS_IN)] = _entry(
                RCODE_NOERROR, [_rr(QTYPE_PTR, ttl, ptr_target)])
        visible = frozenset(plain) | frozenset(qualified) | frozenset(ptr)
        return table, visible


def build_zone(config: dict, source: str = "<config>") -> Zone:
    """Validate ``config`` and precompute every view. Raises :class:`ConfigError`."""
    top, listeners, containers = _parse(config, source)
    warnings: list[str] = []
    b = _Builder(top["ttl"], containers, warnings)
    project, net_labels = b.project_names(listeners)
    default_up: tuple[str, ...] = top["upstreams"]

    views: dict[str, View] = {}
    # Containers sharing a namespace (network_mode service:X) share addresses: the registered
    # one defines the networks; links of all of them apply, since their traffic is identical.
    by_address: dict[str, list[Container]] = {}
    for c in containers:
        for ep in c.endpoints:
            for a in (ep.ipv4, ep.ipv6):
                if a:
                    by_address.setdefault(a, [])
                    if c not in by_address[a]:
                        by_address[a].append(c)
    for address, owners in by_address.items():
        owners = sorted(owners, key=lambda c: not c.register)
        main = owners[0]
        networks = tuple(dict.fromkeys(ep.network for ep in main.endpoints))
        links = tuple(sorted({link for c in owners for link in c.links}))
        table, visible = b.table(networks, links)
        views[address] = View(
            table=table, names=visible, project=project, networks=net_labels,
            upstreams=main.upstreams if main.upstreams is not None else default_up,
            refuse=bool(main.endpoints) and all(ep.internal for ep in main.endpoints))
    listener_views: dict[str, View] = {}
    for lst in listeners:
        if lst.address in listener_views:
            continue  # same address, another port: same network
        table, visible = b.table((lst.network,), ())
        listener_views[lst.address] = View(table=table, names=visible, project=project,
                                           networks=net_labels, upstreams=default_up, refuse=lst.internal)
    # Namespace listeners: the asker is the container whose namespace the listener is in.
    ns_listeners: list[NsListener] = top["namespaces"]
    ns_views: dict[str, View] = {}
    for nl in ns_listeners:
        owner = next((c for c in containers if c.name == nl.container and c.register), None)
        if owner is None:
            warnings.append(f"namespace listener in {nl.netns}: no container {nl.container!r}; not listening")
            continue
        networks = tuple(dict.fromkeys(ep.network for ep in owner.endpoints))
        links = tuple(sorted(set(owner.links)))
        table, visible = b.table(networks, links)
        ns_views[nl.netns] = View(
            table=table, names=visible, project=project, networks=net_labels,
            upstreams=owner.upstreams if owner.upstreams is not None else default_up,
            refuse=bool(owner.endpoints) and all(ep.internal for ep in owner.endpoints))
    return Zone(project=top["project"], ttl=top["ttl"], pidfile=top["pidfile"],
                forward_timeout=top["forward_timeout"], upstreams=default_up, listeners=tuple(listeners),
                containers=tuple(containers), views=views, listener_views=listener_views, warnings=warnings,
                ns_listeners=tuple(nl for nl in ns_listeners if nl.netns in ns_views), ns_views=ns_views)


# -- per-query decision ------------------------------------------------------------------------


def _reply(data: bytes, rcode: int, question: bytes | None) -> bytes:
    """A header-only (or header + question) reply with ``rcode``; flags as for local answers."""
    flags = 0x8080 | (data[2] & 0x79) << 8 | rcode  # keep opcode and RD
    if question is None:
        return data[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)
    return data[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + question


def question_end(data: bytes) -> int:
    """Offset just past the single question of a well-formed query, or -1.

    Requires QR=0, opcode QUERY, exactly one question, an uncompressed qname of at most 255
    bytes with labels of at most 63 bytes, and the 4 bytes of qtype and qclass."""
    n = len(data)
    if n < 17 or data[2] & 0xF8 or data[4] or data[5] != 1:
        return -1
    i = 12
    while i < n:
        length = data[i]
        if length == 0:
            end = i + 5
            return end if end <= n and i - 12 < 255 else -1
        if length > 63:
            return -1
        i += length + 1
    return -1


def respond(view: View, data: bytes) -> bytes | int | None:
    """The daemon's decision for one query packet.

    Returns the response packet (bytes); or an int, the offset just past the question, meaning
    "forward this query upstream"; or None, meaning "drop it" (not a query at all)."""
    # Fastest path, no walk: a plain query (one question, nothing else; what stub resolvers
    # send) whose question, exactly as sent, is a table key. Same answer as the path below:
    # a key is a well-formed question (so ``end`` is the packet's end) and lower-case (names
    # are encoded lower-cased; no table qtype or qclass byte is an upper-case ASCII letter).
    if data[4:12] == _PLAIN_COUNTS and not data[2] & 0xF8:
        entry = view.table.get(data[12:])
        if entry is not None:
            orders = entry[2]
            if len(orders) == 1:
                return data[:2] + entry[data[2] & 1] + data[12:] + orders[0]  # type: ignore[operator]
            return data[:2] + entry[data[2] & 1] + data[12:] + orders[int(_rand() * len(orders))]  # type: ignore[operator]
    # Fast path, inlined question walk: one question, QR=0, opcode 0.
    n = len(data)
    if n >= 17 and not data[2] & 0xF8 and not data[4] and data[5] == 1:
        i = 12
        while i < n:
            length = data[i]
            if length == 0 or length > 63:
                break
            i += length + 1
        else:
            return _malformed(data)
        end = i + 5
        if length or end > n or i - 12 >= 255:
            return _malformed(data)
        key = data[12:end].lower()  # label lengths are < 64, so lower() only touches letters
        entry = view.table.get(key)
        if entry is not None:
            orders = entry[2]
            if len(orders) == 1:
                return data[:2] + entry[data[2] & 1] + data[12:end] + orders[0]  # type: ignore[operator]
            return data[:2] + entry[data[2] & 1] + data[12:end] + orders[int(_rand() * len(orders))]  # type: ignore[operator]
        return _slow(view, data, end, key[:-4])
    return _malformed(data)


def _slow(view: View, data: bytes, end: int, name: bytes) -> bytes | int:
    question = data[12:end]
    if name in view.names:
        return _reply(data, RCODE_NOERROR, question)
    if name in view.project:
        return _reply(data, RCODE_NXDOMAIN, question)
    last = _last_label(name)
    if last is not None and last in view.networks:
        return _reply(data, RCODE_NXDOMAIN, question)
    if view.refuse:
        return _reply(data, RCODE_REFUSED, question)
    return end


def _last_label(name: bytes) -> bytes | None:
    i = 0
    last = None
    while name[i]:
        last = name[i + 1 : i + 1 + name[i]]
        i += name[i] + 1
    return last


def _malformed(data: bytes) -> bytes | None:
    if len(data) < 12 or data[2] & 0x80:
        return None  # not even a header, or a response: never answer (no loops, no reflection)
    if data[2] & 0x78:
        return _reply(data, RCODE_NOTIMP, None)
    return _reply(data, RCODE_FORMERR, None)


# -- helpers shared with the daemon ------------------------------------------------------------


def edns_payload(data: bytes, end: int) -> tuple[int, int] | None:
    """(UDP payload size, DO bit) of the query's OPT record, or None without EDNS.

    ``end`` is the offset past the question. Walks the answer, authority and additional
    sections without dnslib; returns None on anything malformed."""
    try:
        counts = struct.unpack_from("!HHH", data, 6)
        i = end
        for section, count in enumerate(counts):
            for _ in range(count):
                i = skip_name(data, i)
                rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, i)
                if section == 2 and rtype == QTYPE_OPT:
                    return max(512, rclass), (ttl >> 15) & 1
                i += 10 + rdlen
    except (struct.error, IndexError):
        return None
    return None


def skip_name(data: bytes, i: int) -> int:
    """Offset past a (possibly compressed) name starting at ``i``; IndexError if truncated."""
    for _ in range(128):
        length = data[i]
        if length == 0:
            return i + 1
        if length & 0xC0 == 0xC0:
            data[i + 1]  # noqa: B018 -- bounds check
            return i + 2
        if length > 63:
            raise IndexError("bad label")
        i += length + 1
    raise IndexError("name too long")


def fit_udp(query: bytes, end: int, response: bytes) -> bytes:
    """``response`` if it fits the asker's UDP payload size, else a TC=1 reply with no records."""
    limit = 512
    if len(response) > limit:
        edns = edns_payload(query, end)
        if edns is not None:
            limit = edns[0]
    if len(response) <= limit:
        return response
    flags = struct.unpack_from("!H", response, 2)[0] | 0x0200
    return response[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + query[12:end]
