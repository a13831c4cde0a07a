"""UDP askers: the daemon's hot path, from a datagram in to its answer out.

Owns: the three loops that serve a readable UDP listener -- batched (``recvmmsg``/``sendmmsg``
through ``fastio.py``, up to ``MMSG_COUNT`` per system call), one packet per call (where
batching is unavailable, or with ``COMPOSENET_DNS_MMSG=0`` in the environment, to compare or to
rule it out), and the listener inside a container namespace -- and the translation between raw
socket addresses and the zone's views. Each loop reads until the socket is empty or
``UDP_BATCH`` packets, then goes back to the selector. All give the same answers.

Why three loops and not one loop with helpers: a function call costs about as much as the
whole dict lookup of a local answer, so the per-query body is written out inline in each loop
(view lookup, ``respond``, size check, send); only the rare branches (strangers, forwarding, an
answer over 512 bytes) call out. Their bodies must stay in step: a change to one is a change to
all three.

Must not: decide what a name means (``answer.respond`` does) or who may ask (``access.py``),
nor block: every socket is non-blocking and a failed send is counted, never retried.
"""

from __future__ import annotations

import os
import socket
import struct

from composenet.dns import fastio
from composenet.dns.answer import View, respond
from composenet.dns.state import UDP_BATCH, State
from composenet.dns.wire import fit_udp, question_end
from composenet.dns.zone import Zone

MMSG_COUNT = 64  # datagrams per recvmmsg/sendmmsg call
UDP_QUERY_MAX = 4096  # bytes read of a UDP query (a longer datagram is truncated, as by recvfrom)


def open_batch(family: int) -> fastio.UdpBatch | None:
    """Batched I/O vectors for listeners of ``family``, or None: serve one packet per call."""
    if os.environ.get("COMPOSENET_DNS_MMSG", "1") == "0":
        return None
    return fastio.open_batch(family, MMSG_COUNT, UDP_QUERY_MAX)


def raw_view_table(zone: Zone) -> dict[bytes, View]:
    """``zone.views`` keyed as the batched path sees a source address: the 4 address bytes of
    a ``sockaddr_in``, or the 16 address bytes + a zero scope id of a ``sockaddr_in6``."""
    table: dict[bytes, View] = {}
    for text, view in zone.views.items():
        try:
            if ":" in text:
                table[socket.inet_pton(socket.AF_INET6, text) + bytes(4)] = view
            else:
                table[socket.inet_pton(socket.AF_INET, text)] = view
        except OSError:
            continue  # not an address literal: recvfrom's text form could never equal it either
    return table


def sockaddr_tuple(raw: bytes) -> tuple:
    """A raw ``sockaddr_in``/``sockaddr_in6`` as the address tuple ``socket.sendto`` takes."""
    port = struct.unpack_from("!H", raw, 2)[0]
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    flowinfo = struct.unpack_from("!I", raw, 4)[0]
    scope_id = struct.unpack_from("=I", raw, 24)[0]
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope_id


class UdpAskers(State):
    """Serves readable UDP listeners; state: ``batches``, ``_raw_zone``, ``_raw_views``."""

    def _serve_udp(self, sock: socket.socket, listener: str) -> None:
        zone = self.zone
        views = zone.views
        if listener not in zone.listener_views:  # listener removed by a reload while queued
            return
        # Bound methods and the dict lookup hoisted out of the loop: one attribute lookup each
        # per wake-up instead of per query.
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        get = views.get
        for _ in range(UDP_BATCH):
            try:
                data, addr = recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            view = get(addr[0])
            if view is None:
                view = self._stranger(addr[0], listener)
                if view is None:
                    continue
            r = respond(view, data)
            if r is None:
                continue
            if r.__class__ is int:  # cheaper than isinstance on this path
                self._forward(view, data, r, sock, addr, None)  # type: ignore[arg-type]
                continue
            if len(r) > 512:  # type: ignore[arg-type]
                r = fit_udp(data, question_end(data), r)  # type: ignore[arg-type]
            try:
                sendto(r, addr)  # type: ignore[arg-type]
            except OSError:
                self.stats["send-error"] += 1

    def _serve_ns_udp(self, sock: socket.socket, netns: str) -> None:
        """Queries on the listener inside container namespace ``netns``: all from its container
        (the socket is reachable from nowhere else), answered with that container's view."""
        for _ in range(UDP_BATCH):
            try:
                data, addr = sock.recvfrom(UDP_QUERY_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            view = self.zone.ns_views.get(netns)
            if view is None:  # removed by a reload while queued
                continue
            r = respond(view, data)
            if r is None:
                continue
            if isinstance(r, int):
                self._forward(view, data, r, sock, addr, None)
                continue
            if len(r) > 512:
                r = fit_udp(data, question_end(data), r)
            try:
                sock.sendto(r, addr)
            except OSError:
                self.stats["send-error"] += 1

    def _serve_udp_batched(self, sock: socket.socket, listener: str, batch: fastio.UdpBatch) -> None:
        """:meth:`_serve_udp` with one ``recvmmsg`` per up to ``MMSG_COUNT`` queries and one
        ``sendmmsg`` for their answers: same decisions, same bounds. Answers leave in arrival
        order, each batch's before the next batch is read. The socket is read until it is
        empty (or ``UDP_BATCH`` packets), without going back to the selector in between.

        One function on purpose (see the module doc): the batch's buffers and views are bound
        to locals once per wake-up, and the per-query body below makes no call but ``respond``
        on a local answer. ``UdpBatch.put`` is inlined for the same reason."""
        zone = self.zone
        if listener not in zone.listener_views:  # listener removed by a reload while queued
            return
        if self._raw_zone is not zone:
            self._raw_views = raw_view_table(zone)
            self._raw_zone = zone
        get = self._raw_views.get
        fd = sock.fileno()
        bufs = batch.bufs
        names = batch.names_raw
        lengths = batch.lengths
        slots = batch.slots
        out = batch.view
        out_lengths = batch.out_lengths
        out_index = batch.out_length_index
        offsets = batch.offsets
        size = batch.size
        received = 0
        while received < UDP_BATCH:
            try:
                n = batch.recv(fd)
            except OSError:
                self.stats["recv-error"] += 1
                received += 1
                continue
            if not n:
                return
            received += n
            k = 0  # answers placed in slots 0..k-1
            for i, off, length_ix, key, name in slots[:n]:
                data = bufs[off : off + lengths[length_ix]]
                view = get(names[key])
                if view is None:
                    view = self._stranger(sockaddr_tuple(names[name])[0], listener)
                    if view is None:
                        continue
                r = respond(view, data)
                if r is None:
                    continue
                if r.__class__ is int:
                    self._forward(view, data, r, sock, sockaddr_tuple(names[name]), None)  # type: ignore[arg-type]
                    continue
                m = len(r)  # type: ignore[arg-type]
                if m > 512:
                    r = fit_udp(data, question_end(data), r)  # type: ignore[arg-type]
                    m = len(r)
                    if m > size:  # larger than a slot (a big EDNS payload size): on its own
                        try:
                            sock.sendto(r, sockaddr_tuple(names[name]))
                        except OSError:
                            self.stats["send-error"] += 1
                        continue
                if k != i:  # an earlier query got no answer here: close the gap
                    batch.move_name(i, k)
                    off = offsets[k]
                out[off : off + m] = r  # type: ignore[index,assignment]
                out_lengths[out_index[k]] = m
                k += 1
            if k:
                failed = batch.send(fd, k)
                if failed:
                    self.stats["send-error"] += failed
            if n < batch.count:
                return  # the socket is drained: back to the selector
