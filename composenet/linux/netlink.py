"""rtnetlink without a library: message encoding, one socket per namespace, and the parsed
link, address and route records composenet reads back.

Owns: the constants of linux/netlink.h, rtnetlink.h and if_link.h that composenet uses, packing
attributes, one request/ack exchange and dumps (``NL``), and the small TLV reader that parses
dumps into ``Link``, ``Addr`` and ``Rt``. Must not: know about projects, labels or resources
(the handlers of composenet.kernel give the messages their meaning), or leave a request unanswered.

Why raw netlink for the hot path: a pyroute2 IPRoute call costs ~0.3 ms of asyncio and encoding
on top of the kernel's work, and `up` has ~3 ms per container for everything; a request here is
a struct-packed message and one recv of the ack.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

# ---- netlink constants (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h) ---------------
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1
IFF_UP, IFF_LOOPBACK = 0x1, 0x8
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_GROUP, IFLA_NET_NS_FD, IFLA_LINK_NETNSID = 18, 20, 27, 28, 37
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
VETH_INFO_PEER = 1
IFLA_BR_STP_STATE = 5
IFLA_BRPORT_MODE, IFLA_BRPORT_LEARNING, IFLA_BRPORT_ISOLATED = 4, 8, 33  # MODE = hairpin
IFLA_MACVLAN_MODE = 1
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_PORT = 1, 4, 15
FLOOD_MAC = "00:00:00:00:00:00"  # the FDB entry a VXLAN link floods unknown destinations through
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
RT_TABLE_MAIN = 254
RTN_UNICAST, RTN_BROADCAST, RTN_MULTICAST = 1, 3, 5
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253


class NetlinkError(OSError):
    """An rtnetlink request failed: errno plus the kernel's extended-ack message, if any."""

    def __init__(self, code: int, ext: str = ""):
        super().__init__(code, os.strerror(code))
        self.ext = ext

    def describe(self) -> str:
        name = errno.errorcode.get(self.errno or 0, str(self.errno))
        return f"{self.strerror} ({name})" + (f": {self.ext}" if self.ext else "")



# ---- message encoding -----------------------------------------------------------------------


def nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    n = 4 + len(payload)
    return struct.pack("HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def pack_str(s: str) -> bytes:
    return s.encode() + b"\0"


def pack_u32(v: int) -> bytes:
    return struct.pack("I", v)


def pack_mac(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def ifinfomsg(index: int = 0, flags: int = 0, change: int = 0, family: int = 0) -> bytes:
    return struct.pack("BxHiII", family, 0, index, flags, change)


_HH = struct.Struct("HH").unpack_from


def attrs(buf: bytes, off: int = 0, end: int | None = None) -> dict[int, bytes]:
    """Attributes from ``off`` to ``end``, by type (nested/byte-order flags stripped)."""
    out: dict[int, bytes] = {}
    if end is None:
        end = len(buf)
    unpack = _HH  # hot: ~40 attributes per link in every dump observe reads
    while off + 4 <= end:
        n, kind = unpack(buf, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = buf[off + 4 : off + n]
        off += (n + 3) & ~3
    return out


def read_cstr(b: bytes | None) -> str:
    return b.split(b"\0", 1)[0].decode(errors="replace") if b else ""


def fmt_mac(b: bytes | None) -> str | None:
    return ":".join(f"{x:02x}" for x in b) if b else None


# ---- the socket ---------------------------------------------------------------------------


class NL:
    """One rtnetlink socket in one namespace, with a name -> ifindex cache for that namespace."""

    def __init__(self, sock: socket.socket, ns: str):
        self.sock = sock
        self.ns = ns
        self.seq = int(time.monotonic() * 1000) & 0xFFFFFF
        self.ifindex: dict[str, int] = {}
        # While a snapshot is open (``snapshot``): the parsed link and address dumps, by type.
        self._memo: dict[int, list] | None = None
        # Acks carry only the request's header (CAP_ACK) and the kernel's error text (EXT_ACK).
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.settimeout(30)  # the kernel always answers; never hang forever if it does not
        sock.bind((0, 0))

    def close(self) -> None:
        self.sock.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Within it, ``links()`` and ``addrs()`` dump once and answer every later call from that
        dump (observe reads the host's links from several handlers; nothing changes meanwhile);
        ``links(fresh=True)`` dumps again (waiting for links to go). Not reentrant."""
        self._memo = {}
        try:
            yield
        finally:
            self._memo = None

    def _dumped(self, mtype: int, fresh: bool, read: Callable[[], list]) -> list:
        memo = self._memo
        if memo is None:
            return read()
        got = None if fresh else memo.get(mtype)
        if got is None:
            got = memo[mtype] = read()
        return list(got)

    def _send(self, mtype: int, flags: int, body: bytes) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.sock.send(struct.pack("IHHII", 16 + len(body), mtype, flags | NLM_F_REQUEST, self.seq, 0) + body)
        return self.seq

    def _replies(self, seq: int, size: int, single: bool = False) -> list[tuple[int, bytes]]:
        """Messages answering ``seq`` until the ack, error or end of dump (or the first message,
        for ``single`` gets, which have no ack); raises NetlinkError."""
        out: list[tuple[int, bytes]] = []
        for _ in range(1_000_000):  # bounded: a dump ends with NLMSG_DONE
            data = self.sock.recv(size)
            off = 0
            while off + 16 <= len(data):
                n, mtype, flags, mseq, _pid = struct.unpack_from("IHHII", data, off)
                if n < 16:
                    break
                body = data[off + 16 : off + n]
                off += (n + 3) & ~3
                if mseq != seq:
                    continue  # a late answer to an interrupted request
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("i", body)[0]
                    if code:
                        ext = ""
                        if flags & NLM_F_ACK_TLVS:
                            skip = 4 + (16 if flags & NLM_F_CAPPED else struct.unpack_from("I", body, 4)[0])
                            ext = read_cstr(attrs(body, skip).get(NLMSGERR_ATTR_MSG))
                        raise NetlinkError(code, ext)
                    return out
                if mtype == NLMSG_DONE:
                    return out
                out.append((mtype, body))
                if single:
                    return out
        raise NetlinkError(errno.EIO, "no end of netlink reply")

    def request(self, mtype: int, body: bytes, flags: int = 0) -> None:
        self._replies(self._send(mtype, flags | NLM_F_ACK, body), 1 << 16)

    def dump(self, mtype: int, body: bytes) -> list[bytes]:
        return [b for _t, b in self._replies(self._send(mtype, NLM_F_DUMP, body), 1 << 17)]

    # -- links ------------------------------------------------------------------------
    def links(self, fresh: bool = False) -> list[Link]:
        """Every link of the namespace (within a ``snapshot``: its dump unless ``fresh``)."""
        return self._dumped(RTM_GETLINK, fresh, lambda: [Link.parse(b) for b in self.dump(RTM_GETLINK, ifinfomsg())])

    def link(self, name: str = "", index: int = 0) -> Link | None:
        body = ifinfomsg(index=index) + (nla(IFLA_IFNAME, pack_str(name)) if name and not index else b"")
        try:
            got = self._replies(self._send(RTM_GETLINK, 0, body), 1 << 16, single=True)
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return Link.parse(got[0][1]) if got else None

    def index(self, name: str) -> int:
        """ifindex of ``name`` in this namespace (cached; raises NetlinkError ENODEV)."""
        i = self.ifindex.get(name)
        if i is None:
            link = self.link(name)
            if link is None:
                raise NetlinkError(errno.ENODEV, f"no link named {name}")
            i = self.ifindex[name] = link.index
        return i

    def forget(self, name: str) -> None:
        self.ifindex.pop(name, None)

    def addrs(self) -> list[Addr]:
        """Every address of the namespace (within a ``snapshot``: its dump)."""
        return self._dumped(RTM_GETADDR, False,
                            lambda: [Addr.parse(b) for b in self.dump(RTM_GETADDR, struct.pack("BBBBI", 0, 0, 0, 0, 0))])

    def routes(self, protocol: int | None = None) -> list[Rt]:
        """Every route of the namespace (all tables), or only those of ``protocol``: selected by
        the rtmsg header before their attributes are parsed (a namespace's local table alone
        holds a dozen routes no caller of a filtered dump wants)."""
        msgs = self.dump(RTM_GETROUTE, struct.pack("BBBBBBBBI", 0, 0, 0, 0, 0, 0, 0, 0, 0))
        if protocol is not None:
            msgs = [b for b in msgs if len(b) > 5 and b[5] == protocol]
        return [Rt.parse(b) for b in msgs]


_IFINFO = struct.Struct("BxHiII").unpack_from
_U32 = struct.Struct("I").unpack_from
# The attributes Link.parse reads: a link carries ~40 (statistics, queues, XDP ...), and every
# observe parses each link of the host and of every namespace.
_LINK_ATTRS = frozenset({IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO,
                         IFLA_IFALIAS, IFLA_GROUP, IFLA_LINK_NETNSID})


def _link_attrs(buf: bytes) -> dict[int, bytes]:
    """``attrs(buf, 16)`` keeping only _LINK_ATTRS (the others are skipped, not sliced)."""
    out: dict[int, bytes] = {}
    end = len(buf)
    off = 16
    unpack, want = _HH, _LINK_ATTRS
    while off + 4 <= end:
        n, kind = unpack(buf, off)
        if n < 4:
            break
        kind &= 0x3FFF
        if kind in want:
            out[kind] = buf[off + 4 : off + n]
        off += (n + 3) & ~3
    return out


@dataclass
class Link:
    index: int
    name: str
    flags: int
    mtu: int
    mac: str | None
    alias: str
    kind: str
    master: int
    link: int
    link_netnsid: int | None
    group: int = 0
    slave: dict[int, bytes] = field(default_factory=dict)
    data: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def parse(cls, b: bytes) -> Link:
        _fam, _type, index, flags, _change = _IFINFO(b)
        a = _link_attrs(b)
        info = attrs(a[IFLA_LINKINFO]) if IFLA_LINKINFO in a else {}

        def u32(k: int) -> int:
            return _U32(a[k])[0] if k in a else 0

        return cls(
            index=index,
            name=read_cstr(a.get(IFLA_IFNAME)),
            flags=flags,
            mtu=u32(IFLA_MTU),
            mac=fmt_mac(a.get(IFLA_ADDRESS)),
            alias=read_cstr(a.get(IFLA_IFALIAS)),
            kind=read_cstr(info.get(IFLA_INFO_KIND)),
            master=u32(IFLA_MASTER),
            link=u32(IFLA_LINK),
            link_netnsid=struct.unpack("i", a[IFLA_LINK_NETNSID][:4])[0] if IFLA_LINK_NETNSID in a else None,
            group=u32(IFLA_GROUP),
            slave=attrs(info[IFLA_INFO_SLAVE_DATA]) if IFLA_INFO_SLAVE_DATA in info else {},
            data=attrs(info[IFLA_INFO_DATA]) if IFLA_INFO_DATA in info else {},
        )

    def brport(self, attr: int) -> bool:
        v = self.slave.get(attr)
        return bool(v and v[0])


@dataclass
class Addr:
    family: int
    prefixlen: int
    index: int
    address: str

    @classmethod
    def parse(cls, b: bytes) -> Addr:
        family, prefixlen, _flags, _scope, index = struct.unpack_from("BBBBI", b)
        a = attrs(b, 8)
        raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS) or b""
        fam = socket.AF_INET if family == socket.AF_INET else socket.AF_INET6
        return cls(family, prefixlen, index, socket.inet_ntop(fam, raw) if raw else "")

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass
class Rt:
    family: int
    dst_len: int
    table: int
    protocol: int
    type: int
    dst: str | None
    gateway: str | None
    oif: int
    priority: int

    @classmethod
    def parse(cls, b: bytes) -> Rt:
        family, dst_len, _src, _tos, table, proto, _scope, rtype, _flags = struct.unpack_from("BBBBBBBBI", b)
        a = attrs(b, 12)

        def ip(k: int) -> str | None:
            return socket.inet_ntop(family, a[k]) if k in a else None

        def u32(k: int) -> int:
            return struct.unpack("I", a[k][:4])[0] if k in a else 0

        return cls(family, dst_len, u32(RTA_TABLE) or table, proto, rtype, ip(RTA_DST), ip(RTA_GATEWAY),
                   u32(RTA_OIF), u32(RTA_PRIORITY))

    @property
    def cidr(self) -> str:
        zero = "0.0.0.0" if self.family == socket.AF_INET else "::"
        return str(ipaddress.ip_network(f"{self.dst or zero}/{self.dst_len}", strict=False))
