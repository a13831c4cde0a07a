"""DNS config -> :class:`Zone`: every asker's precomputed answer table (pure; no I/O).

Owns: Docker's name semantics (which names a container sees and what they answer), turned into
one :class:`~composenet.dns.answer.View` per asker (by source address, by listener for askers
the config does not name, by namespace for namespace listeners), and :func:`build_zone`, the
one entry point from a config dict to a :class:`Zone`. It must not open sockets, read clocks or
files, or keep state between calls: the daemon (``server.py``) does all I/O and swaps whole
:class:`Zone` objects on reload. Validation of the config is ``config.py``'s, the bytes of a
record ``wire.py``'s, the decision per query ``answer.py``'s.

Decisions (documented choices):

* TTL of local answers: the config's ``ttl`` (default 5 s). Docker uses 600 s, which keeps
  stale addresses of replaced containers in client caches for ten minutes; aardvark uses 0,
  which defeats client caches entirely. 5 s is short enough that ``up``/``scale`` changes show
  almost at once, long enough for a burst of lookups from one client to hit its cache.
* Flags of local answers: QR, RA, and RD copied from the query; AA off (Docker's QR,RD,RA).
* A name with records on several of the asker's networks answers from the first of the asker's
  networks (endpoint order) that has it, as Docker does (``web`` seen from web is its eth0 IP);
  per record type: AAAA from the first of them where the name has an IPv6 address (moby's
  resolver skips a network whose record lacks the type), so an IPv4-only first network does
  not hide the IPv6 address of a dual-stack one.
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
  source nothing at all (``access.py``: not an open resolver).
* A local answer too big for the asker's UDP payload size (512 or its EDNS size) is sent with
  TC=1 and no records, so the client retries over TCP (``wire.fit_udp``).
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import struct
from dataclasses import dataclass, field

from composenet.dns.answer import Entry, View
from composenet.dns.config import Container, Listener, NsListener, parse_config
from composenet.dns.wire import (
    QCLASS_IN,
    QTYPE_A,
    QTYPE_AAAA,
    QTYPE_ANY,
    QTYPE_PTR,
    RCODE_NOERROR,
    answer_header,
    answer_record,
    encode_name,
)

MAX_PERMUTED = 5  # up to 5 records: every order is precomputed (120 at most)
RANDOM_ORDERS = 120  # above: this many random orders

# name (wire form) -> (IPv4 addresses, IPv6 addresses), in answer order
Records = dict[bytes, tuple[list[str], list[str]]]

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


def build_zone(config: dict, source: str = "<config>") -> Zone:
    """Validate ``config`` and precompute every view. Raises :class:`ConfigError`."""
    top, listeners, containers = parse_config(config, source)
    warnings: list[str] = []
    b = _Builder(top["ttl"], containers, warnings)
    project, net_labels = b.project_names(listeners)
    default_up: tuple[str, ...] = top["upstreams"]

    def view_of(owner: Container, links: tuple[tuple[str, str], ...]) -> View:
        """The view of a container (``owner``) with ``links``: its networks, in endpoint order."""
        table, visible = b.table(tuple(dict.fromkeys(ep.network for ep in owner.endpoints)), links)
        return View(table=table, names=visible, project=project, networks=net_labels,
                    upstreams=owner.upstreams if owner.upstreams is not None else default_up,
                    refuse=bool(owner.endpoints) and all(ep.internal for ep in owner.endpoints))

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
        views[address] = view_of(owners[0], tuple(sorted({link for c in owners for link in c.links})))
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
        ns_owner = next((c for c in containers if c.name == nl.container and c.register), None)
        if ns_owner is None:
            warnings.append(f"namespace listener in {nl.netns}: no container {nl.container!r}; not listening")
            continue
        ns_views[nl.netns] = view_of(ns_owner, tuple(sorted(set(ns_owner.links))))
    return Zone(project=top["project"], ttl=top["ttl"], pidfile=top["pidfile"],
                forward_timeout=top["forward_timeout"], upstreams=default_up, listeners=tuple(listeners),
                containers=tuple(containers), views=views, listener_views=listener_views, warnings=warnings,
                ns_listeners=tuple(nl for nl in ns_listeners if nl.netns in ns_views), ns_views=ns_views)


# -- table building ----------------------------------------------------------------------------


def _reverse(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


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


def _entry(rcode: int, records: list[bytes]) -> Entry:
    return (answer_header(rcode, len(records), False), answer_header(rcode, len(records), True), _orders(records))


class _Builder:
    """The tables of one config: names encoded once, a table per distinct (networks, links)."""

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
        """(every name of the project, the project's network names usable as a last label)."""
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
        """The answer table of an asker on ``networks`` (in its endpoint order) with ``links``,
        and the names visible to it.

        Askers with the same networks and links share one table (memoised)."""
        key = (networks, links)
        if key not in self._tables:
            plain, qualified, ptr = self._names_on(networks)
            plain.update(self._links(networks, links))
            table = self._encode(plain, qualified, ptr)
            self._tables[key] = table, frozenset(plain) | frozenset(qualified) | frozenset(ptr)
        return self._tables[key]

    def _names_on(self, networks: tuple[str, ...]) -> tuple[Records, Records, dict[bytes, bytes]]:
        """(plain names, ``<name>.<network>`` names, reverse name -> ``<container>.<network>``)
        of the registered endpoints on ``networks``; a plain name answers from the first of
        ``networks`` that has it."""
        plain: Records = {}
        qualified: Records = {}
        ptr: dict[bytes, bytes] = {}
        for net in networks:
            on_net: Records = {}
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
            for wire, (v4, v6) in on_net.items():
                have = plain.setdefault(wire, ([], []))
                # Per family, the first of the asker's networks with an address of that family
                # (moby's resolver walks them in order and skips a network whose record lacks
                # the asked type): an IPv4-only first network does not hide the AAAA of a
                # dual-stack one behind it.
                if not have[0] and v4:
                    have[0].extend(v4)
                if not have[1] and v6:
                    have[1].extend(v6)
        return plain, qualified, ptr

    def _links(self, networks: tuple[str, ...], links: tuple[tuple[str, str], ...]) -> Records:
        """Link aliases: each the addresses of the target service's containers on the first of
        ``networks`` they share (a link alias wins over a plain name it shadows)."""
        out: Records = {}
        for alias, service in links:
            alias_wire = self.wire(alias)
            if alias_wire is None:
                continue
            link_v4: list[str] = []
            link_v6: list[str] = []
            for c in self.registered:
                if c.service != service:
                    continue
                # Per family, the target's address on the first network it shares that has one.
                eps = [e for net in networks for e in c.endpoints if e.network == net]
                a4 = next((e.ipv4 for e in eps if e.ipv4), None)
                a6 = next((e.ipv6 for e in eps if e.ipv6), None)
                if a4:
                    link_v4.append(a4)
                if a6:
                    link_v6.append(a6)
            if link_v4 or link_v6:
                out[alias_wire] = (link_v4, link_v6)
        return out

    def _encode(self, plain: Records, qualified: Records, ptr: dict[bytes, bytes]) -> dict[bytes, Entry]:
        """Every answer as wire bytes, keyed by question (name + qtype + qclass)."""
        table: dict[bytes, Entry] = {}
        ttl = self.ttl
        empty = _entry(RCODE_NOERROR, [])
        for records in (plain, qualified):
            for wire, (addrs4, addrs6) in records.items():
                rrs4 = [answer_record(QTYPE_A, ttl, ipaddress.IPv4Address(x).packed) for x in addrs4]
                rrs6 = [answer_record(QTYPE_AAAA, ttl, ipaddress.IPv6Address(x).packed) for x in addrs6]
                table[wire + struct.pack("!HH", QTYPE_A, QCLASS_IN)] = (
                    _entry(RCODE_NOERROR, rrs4) if rrs4 else empty)
                table[wire + struct.pack("!HH", QTYPE_AAAA, QCLASS_IN)] = (
                    _entry(RCODE_NOERROR, rrs6) if rrs6 else empty)
                table[wire + struct.pack("!HH", QTYPE_ANY, QCLASS_IN)] = _entry(RCODE_NOERROR, rrs4 + rrs6)
        for rev, ptr_target in ptr.items():
            table[rev + struct.pack("!HH", QTYPE_PTR, QCLASS_IN)] = _entry(
                RCODE_NOERROR, [answer_record(QTYPE_PTR, ttl, ptr_target)])
        return table
