"""composenet's resolver daemon: ``python -m composenet.dns.server CONFIG``.

Owns the sockets and the event loop: UDP and TCP listeners on every listener address of the
config, forwarding to upstream servers (UDP, TCP for TCP askers and truncated answers, per-attempt
timeout and failover), the forwarding cache, reload on SIGHUP, the pidfile and shutdown on
SIGTERM. Name semantics and answer bytes live in ``zone.py`` (pure); this module must not
decide what a name means, and must never crash on input from the network.

Life cycle (what the executor relies on):

* start: detached (``start_new_session``), stdout/stderr to a log file. The pidfile named in the
  config is written (atomically, ``<pid>\\n``) only once every listener is bound: it is the
  readiness signal. A config error or a failed bind exits 1 before that, with one clear line
  on stderr and no pidfile.
* SIGHUP: re-read the config, build new tables and swap them at once; bind new listeners,
  close removed ones. A config that does not load keeps the previous one (logged). Queries
  waiting in socket buffers and forwards in flight are kept. A listener that cannot be bound
  yet (address not configured) is logged and retried every few seconds.
* Listeners inside container namespaces (``namespaces``: containers on macvlan networks) are
  bound by entering /run/netns/<name>, making the sockets and returning; a failure is logged
  and retried every ``NS_CHECK`` seconds, never fatal. The sockets keep the namespace alive, so
  every ``NS_CHECK`` seconds (and on reload) a listener whose /run/netns/<name> is gone or is
  another namespace now is closed (and rebound if the config still names it).
* SIGTERM / SIGINT: close everything, remove the pidfile, exit 0.
* Other projects' containers on the networks this resolver concerns (``peers.py``) are merged
  into the config at start and on every reload; they are re-read every ``PEER_RESCAN``
  seconds, and a change reloads (so records of a project killed before its `down` go away).

Not an open resolver: a query whose source is no container of the config is answered only
when the source is on the subnets of the interface holding the listener's address (read from
netlink at start, on reload and on a late bind) or is an address of this host; anything else
(say, routed in from outside) gets no answer at all, over UDP or TCP. The project's nft table
drops such packets before they arrive; this is the daemon's own guard.

Bounds (memory stays bounded whatever the network sends): pending forwards (``MAX_PENDING``),
cache entries and cached response size, TCP client connections (``MAX_TCP_CLIENTS``, oldest
evicted), TCP query length, TCP output buffer, TCP idle time (a client must complete a query
within ``TCP_IDLE`` seconds: slowloris connections are closed), upstream TCP connections.

UDP hot path: queries are read with ``recvmmsg`` and local answers sent with ``sendmmsg``, up
to ``MMSG_COUNT`` per system call (``fastio.py``), the socket drained before going back to the
selector. Where batching is unavailable, or with ``COMPOSENET_DNS_MMSG=0`` in the environment
(to compare or to rule it out), each query costs one ``recvfrom`` and one ``sendto``; both paths
give the same answers.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from composenet.dns import fastio, peers
from composenet.dns.zone import (
    RCODE_NOTIMP,
    RCODE_REFUSED,
    RCODE_SERVFAIL,
    ConfigError,
    Listener,
    NsListener,
    View,
    Zone,
    build_zone,
    edns_payload,
    fit_udp,
    load_config,
    parse_upstream,
    question_end,
    respond,
    skip_name,
)
from composenet.linux import netns as nsmod

MAX_PENDING = 4096  # forwarded queries waiting for an upstream
MAX_UPSTREAM_TCP = 64  # concurrent TCP connections to upstreams
CACHE_ENTRIES = 4096
CACHE_MAX_RESPONSE = 4096  # bytes; larger answers are not cached
CACHE_MAX_TTL = 3600
NEGATIVE_MAX_TTL = 300
MAX_TCP_CLIENTS = 128
TCP_IDLE = 10.0  # seconds to send a complete query (slowloris bound)
TCP_MAX_QUERY = 16384  # a TCP query longer than this is not a query: close
TCP_MAX_OUTBUF = 256 * 1024
UDP_BATCH = 256  # packets read from one socket per wake-up (fairness between listeners)
MMSG_COUNT = 64  # datagrams per recvmmsg/sendmmsg call
UDP_QUERY_MAX = 4096  # bytes read of a UDP query (a longer datagram is truncated, as by recvfrom)
RETRY_BIND = 3.0  # seconds between attempts to bind a listener that failed on reload
PEER_RESCAN = 5.0  # seconds between re-reads of other projects' records (peers.py)
NS_CHECK = 1.0  # seconds between checks that the namespaces listened in are still there
RCVBUF = 4 << 20

_FLAG_TC = 0x02  # in byte 2 of the header


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} composenet-dns[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


# -- state records -----------------------------------------------------------------------------


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


# -- response inspection (no dnslib: this runs for every forwarded answer) ---------------------


def cache_ttl(resp: bytes, end: int) -> tuple[int, tuple[int, ...]] | None:
    """(TTL to cache ``resp`` for, offsets of every TTL field) or None when not cacheable.

    Positive answers: the smallest TTL of the answer and authority records (capped). Negative
    ones (NXDOMAIN, or NOERROR without answers): the SOA's min(TTL, minimum), capped at
    ``NEGATIVE_MAX_TTL``; without an SOA they are not cached. Truncated or failed answers are
    never cached."""
    if resp[2] & _FLAG_TC:
        return None
    rcode = resp[3] & 0x0F
    if rcode not in (0, 3):
        return None
    try:
        qd, an, ns, ar = struct.unpack_from("!HHHH", resp, 4)
        if qd != 1:
            return None
        i = end
        offsets = []
        min_ttl: int | None = None
        soa_ttl: int | None = None
        for section, count in enumerate((an, ns, ar)):
            for _ in range(count):
                i = skip_name(resp, i)
                rtype, _rclass, ttl, rdlen = struct.unpack_from("!HHIH", resp, i)
                if i + 10 + rdlen > len(resp):
                    return None
                if rtype != 41:  # OPT's "TTL" holds flags
                    offsets.append(i + 4)
                    if section < 2:
                        min_ttl = ttl if min_ttl is None else min(min_ttl, ttl)
                    if section == 1 and rtype == 6 and rdlen >= 4:
                        minimum = struct.unpack_from("!I", resp, i + 10 + rdlen - 4)[0]
                        soa_ttl = min(ttl, minimum)
                i += 10 + rdlen
    except (struct.error, IndexError):
        return None
    if rcode == 3 or an == 0:
        if soa_ttl is None:
            return None
        ttl = min(soa_ttl, NEGATIVE_MAX_TTL)
    else:
        if min_ttl is None:
            return None
        ttl = min(min_ttl, CACHE_MAX_TTL)
    if ttl <= 0:
        return None
    return ttl, tuple(offsets)


def cache_key(data: bytes, end: int) -> bytes:
    """Lower-cased question + CD bit + the asker's EDNS presence, payload size and DO bit."""
    edns = edns_payload(data, end)
    extra = b"\x00\x00\x00\x00" if edns is None else struct.pack("!BHB", 1, edns[0], edns[1])
    return data[12:end].lower() + bytes([data[3] & 0x10]) + extra


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


NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFA_ADDRESS, IFA_LOCAL = 1, 2


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
                    if raw is not None and family in (socket.AF_INET, socket.AF_INET6):
                        text = socket.inet_ntop(family, raw)
                        out.append((index, ipaddress.ip_interface(f"{text}/{prefix}")))
                i += (length + 3) & ~3
        return out


def sockaddr_tuple(raw: bytes) -> tuple:
    """A raw ``sockaddr_in``/``sockaddr_in6`` as the address tuple ``socket.sendto`` takes."""
    port = struct.unpack_from("!H", raw, 2)[0]
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    flowinfo = struct.unpack_from("!I", raw, 4)[0]
    scope_id = struct.unpack_from("=I", raw, 24)[0]
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope_id


# -- the daemon --------------------------------------------------------------------------------



def _listen_pair(family: int, key: tuple[str, int], bufsize: int | None = None) -> tuple[socket.socket, socket.socket]:
    """A non-blocking UDP socket and a listening TCP socket bound to ``key``, in the namespace
    of the calling thread; ``bufsize`` sets the UDP buffers. Raises OSError, leaving nothing open."""
    u = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    t = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        if bufsize:
            u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            u.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        u.bind(key)
        u.setblocking(False)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(key)
        t.listen(128)
        t.setblocking(False)
    except OSError:
        u.close()
        t.close()
        raise
    return u, t

