"""The cluster as one host sees it (pure): a copy of the store's keys, the records they hold, and
what they mean for this host's data plane and names.

Owns: :class:`Mirror` (the agent's copy, replaced by a listing and moved on by events),
:class:`ClusterView` (the records, parsed and grouped; bad ones set aside with the reason), and
the decisions derived from them: :func:`device_want` (the FDB and neighbour entries of a
network's VXLAN device) and :func:`name_records` (the remote endpoints as the resolver's
container records).

Decisions (documented choices):

* Remote endpoints are the endpoints of other nodes; this host's own are local (on its bridge).
* Per remote endpoint: a unicast FDB entry MAC -> its VTEP on the VXLAN device (``self``), a
  ``static`` entry for the MAC on the bridge (so the bridge forwards to the VXLAN port instead
  of flooding unknown unicast to the local ports), and a permanent neighbour entry IP -> MAC on
  the VXLAN device (its ``proxy`` flag answers ARP locally). Per remote member: a flood entry
  (all-zero MAC -> its VTEP), so broadcast and multicast reach the known VTEPs only.
* Two remote endpoints claiming one address or one MAC (a conflict the store's leases prevent,
  unless records were written by hand): the first by (node, container) wins; the other is
  reported in ``problems``.

Must not: do I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from composenet.cluster.client import KV
from composenet.cluster.keys import parse_key
from composenet.cluster.records import (
    AddressLease,
    EndpointRecord,
    MemberRecord,
    NetworkRecord,
    NodeRecord,
    RecordError,
    decode,
)
from composenet.cluster.watch import Event

FLOOD_MAC = "00:00:00:00:00:00"


@dataclass
class ClusterView:
    """The records of the store, grouped. ``leases``: the lease of each key that has one."""

    revision: int = 0
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    networks: dict[str, NetworkRecord] = field(default_factory=dict)
    members: dict[str, dict[str, MemberRecord]] = field(default_factory=dict)
    addresses: dict[str, dict[str, AddressLease]] = field(default_factory=dict)
    endpoints: dict[str, list[EndpointRecord]] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, revision: int, items: Iterable[tuple[str, bytes, int]]) -> ClusterView:
        """The view of (key, value, lease) items (keys that are not composenet's are ignored)."""
        view = cls(revision)
        for key, value, lease in sorted(items):
            k = parse_key(key)
            if k is None:
                continue
            if lease:
                view.leases[key] = lease
            try:
                if k.kind == "node":
                    rec = decode(NodeRecord, key, value)
                    view._check(key, rec.node, k.node)
                    view.nodes[k.node] = rec
                elif k.kind == "network":
                    net = decode(NetworkRecord, key, value)
                    view._check(key, net.name, k.network)
                    view.networks[k.network] = net
                elif k.kind == "member":
                    m = decode(MemberRecord, key, value)
                    view._check(key, m.node, k.node)
                    view.members.setdefault(k.network, {})[k.node] = m
                elif k.kind == "address":
                    view.addresses.setdefault(k.network, {})[k.name] = decode(AddressLease, key, value)
                elif k.kind == "endpoint":
                    ep = decode(EndpointRecord, key, value)
                    view._check(key, (ep.network, ep.node, ep.container), (k.network, k.node, k.name))
                    view.endpoints.setdefault(k.network, []).append(ep)
            except RecordError as e:
                view.problems.append(str(e))
        return view

    @staticmethod
    def _check(key: str, stored: object, named: object) -> None:
        if stored != named:
            raise RecordError(f"{key}: the record names {stored!r}, the key {named!r}")

    @classmethod
    def of_kvs(cls, revision: int, kvs: Iterable[KV]) -> ClusterView:
        return cls.of(revision, ((kv.key, kv.value, kv.lease) for kv in kvs))

    def remote_endpoints(self, network: str, me: str) -> list[EndpointRecord]:
        return sorted((e for e in self.endpoints.get(network, []) if e.node != me),
                      key=lambda e: (e.node, e.container))

    def remote_vteps(self, network: str, me: str) -> set[str]:
        return {m.vtep for node, m in self.members.get(network, {}).items() if node != me}

    def node_networks(self, node: str) -> list[str]:
        return sorted(net for net, ms in self.members.items() if node in ms)


class Mirror:
    """The agent's copy of the store: key -> (value, lease), and the revision it stands at."""

    def __init__(self) -> None:
        self.revision = 0
        self.items: dict[str, tuple[bytes, int]] = {}

    def reset(self, revision: int, kvs: Iterable[KV]) -> None:
        self.revision = revision
        self.items = {kv.key: (kv.value, kv.lease) for kv in kvs}

    def apply(self, revision: int, events: Iterable[Event]) -> set[str]:
        """Apply events in order; the keys whose value or presence changed."""
        changed = set()
        for ev in events:
            if ev.kind == "DELETE":
                if self.items.pop(ev.key, None) is not None:
                    changed.add(ev.key)
            else:
                if self.items.get(ev.key) != (ev.value, ev.lease):
                    changed.add(ev.key)
                self.items[ev.key] = (ev.value, ev.lease)
        self.revision = max(self.revision, revision)
        return changed

    def view(self) -> ClusterView:
        return ClusterView.of(self.revision, ((k, v, lease) for k, (v, lease) in self.items.items()))


# -- what the records mean for this host -----------------------------------------------------


@dataclass(frozen=True)
class DeviceWant:
    """The entries a network's VXLAN device (and its bridge) must hold for the remote hosts."""

    unicast: frozenset[tuple[str, str]] = frozenset()  # (MAC, VTEP): vxlan FDB, self
    flood: frozenset[str] = frozenset()  # VTEPs: all-zero MAC entries, self
    neighbours: frozenset[tuple[str, str]] = frozenset()  # (IPv4, MAC) on the vxlan device
    statics: frozenset[str] = frozenset()  # MACs: bridge FDB entries towards the vxlan port


def device_want(view: ClusterView, network: str, me: str) -> tuple[DeviceWant, list[str]]:
    """The entries of ``network``'s device on node ``me``, and the conflicts set aside."""
    problems = []
    unicast: dict[str, str] = {}
    neighbours: dict[str, str] = {}
    for ep in view.remote_endpoints(network, me):
        if ep.mac in unicast and unicast[ep.mac] != ep.vtep:
            problems.append(f"network {network}: MAC {ep.mac} of {ep.container} on {ep.node} is also behind "
                            f"{unicast[ep.mac]}; ignored")
            continue
        if ep.ipv4 in neighbours and neighbours[ep.ipv4] != ep.mac:
            problems.append(f"network {network}: address {ep.ipv4} of {ep.container} on {ep.node} is claimed "
                            "twice; ignored")
            continue
        unicast[ep.mac] = ep.vtep
        neighbours[ep.ipv4] = ep.mac
    return DeviceWant(frozenset(unicast.items()), frozenset(view.remote_vteps(network, me)),
                      frozenset(neighbours.items()), frozenset(unicast)), problems


def name_records(view: ClusterView, network: str, me: str) -> list[dict[str, Any]]:
    """The remote endpoints of ``network`` as container records of the resolver's config (see
    composenet/dns/__init__.py), each with the ``node`` it runs on; sorted by (node, name).
    Names that clash are the resolver's to settle (composenet/dns/remote.py)."""
    return [{"name": ep.container, "service": ep.service, "hostname": ep.hostname, "register": True,
             "upstreams": None, "links": [], "node": ep.node,
             "endpoints": [{"network": network, "ipv4": ep.ipv4, "ipv6": None, "aliases": list(ep.aliases),
                            "internal": False}]}
            for ep in view.remote_endpoints(network, me)]
