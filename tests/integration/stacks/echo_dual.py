"""echo.py for both address families: one IPv6 socket per port with IPV6_V6ONLY off, so it
answers IPv4 and IPv6 clients alike, each with one line ``<peer address> <hostname>`` (IPv4
peers are printed plainly, not as ::ffff:a.b.c.d).

    python echo_dual.py [--tcp PORT]... [--udp PORT]... [--max-seconds N]

It exits by itself after --max-seconds (default 600), so a leaked server never lives forever.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time


def reply(peer: str) -> bytes:
    if peer.startswith("::ffff:") and "." in peer:
        peer = peer[len("::ffff:"):]
    return f"{peer} {socket.gethostname()}\n".encode()


def _sock(kind: int, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    return s


def serve_tcp(port: int) -> None:
    s = _sock(socket.SOCK_STREAM, port)
    s.listen(64)
    while True:
        conn, peer = s.accept()
        try:
            conn.sendall(reply(peer[0]))
        except OSError:
            pass
        finally:
            conn.close()


def serve_udp(port: int) -> None:
    s = _sock(socket.SOCK_DGRAM, port)
    while True:
        _data, peer = s.recvfrom(2048)
        try:
            s.sendto(reply(peer[0]), peer)
        except OSError:
            pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tcp", type=int, action="append", default=[])
    ap.add_argument("--udp", type=int, action="append", default=[])
    ap.add_argument("--max-seconds", type=float, default=600)
    a = ap.parse_args()
    for port in a.tcp:
        threading.Thread(target=serve_tcp, args=(port,), daemon=True).start()
    for port in a.udp:
        threading.Thread(target=serve_udp, args=(port,), daemon=True).start()
    print(f"echo_dual: listening on [::] tcp {a.tcp} udp {a.udp}", flush=True)
    time.sleep(a.max_seconds)
    sys.exit(0)


if __name__ == "__main__":
    main()
