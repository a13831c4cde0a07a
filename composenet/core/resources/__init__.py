"""Kernel resources composenet manages: one frozen dataclass per kind, a stable key, compared attributes.

Owns: the vocabulary shared by ``desired`` (what the file wants), ``observe`` (what the kernel
has, read back into the very same classes) and ``apply`` (how to create, update, delete each).
Pure: no I/O. Must not: know how a resource is created or read back (composenet.kernel does).

Conventions
- ``ns`` is a namespace name under /run/netns, or "" for the namespace composenet itself runs
  in (the "host" namespace; in tests a sandbox namespace entered with ``nsenter --net``).
- ``key`` is unique across kinds and stable: it never contains pids, ifindexes or timestamps.
- ``compared()`` lists the attributes the diff compares. Fields not in it are identity (part of
  the key) or carried only for apply (e.g. the full ruleset text, whose rules are compared by
  their identity comments instead).
- Ownership labels: links carry ``ifalias`` = ``label`` (``composenet:<project>/...``); the nft
  table is named after the project and every rule has a ``cn:`` comment; namespaces, files,
  resolver and processes live under the project's runtime directory.

Layout: ``base`` (Resource, derived kernel names, labels), ``links`` (namespaces, links, addresses,
routes, sysctls), ``firewall`` (nftables), ``services`` (files, resolver, peer records,
processes). A new kind is a class in one of them plus an entry in ``KINDS`` below.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from composenet.core.resources.base import (
    LABEL_PREFIX,
    ROUTE_PROTO,
    VXLAN_LABEL_SUFFIX,
    Resource,
    bridge_ifname,
    nft_table_name,
    short_hash,
    veth_ifname,
    vxlan_ifname,
)
from composenet.core.resources.firewall import GUARD_TABLE, ForwardingGuard, NftTable
from composenet.core.resources.links import (
    Address,
    Bridge,
    Ipvlan,
    Macvlan,
    Netns,
    Route,
    Sysctl,
    Veth,
    Vxlan,
)
from composenet.core.resources.services import (
    DnsRecords,
    NetnsFile,
    Process,
    Resolver,
    Supervisor,
    resolver_listeners,
)

__all__ = [
    "LABEL_PREFIX", "ROUTE_PROTO", "VXLAN_LABEL_SUFFIX", "Resource", "bridge_ifname", "nft_table_name", "short_hash",
    "veth_ifname", "vxlan_ifname", "GUARD_TABLE", "ForwardingGuard", "NftTable", "Address", "Bridge", "Ipvlan", "Macvlan",
    "Netns", "Route", "Sysctl", "Veth", "Vxlan", "DnsRecords", "NetnsFile", "Process", "Resolver", "Supervisor",
    "resolver_listeners", "KINDS", "resource_from_json",
]


KINDS: dict[str, type[Resource]] = {
    c.kind: c for c in (Sysctl, Netns, Bridge, Vxlan, Veth, Macvlan, Ipvlan, Address, Route, ForwardingGuard, NftTable,
                         NetnsFile, Resolver, DnsRecords, Supervisor, Process)
}


def resource_from_json(d: dict[str, Any]) -> Resource:
    cls = KINDS[d["kind"]]
    kwargs = {}
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            if isinstance(v, list):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kwargs[f.name] = v
    return cls(**kwargs)
