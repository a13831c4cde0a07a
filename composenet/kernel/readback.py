"""Kernel -> resources for the netlink kinds: every netns, bridge, vxlan, veth, macvlan, address,
route and sysctl the project owns, read back as the Resource classes core.desired builds
(KernelHandler.observe calls ``observe_kernel``).

Owns: selecting objects by label (a link's ifalias ``composenet:<project>/...``; addresses on
such links; routes by protocol: the rules are kernel.normalise's), waiting out veths that are
still dying with their namespace, and reading vxlan links and their FDB (through pyroute2).
Must not: change anything, or report an object without this project's label as a resource
(other composenet networks are host facts: kernel.netinfo).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct
import time

from composenet.core.resources import (
    ROUTE_PROTO,
    VXLAN_LABEL_SUFFIX,
    Address,
    Bridge,
    Ipvlan,
    Macvlan,
    Netns,
    Route,
    Veth,
    Vxlan,
)
from composenet.core.state import ObservedState
from composenet.kernel import intents
from composenet.kernel.context import Context
from composenet.kernel.ipvlan import IFLA_IPVLAN_FLAGS, IFLA_IPVLAN_MODE, IPVLAN_FLAGS, IPVLAN_MODES
from composenet.kernel.namespaces import read_records
from composenet.kernel.normalise import is_link_local, label_parts, on_loopback, owned_route
from composenet.kernel.rtnl import DYING_LINK_TIMEOUT, ipr, nl
from composenet.kernel.sysctls import observe_endpoint_sysctls, observe_sysctls
from composenet.linux import netns
from composenet.linux.netlink import (
    FLOOD_MAC,
    IFLA_BRPORT_ISOLATED,
    IFLA_BRPORT_MODE,
    IFLA_MACVLAN_MODE,
    IFLA_VXLAN_ID,
    IFLA_VXLAN_LOCAL,
    IFLA_VXLAN_PORT,
    MACVLAN_MODES,
    NL,
    Link,
)

IFLA_VXLAN_LEARNING, IFLA_VXLAN_PROXY = 7, 11  # u8 flags (cluster networks: learning off, proxy on)

# A host veth of this project and its label's parts (container, network).
LabelledLink = tuple[Link, list[str]]


def observe_kernel(ctx: Context, observed: ObservedState) -> None:
    """Add every netns, bridge, vxlan, veth, macvlan, address, route and sysctl this project owns;
    a link its intent journal accounts for (kernel.intents) counts as the project's, with the
    label it really has."""
    owned_ns = _observe_namespaces(ctx, observed)
    pending = intents.pending(ctx)
    host = nl(ctx, "")
    links, veths, adopted = _settled_links(host, ctx.project, pending)
    by_index = {lk.index: lk for lk in links}
    bridges = _observe_bridges(observed, links, ctx.project)

    vxlans = [lk for lk in links if lk.kind == "vxlan" and lk.alias.endswith(VXLAN_LABEL_SUFFIX)
              and (p := label_parts(lk.alias, ctx.project)) is not None and len(p) == 2]
    if vxlans:
        _observe_vxlans(ctx, observed, vxlans, by_index)

    ns_links: dict[str, list[Link]] = {}
    in_ns: dict[str, dict[int, str]] = {}
    for ns in sorted(set(owned_ns) | {p[0] for _lk, p in veths if netns.is_netns(netns.netns_path(p[0]))}):
        ns_links[ns], in_ns[ns] = intents.adopt(nl(ctx, ns).links(), pending, ns, ctx.project)
    _observe_veths(observed, veths, ns_links, by_index)
    _observe_bridge_addresses(observed, host, bridges)
    for ns in owned_ns:
        _observe_in_namespace(ctx, observed, ns, ns_links[ns], by_index)
    observe_sysctls(observed, [b.name for b in bridges])
    observe_endpoint_sysctls(ctx, observed, owned_ns)
    _real_labels(observed, "", adopted, by_index)
    for ns, real in in_ns.items():
        _real_labels(observed, ns, real, {lk.index: lk for lk in ns_links[ns]})


def _real_labels(observed: ObservedState, ns: str, real: dict[int, str], by_index: dict[int, Link]) -> None:
    """Adopted links (kernel.intents.adopt) are reported with the label they really have, so
    that the plan writes theirs (or, for a veth, makes it again)."""
    for index, alias in real.items():
        lk = by_index.get(index)
        r = observed.resources.get(f"link:{ns or '-'}:{lk.name}") if lk is not None else None
        if r is not None and getattr(r, "label", None) is not None:
            observed.resources[r.key] = dataclasses.replace(r, label=alias)  # type: ignore[call-arg]


def _observe_namespaces(ctx: Context, observed: ObservedState) -> list[str]:
    """Add the recorded namespaces that exist; return their names, sorted."""
    owned_ns: list[str] = []
    for name, rec in sorted(read_records(ctx).items()):
        if netns.is_netns(netns.netns_path(name)):
            owned_ns.append(name)
            observed.add(Netns(name, str(rec.get("project", ctx.project)), str(rec.get("service", ""))))
    return owned_ns


def _host_veths(links: list[Link], project: str) -> list[LabelledLink]:
    return [(lk, p) for lk in links if lk.kind == "veth" and (p := label_parts(lk.alias, project)) and len(p) == 2]


def _settled_links(host: NL, project: str, pending: list[intents.Intent]
                   ) -> tuple[list[Link], list[LabelledLink], dict[int, str]]:
    """The host's links (those an intent accounts for with their intended label), the project's
    veths among them and {index: real alias} of the adopted ones, once the veths whose namespace
    is gone have disappeared (bounded wait: they die asynchronously with their namespace)."""
    links, adopted = intents.adopt(host.links(), pending, "", project)
    veths = _host_veths(links, project)
    dying = [lk.index for lk, p in veths if not netns.is_netns(netns.netns_path(p[0]))]
    if dying:
        _wait_gone(host, dying)
        links, adopted = intents.adopt(host.links(fresh=True), pending, "", project)
        veths = _host_veths(links, project)
    return links, veths, adopted


def _wait_gone(host: NL, indexes: list[int], timeout: float = DYING_LINK_TIMEOUT) -> list[int]:
    """Poll (bounded) until the links disappear: veths die asynchronously with their namespace.
    Returns the indexes still there at the deadline."""
    deadline = time.monotonic() + timeout
    pending = list(indexes)
    delay = 0.002
    while pending and time.monotonic() < deadline:
        if len(pending) > 4:  # one dump beats a request per link
            present = {lk.index for lk in host.links(fresh=True)}
            pending = [i for i in pending if i in present]
        else:
            pending = [i for i in pending if host.link(index=i) is not None]
        if pending:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    return pending


def _observe_bridges(observed: ObservedState, links: list[Link], project: str) -> list[Link]:
    """Add the project's bridges (label ``composenet:<project>/<network>``); return them."""
    bridges: list[Link] = []
    for lk in links:
        p = label_parts(lk.alias, project)
        if lk.kind == "bridge" and p is not None and len(p) == 1:
            bridges.append(lk)
            observed.add(Bridge(lk.name, lk.alias, p[0], lk.mtu, lk.mac))
    return bridges


