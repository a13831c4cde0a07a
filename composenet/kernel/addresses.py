"""Addresses and routes as resources: their create, update and delete in any namespace
(KernelHandler dispatches kinds ``address`` and ``route`` here), as raw rtnetlink requests.

Owns: what an address and a route mean in the kernel: an IPv4 address with its broadcast, an
IPv6 one without duplicate address detection (usable at once), a route in the main table with
composenet's protocol number (ROUTE_PROTO: how observe tells its routes from the kernel's).
Must not: create or delete links or namespaces (kernel.links, kernel.namespaces do), or touch a
route of another protocol. Deleting what is already gone (or whose namespace is) succeeds.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from composenet.core.resources import ROUTE_PROTO, Address, Route
from composenet.errors import KernelError
from composenet.kernel.context import Context
from composenet.kernel.rtnl import fail, ignore_gone, nl, setlink
from composenet.linux import netns
from composenet.linux.netlink import (
    IFA_ADDRESS,
    IFA_BROADCAST,
    IFA_F_NODAD,
    IFA_FLAGS,
    IFA_LOCAL,
    NL,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_PRIORITY,
    RTM_DELADDR,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWROUTE,
    RTN_UNICAST,
    nla,
    pack_u32,
)

# ---- address ----------------------------------------------------------------------------------

# The kernel deletes every secondary IPv4 address of a subnet with its primary (the first one
# added) unless the link's promote_secondaries is on. An address replaced make-before-break
# within its subnet (the plan adds the new one, then deletes the old one) is such a secondary:
# before an IPv4 address is deleted, the link gets promote_secondaries = 1 (IFLA_AF_SPEC ->
# AF_INET -> IFLA_INET_CONF -> IPV4_DEVCONF_PROMOTE_SECONDARIES), so the new one stays, and so
# do the routes through the link (the kernel drops them only with its last address).
IFLA_AF_SPEC, IFLA_INET_CONF, IPV4_DEVCONF_PROMOTE_SECONDARIES = 26, 1, 20


def _promote_secondaries(n: NL, ifname: str) -> None:
    conf = nla(IFLA_INET_CONF, nla(IPV4_DEVCONF_PROMOTE_SECONDARIES, pack_u32(1)))
    setlink(n, ifname, nla(IFLA_AF_SPEC, nla(socket.AF_INET, conf)))


def _addr_body(n: NL, r: Address, add: bool) -> bytes:
    ip = ipaddress.ip_interface(r.cidr)
    idx = n.index(r.ifname)
    packed = ip.ip.packed
    if ip.version == 4:
        body = struct.pack("BBBBI", socket.AF_INET, ip.network.prefixlen, 0, 0, idx)
        body += nla(IFA_LOCAL, packed) + nla(IFA_ADDRESS, packed)
        if add and ip.network.prefixlen < 31:
            body += nla(IFA_BROADCAST, ip.network.broadcast_address.packed)
        return body
    body = struct.pack("BBBBI", socket.AF_INET6, ip.network.prefixlen, IFA_F_NODAD, 0, idx)
    body += nla(IFA_ADDRESS, packed)
    if add:  # no duplicate address detection: the address is usable at once
        body += nla(IFA_FLAGS, pack_u32(IFA_F_NODAD))
    return body


def create_address(ctx: Context, r: Address) -> None:
    where = f"{r.ns} {r.ifname}" if r.ns else r.ifname
    try:
        n = nl(ctx, r.ns)
        n.request(RTM_NEWADDR, _addr_body(n, r, True), NLM_F_CREATE | NLM_F_EXCL)
    except OSError as e:
        raise fail(f"add address {r.cidr} to {where}", e) from e


def update_address(ctx: Context, before: Address, after: Address) -> None:
    delete_address(ctx, before)
    create_address(ctx, after)


def delete_address(ctx: Context, r: Address) -> None:
    if r.ns and not netns.is_netns(netns.netns_path(r.ns)):
        return
    where = f"{r.ns} {r.ifname}" if r.ns else r.ifname
    try:
        n = nl(ctx, r.ns)
        if ":" not in r.cidr:
            _promote_secondaries(n, r.ifname)
        n.request(RTM_DELADDR, _addr_body(n, r, False))
    except OSError as e:
        if not ignore_gone(e):
            raise fail(f"delete address {r.cidr} from {where}", e) from e


# ---- route ------------------------------------------------------------------------------------


def _route_body(n: NL, r: Route) -> bytes:
    net = ipaddress.ip_network(r.dst, strict=False)
    fam = socket.AF_INET if net.version == 4 else socket.AF_INET6
    scope = RT_SCOPE_UNIVERSE if r.gateway else RT_SCOPE_LINK
    body = struct.pack("BBBBBBBBI", fam, net.prefixlen, 0, 0, RT_TABLE_MAIN, ROUTE_PROTO, scope, RTN_UNICAST, 0)
    if net.prefixlen:
        body += nla(RTA_DST, net.network_address.packed)
    if r.gateway:
        body += nla(RTA_GATEWAY, ipaddress.ip_address(r.gateway).packed)
    if r.ifname:
        body += nla(RTA_OIF, pack_u32(n.index(r.ifname)))
    if r.metric:
        body += nla(RTA_PRIORITY, pack_u32(r.metric))
    return body


def create_route(ctx: Context, r: Route, flags: int = NLM_F_CREATE | NLM_F_EXCL) -> None:
    try:
        n = nl(ctx, r.ns)
        n.request(RTM_NEWROUTE, _route_body(n, r), flags)
    except OSError as e:
        raise fail(f"add route {r.dst} via {r.gateway} dev {r.ifname}" + (f" in {r.ns}" if r.ns else ""), e) from e


def update_route(ctx: Context, before: Route, after: Route) -> None:
    if before.metric == after.metric:
        create_route(ctx, after, NLM_F_CREATE | NLM_F_REPLACE)
        return
    # The metric is part of the kernel's route key: add the new one, then drop the old.
    create_route(ctx, after)
    try:
        delete_route(ctx, before)
    except KernelError:
        delete_route(ctx, after)
        raise


def delete_route(ctx: Context, r: Route) -> None:
    if r.ns and not netns.is_netns(netns.netns_path(r.ns)):
        return
    try:
        n = nl(ctx, r.ns)
        n.request(RTM_DELROUTE, _route_body(n, r))
    except OSError as e:
        if not ignore_gone(e):
            raise fail(f"delete route {r.dst}" + (f" in {r.ns}" if r.ns else ""), e) from e
