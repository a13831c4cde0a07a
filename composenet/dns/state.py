"""The resolver daemon's state: the records it keeps, the attributes its parts share, its log.

The daemon is one :class:`~composenet.dns.server.Server` object made of parts, one class per
concern, each in its own module (``udp.py``, ``tcp.py``, ``forward.py``, ``listeners.py``,
``access.py``; ``server.py`` combines them and runs the loop). They share one state, and
:class:`State`, their common base, declares all of it in one place: every attribute
``Server.__init__`` sets, with the part that owns it, and the few methods one part calls in
another. A reader finds here what a part may touch; the type checker checks each part alone.

Owns: the per-query and per-connection records (:class:`Pending`, :class:`TcpClient`, ...),
the two limits more than one part applies, and :func:`log`. Must not: do I/O (but the log
line) or hold behaviour: a method here only declares one that a part defines.
"""

from __future__ import annotations

import collections
import ipaddress
import os
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field

from composenet.dns import fastio
from composenet.dns.answer import View
from composenet.dns.config import Listener, NsListener
from composenet.dns.zone import Zone

UDP_BATCH = 256  # packets read from one socket per wake-up (fairness between sockets)
RCVBUF = 4 << 20  # receive buffer of the host listeners and the upstream sockets


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} composenet-dns[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


# -- records -----------------------------------------------------------------------------------


@dataclass(eq=False)
class TcpClient:
    sock: socket.socket
    listener: str  # listener address
    source: str
    deadline: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    closed: bool = False
    netns: str = ""  # arrived on the listener in this container namespace: the asker is its container


@dataclass(eq=False)
class NsSockets:
    """The UDP and TCP listeners bound inside one container namespace, and the identity (inode)
    of that namespace: they keep it alive, so they are closed once /run/netns/<name> is gone."""

    listener: NsListener
    udp: socket.socket
    tcp: socket.socket
    inode: int


@dataclass(eq=False)
class Pending:
    """A forwarded query: who asked, what, which upstream attempt is running."""

    client_id: bytes  # the asker's query ID
    query: bytes  # the query as sent upstream (our ID)
    end: int  # offset past the question
    cache_key: bytes
    upstreams: tuple[tuple[str, int], ...]
    udp_sock: socket.socket | None  # UDP asker: the listener socket to answer from
    udp_addr: tuple | None
    tcp_client: TcpClient | None
    index: int = 0  # current upstream
    via_tcp: bool = False  # current attempt is over TCP
    truncated: bytes | None = None  # UDP answer with TC=1, kept as fallback for a UDP asker
    deadline: float = 0.0
    upstream_conn: UpstreamTcp | None = None


@dataclass(eq=False)
class UpstreamTcp:
    sock: socket.socket
    qid: int
    outbuf: bytearray
    inbuf: bytearray = field(default_factory=bytearray)
    connected: bool = False


@dataclass
class CacheEntry:
    expires: float
    stored: float
    response: bytes
    ttl_offsets: tuple[int, ...]


# -- the shared state --------------------------------------------------------------------------


class State:
    """Every attribute of the daemon (set by ``Server.__init__``), grouped by the part that
    owns it, and the methods parts call across modules (each docstring names where it is defined)."""

    # The config and its tables (server.py: loaded at start, swapped whole on reload).
    config_path: str
    config: dict  # the config file as read, before other projects' records are merged
    peer_records: list[dict]  # other projects' and other hosts' containers merged in (peers.py, remote.py)
    next_peer_scan: float
    zone: Zone
    pidfile: str
    running: bool
    reload_requested: bool
    sel: selectors.BaseSelector
    wake_r: socket.socket  # signals wake the loop through this pair (signal.set_wakeup_fd)
    wake_w: socket.socket
    stats: collections.Counter[str]

    # Listeners (listeners.py): by (address, port); those not bound yet, retried.
    udp: dict[tuple[str, int], socket.socket]
    tcp: dict[tuple[str, int], socket.socket]
    unbound: dict[tuple[str, int], Listener]
    next_bind_retry: float
    # Listeners inside container namespaces (containers on macvlan networks), by namespace.
    ns_bound: dict[str, NsSockets]
    ns_unbound: dict[str, NsListener]
    ns_failed_logged: set[str]
    next_ns_check: float

    # UDP askers (udp.py): batched I/O vectors per address family (None: one packet per call),
    # and ``zone.views`` keyed by raw sockaddr bytes for the batched path.
    batches: dict[int, fastio.UdpBatch | None]
    _raw_zone: Zone | None
    _raw_views: dict[bytes, View]

    # TCP askers (tcp.py), oldest first.
    clients: collections.OrderedDict[TcpClient, None]

    # Forwarding (forward.py): queries waiting for an upstream by our query ID, oldest deadline
    # first; one connected UDP socket per upstream; open upstream TCP connections.
    pending: collections.OrderedDict[int, Pending]
    upstream_udp: dict[tuple[str, int], socket.socket]
    upstream_tcp: int
    # The forwarding cache (server.py), by question + asker's EDNS + upstreams.
    cache: dict[bytes, CacheEntry]

    # Who may ask (access.py): addresses of this host, the subnets on each listener's
    # interface, and the memo of decisions about strangers.
    local_addrs: frozenset[str]
    member_nets: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]
    _strangers: dict[tuple[str, str], View | None]

    # -- methods one part calls in another ---------------------------------------------------

    def _stranger(self, source: str, listener: str) -> View | None:
        """The view of an asker that is no container of the zone, or None (access.py)."""
        raise NotImplementedError

    def _scan_interfaces(self) -> None:
        """Re-read the interfaces the listeners sit on (access.py)."""
        raise NotImplementedError

    def _forward(self, view: View, data: bytes, end: int, sock: socket.socket | None, addr: tuple | None,
                 client: TcpClient | None) -> None:
        """Answer a query the zone does not answer: from the cache or upstream (server.py)."""
        raise NotImplementedError

    def _store(self, p: Pending, resp: bytes) -> None:
        """Keep an upstream's answer in the forwarding cache (server.py)."""
        raise NotImplementedError

    def _client_send(self, c: TcpClient, response: bytes) -> None:
        """Queue a response to a TCP asker (tcp.py)."""
        raise NotImplementedError

    def _close_clients_of(self, netns: str) -> None:
        """Close the TCP askers that came in on the listener in namespace ``netns`` (tcp.py)."""
        raise NotImplementedError