def _observe_vxlans(ctx: Context, observed: ObservedState, vxlans: list[Link], by_index: dict[int, Link]) -> None:
    """VXLAN links: VNI, port and local address from the link, peers from the flood entries
    (all-zero MAC with a remote destination) of its FDB, read through pyroute2."""
    fdb = ipr(ctx, "").fdb("dump")
    for lk in vxlans:
        d = lk.data
        vni = struct.unpack("I", d[IFLA_VXLAN_ID][:4])[0] if IFLA_VXLAN_ID in d else 0
        port = struct.unpack("!H", d[IFLA_VXLAN_PORT][:2])[0] if IFLA_VXLAN_PORT in d else 0
        local = socket.inet_ntop(socket.AF_INET, d[IFLA_VXLAN_LOCAL][:4]) if IFLA_VXLAN_LOCAL in d else None
        if local == "0.0.0.0":
            local = None
        learning = bool(d[IFLA_VXLAN_LEARNING][0]) if IFLA_VXLAN_LEARNING in d else True
        proxy = bool(d[IFLA_VXLAN_PROXY][0]) if IFLA_VXLAN_PROXY in d else False
        # Learning off: a cluster network's device, whose FDB is the cluster agent's, never drift.
        peers = [] if not learning else sorted({m.get("NDA_DST") for m in fdb
                        if m["ifindex"] == lk.index and m.get("NDA_LLADDR") == FLOOD_MAC and m.get("NDA_DST")},
                       key=lambda a: ipaddress.ip_address(a))
        master = by_index.get(lk.master)
        network = lk.alias[: -len(VXLAN_LABEL_SUFFIX)].split("/", 1)[1]
        observed.add(Vxlan(lk.name, lk.alias, network, master.name if master else "", vni, port, local,
                           tuple(peers), lk.mtu, learning, proxy))


