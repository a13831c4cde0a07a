"""The sockets of a network namespace, as ``ss`` sees them: the sock_diag netlink dump
(NETLINK_SOCK_DIAG, inet_diag_req_v2) for TCP and UDP over IPv4 and IPv6, and which process
holds a socket (its inode among the /proc/<pid>/fd links).

Owns: the inet_diag request and message layout (linux/inet_diag.h) and the TCP states. The dump
answers for the namespace the calling thread is in when the socket is made: callers wrap
``sockets()`` in ``composenet.linux.netns.entered``. Must not: know about projects or services,
or change anything (it only reads).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300

# TCP states (include/net/tcp_states.h); an unconnected UDP socket is "CLOSE".
ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT = 1, 2, 3, 4, 5, 6
CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING = 7, 8, 9, 10, 11
ALL_STATES = 0xFFF
STATE_NAMES = {ESTABLISHED: "ESTAB", SYN_SENT: "SYN-SENT", SYN_RECV: "SYN-RECV", FIN_WAIT1: "FIN-WAIT-1",
               FIN_WAIT2: "FIN-WAIT-2", TIME_WAIT: "TIME-WAIT", CLOSE: "UNCONN", CLOSE_WAIT: "CLOSE-WAIT",
               LAST_ACK: "LAST-ACK", LISTEN: "LISTEN", CLOSING: "CLOSING"}
_MSG = struct.Struct("=BBBB")  # family, state, timer, retrans
_SOCKID = struct.Struct(">HH16s16sI8s")  # sport, dport, src, dst (network order), if, cookie
_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
MSG_LEN = _MSG.size + _SOCKID.size + _TAIL.size  # 72


@dataclass(frozen=True)
class Sock:
    """One socket: protocol ("tcp" | "udp"), state, local and remote address and port, inode."""

    proto: str
    state: int
    local: str
    lport: int
    remote: str
    rport: int
    inode: int
    uid: int = 0

    @property
    def listening(self) -> bool:
        """A TCP listener, or an unconnected UDP socket (what `ss -lu` lists)."""
        return self.state == LISTEN if self.proto == "tcp" else (self.state == CLOSE and self.rport == 0)

    @property
    def wildcard(self) -> bool:
        return self.local in ("0.0.0.0", "::")

    @property
    def loopback_only(self) -> bool:
        return self.local.startswith("127.") or self.local == "::1" or self.local.startswith("::ffff:127.")

    def endpoint(self) -> str:
        """``ADDRESS:PORT`` as ss prints it ("[::]:80" for IPv6)."""
        host = f"[{self.local}]" if ":" in self.local else self.local
        return f"{host}:{self.lport}"

    def accepts(self, address: str) -> bool:
        """Whether this listener takes connections to ``address`` (its own address or a wildcard
        of the family; ``[::]`` takes IPv4 too unless IPV6_V6ONLY, which the dump does not say)."""
        if self.local == address or self.local == "::":
            return True
        return self.local == "0.0.0.0" and ":" not in address


def request(family: int, protocol: int, states: int = ALL_STATES) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump request (inet_diag_req_v2, no extensions)."""
    body = struct.pack("=BBBxI", family, protocol, 0, states) + _SOCKID.pack(0, 0, b"\0" * 16, b"\0" * 16, 0,
                                                                             b"\xff" * 8)
    return struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body


def parse(body: bytes, proto: str) -> Sock:
    """One inet_diag_msg (the payload of a dump message)."""
    family, state, _timer, _retrans = _MSG.unpack_from(body, 0)
    sport, dport, src, dst, _ifindex, _cookie = _SOCKID.unpack_from(body, _MSG.size)
    _expires, _rq, _wq, uid, inode = _TAIL.unpack_from(body, _MSG.size + _SOCKID.size)
    n = 4 if family == socket.AF_INET else 16
    fam = socket.AF_INET if family == socket.AF_INET else socket.AF_INET6
    return Sock(proto, state, socket.inet_ntop(fam, src[:n]), sport, socket.inet_ntop(fam, dst[:n]), dport, inode, uid)


def _dump(sock: socket.socket, family: int, protocol: int, proto: str, states: int) -> list[Sock]:
    sock.send(request(family, protocol, states))
    out: list[Sock] = []
    for _ in range(100_000):  # bounded: a dump ends with NLMSG_DONE
        data = sock.recv(1 << 17)
        off = 0
        while off + 16 <= len(data):
            n, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
            if n < 16:
                return out
            body = data[off + 16: off + n]
            off += (n + 3) & ~3
            if mtype == NLMSG_DONE:
                return out
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", body)[0]
                if code in (errno.ENOENT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
                    return out  # the family or protocol is not there (module not loaded)
                raise OSError(code, f"sock_diag: {os.strerror(code)}")
            if mtype == SOCK_DIAG_BY_FAMILY and len(body) >= MSG_LEN:
                out.append(parse(body, proto))
    raise OSError(errno.EIO, "sock_diag: no end of dump")


def sockets(protos: tuple[str, ...] = ("tcp", "udp"), states: int = ALL_STATES) -> list[Sock]:
    """Every TCP and UDP socket (IPv4 and IPv6) of the calling thread's network namespace."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    try:
        s.settimeout(10)
        out: list[Sock] = []
        for proto in protos:
            number = socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP
            for family in (socket.AF_INET, socket.AF_INET6):
                out += _dump(s, family, number, proto, states)
        return out
    finally:
        s.close()


def listeners(protos: tuple[str, ...] = ("tcp", "udp")) -> list[Sock]:
    """The listening sockets (TCP LISTEN, unconnected bound UDP) of this thread's namespace."""
    return [s for s in sockets(protos) if s.listening]


@dataclass(frozen=True)
class Owner:
    pid: int
    comm: str
    cmdline: str


def owners(inodes: set[int], deadline: float = 2.0) -> dict[int, Owner]:
    """The process holding each socket inode (the first pid found; every process's fds are
    read once, within ``deadline`` seconds). Sockets of processes we cannot read are missing."""
    want = {f"socket:[{i}]": i for i in inodes if i}
    out: dict[int, Owner] = {}
    if not want:
        return out
    end = time.monotonic() + deadline
    for d in sorted(os.listdir("/proc"), key=lambda x: (len(x), x)):
        if not d.isdigit() or time.monotonic() > end or len(out) == len(want):
            continue
        try:
            fds = os.listdir(f"/proc/{d}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{d}/fd/{fd}")
            except OSError:
                continue
            inode = want.get(link)
            if inode is not None and inode not in out:
                out[inode] = Owner(int(d), _read(f"/proc/{d}/comm").strip(),
                                   _read(f"/proc/{d}/cmdline").replace("\0", " ").strip())
    return out


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode(errors="replace")
    except OSError:
        return ""
