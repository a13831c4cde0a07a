"""Probes for `composenet check`: real DNS queries, TCP connects and UDP datagrams sent from inside
a namespace, and the kernel facts a probe needs (listening sockets, host addresses, a
container's resolver). Each probe runs in the calling thread after it entered the namespace
(composenet.linux.netns.entered), is bounded by its timeout, and leaves nothing behind.

Owns: what a probe's outcome is called (``Outcome.status``) and how it is measured. Must not:
decide what is expected (composenet.core.checks) or why a probe failed (composenet.kernel.check).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from composenet.core.resources import LABEL_PREFIX
from composenet.dns.wire import QCLASS_IN, QTYPE_A, QTYPE_AAAA, encode_name, skip_name
from composenet.kernel.context import Context
from composenet.kernel.rtnl import nl
from composenet.linux import netns, sockdiag
from composenet.linux.netlink import IFF_LOOPBACK, IFF_UP
from composenet.paths import etc_netns_dir

T = TypeVar("T")
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
DNS_TRIES = 3
UDP_PAYLOAD = b"composenet check\n"


@dataclass(frozen=True)
class Outcome:
    """What a probe saw.

    TCP and UDP: ``open`` (connected; a UDP answer), ``refused`` (RST, or ICMP port unreachable:
    the packet reached a host where nothing listens), ``timeout`` (no answer: dropped, or a UDP
    service that does not answer), ``unreachable`` (no route, or an ICMP error on the way),
    ``error``. DNS: the response code (NOERROR, NXDOMAIN, REFUSED, ...), ``timeout`` or ``error``,
    with the addresses answered."""

    status: str
    detail: str = ""
    addresses: tuple[str, ...] = ()
    sport: int | None = None  # the probe's source port (TCP)
    landed: str | None = None  # publish: the namespace that holds the other end ("" = none found)
    server: str | None = None  # DNS: the server asked


def in_ns(ns: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with the calling thread inside namespace ``ns`` ("" = where it is)."""
    with netns.entered(ns):
        return fn(*args)


# ---- DNS ------------------------------------------------------------------------------------


def first_nameserver(text: str) -> str | None:
    """The first ``nameserver`` of a resolv.conf text; None when it has none."""
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            return parts[1]
    return None


def resolver_of(ns: str) -> str | None:
    """The first ``nameserver`` of the container's resolv.conf (/etc/netns/<ns>/resolv.conf,
    what its processes see as /etc/resolv.conf); None when it has none."""
    try:
        with open(os.path.join(etc_netns_dir(ns), "resolv.conf")) as f:
            return first_nameserver(f.read())
    except OSError:
        return None


def dns_query(name: str, qtype: str) -> tuple[int, bytes]:
    """(id, a recursive query for ``name``)."""
    qid = struct.unpack("!H", os.urandom(2))[0]
    code = QTYPE_AAAA if qtype == "AAAA" else QTYPE_A
    return qid, struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", code, QCLASS_IN)


def parse_answer(data: bytes, qid: int) -> tuple[str, tuple[str, ...]] | None:
    """(response code name, A and AAAA addresses answered) of a response to query ``qid``, or
    None when it is not one (another id, truncated, malformed)."""
    try:
        rid, _flags, qd, an = struct.unpack_from("!HHHH", data, 0)
        if rid != qid:
            return None
        rcode = RCODES.get(data[3] & 0x0F, str(data[3] & 0x0F))
        i = 12
        for _ in range(qd):
            i = skip_name(data, i) + 4
        out = []
        for _ in range(an):
            i = skip_name(data, i)
            rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", data, i)
            rdata = data[i + 10: i + 10 + rdlen]
            if rtype == QTYPE_A and rdlen == 4:
                out.append(socket.inet_ntop(socket.AF_INET, rdata))
            elif rtype == QTYPE_AAAA and rdlen == 16:
                out.append(socket.inet_ntop(socket.AF_INET6, rdata))
            i += 10 + rdlen
    except (struct.error, IndexError):
        return None
    return rcode, tuple(sorted(out))


