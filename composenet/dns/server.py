"""composenet's resolver daemon: ``python -m composenet.dns.server CONFIG``.

Owns: the entry point, :class:`Server` (the daemon's parts combined into one object), the event
loop that drives them, the life cycle (start, reload, shutdown, pidfile, signals) and the
forwarding cache (upstream answers kept for their TTL, capped). Must not decide what a name
means (``zone.py`` and ``answer.py``, pure) and must never crash on input from the network: an
exception while handling one event is counted and logged, and the loop goes on.

The parts, one module each, share the state declared in ``state.py``:

* ``listeners.py``: the UDP and TCP sockets, in the host and inside container namespaces;
* ``udp.py``: UDP askers, the hot path (batched with ``recvmmsg``/``sendmmsg``, ``fastio.py``);
* ``tcp.py``: TCP askers;
* ``forward.py``: upstream servers: UDP, TCP, per-attempt timeout and failover;
* ``access.py``: who may ask (not an open resolver: strangers get nothing at all);
* ``peers.py``: other projects' containers, merged into the config;
* ``remote.py``: other hosts' containers on cluster networks (written by the cluster agent).

Start-up: the daemon imports only the standard library, composenet.paths, composenet.errors,
composenet.linux.netns and this package (no dnslib, no pyroute2): the executor starts one per
project and waits for its pidfile.

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
  bound in the container's namespace, retried and closed with it (``listeners.py``).
* SIGTERM / SIGINT: close everything, remove the pidfile, exit 0.
* Other projects' containers on the networks this resolver concerns (``peers.py``) and other
  hosts' containers on its cluster networks (``remote.py``) are merged into the config at start
  and on every reload; they are re-read every ``PEER_RESCAN`` seconds, and a change reloads (so
  records of a project killed before its `down` go away).

Bounds (memory stays bounded whatever the network sends): cache entries and cached response
size (here); pending forwards and upstream TCP connections (``forward.py``); TCP client
connections, query length, output buffer and idle time (``tcp.py``); the memo of strangers
(``access.py``).
"""

from __future__ import annotations

import collections
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from composenet.dns import peers, remote
from composenet.dns.access import Access
from composenet.dns.access import (
    interface_addresses as interface_addresses,  # re-exported: tests call it here
)
from composenet.dns.answer import View
from composenet.dns.config import ConfigError, load_config
from composenet.dns.forward import Forwarding
from composenet.dns.listeners import Listeners
from composenet.dns.state import CacheEntry, Pending, TcpClient, log
from composenet.dns.tcp import TcpAskers
from composenet.dns.udp import UdpAskers
from composenet.dns.wire import FLAG_TC, edns_payload, skip_name
from composenet.dns.zone import Zone, build_zone

CACHE_ENTRIES = 4096
CACHE_MAX_RESPONSE = 4096  # bytes; larger answers are not cached
CACHE_MAX_TTL = 3600
NEGATIVE_MAX_TTL = 300
PEER_RESCAN = 5.0  # seconds between re-reads of other projects' records (peers.py)


# -- the forwarding cache: what to keep (no dnslib: this runs for every forwarded answer) -----


def cache_ttl(resp: bytes, end: int) -> tuple[int, tuple[int, ...]] | None:
    """(TTL to cache ``resp`` for, offsets of every TTL field) or None when not cacheable.

    Positive answers: the smallest TTL of the answer and authority records (capped). Negative
    ones (NXDOMAIN, or NOERROR without answers): the SOA's min(TTL, minimum), capped at
    ``NEGATIVE_MAX_TTL``; without an SOA they are not cached. Truncated or failed answers are
    never cached."""
    if resp[2] & FLAG_TC:
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


# -- the daemon --------------------------------------------------------------------------------


