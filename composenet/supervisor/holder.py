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


class Holder:
    """The sockets held now, by spec."""

    def __init__(self) -> None:
        self.held: dict[str, socket.socket] = {}

    def specs(self) -> list[str]:
        return sorted(self.held)

    def hold(self, wanted: list[str]) -> list[tuple[str, str]]:
        """Hold exactly ``wanted``: bind what is new (before letting anything go), then close what
        is no longer wanted. Returns (spec, reason) for each spec that could not be bound (the
        others are held)."""
        failed: list[tuple[str, str]] = []
        for spec in sorted(set(wanted) - set(self.held)):
            try:
                self.held[spec] = bind(spec)
            except (OSError, ValueError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
                    reason = "address already in use"
                failed.append((spec, reason))
        for spec in sorted(set(self.held) - set(wanted)):
            self.held.pop(spec).close()
        return failed

    def release(self) -> None:
        self.hold([])
