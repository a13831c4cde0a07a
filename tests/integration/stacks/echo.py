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
    return f"{peer} {socket.gethostname()}\n".encode()


def serve_tcp(bind: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, port))
    s.listen(64)
    while True:
        conn, peer = s.accept()
        try:
            conn.sendall(reply(peer[0]))
        except OSError:
            pass
        finally:
            conn.close()


def serve_udp(bind: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, port))
    while True:
        _data, peer = s.recvfrom(2048)
        try:
            s.sendto(reply(peer[0]), peer)
        except OSError:
            pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--tcp", type=int, action="append", default=[])
    ap.add_argument("--udp", type=int, action="append", default=[])
    ap.add_argument("--max-seconds", type=float, default=600)
    a = ap.parse_args()
    for port in a.tcp:
        threading.Thread(target=serve_tcp, args=(a.bind, port), daemon=True).start()
    for port in a.udp:
        threading.Thread(target=serve_udp, args=(a.bind, port), daemon=True).start()
    print(f"echo: listening on {a.bind} tcp {a.tcp} udp {a.udp}", flush=True)
    time.sleep(a.max_seconds)
    sys.exit(0)


if __name__ == "__main__":
    main()
