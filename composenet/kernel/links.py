"""The netlink side of the executor: handlers for netns, bridge, vxlan, veth, macvlan, address,
route and sysctl, their ``observe``, and the host facts IPAM needs (vxlan links and their FDB go
through pyroute2).

Owns: one rtnetlink socket per namespace per run (``nl``; ``ipr`` gives a pyroute2 IPRoute bound
the same way), the kernel meaning of each resource kind (see resources.py), and the named rules
that normalise kernel noise away when reading objects back.

Must not: touch nftables, files under /etc/netns or processes (nft.py, procs.py do), fork or
run `ip`, or change anything that does not carry this project's label. Every create either
completes or undoes what it did in that call and raises KernelError naming the object and the
kernel's message.

Why raw netlink for the hot path: a pyroute2 IPRoute call costs ~0.3 ms of asyncio and encoding
on top of the kernel's work, and `up` has ~3 ms per container for everything; a request here is
a struct-packed message and one recv of the ack. Dumps are parsed by the small TLV reader below.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

from composenet.core.resources import (
    LABEL_PREFIX,
    ROUTE_PROTO,
    VXLAN_LABEL_SUFFIX,
    Address,
    Bridge,
    Macvlan,
    Netns,
    Resource,
    Route,
    Sysctl,
    Veth,
    Vxlan,
)
from composenet.core.state import ObservedState
from composenet.errors import KernelError
from composenet.kernel import rundir
from composenet.kernel.context import Context
from composenet.linux import netns
from composenet.linux.netlink import (
    FLOOD_MAC,
    IFA_ADDRESS,
    IFA_BROADCAST,
    IFA_F_NODAD,
    IFA_FLAGS,
    IFA_LOCAL,
    IFF_LOOPBACK,
    IFF_UP,
    IFLA_ADDRESS,
    IFLA_BR_STP_STATE,
    IFLA_BRPORT_ISOLATED,
    IFLA_BRPORT_MODE,
    IFLA_GROUP,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_INFO_SLAVE_DATA,
    IFLA_INFO_SLAVE_KIND,
    IFLA_LINK,
    IFLA_LINKINFO,
    IFLA_MACVLAN_MODE,
    IFLA_MASTER,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    IFLA_VXLAN_ID,
    IFLA_VXLAN_LOCAL,
    IFLA_VXLAN_PORT,
    MACVLAN_MODES,
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
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTN_BROADCAST,
    RTN_MULTICAST,
    RTN_UNICAST,
    VETH_INFO_PEER,
    Addr,
    Link,
    NetlinkError,
    Rt,
    ifinfomsg,
    nla,
    pack_mac,
    pack_str,
    pack_u32,
)
from composenet.linux.netns import check_mount_namespace
from composenet.paths import ProjectPaths, list_projects

__all__ = ["host_facts", "check_mount_namespace", "ipr", "nl", "KernelHandler"]

# A veth whose namespace was just deleted disappears asynchronously: how long to wait for it.
DYING_LINK_TIMEOUT = 5.0


def _fail(what: str, e: BaseException) -> KernelError:
    if isinstance(e, NetlinkError):
        text = e.describe()
    elif isinstance(e, OSError) and e.errno is not None:
        text = f"{e.strerror} ({errno.errorcode.get(e.errno, e.errno)})"
        if e.filename:
            text += f": {e.filename}"
    else:
        text = str(e)
    return KernelError(f"{what}: {text}")


# ---- per-run sockets ------------------------------------------------------------------------


def nl(ctx: Context, ns: str) -> NL:
    """The run's rtnetlink socket for namespace ``ns`` ("" = the namespace composenet runs in),
    created by entering the namespace with setns in this thread, then returning."""
    s = ctx.netlink.get(ns)
    if s is None:
        s = ctx.netlink[ns] = NL(netns.socket_in(ns), ns)
    return s


def ipr(ctx: Context, ns: str) -> Any:
    """A pyroute2 IPRoute bound to namespace ``ns`` ("" = the current one), one per run, closed
    by ``ctx.close()``.

    pyroute2 0.9 would fork a helper to open a socket in a namespace (``IPRoute(netns=...)``);
    instead the IPRoute is constructed while this thread is inside the namespace: its socket is
    created eagerly in the constructor, and a socket stays in the namespace it was created in.
    Use it from the thread that called ``ipr`` (pyroute2 keeps its socket per thread)."""
    from pyroute2 import IPRoute  # deferred: pyroute2 costs ~0.2 s to import; only vxlan work needs it

    r = ctx.pyroute.get(ns)
    if r is None:
        with netns.entered(ns):
            r = ctx.pyroute[ns] = IPRoute()
    return r


# ---- normalisation rules (kernel noise that is not a resource) ------------------------------


def is_link_local(cidr: str) -> bool:
    """Rule ipv6-link-local: the fe80::/10 address the kernel adds to every IPv6 link is not a
    resource (composenet never adds one)."""
    ip = ipaddress.ip_interface(cidr).ip
    return ip.version == 6 and ip.is_link_local


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


# ---- records of namespaces ------------------------------------------------------------------


def _records_dir(ctx: Context) -> str:
    return ctx.paths.netns_records


def _read_records(ctx: Context) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    d = _records_dir(ctx)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return out
    for n in names:
        if n.startswith("."):
            continue
        try:
            with open(os.path.join(d, n)) as f:
                data = json.load(f)
            out[n] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            out[n] = {}
    return out


def _write_record(ctx: Context, r: Netns) -> None:
    rundir.atomic_write(os.path.join(_records_dir(ctx), r.name), json.dumps({"service": r.service, "project": r.project}))


def _remove_record(ctx: Context, name: str) -> None:
    try:
        os.unlink(os.path.join(_records_dir(ctx), name))
    except FileNotFoundError:
        pass


# ---- observe ---------------------------------------------------------------------------------


def _wait_gone(host: NL, indexes: list[int], timeout: float = DYING_LINK_TIMEOUT) -> list[int]:
    """Poll (bounded) until the links disappear: veths die asynchronously with their namespace.
    Returns the indexes still there at the deadline."""
    deadline = time.monotonic() + timeout
    pending = list(indexes)
    delay = 0.002
    while pending and time.monotonic() < deadline:
        if len(pending) > 4:  # one dump beats a request per link
            present = {lk.index for lk in host.links()}
            pending = [i for i in pending if i in present]
        else:
            pending = [i for i in pending if host.link(index=i) is not None]
        if pending:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    return pending


def observe_kernel(ctx: Context, observed: ObservedState) -> None:
    """Add every netns, bridge, veth, macvlan, address, route and sysctl this project owns."""
    project = ctx.project
    owned_ns: list[str] = []
    for name, rec in sorted(_read_records(ctx).items()):
        if netns.is_netns(netns.netns_path(name)):
            owned_ns.append(name)
            observed.add(Netns(name, str(rec.get("project", project)), str(rec.get("service", ""))))

    host = nl(ctx, "")
    links = host.links()
    veths = [(lk, p) for lk in links if lk.kind == "veth" and (p := label_parts(lk.alias, project)) and len(p) == 2]
    dying = [lk.index for lk, p in veths if not netns.is_netns(netns.netns_path(p[0]))]
    if dying:
        _wait_gone(host, dying)
        links = host.links()
        veths = [(lk, p) for lk in links if lk.kind == "veth" and (p := label_parts(lk.alias, project)) and len(p) == 2]
    by_index = {lk.index: lk for lk in links}

    bridges: list[Link] = []
    for lk in links:
        p = label_parts(lk.alias, project)
        if lk.kind == "bridge" and p is not None and len(p) == 1:
            bridges.append(lk)
            observed.add(Bridge(lk.name, lk.alias, p[0], lk.mtu, lk.mac))

    vxlans = [lk for lk in links if lk.kind == "vxlan" and lk.alias.endswith(VXLAN_LABEL_SUFFIX)
              and (p := label_parts(lk.alias, project)) is not None and len(p) == 2]
    if vxlans:
        _observe_vxlans(ctx, observed, vxlans, by_index)

    ns_links: dict[str, list[Link]] = {}
    for ns in sorted(set(owned_ns) | {p[0] for _lk, p in veths if netns.is_netns(netns.netns_path(p[0]))}):
        ns_links[ns] = nl(ctx, ns).links()

    for lk, p in veths:
        peer = next((x for x in ns_links.get(p[0], []) if x.alias == lk.alias), None)
        mtu = lk.mtu if peer is None or peer.mtu == lk.mtu else 0  # 0: the two ends disagree
        master = by_index.get(lk.master)
        observed.add(Veth(lk.name, lk.alias, p[0], peer.name if peer else "", master.name if master else "",
                          mtu, peer.mac if peer else None, lk.brport(IFLA_BRPORT_MODE),
                          lk.brport(IFLA_BRPORT_ISOLATED)))

    # Addresses on our bridges.
    br_index = {b.index: b for b in bridges}
    if br_index:
        for a in host.addrs():
            b = br_index.get(a.index)
            if b is not None and a.address and not is_link_local(a.cidr):
                observed.add(Address("", b.name, a.cidr))

    for ns in owned_ns:
        n = nl(ctx, ns)
        ours = {lk.index: lk for lk in ns_links[ns] if label_parts(lk.alias, project) is not None}
        all_ns = {lk.index: lk for lk in ns_links[ns]}
        for lk in ours.values():
            if lk.kind == "macvlan":
                parent = by_index.get(lk.link) if lk.link_netnsid is not None else None
                mode = struct.unpack("I", lk.data[IFLA_MACVLAN_MODE][:4])[0] if IFLA_MACVLAN_MODE in lk.data else 0
                mode_name = next((k for k, v in MACVLAN_MODES.items() if v == mode), str(mode))
                observed.add(Macvlan(ns, lk.name, lk.alias, parent.name if parent else "", mode_name, lk.mtu, lk.mac))
        for a in n.addrs():
            lk2 = ours.get(a.index)
            if lk2 is None or on_loopback(lk2) or not a.address or is_link_local(a.cidr):
                continue
            observed.add(Address(ns, lk2.name, a.cidr))
        for rt in n.routes():
            if not owned_route(rt):
                continue
            oif = all_ns.get(rt.oif)
            observed.add(Route(ns, rt.cidr, rt.gateway, oif.name if oif else "", rt.priority))

    for name in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        _observe_sysctl(observed, "", name, None)
    for b in bridges:
        for name in (f"net.ipv4.conf.{b.name}.route_localnet", f"net.ipv6.conf.{b.name}.accept_ra",
                     f"net.ipv6.conf.{b.name}.accept_dad"):
            _observe_sysctl(observed, "", name, b.name)


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
        peers = sorted({m.get("NDA_DST") for m in fdb
                        if m["ifindex"] == lk.index and m.get("NDA_LLADDR") == FLOOD_MAC and m.get("NDA_DST")},
                       key=lambda a: ipaddress.ip_address(a))
        master = by_index.get(lk.master)
        network = lk.alias[: -len(VXLAN_LABEL_SUFFIX)].split("/", 1)[1]
        observed.add(Vxlan(lk.name, lk.alias, network, master.name if master else "", vni, port, local,
                           tuple(peers), lk.mtu))


def _sysctl_path(name: str, ifname: str | None) -> str:
    """/proc/sys path of a sysctl; an interface name may itself contain dots (eth0.100)."""
    if ifname and f".{ifname}." in name:
        head, tail = name.split(f".{ifname}.", 1)
        return "/proc/sys/" + "/".join([*head.split("."), ifname, *tail.split(".")])
    return "/proc/sys/" + name.replace(".", "/")


def _observe_sysctl(observed: ObservedState, ns: str, name: str, ifname: str | None) -> None:
    try:
        with open(_sysctl_path(name, ifname)) as f:
            value = f.read().strip()
    except OSError:
        return
    observed.add(Sysctl(ns, name, value, ifname))


def host_facts(ctx: Context, observed: ObservedState) -> None:
    """Fill the constraint fields of ``observed`` from the namespace composenet runs in:
    host_routes, host_addresses, foreign_subnets, foreign_links (see ObservedState)."""
    host = nl(ctx, "")
    links = host.links()
    owned = {lk.index for lk in links if label_parts(lk.alias, ctx.project) is not None}
    by_index = {lk.index: lk for lk in links}
    routes: set[str] = set()
    for rt in host.routes():
        if rt.dst_len == 0 or rt.oif in owned or rt.type in (RTN_BROADCAST, RTN_MULTICAST):
            continue
        cidr = rt.cidr
        if not is_link_local(cidr):
            routes.add(cidr)
    addresses: set[str] = set()
    foreign: set[str] = set()
    host_addrs = host.addrs()
    for a in host_addrs:
        lk = by_index.get(a.index)
        if not a.address or a.index in owned or on_loopback(lk) or is_link_local(a.cidr):
            continue
        addresses.add(a.cidr)
        if lk is not None and lk.kind == "bridge" and lk.alias.startswith(LABEL_PREFIX):
            foreign.add(str(ipaddress.ip_interface(a.cidr).network))
    observed.host_routes = tuple(sorted(routes))
    observed.host_addresses = tuple(sorted(addresses))
    observed.foreign_subnets = tuple(sorted(foreign))
    observed.foreign_links = tuple(sorted(lk.name for lk in links if lk.index not in owned))
    observed.networks = _composenet_networks(ctx, links, host_addrs)


def composenet_networks(ctx: Context) -> dict[str, dict[str, Any]]:
    """Every composenet bridge network of the host namespace, as in ObservedState.networks, each
    with ``endpoints`` too: every container attached (any project), for `composenet network`."""
    host = nl(ctx, "")
    return _composenet_networks(ctx, host.links(), host.addrs(), endpoints=True)


def macvlan_networks(ctx: Context, specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Standalone macvlan networks (``composenet network create --driver macvlan``): they have no
    kernel object of their own, so they are described by their specs, in the shape of
    ObservedState.networks plus ``driver``, ``parent``, ``mode`` and ``endpoints``. ``used`` and
    ``endpoints`` come from the macvlan links labelled ``composenet:<project>/<container>/<net>``
    in the namespaces other projects recorded (this project's own are observed as resources)."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in sorted(specs.items()):
        cidrs = []
        for c in spec.get("ipam", ()):
            if c.get("subnet") and c.get("gateway"):
                cidrs.append(f"{c['gateway']}/{ipaddress.ip_network(c['subnet'], strict=False).prefixlen}")
        opts = spec.get("options", {})
        out[name] = {"driver": "macvlan", "owner": "-" + name, "bridge": None, "cidrs": cidrs, "used": [],
                     "endpoints": [], "parent": str(opts.get("parent", "")), "mode": str(opts.get("macvlan_mode", "bridge"))}
    if not out:
        return out
    for q in list_projects(ctx.run_dir):
        if q == ctx.project:
            continue
        try:
            names = sorted(n for n in os.listdir(ProjectPaths(ctx.run_dir, q).netns_records) if not n.startswith("."))
        except OSError:
            continue
        for ns in names:
            if not netns.is_netns(netns.netns_path(ns)):
                continue
            try:
                n = nl(ctx, ns)
                links = [lk for lk in n.links() if lk.kind == "macvlan" and lk.alias.startswith(f"{LABEL_PREFIX}{q}/")]
                addrs = n.addrs() if links else []
            except OSError:
                continue
            for lk in links:
                net = out.get(lk.alias.rsplit("/", 1)[1])
                if net is None:
                    continue
                mine = [a.address for a in addrs if a.index == lk.index and a.address and not is_link_local(a.cidr)]
                net["used"] = sorted(set(net["used"]) | set(mine))
                net["endpoints"].append({"name": ns, "project": q, "ifname": lk.name, "mac": lk.mac,
                                         "ipv4": next((a for a in mine if ":" not in a), None),
                                         "ipv6": next((a for a in mine if ":" in a), None)})
    return out


def _composenet_networks(ctx: Context, links: list[Link], addrs: list[Addr],
                         endpoints: bool = False) -> dict[str, dict[str, Any]]:
    """Every composenet bridge network of the host namespace (ObservedState.networks): found by
    the ``composenet:<owner>/<network>`` label; ``used`` lists the addresses other projects'
    endpoints hold on it, read from their namespaces (the veth peer carries the same label).
    With ``endpoints``, also every attached container: ``{name, project, ifname, mac, ipv4,
    ipv6}`` (this reads every endpoint's namespace, so observe does not ask for it)."""
    out: dict[str, dict[str, Any]] = {}
    by_index: dict[int, dict[str, Any]] = {}
    for lk in links:
        if lk.kind != "bridge" or not lk.alias.startswith(LABEL_PREFIX):
            continue
        owner, _, name = lk.alias[len(LABEL_PREFIX):].partition("/")
        if not owner or not name or "/" in name:
            continue
        cidrs = sorted(a.cidr for a in addrs if a.index == lk.index and a.address and not is_link_local(a.cidr))
        out[name] = by_index[lk.index] = {"bridge": lk.name, "owner": owner, "cidrs": cidrs, "used": []}
        if endpoints:
            out[name]["endpoints"] = []
    for lk in links:
        net = by_index.get(lk.master)
        if net is None or lk.kind != "veth" or not lk.alias.startswith(LABEL_PREFIX):
            continue
        owner, _, rest = lk.alias[len(LABEL_PREFIX):].partition("/")
        container = rest.split("/")[0]
        if (owner == ctx.project and not endpoints) or not container or not netns.is_netns(netns.netns_path(container)):
            continue
        try:
            n = nl(ctx, container)
            peer = next((x for x in n.links() if x.alias == lk.alias), None)
            mine = [a.address for a in n.addrs() if peer and a.index == peer.index and not is_link_local(a.cidr)]
        except OSError:
            continue  # the namespace went away meanwhile
        if owner != ctx.project:
            net["used"] += mine
        if endpoints:
            net["endpoints"].append({
                "name": container, "project": owner, "ifname": peer.name if peer else "",
                "mac": peer.mac if peer else None,
                "ipv4": next((a for a in mine if ":" not in a), None), "ipv6": next((a for a in mine if ":" in a), None),
            })
    for net in out.values():
        net["used"] = sorted(set(net["used"]))
        if endpoints:
            net["endpoints"].sort(key=lambda e: e["name"])
    return out


# ---- handlers ---------------------------------------------------------------------------------


def _ignore_gone(e: OSError) -> bool:
    """Deleting what is already gone succeeds (rollback and `down` after a crash rely on it)."""
    return e.errno in (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)


def _setlink(n: NL, name: str, *parts: bytes, index: int = 0) -> None:
    """Change an existing link, by name (index 0 + IFLA_IFNAME) unless an index is given."""
    body = ifinfomsg(index=index) + (b"" if index else nla(IFLA_IFNAME, pack_str(name))) + b"".join(parts)
    n.request(RTM_NEWLINK, body)


def _dellink(n: NL, name: str) -> None:
    n.forget(name)
    try:
        n.request(RTM_DELLINK, ifinfomsg() + nla(IFLA_IFNAME, pack_str(name)))
    except NetlinkError as e:
        if not _ignore_gone(e):
            raise


# ---- batched deletes of host links ------------------------------------------------------------
#
# Every link deletion costs the kernel an RCU grace period or two (~20-40 ms), whatever else it
# deletes at the same time: `link del` of 60 veths one by one takes over a second, while one
# RTM_DELLINK by link group (IFLA_GROUP, `ip link del group N`) deletes them all in one batch.
# So under the executor, deleting a host veth or bridge moves it into the project's own link
# group (a cheap change) and the executor flushes the group once (KernelHandler.flush): at the
# end of the plan, or before rolling back. Only links marked by this run are in the group; if
# anything else is, the marked links are deleted one by one instead.

def doom_group(project: str) -> int:
    """The link group of a project's links marked for deletion: a fixed hash of its name, in a
    range (high bit set) where administrators' groups are unlikely."""
    return 0x80000000 | (zlib.crc32(f"composenet:{project}".encode()) & 0x7FFFFFFF)








def _link_and_netns(host: NL, link: str, ns: str, what: str) -> tuple[int, int]:
    """For a link created in namespace ``ns`` on host link ``link`` (its bridge, its parent): the
    index of ``link`` and an fd on ``ns`` (the caller closes it). KernelError ``what`` if either
    is missing."""
    try:
        return host.index(link), netns.open_netns(ns)
    except OSError as e:
        raise _fail(what, e) from e


def _brport(hairpin: bool, isolated: bool) -> bytes:
    data = nla(IFLA_BRPORT_MODE, bytes([int(hairpin)])) + nla(IFLA_BRPORT_ISOLATED, bytes([int(isolated)]))
    return nla(IFLA_LINKINFO, nla(IFLA_INFO_SLAVE_KIND, pack_str("bridge")) + nla(IFLA_INFO_SLAVE_DATA, data))


class KernelHandler:
    """Handler (kernel.context.Handler) for every kind that lives in rtnetlink or sysctl. One per
    run: it keeps the host links this run marked for deletion until ``flush``."""

    kinds: tuple[str, ...] = ("netns", "bridge", "vxlan", "veth", "macvlan", "address", "route", "sysctl")

    def __init__(self) -> None:
        # Host links marked for deletion (see _doom); None while no flush is pending.
        self.doomed: set[str] | None = None
        # The namespace ends (namespace, name) of the doomed veths: they hold their names until the flush.
        self.doomed_peers: set[tuple[str, str]] = set()
        self._ops: dict[str, tuple[Callable[..., None], Callable[..., None], Callable[..., None]]] = {
            "netns": (self._create_netns, self._update_netns, self._delete_netns),
            "bridge": (self._create_bridge, self._update_bridge, self._delete_bridge),
            "vxlan": (self._create_vxlan, self._update_vxlan, self._delete_vxlan),
            "veth": (self._create_veth, self._update_veth, self._delete_veth),
            "macvlan": (self._create_macvlan, self._update_macvlan, self._delete_macvlan),
            "address": (self._create_address, self._update_address, self._delete_address),
            "route": (self._create_route, self._update_route, self._delete_route),
            "sysctl": (self._create_sysctl, self._update_sysctl, self._delete_sysctl),
        }

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        try:
            observe_kernel(ctx, observed)
        except OSError as e:
            raise _fail("read kernel state", e) from e

    def flush(self, ctx: Context) -> None:
        """Delete the host links this run marked for deletion (see _doom), in one request."""
        doomed, self.doomed, self.doomed_peers = self.doomed or set(), None, set()
        if not doomed:
            return
        host = nl(ctx, "")
        group = doom_group(ctx.project)
        try:
            in_group = {lk.name for lk in host.links() if lk.group == group}
            if in_group and in_group <= doomed:
                host.request(RTM_DELLINK, ifinfomsg() + nla(IFLA_GROUP, pack_u32(group)))
            else:  # someone else's link in the group (or none of ours left): one by one
                for name in sorted(doomed & in_group):
                    _dellink(host, name)
        except OSError as e:
            raise _fail(f"delete links {', '.join(sorted(doomed))}", e) from e

    def create(self, ctx: Context, r: Resource) -> None:
        self._ops[r.kind][0](ctx, r)

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        self._ops[after.kind][1](ctx, before, after)

    def delete(self, ctx: Context, r: Resource) -> None:
        self._ops[r.kind][2](ctx, r)

    # -- batched deletes of host links ------------------------------------------------------
    def _delete_host_link(self, ctx: Context, name: str, what: str) -> None:
        """Delete host link ``name``: batched into the doom group under the executor, else at once."""
        try:
            host = nl(ctx, "")
            if not self._doom(ctx, host, name):
                _dellink(host, name)
        except OSError as e:
            raise _fail(what, e) from e

    def _doom(self, ctx: Context, host: NL, name: str) -> bool:
        """Under the executor: move host link ``name`` into the doom group and leave its deletion
        to ``flush`` (True). Outside it (direct handler calls), False: delete at once."""
        if self.doomed is None:
            if not ctx.defer(lambda: self.flush(ctx)):
                return False
            self.doomed = set()
        host.forget(name)
        try:
            _setlink(host, name, nla(IFLA_GROUP, pack_u32(doom_group(ctx.project))))
        except NetlinkError as e:
            if not _ignore_gone(e):
                raise
            return True
        self.doomed.add(name)
        return True

    def _unless_doomed(self, name: str, ctx: Context, peer: tuple[str, str] | None = None) -> None:
        """Before creating link ``name`` (and, for a veth, its end ``peer`` = (namespace, name)): if
        this run marked a link of that name for deletion (a replace, or a service moved to another
        network whose new veth reuses the old one's name in the namespace, e.g. eth0), delete the
        marked links now."""
        if name in (self.doomed or ()) or (peer is not None and peer in self.doomed_peers):
            self.flush(ctx)

    # -- netns ----------------------------------------------------------------------------
    def _create_netns(self, ctx: Context, r: Netns) -> None:
        had_record = os.path.exists(os.path.join(_records_dir(ctx), r.name))
        _write_record(ctx, r)  # first: a crash after this leaves a record `down` can follow
        try:
            sock = netns.create(r.name)
        except OSError as e:
            if not had_record:
                _remove_record(ctx, r.name)
            raise _fail(f"create netns {r.name}", e) from e
        ctx.drop_sockets(r.name)
        try:
            n = ctx.netlink[r.name] = NL(sock, r.name)
            n.request(RTM_NEWLINK, ifinfomsg(index=1, flags=IFF_UP, change=IFF_UP))  # lo is ifindex 1
        except OSError as e:
            ctx.drop_sockets(r.name)
            sock.close()
            netns.delete(r.name)
            _remove_record(ctx, r.name)
            raise _fail(f"create netns {r.name}: set lo up", e) from e

    def _update_netns(self, ctx: Context, before: Netns, after: Netns) -> None:
        _write_record(ctx, after)

    def _delete_netns(self, ctx: Context, r: Netns) -> None:
        ctx.drop_sockets(r.name)
        try:
            netns.delete(r.name)
        except OSError as e:
            raise _fail(f"delete netns {r.name}", e) from e
        _remove_record(ctx, r.name)

    # -- bridge ---------------------------------------------------------------------------
    def _create_bridge(self, ctx: Context, r: Bridge) -> None:
        self._unless_doomed(r.ifname, ctx)
        host = nl(ctx, "")
        data = nla(IFLA_INFO_DATA, nla(IFLA_BR_STP_STATE, pack_u32(0)))
        body = (ifinfomsg(flags=IFF_UP, change=IFF_UP) + nla(IFLA_IFNAME, pack_str(r.ifname)) + nla(IFLA_MTU, pack_u32(r.mtu))
                + (nla(IFLA_ADDRESS, pack_mac(r.mac)) if r.mac else b"")
                + nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, pack_str("bridge")) + data))
        try:
            host.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)
        except OSError as e:
            raise _fail(f"create bridge {r.ifname} ({r.network})", e) from e
        try:
            _setlink(host, r.ifname, nla(IFLA_IFALIAS, pack_str(r.label)))
        except OSError as e:
            _dellink(host, r.ifname)
            raise _fail(f"create bridge {r.ifname} ({r.network}): set label", e) from e

    def _update_bridge(self, ctx: Context, before: Bridge, after: Bridge) -> None:
        try:
            _setlink(nl(ctx, ""), after.ifname, nla(IFLA_MTU, pack_u32(after.mtu)), nla(IFLA_IFALIAS, pack_str(after.label)),
                     nla(IFLA_ADDRESS, pack_mac(after.mac)) if after.mac else b"")
        except OSError as e:
            raise _fail(f"update bridge {after.ifname} ({after.network})", e) from e

    def _delete_bridge(self, ctx: Context, r: Bridge) -> None:
        self._delete_host_link(ctx, r.ifname, f"delete bridge {r.ifname} ({r.network})")

    # -- vxlan ----------------------------------------------------------------------------
    def _create_vxlan(self, ctx: Context, r: Vxlan) -> None:
        what = f"create vxlan {r.ifname} ({r.network}, vni {r.vni})"
        self._unless_doomed(r.ifname, ctx)
        host = nl(ctx, "")
        try:
            master = host.index(r.bridge)
        except OSError as e:
            raise _fail(what, e) from e
        ip = ipr(ctx, "")
        kw: dict[str, Any] = {"vxlan_id": r.vni, "vxlan_port": r.port, "vxlan_learning": 1}
        if r.local:
            kw["vxlan_local"] = r.local
        try:
            ip.link("add", ifname=r.ifname, kind="vxlan", mtu=r.mtu, master=master, **kw)
        except Exception as e:  # noqa: BLE001 -- pyroute2 raises NetlinkError and others
            raise _fail(what, e) from e
        try:
            index = host.index(r.ifname)
            for peer in r.peers:
                ip.fdb("append", ifindex=index, lladdr=FLOOD_MAC, dst=peer)
            host.request(RTM_NEWLINK, ifinfomsg(index=index, flags=IFF_UP, change=IFF_UP)
                         + nla(IFLA_IFALIAS, pack_str(r.label)))
        except Exception as e:  # noqa: BLE001
            _dellink(host, r.ifname)
            raise _fail(what, e) from e

    def _update_vxlan(self, ctx: Context, before: Vxlan, after: Vxlan) -> None:
        host = nl(ctx, "")
        try:
            if before.bridge != after.bridge:
                _setlink(host, after.ifname, nla(IFLA_MASTER, pack_u32(host.index(after.bridge))))
            _setlink(host, after.ifname, nla(IFLA_MTU, pack_u32(after.mtu)), nla(IFLA_IFALIAS, pack_str(after.label)))
            index = host.index(after.ifname)
            ip = ipr(ctx, "")
            for peer in sorted(set(before.peers) - set(after.peers)):
                ip.fdb("del", ifindex=index, lladdr=FLOOD_MAC, dst=peer)
            for peer in sorted(set(after.peers) - set(before.peers)):
                ip.fdb("append", ifindex=index, lladdr=FLOOD_MAC, dst=peer)
        except Exception as e:  # noqa: BLE001
            raise _fail(f"update vxlan {after.ifname} ({after.network})", e) from e

    def _delete_vxlan(self, ctx: Context, r: Vxlan) -> None:
        self._delete_host_link(ctx, r.ifname, f"delete vxlan {r.ifname} ({r.network})")

    # -- veth -----------------------------------------------------------------------------
    def _create_veth(self, ctx: Context, r: Veth) -> None:
        what = f"create veth {r.ifname} ({r.ns} {r.peer})"
        self._unless_doomed(r.ifname, ctx, (r.ns, r.peer))
        host = nl(ctx, "")
        master, fd = _link_and_netns(host, r.bridge, r.ns, what)
        try:
            # The peer cannot be set up here (its open needs the other end, which does not exist
            # yet: ENOTCONN); it goes up with its label below.
            peer = (ifinfomsg() + nla(IFLA_IFNAME, pack_str(r.peer)) + nla(IFLA_MTU, pack_u32(r.mtu))
                    + (nla(IFLA_ADDRESS, pack_mac(r.mac)) if r.mac else b"") + nla(IFLA_NET_NS_FD, pack_u32(fd)))
            body = (ifinfomsg(flags=IFF_UP, change=IFF_UP) + nla(IFLA_IFNAME, pack_str(r.ifname)) + nla(IFLA_MTU, pack_u32(r.mtu))
                    + nla(IFLA_MASTER, pack_u32(master))
                    + nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, pack_str("veth"))
                          + nla(IFLA_INFO_DATA, nla(VETH_INFO_PEER, peer))))
            self._create_waiting(host, r.ifname, r.label, body, what)
        finally:
            os.close(fd)
        try:
            _setlink(host, r.ifname, nla(IFLA_IFALIAS, pack_str(r.label)), _brport(r.hairpin, r.isolated))
            n = nl(ctx, r.ns)
            n.request(RTM_NEWLINK, ifinfomsg(flags=IFF_UP, change=IFF_UP) + nla(IFLA_IFNAME, pack_str(r.peer))
                      + nla(IFLA_IFALIAS, pack_str(r.label)))
        except OSError as e:
            _dellink(host, r.ifname)
            nl(ctx, r.ns).forget(r.peer)
            raise _fail(what, e) from e

    @staticmethod
    def _create_waiting(host: NL, ifname: str, label: str, body: bytes, what: str) -> None:
        """Create a link; if its name is still held by our previous incarnation of it (a veth
        the kernel is deleting with its namespace), wait for that one to go, bounded."""
        deadline = time.monotonic() + DYING_LINK_TIMEOUT
        delay = 0.002
        while True:
            try:
                host.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)
                return
            except NetlinkError as e:
                if e.errno != errno.EEXIST or time.monotonic() >= deadline:
                    raise _fail(what, e) from e
                try:
                    old = host.link(ifname)
                except OSError:
                    old = None
                if old is not None and old.alias != label:
                    raise _fail(what, e) from e  # someone else's link: no point waiting
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _update_veth(self, ctx: Context, before: Veth, after: Veth) -> None:
        if (before.ns, before.peer) != (after.ns, after.peer):
            self._delete_veth(ctx, before)
            self._create_veth(ctx, after)
            return
        host = nl(ctx, "")
        try:
            if before.bridge != after.bridge:
                _setlink(host, after.ifname, nla(IFLA_MASTER, pack_u32(host.index(after.bridge))))
            _setlink(host, after.ifname, nla(IFLA_MTU, pack_u32(after.mtu)), nla(IFLA_IFALIAS, pack_str(after.label)),
                     _brport(after.hairpin, after.isolated))
            _setlink(nl(ctx, after.ns), after.peer, nla(IFLA_MTU, pack_u32(after.mtu)),
                     nla(IFLA_IFALIAS, pack_str(after.label)),
                     nla(IFLA_ADDRESS, pack_mac(after.mac)) if after.mac else b"")
        except OSError as e:
            raise _fail(f"update veth {after.ifname} ({after.ns} {after.peer})", e) from e

    def _delete_veth(self, ctx: Context, r: Veth) -> None:
        host = nl(ctx, "")
        try:
            if self._doom(ctx, host, r.ifname):
                self.doomed_peers.add((r.ns, r.peer))
            else:
                _dellink(host, r.ifname)
        except OSError as e:
            raise _fail(f"delete veth {r.ifname} ({r.ns} {r.peer})", e) from e
        s = ctx.netlink.get(r.ns)
        if s is not None:
            s.forget(r.peer)

    # -- macvlan --------------------------------------------------------------------------
    def _create_macvlan(self, ctx: Context, r: Macvlan) -> None:
        what = f"create macvlan {r.ns} {r.ifname} (parent {r.parent})"
        if r.mode not in MACVLAN_MODES:
            raise KernelError(f"{what}: unknown macvlan mode {r.mode!r} (one of {', '.join(MACVLAN_MODES)})")
        host = nl(ctx, "")
        parent, fd = _link_and_netns(host, r.parent, r.ns, what)
        # Created directly inside the namespace (IFLA_NET_NS_FD): its name is checked there, so
        # it may be eth0 even though the host has an eth0 too.
        body = (ifinfomsg(flags=IFF_UP, change=IFF_UP) + nla(IFLA_IFNAME, pack_str(r.ifname)) + nla(IFLA_MTU, pack_u32(r.mtu))
                + (nla(IFLA_ADDRESS, pack_mac(r.mac)) if r.mac else b"") + nla(IFLA_LINK, pack_u32(parent))
                + nla(IFLA_NET_NS_FD, pack_u32(fd))
                + nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, pack_str("macvlan"))
                      + nla(IFLA_INFO_DATA, nla(IFLA_MACVLAN_MODE, pack_u32(MACVLAN_MODES[r.mode])))))
        try:
            host.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)
        except OSError as e:
            raise _fail(what, e) from e
        finally:
            os.close(fd)
        n = nl(ctx, r.ns)
        try:
            _setlink(n, r.ifname, nla(IFLA_IFALIAS, pack_str(r.label)))
        except OSError as e:
            _dellink(n, r.ifname)
            raise _fail(what, e) from e

    def _update_macvlan(self, ctx: Context, before: Macvlan, after: Macvlan) -> None:
        if before.parent != after.parent or after.mode not in MACVLAN_MODES:
            self._delete_macvlan(ctx, before)
            self._create_macvlan(ctx, after)
            return
        try:
            info = nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, pack_str("macvlan"))
                       + nla(IFLA_INFO_DATA, nla(IFLA_MACVLAN_MODE, pack_u32(MACVLAN_MODES[after.mode]))))
            _setlink(nl(ctx, after.ns), after.ifname, nla(IFLA_MTU, pack_u32(after.mtu)),
                     nla(IFLA_IFALIAS, pack_str(after.label)),
                     nla(IFLA_ADDRESS, pack_mac(after.mac)) if after.mac else b"", info)
        except OSError as e:
            raise _fail(f"update macvlan {after.ns} {after.ifname}", e) from e

    def _delete_macvlan(self, ctx: Context, r: Macvlan) -> None:
        if not netns.is_netns(netns.netns_path(r.ns)):
            return  # gone with its namespace
        try:
            _dellink(nl(ctx, r.ns), r.ifname)
        except OSError as e:
            raise _fail(f"delete macvlan {r.ns} {r.ifname}", e) from e

    # -- address --------------------------------------------------------------------------
    @staticmethod
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

    def _create_address(self, ctx: Context, r: Address) -> None:
        where = f"{r.ns} {r.ifname}" if r.ns else r.ifname
        try:
            n = nl(ctx, r.ns)
            n.request(RTM_NEWADDR, self._addr_body(n, r, True), NLM_F_CREATE | NLM_F_EXCL)
        except OSError as e:
            raise _fail(f"add address {r.cidr} to {where}", e) from e

    def _update_address(self, ctx: Context, before: Address, after: Address) -> None:
        self._delete_address(ctx, before)
        self._create_address(ctx, after)

    def _delete_address(self, ctx: Context, r: Address) -> None:
        if r.ns and not netns.is_netns(netns.netns_path(r.ns)):
            return
        where = f"{r.ns} {r.ifname}" if r.ns else r.ifname
        try:
            n = nl(ctx, r.ns)
            n.request(RTM_DELADDR, self._addr_body(n, r, False))
        except OSError as e:
            if not _ignore_gone(e):
                raise _fail(f"delete address {r.cidr} from {where}", e) from e

    # -- route ----------------------------------------------------------------------------
    @staticmethod
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

    def _create_route(self, ctx: Context, r: Route, flags: int = NLM_F_CREATE | NLM_F_EXCL) -> None:
        try:
            n = nl(ctx, r.ns)
            n.request(RTM_NEWROUTE, self._route_body(n, r), flags)
        except OSError as e:
            raise _fail(f"add route {r.dst} via {r.gateway} dev {r.ifname}" + (f" in {r.ns}" if r.ns else ""), e) from e

    def _update_route(self, ctx: Context, before: Route, after: Route) -> None:
        if before.metric == after.metric:
            self._create_route(ctx, after, NLM_F_CREATE | NLM_F_REPLACE)
            return
        # The metric is part of the kernel's route key: add the new one, then drop the old.
        self._create_route(ctx, after)
        try:
            self._delete_route(ctx, before)
        except KernelError:
            self._delete_route(ctx, after)
            raise

    def _delete_route(self, ctx: Context, r: Route) -> None:
        if r.ns and not netns.is_netns(netns.netns_path(r.ns)):
            return
        try:
            n = nl(ctx, r.ns)
            n.request(RTM_DELROUTE, self._route_body(n, r))
        except OSError as e:
            if not _ignore_gone(e):
                raise _fail(f"delete route {r.dst}" + (f" in {r.ns}" if r.ns else ""), e) from e

    # -- sysctl ---------------------------------------------------------------------------
    def _create_sysctl(self, ctx: Context, r: Sysctl) -> None:
        path = _sysctl_path(r.name, r.ifname)
        try:
            # /proc/sys/net follows the namespace of the thread that opens the file.
            with netns.entered(r.ns):
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, r.value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise _fail(f"set sysctl {r.name} = {r.value}" + (f" in {r.ns}" if r.ns else ""), e) from e

    def _update_sysctl(self, ctx: Context, before: Sysctl, after: Sysctl) -> None:
        self._create_sysctl(ctx, after)

    def _delete_sysctl(self, ctx: Context, r: Sysctl) -> None:
        """Sysctls are ensured, never reverted (other software may rely on them)."""

