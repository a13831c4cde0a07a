"""TCP askers: accepting connections, reading length-prefixed queries, writing answers.

Owns: the accept loop of every TCP listener (host listeners: strangers are closed at once;
listeners inside a container namespace: the asker is that container), each connection's
buffers and deadline, and the bounds that keep a flood of connections harmless:
``MAX_TCP_CLIENTS`` (the oldest is evicted), ``TCP_MAX_QUERY`` (a longer "query" closes the
connection), ``TCP_MAX_OUTBUF`` (a client that does not read its answers is closed) and
``TCP_IDLE`` (a client must complete a query within it: slowloris connections are closed).

Must not: decide what a name means (``answer.respond`` does), who may ask (``access.py``) or
how to forward (``forward.py``); it must never block: every socket is non-blocking.
"""

from __future__ import annotations

import selectors
import socket
import struct
import time

from composenet.dns.answer import respond
from composenet.dns.state import State, TcpClient

MAX_TCP_CLIENTS = 128
TCP_IDLE = 10.0  # seconds to send a complete query (slowloris bound)
TCP_MAX_QUERY = 16384  # a TCP query longer than this is not a query: close
TCP_MAX_OUTBUF = 256 * 1024
ACCEPT_BATCH = 64  # connections accepted per wake-up


class TcpAskers(State):
    """Serves TCP listeners and their connections; state: ``clients`` (oldest first)."""

    def _accept(self, lsock: socket.socket, listener: str, netns: str = "") -> None:
        """Accept TCP askers on a host listener (``listener``: its address; strangers are
        closed at once) or on a container's own listener (``netns``: the asker is that
        container, whatever its source address)."""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not netns and addr[0] not in self.zone.views and self._stranger(addr[0], listener) is None:
                conn.close()  # not on the project's networks: nothing, not even a FORMERR
                continue
            if len(self.clients) >= MAX_TCP_CLIENTS:
                # Evict the oldest connection rather than refusing: idle or slow clients
                # cannot lock out new ones.
                self._close_client(next(iter(self.clients)))
            conn.setblocking(False)
            c = TcpClient(conn, listener, addr[0], time.monotonic() + TCP_IDLE, netns=netns)
            self.clients[c] = None
            self.sel.register(conn, selectors.EVENT_READ, ("client", c))

    def _close_client(self, c: TcpClient) -> None:
        if c.closed:
            return
        c.closed = True
        self.clients.pop(c, None)
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _close_clients_of(self, netns: str) -> None:
        """Close the connections that came in on the listener in namespace ``netns``."""
        for c in [c for c in self.clients if c.netns == netns]:
            self._close_client(c)

    def _expire_clients(self, now: float) -> None:
        """Close connections past their deadline (``TCP_IDLE`` without a complete query)."""
        for _ in range(MAX_TCP_CLIENTS):
            if not self.clients:
                break
            c = next(iter(self.clients))
            if c.deadline > now:
                break
            self._close_client(c)

    def _client_io(self, c: TcpClient, mask: int) -> None:
        if c.closed:
            return
        if mask & selectors.EVENT_WRITE:
            self._client_flush(c)
        if not mask & selectors.EVENT_READ or c.closed:
            return
        try:
            chunk = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_client(c)
            return
        if not chunk:
            self._close_client(c)
            return
        c.inbuf += chunk
        while len(c.inbuf) >= 2 and not c.closed:
            length = struct.unpack_from("!H", c.inbuf)[0]
            if length > TCP_MAX_QUERY or length < 12:
                self._close_client(c)
                return
            if len(c.inbuf) < 2 + length:
                break
            data = bytes(c.inbuf[2 : 2 + length])
            del c.inbuf[: 2 + length]
            # A complete query: the client may keep the connection for another TCP_IDLE.
            c.deadline = time.monotonic() + TCP_IDLE
            self.clients.move_to_end(c)
            zone = self.zone
            if c.netns:
                view = zone.ns_views.get(c.netns)
            else:
                view = zone.views.get(c.source) or self._stranger(c.source, c.listener)
            if view is None:
                self._close_client(c)
                return
            r = respond(view, data)
            if r is None:
                continue
            if isinstance(r, int):
                self._forward(view, data, r, None, None, c)
            else:
                self._client_send(c, r)

    def _client_send(self, c: TcpClient, response: bytes) -> None:
        if c.closed:
            return
        if len(c.outbuf) + len(response) > TCP_MAX_OUTBUF:
            self._close_client(c)  # the client does not read its answers
            return
        was_empty = not c.outbuf
        c.outbuf += struct.pack("!H", len(response)) + response
        if was_empty:
            self._client_flush(c)

    def _client_flush(self, c: TcpClient) -> None:
        try:
            sent = c.sock.send(c.outbuf)
            del c.outbuf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close_client(c)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf else 0)
        try:
            self.sel.modify(c.sock, events, ("client", c))
        except (KeyError, ValueError):
            pass