def _observe_veths(observed: ObservedState, veths: list[LabelledLink], ns_links: dict[str, list[Link]],
                   by_index: dict[int, Link]) -> None:
    """Add each veth: its host end, and its peer found in the namespace by the same label."""
    for lk, p in veths:
        peer = next((x for x in ns_links.get(p[0], []) if x.alias == lk.alias), None)
        mtu = lk.mtu if peer is None or peer.mtu == lk.mtu else 0  # 0: the two ends disagree
        master = by_index.get(lk.master)
        observed.add(Veth(lk.name, lk.alias, p[0], peer.name if peer else "", master.name if master else "",
                          mtu, peer.mac if peer else None, lk.brport(IFLA_BRPORT_MODE),
                          lk.brport(IFLA_BRPORT_ISOLATED)))


def _observe_bridge_addresses(observed: ObservedState, host: NL, bridges: list[Link]) -> None:
    br_index = {b.index: b for b in bridges}
    if br_index:
        for a in host.addrs():
            b = br_index.get(a.index)
            if b is not None and a.address and not is_link_local(a.cidr):
                observed.add(Address("", b.name, a.cidr))


def _ipvlan(ns: str, lk: Link, by_index: dict[int, Link]) -> Ipvlan:
    """An ipvlan link of namespace ``ns`` as a resource (mode and flag by name)."""
    parent = by_index.get(lk.link) if lk.link_netnsid is not None else None
    mode = struct.unpack("H", lk.data[IFLA_IPVLAN_MODE][:2])[0] if IFLA_IPVLAN_MODE in lk.data else 0
    flag = struct.unpack("H", lk.data[IFLA_IPVLAN_FLAGS][:2])[0] if IFLA_IPVLAN_FLAGS in lk.data else 0
    return Ipvlan(ns, lk.name, lk.alias, parent.name if parent else "",
                  next((k for k, v in IPVLAN_MODES.items() if v == mode), str(mode)),
                  next((k for k, v in IPVLAN_FLAGS.items() if v == flag), str(flag)), lk.mtu)


def _observe_in_namespace(ctx: Context, observed: ObservedState, ns: str, links: list[Link],
                          by_index: dict[int, Link]) -> None:
    """Add what the project owns inside namespace ``ns`` (``links``: its links): labelled
    macvlans, the addresses on labelled links, and composenet's routes (by protocol)."""
    n = nl(ctx, ns)
    ours = {lk.index: lk for lk in links if label_parts(lk.alias, ctx.project) is not None}
    all_ns = {lk.index: lk for lk in links}
    for lk in ours.values():
        if lk.kind == "macvlan":
            parent = by_index.get(lk.link) if lk.link_netnsid is not None else None
            mode = struct.unpack("I", lk.data[IFLA_MACVLAN_MODE][:4])[0] if IFLA_MACVLAN_MODE in lk.data else 0
            mode_name = next((k for k, v in MACVLAN_MODES.items() if v == mode), str(mode))
            observed.add(Macvlan(ns, lk.name, lk.alias, parent.name if parent else "", mode_name, lk.mtu, lk.mac))
        elif lk.kind == "ipvlan":
            observed.add(_ipvlan(ns, lk, by_index))
    for a in n.addrs():
        lk2 = ours.get(a.index)
        if lk2 is None or on_loopback(lk2) or not a.address or is_link_local(a.cidr):
            continue
        observed.add(Address(ns, lk2.name, a.cidr))
    for rt in n.routes(ROUTE_PROTO):  # owned_route's protocol, filtered before parsing
        if not owned_route(rt):
            continue
        oif = all_ns.get(rt.oif)
        observed.add(Route(ns, rt.cidr, rt.gateway, oif.name if oif else "", rt.priority))
