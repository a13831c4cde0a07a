"""Who holds a TCP or UDP port in this network namespace: the kernel's socket list
(NETLINK_SOCK_DIAG) and the processes that own those sockets (/proc/<pid>/fd).

Why sock_diag and not /proc/net/tcp or `ss`: they do not show a TCP socket that is bound but not
listening (it blocks a bind all the same), nor tell a dual-stack [::] socket from an IPv6-only
one. inet_diag does both: bound-only sockets come with the pseudo-state TCP_BOUND_INACTIVE
(kernel 6.8 or later; older kernels list listeners only), and every AF_INET6 socket carries
INET_DIAG_SKV6ONLY. UDP sockets are listed in every state (an unconnected bound one is CLOSE).

Owns: the dump (``sockets``) and the owner lookup (``owners``). Must not: judge conflicts (the
planner does, composenet.core.desired.ports) or touch a socket.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_SKV6ONLY = 11
TCP_LISTEN, TCP_BOUND_INACTIVE = 10, 13
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


@dataclass(frozen=True)
class Sock:
    """A bound socket: protocol, local address (an IPv4-mapped one as IPv4), port, whether an
    IPv6 socket is IPv6-only, and its inode (unique on the host)."""

    proto: str
    address: str
    port: int
    v6only: bool
    inode: int


def _dump(family: int, proto: int, states: int) -> Iterator[tuple[str, int, bool, int]]:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    s.settimeout(10)
    try:
        req = struct.pack("=BBBxI", family, proto, 0, states) + b"\0" * 48  # inet_diag_req_v2
        s.send(struct.pack("=LHHLL", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req)
        for _ in range(1_000_000):  # bounded: a dump ends with NLMSG_DONE
            data = s.recv(1 << 17)
            off = 0
            while off + 16 <= len(data):
                ln, ty = struct.unpack_from("=LH", data, off)
                if ln < 16:
                    return
                if ty == NLMSG_DONE:
                    return
                if ty == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + 16)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return
                b = off + 16
                fam = data[b]
                port = struct.unpack_from("!H", data, b + 4)[0]
                raw = data[b + 8 : b + 8 + (4 if fam == socket.AF_INET else 16)]
                inode = struct.unpack_from("=I", data, b + 68)[0]
                v6only = False
                a = b + 72
                while a + 4 <= off + ln:
                    alen, atype = struct.unpack_from("=HH", data, a)
                    if alen < 4:
                        break
                    if atype == INET_DIAG_SKV6ONLY:
                        v6only = bool(data[a + 4])
                    a += (alen + 3) & ~3
                ip = ipaddress.ip_address(raw)
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                yield str(ip), port, v6only, inode
                off += (ln + 3) & ~3
    finally:
        s.close()


def sockets(protos: Iterable[str] = ("tcp", "udp")) -> list[Sock]:
    """Every bound TCP socket (listening or not) and UDP socket of this network namespace."""
    out: list[Sock] = []
    for proto in protos:
        ipp = PROTOCOLS[proto]
        for fam in (socket.AF_INET, socket.AF_INET6):
            if proto == "tcp":
                try:
                    found = list(_dump(fam, ipp, (1 << TCP_LISTEN) | (1 << TCP_BOUND_INACTIVE)))
                except OSError:  # an older kernel without the bound-only pseudo-state
                    found = list(_dump(fam, ipp, 1 << TCP_LISTEN))
            else:
                found = list(_dump(fam, ipp, 0xFFFFFFFF))
            out += [Sock(proto, a, p, v6, ino) for a, p, v6, ino in found if p]
    return sorted(set(out), key=lambda s: (s.proto, s.port, s.address, s.inode))


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds ([] if it is gone)."""
    out: set[int] = set()
    d = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(d)
    except OSError:
        return out
    for fd in fds:
        try:
            t = os.readlink(f"{d}/{fd}")
        except OSError:
            continue
        if t.startswith("socket:["):
            out.add(int(t[8:-1]))
    return out


def owners(inodes: Iterable[int]) -> dict[int, tuple[int, str]]:
    """{inode: (pid, command name)} for the sockets asked about, one pass over /proc/*/fd that
    stops once every one is found (sockets inherited by several processes: the first pid)."""
    want = {f"socket:[{i}]": i for i in inodes}
    out: dict[int, tuple[int, str]] = {}
    if not want:
        return out
    pids = sorted(int(d) for d in os.listdir("/proc") if d.isdigit())
    for pid in pids:
        fddir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fddir)
        except OSError:
            continue
        for fd in fds:
            try:
                t = os.readlink(f"{fddir}/{fd}")
            except OSError:
                continue
            ino = want.get(t)
            if ino is not None and ino not in out:
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    comm = "?"
                out[ino] = (pid, comm)
        if len(out) == len(want):
            break
    return out
