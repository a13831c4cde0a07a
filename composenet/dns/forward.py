"""Forwarding: asking the asker's upstream servers and delivering their answer.

Owns: the queries waiting for an upstream (``pending``, by the query ID we sent, at most
``MAX_PENDING``), one connected UDP socket per upstream, TCP connections to upstreams (at most
``MAX_UPSTREAM_TCP``), the per-attempt timeout (the config's ``forward_timeout``) and failover:
the next upstream is tried on a timeout, an ICMP "port unreachable", a SERVFAIL/REFUSED/NOTIMP
answer or a broken TCP connection; when none is left the asker gets SERVFAIL (or the truncated
UDP answer it had). A TCP asker is forwarded over TCP; a truncated UDP answer is asked again
over TCP. Answers are accepted only from the upstream asked, with our ID and the question asked
(anything else is ignored: spoofing or a confused server).

Must not: decide whether a query is forwarded (``answer.respond`` does), answer from the cache
(``server.py`` looks there first, and is handed each answer to keep), or block.
"""

from __future__ import annotations

import errno
import os
import random
import selectors
import socket
import struct
import time

from composenet.dns.answer import View
from composenet.dns.config import parse_upstream
from composenet.dns.state import RCVBUF, UDP_BATCH, Pending, State, TcpClient, UpstreamTcp
from composenet.dns.wire import (
    FLAG_TC,
    RCODE_NOTIMP,
    RCODE_REFUSED,
    RCODE_SERVFAIL,
    edns_payload,
    fit_udp,
    reply,
)

MAX_PENDING = 4096  # forwarded queries waiting for an upstream
MAX_UPSTREAM_TCP = 64  # concurrent TCP connections to upstreams


