"""The link kinds of the kernel layer and the handler for every rtnetlink kind: ``KernelHandler``
dispatches netns, bridge, vxlan, veth, macvlan, address, route and sysctl to their operations,
reads them back (kernel.readback) and batches the deletes of host links (the doom group, below).

Owns: what a bridge, vxlan, veth and macvlan are in the kernel (see core.resources): how each is
created, changed and deleted, with its label (ifalias) set in the same call. Addresses and
routes are kernel.addresses', sysctls kernel.sysctls', namespaces and their records
kernel.namespaces'; the run's sockets (``nl``, ``ipr``, importable from here too) are
kernel.rtnl's.

Must not: touch nftables, files under /etc/netns or processes (kernel.nft, kernel.files,
kernel.procs do), fork or run `ip`, or change anything that does not carry this project's label.
Every create either completes or undoes what it did in that call and raises KernelError naming
the object and the kernel's message. vxlan links and their FDB go through pyroute2; everything
else is a raw rtnetlink request (composenet.linux.netlink says why).
"""

from __future__ import annotations

import errno
import os
import time
import zlib
from collections.abc import Callable
from typing import Any

from composenet.core.plan import Plan
from composenet.core.resources import Bridge, Macvlan, Resource, Veth, Vxlan
from composenet.core.state import ObservedState
from composenet.errors import KernelError
from composenet.kernel import addresses, intents, namespaces, readback, sysctls
from composenet.kernel.context import Context, HandlerBase
from composenet.kernel.rtnl import DYING_LINK_TIMEOUT, dellink, fail, ignore_gone, ipr, nl, setlink
from composenet.linux import failpoint, netns
from composenet.linux.netlink import (
    FLOOD_MAC,
    IFF_UP,
    IFLA_ADDRESS,
    IFLA_BR_STP_STATE,
    IFLA_BRPORT_ISOLATED,
    IFLA_BRPORT_LEARNING,
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
    MACVLAN_MODES,
    NL,
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_DELLINK,
    RTM_NEWLINK,
    VETH_INFO_PEER,
    NetlinkError,
    ifinfomsg,
    nla,
    pack_mac,
    pack_str,
    pack_u32,
)
from composenet.linux.netns import check_mount_namespace

# nl, ipr and check_mount_namespace are re-exported: callers that drive a KernelHandler use them.
__all__ = ["KernelHandler", "check_mount_namespace", "doom_group", "ipr", "nl"]


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
        raise fail(what, e) from e


def _brport(hairpin: bool, isolated: bool) -> bytes:
    data = nla(IFLA_BRPORT_MODE, bytes([int(hairpin)])) + nla(IFLA_BRPORT_ISOLATED, bytes([int(isolated)]))
    return nla(IFLA_LINKINFO, nla(IFLA_INFO_SLAVE_KIND, pack_str("bridge")) + nla(IFLA_INFO_SLAVE_DATA, data))


def _vxlan_port(r: Vxlan) -> tuple[bytes, ...]:
    """A cluster VXLAN device's bridge port learns nothing: the agent's static entries say where
    each remote MAC is. Learning there would let a frame from another host (or one still in
    flight from a departed container) move a MAC, even a local container's, onto the VXLAN
    port for the ageing time. The static-peer overlay learns, as before."""
    if r.learning:
        return ()
    data = nla(IFLA_BRPORT_LEARNING, bytes([0]))
    return (nla(IFLA_LINKINFO, nla(IFLA_INFO_SLAVE_KIND, pack_str("bridge")) + nla(IFLA_INFO_SLAVE_DATA, data)),)


