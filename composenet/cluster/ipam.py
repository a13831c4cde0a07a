"""Cluster IPAM decisions (pure): a network's subnet and VNI, endpoint addresses, and what a
compose file may say about a network the cluster already knows.

Decisions (documented choices):

* Subnet: the one the file gives; else the first /24 of the pool 10.0.0.0/8 (Swarm's default
  address pool) that overlaps no other cluster network and no route of any node (each node
  publishes its routes in its record; default routes do not count). Gateway: the file's, else
  the subnet's first address.
* VNI: the one the file gives (``com.composenet.vxlan.id``), which must be free in the cluster;
  else one derived from the network's name in 4096..16777215 (below 4096 is left to static-peer
  overlays and to VNIs users pick), the next free one when taken.
* Addresses: static ones as given, dynamic ones the lowest free of ``ip_range`` (else the
  subnet), never the network, broadcast or gateway address; "free" means no lease in the store.
  Whoever creates the lease first wins (the store's create-if-absent); the others take the next.
* A file that disagrees with the network's record (subnet, gateway, VNI) is an error naming the
  record and who created it, unless the record has no member left (then the file's values
  replace it).

``propose_network`` puts these decisions together for a new network's record.

Must not: read the store or the kernel: callers pass what they read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Any

from composenet.cluster.errors import ClusterConflict
from composenet.cluster.records import AddressLease, NetworkRecord

# The subnet and VNI choices are core's (core.desired.cluster), so that `plan` proposes exactly the
# record `up` creates. They are imported when first used: core.desired is ~45 ms of imports the
# cluster agent (which never creates a network) does not need at its start.
_CORE = ("DEFAULT_POOL", "DEFAULT_PREFIX", "choose_subnet", "choose_vni", "default_gateway", "derived_vni")
__all__ = [*_CORE, "free_addresses", "lease_conflict", "network_mismatch", "propose_network"]


def __getattr__(name: str) -> Any:
    if name in _CORE:
        from composenet.core.desired import cluster  # deferred: see _CORE

        return getattr(cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def free_addresses(subnet: str, gateway: str, taken: Iterable[str], ip_range: str | None = None) -> Iterator[str]:
    """The addresses a new endpoint may get, lowest first (see the module doc)."""
    net = ipaddress.IPv4Network(subnet)
    pool = ipaddress.IPv4Network(ip_range) if ip_range else net
    skip = {str(a) for a in taken} | {gateway, str(net.network_address), str(net.broadcast_address)}
    for a in pool:
        if a in net and str(a) not in skip:
            yield str(a)


def lease_conflict(lease: AddressLease | None, node: str, container: str) -> str | None:
    """Why an address held as ``lease`` cannot go to ``container`` on ``node`` (None: it can: it
    is free or already theirs)."""
    if lease is None or (lease.node == node and lease.container == container):
        return None
    return f"leased to container {lease.container} on node {lease.node}"


def network_mismatch(record: NetworkRecord, subnet: str | None, gateway: str | None, vni: int | None) -> list[str]:
    """What the file says differently from ``record`` (only what the file states counts)."""
    out = []
    if subnet is not None and ipaddress.IPv4Network(subnet, strict=False) != ipaddress.IPv4Network(record.subnet):
        out.append(f"subnet {subnet} (the cluster's is {record.subnet})")
    if gateway is not None and gateway != record.gateway:
        out.append(f"gateway {gateway} (the cluster's is {record.gateway})")
    if vni is not None and vni != record.vni:
        out.append(f"VNI {vni} (the cluster's is {record.vni})")
    return out


def propose_network(name: str, others: dict[str, NetworkRecord], routes: Iterable[str], subnet: str | None,
                    gateway: str | None, vni: int | None, port: int, node: str, now: float = 0.0) -> NetworkRecord:
    """The record a new cluster network ``name`` gets, given the ``others`` of the cluster and the
    nodes' ``routes``, with what the file says (``subnet``, ``gateway``, ``vni``: None = not
    said). ``plan`` shows it; ``Registry.ensure_network`` creates it. Raises ClusterConflict."""
    from composenet.core.desired.cluster import (  # deferred: see _CORE
        DEFAULT_POOL,
        choose_subnet,
        choose_vni,
        default_gateway,
    )

    if subnet is not None:
        mine = ipaddress.IPv4Network(subnet, strict=False)
        clash = next((n for n, rec in sorted(others.items()) if mine.overlaps(ipaddress.IPv4Network(rec.subnet))),
                     None)
        if clash is not None:
            raise ClusterConflict(f"network {name}: subnet {subnet} overlaps cluster network {clash} "
                                  f"({others[clash].subnet})", hint="choose another subnet, or leave it out")
        chosen = str(mine)
    else:
        found = choose_subnet([rec.subnet for rec in others.values()], routes)
        if found is None:
            raise ClusterConflict(f"network {name}: no free /24 left in the cluster's address pool {DEFAULT_POOL}")
        chosen = found
    vni_chosen = choose_vni(name, [rec.vni for rec in others.values()], vni)
    if vni_chosen is None:
        holder = next(n for n, rec in sorted(others.items()) if rec.vni == vni)
        raise ClusterConflict(f"network {name}: VNI {vni} is used by cluster network {holder}",
                              hint="choose another com.composenet.vxlan.id, or leave it out")
    return NetworkRecord(name, chosen, gateway or default_gateway(chosen), vni_chosen, port, node, now)
