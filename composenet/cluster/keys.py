"""The key layout of the cluster in the store (pure). Every key of composenet is under ``ROOT``::

    /composenet/v1/nodes/<node>                           node record        lease: the node's
    /composenet/v1/networks/<network>                     network record     no lease
    /composenet/v1/members/<network>/<node>               member record      lease: the node's
    /composenet/v1/addresses/<network>/<ipv4>             address lease      lease: the holder node's
    /composenet/v1/endpoints/<network>/<node>/<container> endpoint record    lease: the node's

``<network>`` is the network's full name (the same on every host), ``<node>`` a node name,
``<container>`` a container name: none of them holds a '/', so a key splits unambiguously. A
prefix ends with '/', and the range of a prefix is [prefix, prefix with its last byte + 1).

Must not: encode values (``records.py``) or talk to the store.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

ROOT = "/composenet/v1/"
NODES = ROOT + "nodes/"
NETWORKS = ROOT + "networks/"
MEMBERS = ROOT + "members/"
ADDRESSES = ROOT + "addresses/"
ENDPOINTS = ROOT + "endpoints/"

KINDS = ("node", "network", "member", "address", "endpoint")


def _part(value: str, what: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"{what} {value!r} cannot be part of a store key")
    return value


def node_key(node: str) -> str:
    return NODES + _part(node, "node name")


def network_key(network: str) -> str:
    return NETWORKS + _part(network, "network name")


def members_prefix(network: str) -> str:
    return f"{MEMBERS}{_part(network, 'network name')}/"


def member_key(network: str, node: str) -> str:
    return members_prefix(network) + _part(node, "node name")


def addresses_prefix(network: str) -> str:
    return f"{ADDRESSES}{_part(network, 'network name')}/"


def address_key(network: str, ip: str) -> str:
    return addresses_prefix(network) + str(ipaddress.IPv4Address(ip))


def endpoints_prefix(network: str) -> str:
    return f"{ENDPOINTS}{_part(network, 'network name')}/"


def node_endpoints_prefix(network: str, node: str) -> str:
    return f"{endpoints_prefix(network)}{_part(node, 'node name')}/"


def endpoint_key(network: str, node: str, container: str) -> str:
    return node_endpoints_prefix(network, node) + _part(container, "container name")


def prefix_end(prefix: str) -> str:
    """The end (exclusive) of the range holding every key that starts with ``prefix``."""
    raw = prefix.encode()
    if not raw or raw[-1] == 0xFF:
        raise ValueError(f"no range end for prefix {prefix!r}")
    return (raw[:-1] + bytes([raw[-1] + 1])).decode("latin-1")


@dataclass(frozen=True)
class Key:
    """A parsed key: its kind (one of ``KINDS``) and the parts that name it ("" when none)."""

    kind: str
    network: str = ""
    node: str = ""
    name: str = ""  # the address of an address lease, the container of an endpoint


def parse_key(key: str) -> Key | None:
    """The kind and parts of a composenet key; None for any other key (ignored by readers)."""
    if not key.startswith(ROOT):
        return None
    parts = key[len(ROOT):].split("/")
    if any(not p for p in parts):
        return None
    kind, rest = parts[0], parts[1:]
    if kind == "nodes" and len(rest) == 1:
        return Key("node", node=rest[0])
    if kind == "networks" and len(rest) == 1:
        return Key("network", network=rest[0])
    if kind == "members" and len(rest) == 2:
        return Key("member", network=rest[0], node=rest[1])
    if kind == "addresses" and len(rest) == 2:
        try:
            ipaddress.IPv4Address(rest[1])
        except ValueError:
            return None
        return Key("address", network=rest[0], name=rest[1])
    if kind == "endpoints" and len(rest) == 3:
        return Key("endpoint", network=rest[0], node=rest[1], name=rest[2])
    return None
