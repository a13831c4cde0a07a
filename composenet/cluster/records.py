"""The records of the cluster, as stored (JSON objects, one per key of ``keys.py``). Pure.

    node      {"node", "address", "host_id", "routes": [CIDR...], "started"}
    network   {"name", "subnet", "gateway", "vni", "port", "created_by", "created"}
    member    {"node", "vtep", "project"}
    address   {"node", "container"}
    endpoint  {"network", "container", "service", "hostname", "aliases": [...], "ipv4", "mac",
               "node", "vtep", "project"}

``address`` of a node and ``vtep`` of members and endpoints are the node's underlay IPv4;
``host_id`` tells the host that registered a node name apart from any other (boot id and network
namespace: simulated hosts on one machine share the boot id). ``started`` and ``created`` are
Unix times. Values are compact JSON with sorted keys, so equal records are equal bytes.

Reading never trusts what another host wrote: :func:`decode` checks every field and raises
:class:`RecordError` naming the key; readers skip such a record (and log it).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
VNI_MIN = 4096  # below: left to static-peer overlays (whose default VNIs are anywhere) and users
VNI_MAX = 16777215


class RecordError(ValueError):
    """A stored value that is not a valid record; the message names the key."""


@dataclass(frozen=True)
class NodeRecord:
    node: str
    address: str
    host_id: str
    routes: tuple[str, ...] = ()
    started: float = 0.0


@dataclass(frozen=True)
class NetworkRecord:
    name: str
    subnet: str
    gateway: str
    vni: int
    port: int = 4789
    created_by: str = ""
    created: float = 0.0

    def describe(self) -> str:
        return f"subnet {self.subnet}, gateway {self.gateway}, VNI {self.vni}"


@dataclass(frozen=True)
class MemberRecord:
    node: str
    vtep: str
    project: str = ""


@dataclass(frozen=True)
class AddressLease:
    node: str
    container: str


@dataclass(frozen=True)
class EndpointRecord:
    network: str
    container: str
    service: str
    ipv4: str
    mac: str
    node: str
    vtep: str
    hostname: str | None = None
    aliases: tuple[str, ...] = ()
    project: str = ""


Record = NodeRecord | NetworkRecord | MemberRecord | AddressLease | EndpointRecord
R = TypeVar("R", NodeRecord, NetworkRecord, MemberRecord, AddressLease, EndpointRecord)


def encode(record: Record) -> bytes:
    return json.dumps(asdict(record), sort_keys=True, separators=(",", ":")).encode()


class _Fields:
    """Typed reads of one stored object; errors name the key and the field."""

    def __init__(self, key: str, obj: Any):
        if not isinstance(obj, dict):
            raise RecordError(f"{key}: expected a JSON object")
        self.key = key
        self.obj = obj

    def fail(self, name: str, why: str) -> RecordError:
        return RecordError(f"{self.key}: {name}: {why}")

    def text(self, name: str, default: str | None = None, empty: bool = False) -> str:
        v = self.obj.get(name, default)
        if not isinstance(v, str) or (not v and not empty):
            raise self.fail(name, f"expected a non-empty string, got {v!r}")
        return v

    def optional_text(self, name: str) -> str | None:
        v = self.obj.get(name)
        if v is None or v == "":
            return None
        if not isinstance(v, str):
            raise self.fail(name, f"expected a string, got {v!r}")
        return v

    def ipv4(self, name: str) -> str:
        v = self.text(name)
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise self.fail(name, f"{v!r} is not an IPv4 address") from None

    def number(self, name: str, default: float = 0.0) -> float:
        v = self.obj.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(name, f"expected a number, got {v!r}")
        return float(v)

    def integer(self, name: str, lo: int, hi: int, default: int | None = None) -> int:
        v = self.obj.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.fail(name, f"expected a whole number {lo}-{hi}, got {v!r}")
        return v

    def texts(self, name: str) -> tuple[str, ...]:
        v = self.obj.get(name, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.fail(name, f"expected a list of strings, got {v!r}")
        return tuple(v)


def _node(f: _Fields) -> NodeRecord:
    routes = f.texts("routes")
    for r in routes:
        try:
            ipaddress.IPv4Network(r)
        except ValueError:
            raise f.fail("routes", f"{r!r} is not an IPv4 network") from None
    return NodeRecord(f.text("node"), f.ipv4("address"), f.text("host_id"), routes, f.number("started"))


def _network(f: _Fields) -> NetworkRecord:
    subnet = f.text("subnet")
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError:
        raise f.fail("subnet", f"{subnet!r} is not an IPv4 network") from None
    gateway = f.ipv4("gateway")
    if ipaddress.IPv4Address(gateway) not in net:
        raise f.fail("gateway", f"{gateway} is not in {subnet}")
    return NetworkRecord(f.text("name"), str(net), gateway, f.integer("vni", 1, VNI_MAX),
                         f.integer("port", 1, 65535, 4789), f.text("created_by", "", empty=True), f.number("created"))


def _member(f: _Fields) -> MemberRecord:
    return MemberRecord(f.text("node"), f.ipv4("vtep"), f.text("project", "", empty=True))


def _address(f: _Fields) -> AddressLease:
    return AddressLease(f.text("node"), f.text("container"))


def _endpoint(f: _Fields) -> EndpointRecord:
    mac = f.text("mac").lower()
    if not MAC.fullmatch(mac):
        raise f.fail("mac", f"{mac!r} is not a MAC address")
    return EndpointRecord(network=f.text("network"), container=f.text("container"), service=f.text("service"),
                          ipv4=f.ipv4("ipv4"), mac=mac, node=f.text("node"), vtep=f.ipv4("vtep"),
                          hostname=f.optional_text("hostname"), aliases=f.texts("aliases"),
                          project=f.text("project", "", empty=True))


_READERS: dict[type, Any] = {NodeRecord: _node, NetworkRecord: _network, MemberRecord: _member,
                             AddressLease: _address, EndpointRecord: _endpoint}


def decode(cls: type[R], key: str, raw: bytes | str) -> R:
    """The record of type ``cls`` stored at ``key``. Raises :class:`RecordError`."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise RecordError(f"{key}: not JSON ({e})") from None
    return _READERS[cls](_Fields(key, obj))  # type: ignore[no-any-return]


