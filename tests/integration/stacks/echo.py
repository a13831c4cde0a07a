"""A tiny TCP/UDP echo server for the integration tests: it answers every TCP connection and
every UDP datagram with one line, ``<peer address> <hostname>``, so a test sees from inside the
client which source address the server saw and which replica answered.

    python echo.py [--bind ADDR] [--tcp PORT]... [--udp PORT]... [--max-seconds N]

Runs as a service ``command`` (inside the service's namespace) or in the sandbox's outside
namespace. It exits by itself after --max-seconds (default 600), so a leaked server never
lives forever.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time


def reply(peer: str) -> bytes:
    if peer.startswith("::ffff:") and "." in peer:  # an IPv4 peer of a dual-stack socket
        peer = peer[len("::ffff:"):]
    return f"{peer} {socket.gethostname()}\n".encode()


def _sock(kind: int, bind: str, port: int, dual: bool) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if dual else socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if dual:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((bind, port))
    return s


def serve_tcp(bind: str, port: int, dual: bool = False) -> None:
    s = _sock(socket.SOCK_STREAM, bind, port, dual)
    s.listen(64)
    while True:
        conn, peer = s.accept()
        try:
            conn.sendall(reply(peer[0]))
        except OSError:
            pass
        finally:
            conn.close()


def serve_udp(bind: str, port: int, dual: bool = False) -> None:
    s = _sock(socket.SOCK_DGRAM, bind, port, dual)
    while True:
        _data, peer = s.recvfrom(2048)
        try:
            s.sendto(reply(peer[0]), peer)
        except OSError:
            pass


def main(dual: bool = False) -> None:
    """``dual`` (echo_dual.py): one IPv6 socket per port on [::] that takes IPv4 clients too."""
    ap = argparse.ArgumentParser()
    if not dual:
        ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--tcp", type=int, action="append", default=[])
    ap.add_argument("--udp", type=int, action="append", default=[])
    ap.add_argument("--max-seconds", type=float, default=600)
    a = ap.parse_args()
    bind = "::" if dual else a.bind
    for port in a.tcp:
        threading.Thread(target=serve_tcp, args=(bind, port, dual), daemon=True).start()
    for port in a.udp:
        threading.Thread(target=serve_udp, args=(bind, port, dual), daemon=True).start()
    if dual:
        print(f"echo_dual: listening on [::] tcp {a.tcp} udp {a.udp}", flush=True)
    else:
        print(f"echo: listening on {a.bind} tcp {a.tcp} udp {a.udp}", flush=True)
    time.sleep(a.max_seconds)
    sys.exit(0)


if __name__ == "__main__":
    main()
