"""The byte-level parts of `composenet check`, on synthetic messages: sock_diag dumps
(composenet/linux/sockdiag.py), nftables trace events (composenet/linux/nftrace.py), DNS answers
(composenet/kernel/probe.py), and what a trace says about a flow (composenet/kernel/trace.py)."""

from __future__ import annotations

import socket
import struct

from composenet.kernel.probe import dns_query, first_nameserver, parse_answer
from composenet.kernel.trace import Flow, comment_of, finding, packets, ruleset
from composenet.linux import nftrace, sockdiag
from composenet.linux.nftrace import TRACE_POLICY, TRACE_RULE, TraceEvent


def diag_msg(family: int, state: int, src: str, sport: int, dst: str, dport: int, inode: int) -> bytes:
    n = 4 if family == socket.AF_INET else 16
    s = socket.inet_pton(family, src).ljust(16, b"\0")
    d = socket.inet_pton(family, dst).ljust(16, b"\0")
    assert len(s) == 16 == len(d) and n in (4, 16)
    return (struct.pack("=BBBB", family, state, 0, 0) + struct.pack(">HH16s16sI8s", sport, dport, s, d, 0, b"\0" * 8)
            + struct.pack("=IIIII", 0, 0, 0, 1000, inode))


def test_sockdiag_parse_and_listening() -> None:
    listen = sockdiag.parse(diag_msg(socket.AF_INET, sockdiag.LISTEN, "127.0.0.1", 8000, "0.0.0.0", 0, 42), "tcp")
    assert (listen.local, listen.lport, listen.inode, listen.uid) == ("127.0.0.1", 8000, 42, 1000)
    assert listen.listening and listen.loopback_only and not listen.wildcard
    assert listen.endpoint() == "127.0.0.1:8000" and not listen.accepts("10.0.0.2") and listen.accepts("127.0.0.1")
    six = sockdiag.parse(diag_msg(socket.AF_INET6, sockdiag.LISTEN, "::", 80, "::", 0, 7), "tcp")
    assert six.wildcard and six.endpoint() == "[::]:80" and six.accepts("10.0.0.2") and six.accepts("fd00::2")
    udp = sockdiag.parse(diag_msg(socket.AF_INET, sockdiag.CLOSE, "0.0.0.0", 53, "0.0.0.0", 0, 9), "udp")
    assert udp.listening and udp.accepts("10.0.0.2")
    connected = sockdiag.parse(diag_msg(socket.AF_INET, sockdiag.ESTABLISHED, "10.0.0.2", 80, "10.0.0.3", 40000, 1),
                               "tcp")
    assert not connected.listening and connected.rport == 40000
    req = sockdiag.request(socket.AF_INET, socket.IPPROTO_TCP)
    length, mtype, flags = struct.unpack_from("=IHH", req)
    assert length == len(req) == 16 + 56 and mtype == sockdiag.SOCK_DIAG_BY_FAMILY and flags & sockdiag.NLM_F_DUMP
    assert sockdiag.MSG_LEN == 72


def nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def trace_msg(table: str, chain: str, kind: int, handle: int | None, verdict: int | None,
              headers: bool = True, policy: int | None = None) -> bytes:
    body = struct.pack("=BBH", 1, 0, 0)  # nfgenmsg: inet
    body += nla(nftrace.NFTA_TRACE_ID, struct.pack(">I", 77))
    body += nla(nftrace.NFTA_TRACE_TABLE, table.encode() + b"\0") + nla(nftrace.NFTA_TRACE_CHAIN, chain.encode() + b"\0")
    body += nla(nftrace.NFTA_TRACE_TYPE, struct.pack(">I", kind))
    if handle is not None:
        body += nla(nftrace.NFTA_TRACE_RULE_HANDLE, struct.pack(">Q", handle))
    if verdict is not None:
        body += nla(nftrace.NFTA_TRACE_VERDICT | 0x8000, nla(nftrace.NFTA_VERDICT_CODE, struct.pack(">i", verdict)))
    if policy is not None:
        body += nla(nftrace.NFTA_TRACE_POLICY, struct.pack(">I", policy))
    if headers:
        ip = bytes([0x45, 0, 0, 60, 0, 0, 0, 0, 64, 6, 0, 0]) + socket.inet_aton("10.0.0.2") + socket.inet_aton("10.0.0.3")
        body += nla(nftrace.NFTA_TRACE_NFPROTO, struct.pack(">I", nftrace.NFPROTO_IPV4))
        body += nla(nftrace.NFTA_TRACE_NETWORK_HEADER, ip)
        body += nla(nftrace.NFTA_TRACE_TRANSPORT_HEADER, struct.pack(">HH", 40000, 5432) + b"\0" * 16)
    return body


