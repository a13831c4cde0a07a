"""Batched UDP I/O for the resolver's hot path: ``recvmmsg``/``sendmmsg`` through ctypes.

Owns: preallocated message vectors (one packet buffer and one address slot per message) and
the two system calls. A receive fills up to ``count`` slots in one call; answers are written
back into the slots of the queries they answer (the asker's address stays where the kernel put
it) and leave in one ``sendmmsg``. This module knows nothing about DNS and must not: the daemon
(``udp.py``) reads payloads and addresses out of the slots and decides what to send.

Why: at 100 queries in flight, two system calls per query (``recvfrom`` + ``sendto``) were most
of a query's cost in the daemon; one call per batch in each direction removes most of them.

:func:`open_batch` returns None when batching is unavailable (not Linux, no ``recvmmsg`` in
libc, ctypes unusable): the daemon then keeps its one-packet-per-call path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import sys
from typing import Any

MSG_DONTWAIT = 0x40  # Linux


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_NAME_SIZE = 28  # sizeof(struct sockaddr_in6) >= sizeof(struct sockaddr_in)
_HDR = ctypes.sizeof(_Mmsghdr)
_U32 = 4
# Index of msg_len in a 32-bit view of an mmsghdr (its offset is a multiple of 4), of iov_len
# in a pointer-sized view of an iovec.
_LEN_IX = _Mmsghdr.msg_len.offset // _U32
_IOVLEN_IX = _Iovec.iov_len.offset // ctypes.sizeof(ctypes.c_void_p)


def _load_calls():
    """(recvmmsg, sendmmsg) from libc, or None. PyDLL: the calls never block (MSG_DONTWAIT),
    so keeping the GIL saves its release/reacquire on every call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv = libc.recvmmsg
        send = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recv.restype = ctypes.c_int
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    return recv, send


_CALLS = _load_calls()


