"""Who may ask: the daemon is not an open resolver.

Owns: the rule for a query whose source is no container of the config (a "stranger"): it is
answered, as a member of the listener's network, only when the source is on the subnets of
the interface holding the listener's address or is an address of this host (loopback
included); anything else (say, routed in from outside) gets no answer at all, over UDP or TCP.
The interface table comes from one netlink dump (:func:`interface_addresses`) at start, on
reload and after a late bind; decisions are memoised per (source, listener), bounded.
The project's nft table drops such packets before they arrive; this is the daemon's own guard.

Must not: answer or drop anything itself (the asker paths in ``udp.py`` and ``tcp.py`` do,
with the view returned here), nor decide what a name means (``zone.py``).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

from composenet.dns.answer import View
from composenet.dns.state import State, log

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
STRANGERS_MEMO = 4096  # decisions remembered; the memo is cleared when full


def interface_addresses() -> list[tuple[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
    """(interface index, address/prefix) of every address in this network namespace, from one
    netlink RTM_GETADDR dump (no subprocess, no third-party import: this runs at start-up and
    on every reload). Raises OSError when netlink is unavailable."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as s:
        s.settimeout(2.0)
        s.bind((0, 0))
        s.send(struct.pack("=IHHII", 28, RTM_GETADDR, 0x301, 1, 0) + struct.pack("=BBBBI", 0, 0, 0, 0, 0)
               + bytes(4))
        out: list[tuple[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = []
        for _ in range(10000):  # bounded: a dump ends with NLMSG_DONE
            data = s.recv(1 << 16)
            i = 0
            while i + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, i)
                if length < 16:
                    return out
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    raise OSError(errno.EIO, "netlink error on RTM_GETADDR")
                if kind == RTM_NEWADDR and length >= 24:
                    found = _address(data, i, length)
                    if found is not None:
                        out.append(found)
                i += (length + 3) & ~3
        return out


def _address(data: bytes, i: int, length: int) -> tuple[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface] | None:
    """The (interface index, address/prefix) of the RTM_NEWADDR message at ``data[i:i+length]``."""
    family, prefix, _flags, _scope, index = struct.unpack_from("=BBBBI", data, i + 16)
    attrs: dict[int, bytes] = {}
    j = i + 24
    while j + 4 <= i + length:
        alen, atype = struct.unpack_from("=HH", data, j)
        if alen < 4:
            break
        attrs[atype] = data[j + 4 : j + alen]
        j += (alen + 3) & ~3
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    text = socket.inet_ntop(family, raw)
    return index, ipaddress.ip_interface(f"{text}/{prefix}")


class Access(State):
    """The stranger rule (see the module doc); state: ``local_addrs``, ``member_nets``,
    ``_strangers``."""

    def _scan_interfaces(self) -> None:
        """Refresh ``local_addrs`` and ``member_nets`` (start, reload, a late bind)."""
        self._strangers = {}
        try:
            found = interface_addresses()
        except OSError as e:
            # Without the interface table, only the host's listener addresses and loopback
            # are known to be local: every other stranger gets nothing (never open).
            log(f"cannot read the interface addresses ({e}); answering only project containers")
            found = []
        local = {a.ip.compressed for _, a in found}
        local.update(lst.address for lst in self.zone.listeners)
        self.local_addrs = frozenset(local)
        nets: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = {}
        for lst in self.zone.listeners:
            indexes = {index for index, a in found if a.ip.compressed == lst.address}
            nets[lst.address] = tuple(a.network for index, a in found if index in indexes)
        self.member_nets = nets

    def _stranger(self, source: str, listener: str) -> View | None:
        """The view of an asker that is no container of the zone, or None: answer nothing."""
        key = (source, listener)
        try:
            return self._strangers[key]
        except KeyError:
            pass
        view = self.zone.listener_views.get(listener)
        if view is not None and source not in self.local_addrs:
            try:
                addr = ipaddress.ip_address(source.partition("%")[0])
            except ValueError:
                addr = None
            if addr is None or not (addr.is_loopback or any(
                    addr.version == net.version and addr in net for net in self.member_nets.get(listener, ()))):
                view = None
        if len(self._strangers) >= STRANGERS_MEMO:  # bounded whatever sources a flood uses
            self._strangers.clear()
        self._strangers[key] = view
        if view is None:
            self.stats["stranger"] += 1
            if self.stats["stranger"] <= 5:
                log(f"ignoring queries from {source} to {listener}: not on the project's networks")
        return view