# -- a host's own records ----------------------------------------------------------------------


@dataclass(frozen=True)
class HostRecords:
    """What one host publishes (a project's part of it, or the union of its projects'): the
    networks it uses (as it created or found them), its memberships, address leases and
    endpoints. Kept in the run directory so that the agent can publish them again when the
    store lost them (the node's lease expired during a partition, etcd's data was lost)."""

    node: str
    networks: tuple[NetworkRecord, ...] = ()
    members: tuple[tuple[str, MemberRecord], ...] = ()  # (network, member)
    addresses: tuple[tuple[str, str, AddressLease], ...] = ()  # (network, ip, lease)
    endpoints: tuple[EndpointRecord, ...] = ()

    def merged(self, other: HostRecords) -> HostRecords:
        def uniq(items: tuple) -> tuple:
            return tuple(dict.fromkeys(items))

        return HostRecords(self.node, uniq(self.networks + other.networks), uniq(self.members + other.members),
                           uniq(self.addresses + other.addresses), uniq(self.endpoints + other.endpoints))

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "networks": [asdict(n) for n in self.networks],
                "members": [{"network": net, **asdict(m)} for net, m in self.members],
                "addresses": [{"network": net, "ip": ip, **asdict(a)} for net, ip, a in self.addresses],
                "endpoints": [asdict(e) for e in self.endpoints]}

    @classmethod
    def from_json(cls, obj: Any, source: str) -> HostRecords:
        """Raises RecordError naming ``source`` and the item."""
        f = _Fields(source, obj)
        node = f.text("node")

        def items(name: str) -> list[tuple[str, _Fields]]:
            v = obj.get(name, [])
            if not isinstance(v, list):
                raise f.fail(name, "expected a list")
            return [(f"{source}: {name}[{i}]", _Fields(f"{source}: {name}[{i}]", x)) for i, x in enumerate(v)]

        networks = tuple(_network(g) for _, g in items("networks"))
        members = tuple((g.text("network"), _member(g)) for _, g in items("members"))
        addresses = tuple((g.text("network"), g.ipv4("ip"), _address(g)) for _, g in items("addresses"))
        endpoints = tuple(_endpoint(g) for _, g in items("endpoints"))
        return cls(node, networks, members, addresses, endpoints)
