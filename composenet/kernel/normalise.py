"""The named rules that tell kernel noise from resources when links, addresses and routes are
read back: one pure function per rule, each named in its docstring (the unit of a test).

Owns: which addresses and routes the kernel makes by itself (IPv6 link-local, loopback, routes
of other protocols) and how a link's label (ifalias ``composenet:<project>/...``) is read.
Must not: do I/O; observe (kernel.readback) and the host facts (kernel.netinfo) apply the rules.
"""

from __future__ import annotations

import ipaddress
import socket

from composenet.core.resources import LABEL_PREFIX, ROUTE_PROTO
from composenet.linux.netlink import IFF_LOOPBACK, Link, Rt


def is_link_local(cidr: str) -> bool:
    """Rule ipv6-link-local: the fe80::/10 address the kernel adds to every IPv6 link is not a
    resource (composenet never adds one)."""
    if ":" not in cidr:  # IPv4: read back as dotted quads, never fe80::/10
        return False
    try:  # hot (every address of every namespace): the first 10 bits, without ipaddress
        raw = socket.inet_pton(socket.AF_INET6, cidr.split("/", 1)[0])
    except OSError:
        return ipaddress.ip_interface(cidr).ip.is_link_local  # its ValueError, as before
    return raw[0] == 0xFE and raw[1] & 0xC0 == 0x80


def on_loopback(link: Link | None) -> bool:
    """Rule loopback: addresses on lo (127.0.0.1, ::1 in every namespace) are not resources."""
    return link is not None and bool(link.flags & IFF_LOOPBACK)


def owned_route(rt: Rt) -> bool:
    """Rule route-protocol: only routes with protocol ROUTE_PROTO are composenet's; the kernel's
    own subnet routes (proto kernel), RA routes and local-table routes are not resources."""
    return rt.protocol == ROUTE_PROTO


def label_parts(alias: str, project: str) -> list[str] | None:
    """The '/'-separated parts after ``composenet:<project>/`` in a link's ifalias, or None when
    the link is not this project's."""
    prefix = f"{LABEL_PREFIX}{project}/"
    if not alias.startswith(prefix):
        return None
    return alias[len(prefix) :].split("/")
