"""Who holds a TCP or UDP port of this network namespace, as bind() judges it: every bound socket
(composenet.linux.sockdiag's dump) with what ``ss`` does not say, and the processes that hold them.

What a conflict needs that a plain listing lacks: a TCP socket that is bound but not listening
blocks a bind all the same (inet_diag lists it with the pseudo-state TCP_BOUND_INACTIVE, kernel 6.8
or later; older kernels list listeners only), and an IPv6 socket bound to [::] takes IPv4 too
unless it is IPv6-only (the INET_DIAG_SKV6ONLY attribute every AF_INET6 socket carries). An
IPv4-mapped address is an IPv4 one.

Must not: judge conflicts (the planner does, composenet.core.desired.ports) or touch a socket.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from composenet.linux import sockdiag

TCP_BOUND_INACTIVE = 13
INET_DIAG_SKV6ONLY = 11


@dataclass(frozen=True)
class Bound:
    """A bound socket: protocol, local address, port, whether an IPv6 socket is IPv6-only, and
    its inode (unique on the host)."""

    proto: str
    address: str
    port: int
    v6only: bool
    inode: int


def _v6only(body: bytes) -> bool:
    """The INET_DIAG_SKV6ONLY attribute after an inet_diag_msg."""
    off = sockdiag.MSG_LEN
    while off + 4 <= len(body):
        alen, atype = struct.unpack_from("=HH", body, off)
        if alen < 4:
            break
        if atype == INET_DIAG_SKV6ONLY:
            return bool(body[off + 4])
        off += (alen + 3) & ~3
    return False


def _dump(s: socket.socket, family: int, proto: str, states: int) -> Iterator[Bound]:
    s.send(sockdiag.request(family, socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP, states))
    for _ in range(100_000):  # bounded: a dump ends with NLMSG_DONE
        data = s.recv(1 << 17)
        off = 0
        while off + 16 <= len(data):
            n, mtype = struct.unpack_from("=IH", data, off)
            if n < 16:
                return
            body = data[off + 16: off + n]
            off += (n + 3) & ~3
            if mtype == sockdiag.NLMSG_DONE:
                return
            if mtype == sockdiag.NLMSG_ERROR:
                code = -struct.unpack_from("=i", body)[0]
                if code in (errno.ENOENT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
                    return
                raise OSError(code, f"sock_diag: {os.strerror(code)}")
            if mtype == sockdiag.SOCK_DIAG_BY_FAMILY and len(body) >= sockdiag.MSG_LEN:
                sk = sockdiag.parse(body, proto)
                ip = ipaddress.ip_address(sk.local)
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                if sk.lport:
                    yield Bound(proto, str(ip), sk.lport, _v6only(body), sk.inode)
    raise OSError(errno.EIO, "sock_diag: no end of dump")


def bound(protos: Iterable[str] = ("tcp", "udp")) -> list[Bound]:
    """Every bound TCP socket (listening or not) and UDP socket of this network namespace."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, sockdiag.NETLINK_SOCK_DIAG)
    out: set[Bound] = set()
    try:
        s.settimeout(10)
        for proto in protos:
            states = (1 << sockdiag.LISTEN) | (1 << TCP_BOUND_INACTIVE) if proto == "tcp" else sockdiag.ALL_STATES
            for family in (socket.AF_INET, socket.AF_INET6):
                out.update(_dump(s, family, proto, states))
    finally:
        s.close()
    return sorted(out, key=lambda b: (b.proto, b.port, b.address, b.inode))


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds (empty if it is gone)."""
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
    """{inode: (pid, command name)} (sockdiag.owners, one pass over /proc)."""
    return {i: (o.pid, o.comm) for i, o in sockdiag.owners(set(inodes)).items()}