class KernelHandler(HandlerBase):
    """Handler (kernel.context.Handler) for every kind that lives in rtnetlink or sysctl. One per
    run: it keeps the host links this run marked for deletion until ``flush``."""

    kinds: tuple[str, ...] = ("netns", "bridge", "vxlan", "veth", "macvlan", "address", "route", "sysctl")

    def __init__(self) -> None:
        # Host links marked for deletion (see _doom); None while no flush is pending.
        self.doomed: set[str] | None = None
        # The namespace ends (namespace, name) of the doomed veths: they hold their names until the flush.
        self.doomed_peers: set[tuple[str, str]] = set()
        self._ops: dict[str, tuple[Callable[..., None], Callable[..., None], Callable[..., None]]] = {
            "netns": (namespaces.create_netns, namespaces.update_netns, namespaces.delete_netns),
            "bridge": (self._create_bridge, self._update_bridge, self._delete_bridge),
            "vxlan": (self._create_vxlan, self._update_vxlan, self._delete_vxlan),
            "veth": (self._create_veth, self._update_veth, self._delete_veth),
            "macvlan": (self._create_macvlan, self._update_macvlan, self._delete_macvlan),
            "address": (addresses.create_address, addresses.update_address, addresses.delete_address),
            "route": (addresses.create_route, addresses.update_route, addresses.delete_route),
            "sysctl": (sysctls.create_sysctl, sysctls.update_sysctl, sysctls.delete_sysctl),
        }

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        try:
            readback.observe_kernel(ctx, observed)
        except OSError as e:
            raise fail("read kernel state", e) from e

    def check(self, ctx: Context, plan: Plan) -> None:
        """Namespaces made in a private mount namespace would vanish when composenet exits."""
        if plan.steps:
            check_mount_namespace()

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
                try:
                    host.request(RTM_DELLINK, ifinfomsg() + nla(IFLA_GROUP, pack_u32(group)))
                    in_group = set()
                except NetlinkError as e:
                    # A veth whose namespace is being deleted can go between the listing and the
                    # request (ENODEV): delete what is left one by one (gone is fine).
                    if e.errno != errno.ENODEV:
                        raise
            for name in sorted(doomed & in_group):  # someone else's link in the group: one by one
                dellink(host, name)
        except OSError as e:
            raise fail(f"delete links {', '.join(sorted(doomed))}", e) from e

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
                dellink(host, name)
        except OSError as e:
            raise fail(what, e) from e

    def _doom(self, ctx: Context, host: NL, name: str) -> bool:
        """Under the executor: move host link ``name`` into the doom group and leave its deletion
        to ``flush`` (True). Outside it (direct handler calls), False: delete at once."""
        if self.doomed is None:
            if not ctx.defer(lambda: self.flush(ctx)):
                return False
            self.doomed = set()
        host.forget(name)
        try:
            setlink(host, name, nla(IFLA_GROUP, pack_u32(doom_group(ctx.project))))
        except NetlinkError as e:
            if not ignore_gone(e):
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

    # -- bridge ---------------------------------------------------------------------------
    def _create_bridge(self, ctx: Context, r: Bridge) -> None:
        self._unless_doomed(r.ifname, ctx)
        host = nl(ctx, "")
        intent = intents.begin(ctx, "bridge", "", r.ifname, r.label)
        data = nla(IFLA_INFO_DATA, nla(IFLA_BR_STP_STATE, pack_u32(0)))
        body = (ifinfomsg(index=intent.index, flags=IFF_UP, change=IFF_UP) + nla(IFLA_IFNAME, pack_str(r.ifname))
                + nla(IFLA_MTU, pack_u32(r.mtu)) + (nla(IFLA_ADDRESS, pack_mac(r.mac)) if r.mac else b"")
                + nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, pack_str("bridge")) + data))
        try:
            host.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)
        except OSError as e:
            intents.done(ctx, intent)
            what = f"create bridge {r.ifname} ({r.network})"
            raise (intents.exists_error(host, r.ifname, what, e) or fail(what, e)) from e
        failpoint.hit(f"create bridge {r.ifname}")
        try:
            setlink(host, r.ifname, nla(IFLA_IFALIAS, pack_str(r.label)))
        except OSError as e:
            dellink(host, r.ifname)
            intents.done(ctx, intent)
            raise fail(f"create bridge {r.ifname} ({r.network}): set label", e) from e
        intents.done(ctx, intent)

    def _update_bridge(self, ctx: Context, before: Bridge, after: Bridge) -> None:
        try:
            setlink(nl(ctx, ""), after.ifname, nla(IFLA_MTU, pack_u32(after.mtu)), nla(IFLA_IFALIAS, pack_str(after.label)),
                    nla(IFLA_ADDRESS, pack_mac(after.mac)) if after.mac else b"")
        except OSError as e:
            raise fail(f"update bridge {after.ifname} ({after.network})", e) from e

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
            raise fail(what, e) from e
        ip = ipr(ctx, "")
        kw: dict[str, Any] = {"vxlan_id": r.vni, "vxlan_port": r.port, "vxlan_learning": int(r.learning),
                              "vxlan_proxy": int(r.proxy)}
        if r.local:
            kw["vxlan_local"] = r.local
        intent = intents.begin(ctx, "vxlan", "", r.ifname, r.label)
        try:  # up from the start: an adopted one (see kernel.intents) needs only its peers and label
            ip.link("add", ifname=r.ifname, kind="vxlan", mtu=r.mtu, master=master, index=intent.index, state="up", **kw)
        except Exception as e:  # noqa: BLE001 -- pyroute2 raises NetlinkError and others
            intents.done(ctx, intent)
            raise fail(what, e) from e
        failpoint.hit(f"create vxlan {r.ifname}")
        try:
            index = host.index(r.ifname)
            for peer in r.peers:
                ip.fdb("append", ifindex=index, lladdr=FLOOD_MAC, dst=peer)
            host.request(RTM_NEWLINK, ifinfomsg(index=index, flags=IFF_UP, change=IFF_UP)
                         + nla(IFLA_IFALIAS, pack_str(r.label)) + b"".join(_vxlan_port(r)))
        except Exception as e:  # noqa: BLE001
            dellink(host, r.ifname)
            intents.done(ctx, intent)
            raise fail(what, e) from e
        intents.done(ctx, intent)

    def _update_vxlan(self, ctx: Context, before: Vxlan, after: Vxlan) -> None:
        host = nl(ctx, "")
        try:
            if before.bridge != after.bridge:
                setlink(host, after.ifname, nla(IFLA_MASTER, pack_u32(host.index(after.bridge))))
            setlink(host, after.ifname, nla(IFLA_MTU, pack_u32(after.mtu)), nla(IFLA_IFALIAS, pack_str(after.label)),
                    *_vxlan_port(after))
            index = host.index(after.ifname)
            ip = ipr(ctx, "")
            for peer in sorted(set(before.peers) - set(after.peers)):
                ip.fdb("del", ifindex=index, lladdr=FLOOD_MAC, dst=peer)
            for peer in sorted(set(after.peers) - set(before.peers)):
                ip.fdb("append", ifindex=index, lladdr=FLOOD_MAC, dst=peer)
        except Exception as e:  # noqa: BLE001
            raise fail(f"update vxlan {after.ifname} ({after.network})", e) from e

    def _delete_vxlan(self, ctx: Context, r: Vxlan) -> None:
        self._delete_host_link(ctx, r.ifname, f"delete vxlan {r.ifname} ({r.network})")

    # -- veth -----------------------------------------------------------------------------
    def _create_veth(self, ctx: Context, r: Veth) -> None:
        what = f"create veth {r.ifname} ({r.ns} {r.peer})"
        self._unless_doomed(r.ifname, ctx, (r.ns, r.peer))
        host = nl(ctx, "")
        master, fd = _link_and_netns(host, r.bridge, r.ns, what)
        intent = intents.begin(ctx, "veth", "", r.ifname, r.label, r.ns, r.peer)
        try:
            # The peer cannot be set up here (its open needs the other end, which does not exist
            # yet: ENOTCONN); it goes up with its label below.
            peer = (ifinfomsg(index=intent.peer_index) + nla(IFLA_IFNAME, pack_str(r.peer)) + nla(IFLA_MTU, pack_u32(r.mtu))
                    + (nla(IFLA_ADDRESS, pack_mac(r.mac)) if r.mac else b"") + nla(IFLA_NET_NS_FD, pack_u32(fd)))
            body = (ifinfomsg(index=intent.index, flags=IFF_UP, change=IFF_UP) + nla(IFLA_IFNAME, pack_str(r.ifname))
                    + nla(IFLA_MTU, pack_u32(r.mtu)) + nla(IFLA_MASTER, pack_u32(master))
                    + nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, pack_str("veth"))
                          + nla(IFLA_INFO_DATA, nla(VETH_INFO_PEER, peer))))
            self._create_waiting(host, r.ifname, r.label, body, what, nl(ctx, r.ns), r.peer)
        except BaseException:
            intents.done(ctx, intent)
            raise
        finally:
            os.close(fd)
        failpoint.hit(f"create veth {r.ifname}")
        try:
            setlink(host, r.ifname, nla(IFLA_IFALIAS, pack_str(r.label)), _brport(r.hairpin, r.isolated))
            failpoint.hit(f"label veth {r.ifname}")
            n = nl(ctx, r.ns)
            n.request(RTM_NEWLINK, ifinfomsg(flags=IFF_UP, change=IFF_UP) + nla(IFLA_IFNAME, pack_str(r.peer))
                      + nla(IFLA_IFALIAS, pack_str(r.label)))
        except OSError as e:
            dellink(host, r.ifname)
            nl(ctx, r.ns).forget(r.peer)
            intents.done(ctx, intent)
            raise fail(what, e) from e
        intents.done(ctx, intent)

    @staticmethod
    def _create_waiting(host: NL, ifname: str, label: str, body: bytes, what: str, peer: NL | None = None,
                        peer_name: str = "") -> None:
        """Create a link. On EEXIST, wait (bounded) only while a host link of that name with our
        label is there: our previous incarnation of it, which the kernel is still deleting
        with its namespace. Any other EEXIST fails at once, naming what holds the name (a link
        of someone else's, or ``peer_name`` taken inside the namespace of ``peer``)."""
        deadline = time.monotonic() + DYING_LINK_TIMEOUT
        delay = 0.002
        gone_once = False  # the dying link vanished between the EEXIST and the look-up: try once more
        while True:
            try:
                host.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)
                return
            except NetlinkError as e:
                if e.errno != errno.EEXIST:
                    raise fail(what, e) from e
                try:
                    old = host.link(ifname)
                except OSError:
                    old = None
                if old is None and not gone_once:
                    gone_once = True
                    continue
                if old is None or old.alias != label:
                    raise KernelHandler._name_taken(host, ifname, what, e, peer, peer_name) from e
                if time.monotonic() >= deadline:
                    raise KernelError(f"{what}: host link {ifname} (this project's, being deleted by the kernel) "
                                      f"was still there after {DYING_LINK_TIMEOUT:g} s",
                                      hint="run `composenet up` again once it is gone "
                                           f"(`ip link show {ifname}`)") from e
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    @staticmethod
    def _name_taken(host: NL, ifname: str, what: str, e: NetlinkError, peer: NL | None,
                    peer_name: str) -> KernelError:
        """The error of an EEXIST that no wait can cure."""
        own = intents.exists_error(host, ifname, what, e)
        if own is not None:
            return own
        if peer is not None and peer_name:
            try:
                holder = peer.link(peer_name)
            except OSError:
                holder = None
            if holder is not None:
                where = f"namespace {peer.ns}" if peer.ns else "this namespace"
                return KernelError(f"{what}: the name {peer_name} is already taken in {where} "
                                   f"(by {holder.alias or 'a link without a label'})",
                                   hint="composenet frees a name before it reuses it; "
                                        "run `composenet plan` to see what it would change")
        return fail(what, e)

    def _update_veth(self, ctx: Context, before: Veth, after: Veth) -> None:
        if (before.ns, before.peer) != (after.ns, after.peer):
            self._delete_veth(ctx, before)
            self._create_veth(ctx, after)
            return
        host = nl(ctx, "")
        try:
            if before.bridge != after.bridge:
                setlink(host, after.ifname, nla(IFLA_MASTER, pack_u32(host.index(after.bridge))))
            setlink(host, after.ifname, nla(IFLA_MTU, pack_u32(after.mtu)), nla(IFLA_IFALIAS, pack_str(after.label)),
                    _brport(after.hairpin, after.isolated))
            setlink(nl(ctx, after.ns), after.peer, nla(IFLA_MTU, pack_u32(after.mtu)),
                    nla(IFLA_IFALIAS, pack_str(after.label)),
                    nla(IFLA_ADDRESS, pack_mac(after.mac)) if after.mac else b"")
        except OSError as e:
            raise fail(f"update veth {after.ifname} ({after.ns} {after.peer})", e) from e

    def _delete_veth(self, ctx: Context, r: Veth) -> None:
        host = nl(ctx, "")
        try:
            if self._doom(ctx, host, r.ifname):
                self.doomed_peers.add((r.ns, r.peer))
            else:
                dellink(host, r.ifname)
        except OSError as e:
            raise fail(f"delete veth {r.ifname} ({r.ns} {r.peer})", e) from e
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
        intent = intents.begin(ctx, "macvlan", r.ns, r.ifname, r.label)
        # Created directly inside the namespace (IFLA_NET_NS_FD): its name is checked there, so
        # it may be eth0 even though the host has an eth0 too.
        body = (ifinfomsg(index=intent.index, flags=IFF_UP, change=IFF_UP) + nla(IFLA_IFNAME, pack_str(r.ifname))
                + nla(IFLA_MTU, pack_u32(r.mtu))
                + (nla(IFLA_ADDRESS, pack_mac(r.mac)) if r.mac else b"") + nla(IFLA_LINK, pack_u32(parent))
                + nla(IFLA_NET_NS_FD, pack_u32(fd))
                + nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, pack_str("macvlan"))
                      + nla(IFLA_INFO_DATA, nla(IFLA_MACVLAN_MODE, pack_u32(MACVLAN_MODES[r.mode])))))
        intents.create_in_netns(ctx, intent, body, fd, what, f"create macvlan {r.ns} {r.ifname}")

    def _update_macvlan(self, ctx: Context, before: Macvlan, after: Macvlan) -> None:
        if before.parent != after.parent or after.mode not in MACVLAN_MODES:
            self._delete_macvlan(ctx, before)
            self._create_macvlan(ctx, after)
            return
        try:
            info = nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, pack_str("macvlan"))
                       + nla(IFLA_INFO_DATA, nla(IFLA_MACVLAN_MODE, pack_u32(MACVLAN_MODES[after.mode]))))
            setlink(nl(ctx, after.ns), after.ifname, nla(IFLA_MTU, pack_u32(after.mtu)),
                    nla(IFLA_IFALIAS, pack_str(after.label)),
                    nla(IFLA_ADDRESS, pack_mac(after.mac)) if after.mac else b"", info)
        except OSError as e:
            raise fail(f"update macvlan {after.ns} {after.ifname}", e) from e

    def _delete_macvlan(self, ctx: Context, r: Macvlan) -> None:
        if not netns.is_netns(netns.netns_path(r.ns)):
            return  # gone with its namespace
        try:
            dellink(nl(ctx, r.ns), r.ifname)
        except OSError as e:
            raise fail(f"delete macvlan {r.ns} {r.ifname}", e) from e
