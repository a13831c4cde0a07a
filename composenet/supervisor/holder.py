"""Holding the project's published host ports: one bound socket per port, address and family,
kept for the project's lifetime (what Docker's and Podman's port proxies do by listening), so
that a host program started later gets "address in use" instead of silently losing the traffic
the project's DNAT rules take before any socket sees it.

A held TCP socket is bound and never listens: a connection that reaches it without being
DNATed is refused (RST). Neither TCP nor UDP sockets set SO_REUSEADDR: with it on both sides, a
later program could bind the same port. IPv6 sockets are IPv6-only (the IPv4 socket holds the
IPv4 side), and IP_FREEBIND lets a port on an address the host does not have (yet) be held.

A spec is ``proto/address/port`` (``tcp/0.0.0.0/8080``, ``udp/::/53``, ``tcp/127.0.0.1/8080``).

Must not: accept, read or send anything.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

IP_FREEBIND = 15
IPV6_FREEBIND = 78


def parse(spec: str) -> tuple[str, str, int]:
    proto, addr, port = spec.split("/")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"cannot hold {proto} ports")
    ipaddress.ip_address(addr)
    return proto, addr, int(port)


def bind(spec: str) -> socket.socket:
    """A socket bound to ``spec``; OSError (EADDRINUSE, ...) when the port cannot be held."""
    proto, addr, port = parse(spec)
    six = ":" in addr
    s = socket.socket(socket.AF_INET6 if six else socket.AF_INET,
                      (socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM) | socket.SOCK_CLOEXEC)
    try:
        if six:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        else:
            s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        s.bind((addr, port))
    except OSError:
        s.close()
        raise
    return s


def _slot(spec: str) -> tuple[str, bool, int]:
    """(protocol, IPv6, port): two specs of one slot on different addresses can clash."""
    proto, addr, port = parse(spec)
    return proto, ":" in addr, port


class Holder:
    """The sockets held now, by spec."""

    def __init__(self) -> None:
        self.held: dict[str, socket.socket] = {}

    def specs(self) -> list[str]:
        return sorted(self.held)

    def hold(self, wanted: list[str]) -> list[tuple[str, str]]:
        """Hold exactly ``wanted``: bind what is new (before letting anything go), then close what
        is no longer wanted. A port that moves to another address of its family (127.0.0.1:8081
        -> 0.0.0.0:8081, which the kernel refuses while the old one is bound) is let go just
        before, and taken back when the new one cannot be bound. Returns (spec, reason) for each
        spec that could not be bound; then nothing that was held is let go (the caller rolls
        back to it)."""
        failed: list[tuple[str, str]] = []
        for spec in sorted(set(wanted) - set(self.held)):
            try:
                self.held[spec] = self._bind_moving(spec, [h for h in self.held if h not in wanted])
            except (OSError, ValueError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
                    reason = "address already in use"
                failed.append((spec, reason))
        if not failed:
            for spec in sorted(set(self.held) - set(wanted)):
                self.held.pop(spec).close()
        return failed

    def _bind_moving(self, spec: str, unwanted: list[str]) -> socket.socket:
        """``bind(spec)``; on EADDRINUSE, when an unwanted held spec has the same protocol,
        family and port, close those and bind again (they are bound again if that fails)."""
        try:
            return bind(spec)
        except OSError as e:
            clash = [h for h in unwanted if _slot(h) == _slot(spec)]
            if e.errno != errno.EADDRINUSE or not clash:
                raise
        for h in clash:
            self.held.pop(h).close()
        try:
            return bind(spec)
        except OSError:
            for h in clash:
                try:
                    self.held[h] = bind(h)
                except OSError:
                    pass  # taken meanwhile: the caller's check reports the port as not held
            raise

    def release(self) -> None:
        self.hold([])