class Forwarding(State):
    """Upstream forwarding (see the module doc); state: ``pending``, ``upstream_udp``,
    ``upstream_tcp``."""

    def _ask_upstream(self, view: View, data: bytes, end: int, key: bytes, sock: socket.socket | None,
                      addr: tuple | None, client: TcpClient | None) -> None:
        """Send query ``data`` (question ending at ``end``) to the first of the asker's
        upstreams; the answer goes to ``sock``/``addr`` (UDP) or ``client`` (TCP), and into
        the cache under ``key``. SERVFAIL at once without upstreams or a free query ID."""
        if not view.upstreams or len(self.pending) >= MAX_PENDING:
            self._deliver(reply(data, RCODE_SERVFAIL, data[12:end]), data, end, sock, addr, client)
            return
        qid = random.getrandbits(16)
        for _ in range(64):
            if qid not in self.pending:
                break
            qid = random.getrandbits(16)
        else:
            self._deliver(reply(data, RCODE_SERVFAIL, data[12:end]), data, end, sock, addr, client)
            return
        try:
            upstreams = tuple(parse_upstream(u) for u in view.upstreams)
        except ValueError:
            upstreams = ()
        p = Pending(client_id=data[:2], query=struct.pack("!H", qid) + data[2:], end=end, cache_key=key,
                    upstreams=upstreams, udp_sock=sock, udp_addr=addr, tcp_client=client)
        self.pending[qid] = p
        self.stats["forwarded"] += 1
        self._attempt(qid, p, tcp=client is not None)

    def _attempt(self, qid: int, p: Pending, tcp: bool) -> None:
        """Send ``p`` to its current upstream; on an immediate error, fail over."""
        self._close_upstream_tcp(p)
        p.via_tcp = tcp
        p.deadline = time.monotonic() + self.zone.forward_timeout
        self.pending.move_to_end(qid)
        up = p.upstreams[p.index]
        try:
            if tcp:
                self._upstream_tcp_open(qid, p, up)
            else:
                self._upstream_socket(up).send(p.query)
        except OSError:
            self._failover(qid, p)

    def _failover(self, qid: int, p: Pending) -> None:
        self._close_upstream_tcp(p)
        if p.index + 1 < len(p.upstreams):
            p.index += 1
            self._attempt(qid, p, tcp=p.tcp_client is not None)
            return
        del self.pending[qid]
        self.stats["servfail"] += 1
        if p.truncated is not None:
            resp = p.truncated
        else:
            resp = reply(p.query, RCODE_SERVFAIL, p.query[12 : p.end])
        self._deliver(p.client_id + resp[2:], p.query, p.end, p.udp_sock, p.udp_addr, p.tcp_client)

    def _deliver(self, resp: bytes, query: bytes, end: int, sock: socket.socket | None, addr: tuple | None,
                 client: TcpClient | None) -> None:
        """Send ``resp`` to the asker of ``query``: a TCP client, or a UDP one (fitted to its
        payload size)."""
        if client is not None:
            self._client_send(client, resp)
        elif sock is not None and addr is not None:
            resp = fit_udp(query, end, resp)
            try:
                sock.sendto(resp, addr)
            except OSError:
                self.stats["send-error"] += 1

    def _expire_forwards(self, now: float) -> None:
        """Fail over the attempts past their deadline (``pending`` is in deadline order)."""
        for _ in range(MAX_PENDING):
            if not self.pending:
                break
            qid, p = next(iter(self.pending.items()))
            if p.deadline > now:
                break
            self._failover(qid, p)

    def _drop_unused_upstreams(self) -> None:
        """Close the UDP sockets of upstreams no view names any more (after a reload)."""
        used = {parse_upstream(u) for u in self.zone.upstreams}
        for v in [*self.zone.views.values(), *self.zone.listener_views.values(), *self.zone.ns_views.values()]:
            used.update(parse_upstream(u) for u in v.upstreams)
        used.update(up for p in self.pending.values() for up in p.upstreams)
        for key in list(self.upstream_udp):
            if key not in used:
                s = self.upstream_udp.pop(key)
                self.sel.unregister(s)
                s.close()

    # -- over UDP ------------------------------------------------------------------------------

    def _upstream_socket(self, up: tuple[str, int]) -> socket.socket:
        s = self.upstream_udp.get(up)
        if s is None:
            family = socket.AF_INET6 if ":" in up[0] else socket.AF_INET
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            # Connected: the kernel filters answers from anyone else, and ICMP "port
            # unreachable" surfaces as ECONNREFUSED, so a dead upstream fails over at once.
            s.connect(up)
            self.upstream_udp[up] = s
            self.sel.register(s, selectors.EVENT_READ, ("upstream", up))
        return s

    def _upstream_udp_read(self, s: socket.socket, up: tuple[str, int]) -> None:
        for _ in range(UDP_BATCH):
            try:
                resp = s.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                for qid, p in list(self.pending.items()):
                    if not p.via_tcp and p.upstreams[p.index] == up:
                        self._failover(qid, p)
                continue
            except OSError:
                return
            self._upstream_answer(resp, up, via_tcp=False)

    def _upstream_answer(self, resp: bytes, up: tuple[str, int], via_tcp: bool) -> None:
        if len(resp) < 12 or not resp[2] & 0x80:
            return
        qid = struct.unpack_from("!H", resp)[0]
        p = self.pending.get(qid)
        if p is None or p.via_tcp != via_tcp or p.upstreams[p.index] != up:
            return
        if resp[4:6] != b"\x00\x01" or resp[12 : p.end] != p.query[12 : p.end]:
            return  # not the answer to our question: ignore (spoofing or a confused server)
        rcode = resp[3] & 0x0F
        if rcode in (RCODE_SERVFAIL, RCODE_REFUSED, RCODE_NOTIMP) and p.index + 1 < len(p.upstreams):
            self._failover(qid, p)
            return
        if resp[2] & FLAG_TC and not via_tcp:
            # Truncated over UDP: ask the same upstream over TCP; a UDP asker gets the full
            # answer if it fits its payload size, else this truncated one (it retries over TCP).
            p.truncated = resp
            self._attempt(qid, p, tcp=True)
            return
        del self.pending[qid]
        self._close_upstream_tcp(p)
        self._store(p, resp)
        if p.tcp_client is None and p.truncated is not None and len(resp) > 512:
            edns = edns_payload(p.query, p.end)
            if len(resp) > (edns[0] if edns else 512):
                resp = p.truncated
        self._deliver(p.client_id + resp[2:], p.query, p.end, p.udp_sock, p.udp_addr, p.tcp_client)

    # -- over TCP ------------------------------------------------------------------------------

    def _upstream_tcp_open(self, qid: int, p: Pending, up: tuple[str, int]) -> None:
        if self.upstream_tcp >= MAX_UPSTREAM_TCP:
            raise OSError(errno.EMFILE, "too many upstream TCP connections")
        family = socket.AF_INET6 if ":" in up[0] else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(up)
        if err not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(err, os.strerror(err))
        conn = UpstreamTcp(s, qid, bytearray(struct.pack("!H", len(p.query)) + p.query))
        p.upstream_conn = conn
        self.upstream_tcp += 1
        self.sel.register(s, selectors.EVENT_WRITE, ("uptcp", conn))

    def _close_upstream_tcp(self, p: Pending) -> None:
        conn = p.upstream_conn
        if conn is None:
            return
        p.upstream_conn = None
        self.upstream_tcp -= 1
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _upstream_tcp_io(self, conn: UpstreamTcp, mask: int) -> None:
        p = self.pending.get(conn.qid)
        if p is None or p.upstream_conn is not conn:
            return
        up = p.upstreams[p.index]
        try:
            if mask & selectors.EVENT_WRITE:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                sent = conn.sock.send(conn.outbuf)
                del conn.outbuf[:sent]
                if not conn.outbuf:
                    self.sel.modify(conn.sock, selectors.EVENT_READ, ("uptcp", conn))
                return
            chunk = conn.sock.recv(65536)
            if not chunk:
                raise OSError(errno.ECONNRESET, "upstream closed the connection")
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._failover(conn.qid, p)
            return
        conn.inbuf += chunk
        if len(conn.inbuf) >= 2:
            length = struct.unpack_from("!H", conn.inbuf)[0]
            if len(conn.inbuf) >= 2 + length:
                resp = bytes(conn.inbuf[2 : 2 + length])
                self._upstream_answer(resp, up, via_tcp=True)
                if conn.qid in self.pending and self.pending[conn.qid] is p and p.upstream_conn is conn:
                    self._failover(conn.qid, p)  # a non-matching answer: try the next upstream