class UdpBatch:
    """Message vectors for one address family (not thread-safe: slots hold the packets of the
    socket last read until its answers are sent).

    Receive: :meth:`recv` returns how many slots were filled. For slot ``i``,
    ``slots[i] == (i, offset, length_index, key, name)``: its payload is
    ``bufs[offset : offset + lengths[length_index]]``, ``names_raw[name]`` is the raw source
    ``sockaddr_in``/``sockaddr_in6`` and ``names_raw[key]`` the part of it that identifies the
    asker (address, plus the scope id for IPv6; not the port).

    Send: place answer ``j`` in slot ``j`` (:meth:`put`), with slot ``j``'s address being its
    destination (:meth:`move_name` when it is not already there), then :meth:`send` the first
    ``k`` slots. The hot path inlines :meth:`put`: ``view[offsets[j] : ...] = answer`` and
    ``out_lengths[out_length_index[j]] = len(answer)``.
    """

    def __init__(self, family: int, count: int, size: int):
        self.count = count
        self.size = size
        self.namelen = 16 if family == socket.AF_INET else _NAME_SIZE
        # c_char arrays: a slice of one is a bytes object (the cheapest copy out of ctypes).
        self.bufs: Any = (ctypes.c_char * (count * size))()
        self.names_raw: Any = (ctypes.c_char * (count * _NAME_SIZE))()
        self.riov = (_Iovec * count)()
        self.wiov = (_Iovec * count)()
        self.rhdr = (_Mmsghdr * count)()
        self.whdr = (_Mmsghdr * count)()
        base = ctypes.addressof(self.bufs)
        names = ctypes.addressof(self.names_raw)
        for i in range(count):
            self.riov[i].iov_base = self.wiov[i].iov_base = base + i * size
            self.riov[i].iov_len = size
            for hdr, iov, namelen in ((self.rhdr[i], self.riov, _NAME_SIZE), (self.whdr[i], self.wiov, self.namelen)):
                hdr.msg_hdr.msg_name = names + i * _NAME_SIZE
                hdr.msg_hdr.msg_namelen = namelen
                hdr.msg_hdr.msg_iov = ctypes.addressof(iov) + i * ctypes.sizeof(_Iovec)
                hdr.msg_hdr.msg_iovlen = 1
        self.rhdr_addr = ctypes.addressof(self.rhdr)
        self.whdr_addr = ctypes.addressof(self.whdr)
        # The kernel rewrites msg_namelen on receive; restoring it is one copy of this template.
        self._rtemplate = bytes(self.rhdr)
        self._rview = memoryview(self.rhdr).cast("B")
        self.view = memoryview(self.bufs).cast("B")
        self.lengths = memoryview(self.rhdr).cast("B").cast("I")
        # "P" (void *) has the width of size_t on Linux: iov_len as an int item.
        self.out_lengths = memoryview(self.wiov).cast("B").cast("P")
        iov_stride = ctypes.sizeof(_Iovec) // ctypes.sizeof(ctypes.c_void_p)
        self.out_length_index = tuple(i * iov_stride + _IOVLEN_IX for i in range(count))
        self.offsets = tuple(i * size for i in range(count))
        key = (4, 8) if family == socket.AF_INET else (8, 28)  # sin_addr; sin6_addr + scope id
        # Prebuilt slice objects: the hot loop indexes with them instead of building slices.
        self.slots = tuple(
            (i, i * size, i * (_HDR // _U32) + _LEN_IX,
             slice(i * _NAME_SIZE + key[0], i * _NAME_SIZE + key[1]),
             slice(i * _NAME_SIZE, i * _NAME_SIZE + self.namelen))
            for i in range(count))
        assert _CALLS is not None
        self._recv, self._send = _CALLS

    def recv(self, fd: int) -> int:
        """Fill up to ``count`` slots without blocking; 0 when nothing is waiting.

        Raises OSError for any other error than "would block" (the caller counts it)."""
        self._rview[:] = self._rtemplate
        n = self._recv(fd, self.rhdr_addr, self.count, MSG_DONTWAIT, None)
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err in (11, 4):  # EAGAIN/EWOULDBLOCK, EINTR
            return 0
        raise OSError(err, os.strerror(err))

    def put(self, slot: int, payload: bytes) -> None:
        """Place ``payload`` (at most ``size`` bytes) as the answer in ``slot``."""
        off = self.offsets[slot]
        n = len(payload)
        self.view[off : off + n] = payload
        self.out_lengths[self.out_length_index[slot]] = n

    def move_name(self, src: int, dst: int) -> None:
        """Make slot ``dst``'s destination the address received in slot ``src``."""
        names = self.names_raw
        names[dst * _NAME_SIZE : dst * _NAME_SIZE + _NAME_SIZE] = names[src * _NAME_SIZE : src * _NAME_SIZE + _NAME_SIZE]

    def send(self, fd: int, k: int) -> int:
        """Send the answers in slots ``0..k-1``; returns how many could not be sent.

        ``sendmmsg`` stops at the first failing message (full send buffer, unreachable
        asker): that one is counted as lost and the rest are still sent, as separate
        ``sendto`` calls would have done."""
        sent = 0
        failed = 0
        send = self._send
        for _ in range(k):
            if sent >= k:
                break
            n = send(fd, self.whdr_addr + sent * _HDR, k - sent, MSG_DONTWAIT)
            if n > 0:
                sent += n
            else:
                sent += 1
                failed += 1
        return failed


def open_batch(family: int, count: int, size: int) -> UdpBatch | None:
    """A :class:`UdpBatch`, or None when batched I/O is not available here."""
    if _CALLS is None or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    if ctypes.sizeof(ctypes.c_size_t) != ctypes.sizeof(ctypes.c_void_p):
        return None  # the iov_len view below assumes it (true on every Linux ABI)
    try:
        return UdpBatch(family, count, size)
    except (OSError, ValueError, TypeError):
        return None