def dns(server: str, name: str, qtype: str, timeout: float) -> Outcome:
    """One query to ``server`` port 53 over UDP, from this thread's namespace (so the resolver
    sees the container's own address); bounded retries within ``timeout``."""
    try:
        qid, query = dns_query(name, qtype)
    except ValueError as e:
        return Outcome("error", f"{name!r} is not a DNS name: {e}", server=server)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        s.connect((server, 53))
        end = time.monotonic() + timeout
        for _ in range(DNS_TRIES):
            s.send(query)
            try_end = min(end, time.monotonic() + timeout / DNS_TRIES)
            for _ in range(16):  # bounded: ignore at most this many stray datagrams per try
                left = try_end - time.monotonic()
                if left <= 0:
                    break
                s.settimeout(left)
                try:
                    got = parse_answer(s.recv(4096), qid)
                except TimeoutError:
                    break
                if got is not None:
                    return Outcome(got[0], addresses=got[1], server=server)
        return Outcome("timeout", f"no answer from {server} within {timeout:g} s", server=server)
    except ConnectionRefusedError:
        return Outcome("refused", f"nothing listens on {server}:53/udp (ICMP port unreachable)", server=server)
    except OSError as e:
        return Outcome("error", f"{server}: {e.strerror or e}", server=server)
    finally:
        s.close()


# ---- TCP and UDP ----------------------------------------------------------------------------


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _os_status(e: OSError, timeout: float) -> Outcome:
    if isinstance(e, TimeoutError) or e.errno == errno.ETIMEDOUT:
        return Outcome("timeout", f"no answer within {timeout:g} s")
    if e.errno == errno.ECONNREFUSED:
        return Outcome("refused", "connection refused")
    if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return Outcome("unreachable", e.strerror or str(e))
    return Outcome("error", e.strerror or str(e))


def tcp(addr: str, port: int, timeout: float, landing: tuple[str, ...] = ()) -> Outcome:
    """A TCP connect to addr:port from this thread's namespace. With ``landing`` (namespaces),
    find while the connection is open which of them holds its other end (a published port must
    land in one of the service's replicas, not in a host process)."""
    s = socket.socket(_family(addr), socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        s.connect((addr, port))
        sport = s.getsockname()[1]
        landed = None
        if landing:
            landed = next((ns for ns in landing if _holds_peer(ns, sport)), "")
        return Outcome("open", "connected", sport=sport, landed=landed)
    except OSError as e:
        return _os_status(e, timeout)
    finally:
        s.close()


def _holds_peer(ns: str, sport: int) -> bool:
    """Whether namespace ``ns`` has a TCP socket whose peer port is ``sport`` (the accepted end
    of our connection, in any state: queued, established, closing). A masquerade keeps the
    source port unless it clashes, which a probe's ephemeral port does not."""
    try:
        return any(x.rport == sport for x in in_ns(ns, sockdiag.sockets, ("tcp",)))
    except OSError:
        return False


def udp(addr: str, port: int, timeout: float) -> Outcome:
    """A datagram to addr:port from this thread's namespace: ``open`` when answered, ``refused``
    on ICMP port unreachable, ``timeout`` when nothing came back (a UDP service may stay silent:
    the caller tells a drop from silence by tracing)."""
    s = socket.socket(_family(addr), socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        s.connect((addr, port))
        payload = dns_query("localhost", "A")[1] if port == 53 else UDP_PAYLOAD
        s.send(payload)
        s.recv(4096)
        return Outcome("open", "answered")
    except OSError as e:
        return _os_status(e, timeout)
    finally:
        s.close()


# ---- facts ----------------------------------------------------------------------------------


def listening(ns: str) -> list[sockdiag.Sock]:
    """The listening sockets of namespace ``ns`` ("" = the host's)."""
    return in_ns(ns, sockdiag.listeners)


def host_addresses(ctx: Context) -> list[str]:
    """The host's IPv4 addresses on links that are up, are not loopback and are no composenet
    link; the one on the link of the default route first."""
    host = nl(ctx, "")
    links = {lk.index: lk for lk in host.links()}
    default_oif = next((r.oif for r in host.routes() if r.dst_len == 0 and r.family == socket.AF_INET), 0)
    out = []
    for a in host.addrs():
        lk = links.get(a.index)
        if (a.family != socket.AF_INET or lk is None or not lk.flags & IFF_UP or lk.flags & IFF_LOOPBACK
                or lk.alias.startswith(LABEL_PREFIX) or a.address.startswith(("127.", "169.254."))):
            continue
        out.append((a.index != default_oif, a.index, a.address))
    return [addr for *_k, addr in sorted(out)]