def test_nftrace_parse() -> None:
    ev = nftrace.parse(nftrace.MSG_TRACE, trace_msg("guard", "input", TRACE_RULE, 2, nftrace.NF_DROP))
    assert ev == TraceEvent(77, "inet", "guard", "input", TRACE_RULE, 2, "drop", None, 6, "10.0.0.2", "10.0.0.3",
                            40000, 5432)
    assert ev.drops
    pol = nftrace.parse(nftrace.MSG_TRACE, trace_msg("t", "in", TRACE_POLICY, None, None, False, nftrace.NF_ACCEPT))
    assert pol is not None and pol.verdict == "accept" and pol.dst is None
    assert nftrace.parse(16, b"\0" * 8) is None


def test_trace_findings() -> None:
    flow = Flow("tcp", "10.0.0.3", 5432)
    head = TraceEvent(5, "inet", "cncheck_1", "pre", TRACE_RULE, 3, "continue", None, 6, "10.0.0.2", "10.0.0.3", 1, 5432)
    other = TraceEvent(6, "inet", "cncheck_1", "pre", TRACE_RULE, 3, "continue", None, 6, "10.0.0.2", "10.0.0.9", 1, 80)
    delivered = TraceEvent(5, "inet", "cncheck_1", "in", TRACE_POLICY, None, "accept")
    stray = TraceEvent(6, "inet", "cncheck_1", "in", TRACE_POLICY, None, "accept")
    f = finding("ns", [head, other, delivered, stray], flow, "composenet_p", "cncheck_1")
    assert f.seen and f.delivered and f.drop is None
    assert len(list(packets([head, other, delivered], flow))) == 1
    nothing = finding("ns", [other, stray], flow, "composenet_p", "cncheck_1")
    assert not nothing.seen and not nothing.delivered
    policy = TraceEvent(5, "ip", "filter", "FORWARD", TRACE_POLICY, None, "drop")
    dropped = finding("", [head, policy, delivered], flow, "composenet_p", "cncheck_1")
    assert dropped.drop == policy and not dropped.delivered
    assert dropped.rule == "the policy of table ip filter, chain FORWARD (not composenet's) drops it"


def test_trace_table_text() -> None:
    text = ruleset("cncheck_42", [Flow("tcp", "10.0.0.3", 5432), Flow("udp", "fd00::3", 53, "fd00::2"),
                                  Flow("tcp", "10.0.0.3", 5432)])
    assert text.startswith("table inet cncheck_42\ndelete table inet cncheck_42\ntable inet cncheck_42 {\n")
    assert text.count("ip daddr 10.0.0.3 meta l4proto tcp th dport 5432 meta nftrace set 1") == 2  # pre and out, once
    assert "ip6 saddr fd00::2 ip6 daddr fd00::3 meta l4proto udp th dport 53 meta nftrace set 1" in text
    assert "type filter hook prerouting priority -350; policy accept;" in text
    assert "type filter hook input priority 2147483647; policy accept;" in text
    assert comment_of('tcp dport 80 drop comment "cn:isolate a"') == "cn:isolate a" and comment_of("drop") is None


def test_dns_wire() -> None:
    qid, query = dns_query("web.p_front", "A")
    assert struct.unpack_from("!H", query)[0] == qid and query[12:] .startswith(b"\x03web\x07p_front\x00")
    answer = (struct.pack("!HHHHHH", qid, 0x8180, 1, 2, 0, 0) + query[12:]
              + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton("10.0.0.3")
              + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton("10.0.0.2"))
    assert parse_answer(answer, qid) == ("NOERROR", ("10.0.0.2", "10.0.0.3"))
    assert parse_answer(answer, qid ^ 1) is None  # another query's answer
    nx = struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + query[12:]
    assert parse_answer(nx, qid) == ("NXDOMAIN", ())
    assert parse_answer(answer[:30], qid) is None  # truncated
    assert first_nameserver("# c\nsearch x\nnameserver 172.18.0.1\nnameserver 9.9.9.9\n") == "172.18.0.1"
    assert first_nameserver("options ndots:0\n") is None
