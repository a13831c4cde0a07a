"""nftables trace events (what `nft monitor trace` prints), read straight from netlink.

A packet whose ``meta nftrace`` is set makes the kernel send one event per rule, chain return
and base-chain policy it meets, to the NFNLGRP_NFTRACE multicast group of its network
namespace. ``TraceListener`` joins that group in one namespace (joined before the packet is
sent: the kernel only emits events while someone listens) and ``parse`` turns a message into a
``TraceEvent``: table, chain, rule handle, verdict, and the packet's addresses and ports.

Owns: the NFT_MSG_TRACE message layout (linux/netfilter/nf_tables.h). Must not: set up trace
rules (composenet.kernel.trace does) or know what a table means to a project.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

NETLINK_NETFILTER = 12
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
NFNLGRP_NFTRACE = 9
NFNL_SUBSYS_NFTABLES, NFT_MSG_TRACE = 10, 17
MSG_TRACE = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE

(NFTA_TRACE_TABLE, NFTA_TRACE_CHAIN, NFTA_TRACE_RULE_HANDLE, NFTA_TRACE_TYPE, NFTA_TRACE_VERDICT, NFTA_TRACE_ID,
 NFTA_TRACE_LL_HEADER, NFTA_TRACE_NETWORK_HEADER, NFTA_TRACE_TRANSPORT_HEADER, NFTA_TRACE_IIF, NFTA_TRACE_IIFTYPE,
 NFTA_TRACE_OIF, NFTA_TRACE_OIFTYPE, NFTA_TRACE_MARK, NFTA_TRACE_NFPROTO, NFTA_TRACE_POLICY) = range(1, 17)
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
TRACE_POLICY, TRACE_RETURN, TRACE_RULE = 1, 2, 3
NF_DROP, NF_ACCEPT = 0, 1
VERDICTS = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", -1: "continue", -2: "break",
            -3: "jump", -4: "goto", -5: "return"}
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10


@dataclass(frozen=True)
class TraceEvent:
    id: int
    family: str  # the table's: inet, ip, ip6, bridge, ...
    table: str
    chain: str
    type: int  # TRACE_RULE, TRACE_RETURN, TRACE_POLICY
    handle: int | None  # the rule's (TRACE_RULE)
    verdict: str | None  # drop, accept, continue, jump, ... (a rule's verdict, or the policy)
    jump: str | None = None  # the chain of a jump/goto verdict
    proto: int | None = None  # IP protocol number
    src: str | None = None
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None

    @property
    def drops(self) -> bool:
        return self.verdict == "drop"


def _attrs(buf: bytes, off: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= len(buf):
        n, kind = struct.unpack_from("=HH", buf, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = buf[off + 4: off + n]
        off += (n + 3) & ~3
    return out


def _cstr(b: bytes | None) -> str:
    return b.split(b"\0", 1)[0].decode(errors="replace") if b else ""


def _be32(b: bytes | None, signed: bool = False) -> int | None:
    if b is None or len(b) < 4:
        return None
    return struct.unpack(">i" if signed else ">I", b[:4])[0]


def _headers(nfproto: int | None, net: bytes | None, transport: bytes | None
             ) -> tuple[int | None, str | None, str | None, int | None, int | None]:
    """(IP protocol, source, destination, source port, destination port) of the traced packet."""
    proto = src = dst = None
    if net and nfproto == NFPROTO_IPV4 and len(net) >= 20:
        proto, src, dst = net[9], socket.inet_ntop(socket.AF_INET, net[12:16]), socket.inet_ntop(socket.AF_INET, net[16:20])
    elif net and nfproto == NFPROTO_IPV6 and len(net) >= 40:
        proto = net[6]
        src, dst = socket.inet_ntop(socket.AF_INET6, net[8:24]), socket.inet_ntop(socket.AF_INET6, net[24:40])
    sport = dport = None
    if transport and len(transport) >= 4 and proto in (6, 17, 132):
        sport, dport = struct.unpack(">HH", transport[:4])
    return proto, src, dst, sport, dport


def parse(mtype: int, body: bytes) -> TraceEvent | None:
    """The event of one netlink message (its type and payload), or None if it is no trace."""
    if mtype != MSG_TRACE or len(body) < 4:
        return None
    family = FAMILIES.get(body[0], str(body[0]))
    a = _attrs(body, 4)
    kind = _be32(a.get(NFTA_TRACE_TYPE)) or 0
    handle = struct.unpack(">Q", a[NFTA_TRACE_RULE_HANDLE][:8])[0] if NFTA_TRACE_RULE_HANDLE in a else None
    verdict = jump = None
    if NFTA_TRACE_VERDICT in a:
        v = _attrs(a[NFTA_TRACE_VERDICT])
        code = _be32(v.get(NFTA_VERDICT_CODE), signed=True)
        verdict = VERDICTS.get(code, str(code)) if code is not None else None
        jump = _cstr(v.get(NFTA_VERDICT_CHAIN)) or None
    if kind == TRACE_POLICY and NFTA_TRACE_POLICY in a:
        code = _be32(a[NFTA_TRACE_POLICY], signed=True)
        verdict = VERDICTS.get(code, str(code)) if code is not None else verdict
    proto, src, dst, sport, dport = _headers(_be32(a.get(NFTA_TRACE_NFPROTO)), a.get(NFTA_TRACE_NETWORK_HEADER),
                                             a.get(NFTA_TRACE_TRANSPORT_HEADER))
    return TraceEvent(_be32(a.get(NFTA_TRACE_ID)) or 0, family, _cstr(a.get(NFTA_TRACE_TABLE)),
                      _cstr(a.get(NFTA_TRACE_CHAIN)), kind, handle, verdict, jump, proto, src, dst, sport, dport)


class TraceListener:
    """A member of NFNLGRP_NFTRACE in the calling thread's network namespace (make it inside
    ``composenet.linux.netns.entered``): every trace event from the moment it exists."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            self.sock.bind((0, 0))
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)
        except OSError:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def read(self, quiet: float = 0.2, limit: float = 2.0, max_events: int = 100_000) -> list[TraceEvent]:
        """The events received so far and until none came for ``quiet`` seconds (at most
        ``limit`` seconds, ``max_events`` events)."""
        out: list[TraceEvent] = []
        end = time.monotonic() + limit
        while len(out) < max_events:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(min(quiet, left))
            try:
                data = self.sock.recv(1 << 17)
            except TimeoutError:
                break
            except OSError:  # ENOBUFS: events were lost; what was read is still true
                break
            off = 0
            while off + 16 <= len(data):
                n, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                if n < 16:
                    break
                ev = parse(mtype, data[off + 16: off + n])
                off += (n + 3) & ~3
                if ev is not None:
                    out.append(ev)
        return out