class Server(UdpAskers, TcpAskers, Forwarding, Listeners, Access):
    """The resolver of one project: ``Server(config_path)`` loads the config (ConfigError),
    :meth:`start` binds and writes the pidfile, :meth:`run` serves until SIGTERM."""

    def __init__(self, config_path: str):
        self.config_path = config_path
        self.config = {}
        self.peer_records = []
        self.next_peer_scan = time.monotonic() + PEER_RESCAN
        self.zone = self._load()
        self.pidfile = self.zone.pidfile
        self.sel = selectors.DefaultSelector()
        self.udp = {}
        self.tcp = {}
        self.unbound = {}
        self.next_bind_retry = 0.0
        self.ns_bound = {}
        self.ns_unbound = {}
        self.ns_failed_logged = set()
        self.next_ns_check = 0.0
        self.upstream_udp = {}
        self.pending = collections.OrderedDict()
        self.upstream_tcp = 0
        self.cache = {}
        self.clients = collections.OrderedDict()
        self.running = True
        self.reload_requested = False
        self.wake_r, self.wake_w = socket.socketpair()
        self.stats = collections.Counter()
        # One batch of vectors per address family (listeners are served one at a time and a
        # batch is fully answered before the next listener's turn, so they share).
        self.batches = {}
        # Rebuilt from ``self.zone.views`` when the zone changes (udp.py).
        self._raw_zone = None
        self._raw_views = {}
        # Filled by ``_scan_interfaces`` at start (access.py); until then strangers get nothing.
        self.local_addrs = frozenset()
        self.member_nets = {}
        self._strangers = {}

    # -- the config ----------------------------------------------------------------------------

    def _load(self) -> Zone:
        config = load_config(self.config_path)
        local, cluster = self._gather(config)
        zone = build_zone(remote.merge(peers.merge(config, local), cluster), self.config_path)
        for w in zone.warnings:
            log(f"warning: {w}")
        self.config = config
        self.peer_records = [*local, *cluster]
        return zone

    def _gather(self, config: dict) -> tuple[list[dict], list[dict]]:
        """Other projects' containers on the networks this resolver concerns (``peers.py``), and
        those of other hosts of the cluster (``remote.py``)."""
        try:
            local = peers.gather(config, self.config_path)
        except Exception as e:  # noqa: BLE001 -- what other projects wrote must never stop us
            log(f"cannot read other projects' records: {e!r}")
            local = []
        try:
            cluster = remote.gather(config, self.config_path)
        except Exception as e:  # noqa: BLE001 -- nor what the cluster agent wrote
            log(f"cannot read the cluster's records: {e!r}")
            cluster = []
        return local, cluster

    def _rescan_peers(self) -> None:
        """Reload when other projects' records changed without a signal (a project killed
        before its `down`, a notification that came too early): stale names do not linger."""
        self.next_peer_scan = time.monotonic() + PEER_RESCAN
        local, cluster = self._gather(self.config)
        if [*local, *cluster] != self.peer_records:
            self.reload()

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

    # -- start and stop ------------------------------------------------------------------------

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
        self.reload_requested = True  # acted on by the loop, between events

    def _on_term(self, signum, frame) -> None:
        self.running = False

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

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        sel = self.sel
        while self.running:
            timeout = self._timeout()
            try:
                events = sel.select(timeout)
            except InterruptedError:
                events = []
            # Each socket was registered with (kind, argument): the kind names its handler. The
            # chain is tested in order of frequency (UDP queries first) and stays inline: a
            # dispatch table would cost a call per event on the hot path.
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
        """Seconds until the first deadline (a forward attempt, a TCP client), at most 1."""
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

    def _expire(self, now: float) -> None:
        self._expire_forwards(now)
        self._expire_clients(now)
        if len(self.cache) > CACHE_ENTRIES // 2 and random.random() < 0.01:
            for k in [k for k, e in self.cache.items() if e.expires <= now]:
                del self.cache[k]

    # -- the forwarding cache ------------------------------------------------------------------

    def _forward(self, view: View, data: bytes, end: int, sock: socket.socket | None, addr: tuple | None,
                 client: TcpClient | None) -> None:
        """Answer a query the zone leaves to the upstreams: from the cache while its entry
        lives, else upstream (``forward.py``)."""
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
        self._ask_upstream(view, data, end, key, sock, addr, client)

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