class Server:
    def __init__(self, config_path: str):
        self.config_path = config_path
        self.config: dict = {}
        self.peer_records: list[dict] = []
        self.next_peer_scan = time.monotonic() + PEER_RESCAN
        self.zone: Zone = self._load()
        self.pidfile = self.zone.pidfile
        self.sel = selectors.DefaultSelector()
        self.udp: dict[tuple[str, int], socket.socket] = {}
        self.tcp: dict[tuple[str, int], socket.socket] = {}
        self.unbound: dict[tuple[str, int], Listener] = {}
        self.next_bind_retry = 0.0
        # Listeners inside container namespaces (containers on macvlan networks), by namespace.
        self.ns_bound: dict[str, NsSockets] = {}
        self.ns_unbound: dict[str, NsListener] = {}
        self.ns_failed_logged: set[str] = set()
        self.next_ns_check = 0.0
        self.upstream_udp: dict[tuple[str, int], socket.socket] = {}
        self.pending: collections.OrderedDict[int, Pending] = collections.OrderedDict()
        self.upstream_tcp = 0
        self.cache: dict[bytes, CacheEntry] = {}
        self.clients: collections.OrderedDict[TcpClient, None] = collections.OrderedDict()
        self.running = True
        self.reload_requested = False
        self.wake_r, self.wake_w = socket.socketpair()
        self.stats: collections.Counter[str] = collections.Counter()
        # Batched UDP I/O, one vector set per address family (listeners are served one at a
        # time and a batch is fully answered before the next listener's turn, so they share).
        # None: this platform has no recvmmsg; the one-packet-per-call path serves instead.
        self.batches: dict[int, fastio.UdpBatch | None] = {}
        # Source address as raw sockaddr bytes -> view, derived from ``self.zone.views`` so
        # the batched path never formats addresses as text (rebuilt when the zone changes).
        self._raw_zone: Zone | None = None
        self._raw_views: dict[bytes, View] = {}
        # Not an open resolver: a source that is no container of the zone is answered (as a
        # member of the listener's network) only when it is on that network's subnets or is an
        # address of this host; anything else gets nothing. Derived from the interfaces the
        # listener addresses sit on (``_scan_interfaces``), memoised per (source, listener).
        self.local_addrs: frozenset[str] = frozenset()
        self.member_nets: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = {}
        self._strangers: dict[tuple[str, str], View | None] = {}

    def _load(self) -> Zone:
        config = load_config(self.config_path)
        found = self._gather(config)
        zone = build_zone(peers.merge(config, found), self.config_path)
        for w in zone.warnings:
            log(f"warning: {w}")
        self.config = config
        self.peer_records = found
        return zone

    def _gather(self, config: dict) -> list[dict]:
        """Other projects' containers on the networks this resolver concerns (``peers.py``)."""
        try:
            return peers.gather(config, self.config_path)
        except Exception as e:  # noqa: BLE001 -- what other projects wrote must never stop us
            log(f"cannot read other projects' records: {e!r}")
            return []

    def _rescan_peers(self) -> None:
        """Reload when other projects' records changed without a signal (a project killed
        before its `down`, a notification that came too early): stale names do not linger."""
        self.next_peer_scan = time.monotonic() + PEER_RESCAN
        if self._gather(self.config) != self.peer_records:
            self.reload()

    # -- listeners -----------------------------------------------------------------------------

    def _bind(self, lst: Listener) -> None:
        """Bind UDP and TCP on one listener; raises OSError (nothing left half-bound)."""
        family = socket.AF_INET if lst.family == 4 else socket.AF_INET6
        key = (lst.address, lst.port)
        u, t = _listen_pair(family, key, RCVBUF)
        self.udp[key] = u
        self.tcp[key] = t
        if family not in self.batches:
            batched = os.environ.get("COMPOSENET_DNS_MMSG", "1") != "0"
            self.batches[family] = fastio.open_batch(family, MMSG_COUNT, UDP_QUERY_MAX) if batched else None
        self.sel.register(u, selectors.EVENT_READ, ("udp", (lst.address, self.batches[family])))
        self.sel.register(t, selectors.EVENT_READ, ("accept", lst.address))

    def _unbind(self, key: tuple[str, int]) -> None:
        for table in (self.udp, self.tcp):
            s = table.pop(key, None)
            if s is not None:
                self.sel.unregister(s)
                s.close()

    def _bind_ns(self, lst: NsListener) -> None:
        """Bind UDP and TCP on ``lst.address``:``lst.port`` inside namespace ``lst.netns``: the
        sockets are made there (a socket belongs to the namespace it is created in), then this
        thread returns to its own namespace; they keep working from here. Raises OSError."""
        path = nsmod.netns_path(lst.netns)
        if not nsmod.is_netns(path):
            raise OSError(errno.ENOENT, f"no namespace {path}")
        inode = os.stat(path).st_ino
        family = socket.AF_INET if ":" not in lst.address else socket.AF_INET6
        key = (lst.address, lst.port)
        with nsmod.entered(lst.netns):
            u, t = _listen_pair(family, key)
        self.ns_bound[lst.netns] = NsSockets(lst, u, t, inode)
        self.sel.register(u, selectors.EVENT_READ, ("nsudp", lst.netns))
        self.sel.register(t, selectors.EVENT_READ, ("nsaccept", lst.netns))

    def _unbind_ns(self, netns: str) -> None:
        b = self.ns_bound.pop(netns, None)
        if b is None:
            return
        for s in (b.udp, b.tcp):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        for c in [c for c in self.clients if c.netns == netns]:
            self._close_client(c)

    def _sync_namespaces(self) -> None:
        """Listen in the namespaces the zone names and only there: close the listeners of a
        namespace no longer named or no longer at /run/netns/<name> (so the daemon does not keep
        a deleted namespace, with its links, alive), bind the missing ones (retried every
        ``NS_CHECK`` seconds; a failure is logged once per namespace, never fatal)."""
        self.next_ns_check = time.monotonic() + NS_CHECK
        wanted = {lst.netns: lst for lst in self.zone.ns_listeners}
        for name, b in list(self.ns_bound.items()):
            lst = wanted.get(name)
            try:
                same = nsmod.is_netns(nsmod.netns_path(name)) and os.stat(nsmod.netns_path(name)).st_ino == b.inode
            except OSError:
                same = False
            if lst is None or lst != b.listener or not same:
                self._unbind_ns(name)
                if lst is not None and not same:
                    log(f"namespace {name} is gone: closed its listener")
        self.ns_unbound = {n: lst for n, lst in wanted.items() if n not in self.ns_bound}
        self.ns_failed_logged &= set(self.ns_unbound)
        for name, lst in list(self.ns_unbound.items()):
            try:
                self._bind_ns(lst)
            except OSError as e:
                if name not in self.ns_failed_logged:
                    self.ns_failed_logged.add(name)
                    log(f"cannot listen on {lst.address}:{lst.port} in namespace {name} (container "
                        f"{lst.container}): {e.strerror or e}; retrying every {NS_CHECK:.0f} s")
                continue
            del self.ns_unbound[name]
            if name in self.ns_failed_logged:
                self.ns_failed_logged.discard(name)
                log(f"listening on {lst.address}:{lst.port} in namespace {name}")

    def _listening(self) -> str:
        return ", ".join([f"{a}:{p}" for a, p in sorted(self.udp)]
                         + [f"{b.listener.address}:{b.listener.port} in {n}" for n, b in sorted(self.ns_bound.items())])

    def start(self) -> None:
        for lst in self.zone.listeners:
            try:
                self._bind(lst)
            except OSError as e:
                raise ConfigError(f"cannot listen on {lst.address}:{lst.port} (network {lst.network}): "
                                  f"{e.strerror}", hint="is the network's bridge up with its gateway address?"
                                  ) from None
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", ""))
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self._scan_interfaces()
        self._sync_namespaces()
        self._write_pidfile()
        log(f"ready: project {self.zone.project}, listening on {self._listening()}")

    def _write_pidfile(self) -> None:
        path = Path(self.pidfile)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, path)

    def _remove_pidfile(self) -> None:
        try:
            if Path(self.pidfile).read_text().strip() == str(os.getpid()):
                os.unlink(self.pidfile)
        except OSError:
            pass

    def _on_hup(self, signum, frame) -> None:
        self.reload_requested = True

    def _on_term(self, signum, frame) -> None:
        self.running = False

    def reload(self) -> None:
        self.reload_requested = False
        # Logged before the config is read: whoever waits for a reload it asked for (peers.py)
        # counts only a "reloaded" that follows a "reloading" logged after its signal.
        log("reloading")
        try:
            zone = self._load()
        except ConfigError as e:
            log(f"reload failed, keeping the previous configuration: {e}")
            return
        self.zone = zone  # one assignment: every later packet sees the new tables
        wanted = {(lst.address, lst.port): lst for lst in zone.listeners}
        for key in list(self.udp):
            if key not in wanted:
                self._unbind(key)
        self.unbound = {k: lst for k, lst in wanted.items() if k not in self.udp}
        self._bind_missing()
        self._scan_interfaces()
        self._sync_namespaces()
        self._drop_unused_upstreams()
        log(f"reloaded: {len(zone.containers)} containers, listening on {self._listening()}")

    def _bind_missing(self) -> None:
        for key, lst in list(self.unbound.items()):
            try:
                self._bind(lst)
                del self.unbound[key]
                self._scan_interfaces()
                log(f"listening on {lst.address}:{lst.port} (network {lst.network})")
            except OSError as e:
                log(f"cannot listen on {lst.address}:{lst.port} (network {lst.network}): {e.strerror}; "
                    f"retrying every {RETRY_BIND:.0f} s")
        self.next_bind_retry = time.monotonic() + RETRY_BIND

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
        if len(self._strangers) >= 4096:  # bounded whatever sources a flood uses
            self._strangers.clear()
        self._strangers[key] = view
        if view is None:
            self.stats["stranger"] += 1
            if self.stats["stranger"] <= 5:
                log(f"ignoring queries from {source} to {listener}: not on the project's networks")
        return view

    def _drop_unused_upstreams(self) -> None:
        used = {parse_upstream(u) for u in self.zone.upstreams}
        for v in [*self.zone.views.values(), *self.zone.listener_views.values(), *self.zone.ns_views.values()]:
            used.update(parse_upstream(u) for u in v.upstreams)
        used.update(up for p in self.pending.values() for up in p.upstreams)
        for key in list(self.upstream_udp):
            if key not in used:
                s = self.upstream_udp.pop(key)
                self.sel.unregister(s)
                s.close()

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> None:
        sel = self.sel
        while self.running:
            timeout = self._timeout()
            try:
                events = sel.select(timeout)
            except InterruptedError:
                events = []
            for key, mask in events:
                kind, arg = key.data
                try:
                    if kind == "udp":
                        if arg[1] is not None:
                            self._serve_udp_batched(key.fileobj, arg[0], arg[1])  # type: ignore[arg-type]
                        else:
                            self._serve_udp(key.fileobj, arg[0])  # type: ignore[arg-type]
                    elif kind == "upstream":
                        self._upstream_udp_read(key.fileobj, arg)  # type: ignore[arg-type]
                    elif kind == "accept":
                        self._accept(key.fileobj, arg)  # type: ignore[arg-type]
                    elif kind == "nsudp":
                        self._serve_ns_udp(key.fileobj, arg)  # type: ignore[arg-type]
                    elif kind == "nsaccept":
                        self._accept(key.fileobj, "", netns=arg)  # type: ignore[arg-type]
                    elif kind == "client":
                        self._client_io(arg, mask)
                    elif kind == "uptcp":
                        self._upstream_tcp_io(arg, mask)
                    elif kind == "wake":
                        self._drain_wake()
                except Exception as e:  # noqa: BLE001 -- one bad event must never stop the resolver
                    self.stats["internal-error"] += 1
                    if self.stats["internal-error"] <= 20:
                        log(f"internal error handling {kind} event: {e!r}")
            if self.reload_requested:
                self.reload()
            now = time.monotonic()
            self._expire(now)
            if self.unbound and now >= self.next_bind_retry:
                self._bind_missing()
            if now >= self.next_peer_scan:
                self._rescan_peers()
            if (self.ns_bound or self.ns_unbound) and now >= self.next_ns_check:
                self._sync_namespaces()
        self.shutdown()

    def _timeout(self) -> float:
        timeout = 1.0
        now = time.monotonic()
        if self.pending:
            first = next(iter(self.pending.values()))
            timeout = min(timeout, max(0.0, first.deadline - now))
        if self.clients:
            first_client = next(iter(self.clients))
            timeout = min(timeout, max(0.0, first_client.deadline - now))
        return timeout

    def _drain_wake(self) -> None:
        try:
            while self.wake_r.recv(512):
                pass
        except OSError:
            pass

    def shutdown(self) -> None:
        for key in list(self.udp):
            self._unbind(key)
        for name in list(self.ns_bound):
            self._unbind_ns(name)
        for c in list(self.clients):
            self._close_client(c)
        for p in list(self.pending.values()):
            self._close_upstream_tcp(p)
        for s in self.upstream_udp.values():
            s.close()
        self._remove_pidfile()
        log("stopped")

    # -- UDP askers (the hot path) -------------------------------------------------------------

    def _serve_udp(self, sock: socket.socket, listener: str) -> None:
        zone = self.zone
        views = zone.views
        if listener not in zone.listener_views:  # listener removed by a reload while queued
            return
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
            if r.__class__ is int:
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
        empty (or ``UDP_BATCH`` packets), without going back to the selector in between."""
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

    # -- TCP askers ----------------------------------------------------------------------------

    def _accept(self, lsock: socket.socket, listener: str, netns: str = "") -> None:
        """Accept TCP askers on a host listener (``listener``: its address; strangers are
        closed at once) or on a container's own listener (``netns``: the asker is that
        container, whatever its source address)."""
        for _ in range(64):
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

    # -- forwarding ----------------------------------------------------------------------------

    def _forward(self, view, data: bytes, end: int, sock: socket.socket | None, addr: tuple | None,
                 client: TcpClient | None) -> None:
        now = time.monotonic()
        # Askers with different upstreams (a service's `dns:`) must not share cached answers.
        key = cache_key(data, end) + ",".join(view.upstreams).encode()
        hit = self.cache.get(key)
        if hit is not None:
            if hit.expires > now:
                self.stats["cache-hit"] += 1
                self._deliver(self._from_cache(hit, data, end, now), data, end, sock, addr, client)
                return
            del self.cache[key]
        if not view.upstreams or len(self.pending) >= MAX_PENDING:
            self._deliver(self._error(data, end, RCODE_SERVFAIL), data, end, sock, addr, client)
            return
        qid = random.getrandbits(16)
        for _ in range(64):
            if qid not in self.pending:
                break
            qid = random.getrandbits(16)
        else:
            self._deliver(self._error(data, end, RCODE_SERVFAIL), data, end, sock, addr, client)
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
            resp = self._error(p.query, p.end, RCODE_SERVFAIL)
        self._deliver(p.client_id + resp[2:], p.query, p.end, p.udp_sock, p.udp_addr, p.tcp_client)

    def _error(self, data: bytes, end: int, rcode: int) -> bytes:
        flags = 0x8080 | (data[2] & 0x79) << 8 | rcode
        return data[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + data[12:end]

    def _deliver(self, resp: bytes, query: bytes, end: int, sock: socket.socket | None, addr: tuple | None,
                 client: TcpClient | None) -> None:
        if client is not None:
            self._client_send(client, resp)
        elif sock is not None and addr is not None:
            resp = fit_udp(query, end, resp)
            try:
                sock.sendto(resp, addr)
            except OSError:
                self.stats["send-error"] += 1

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
        if resp[2] & _FLAG_TC and not via_tcp:
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

    # -- cache ---------------------------------------------------------------------------------

    def _store(self, p: Pending, resp: bytes) -> None:
        if len(resp) > CACHE_MAX_RESPONSE:
            return
        found = cache_ttl(resp, p.end)
        if found is None:
            return
        ttl, offsets = found
        if len(self.cache) >= CACHE_ENTRIES:
            self.cache.pop(next(iter(self.cache)))  # oldest inserted first
        now = time.monotonic()
        self.cache[p.cache_key] = CacheEntry(now + ttl, now, resp, offsets)

    def _from_cache(self, hit: CacheEntry, data: bytes, end: int, now: float) -> bytes:
        out = bytearray(hit.response)
        out[0:2] = data[0:2]
        out[2] = (out[2] & 0xFE) | (data[2] & 0x01)  # the asker's RD
        out[12:end] = data[12:end]  # the asker's own spelling of the name (0x20 clients)
        elapsed = int(now - hit.stored)
        for off in hit.ttl_offsets:
            ttl = struct.unpack_from("!I", out, off)[0]
            struct.pack_into("!I", out, off, max(0, ttl - elapsed))
        return bytes(out)

    # -- timers --------------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        for _ in range(MAX_PENDING):
            if not self.pending:
                break
            qid, p = next(iter(self.pending.items()))
            if p.deadline > now:
                break
            self._failover(qid, p)
        for _ in range(MAX_TCP_CLIENTS):
            if not self.clients:
                break
            c = next(iter(self.clients))
            if c.deadline > now:
                break
            self._close_client(c)
        if len(self.cache) > CACHE_ENTRIES // 2 and random.random() < 0.01:
            for k in [k for k, e in self.cache.items() if e.expires <= now]:
                del self.cache[k]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m composenet.dns.server CONFIG\n")
        return 2
    try:
        server = Server(args[0])
        server.start()
    except ConfigError as e:
        sys.stderr.write(f"composenet-dns: {e}\n")
        return 1
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
