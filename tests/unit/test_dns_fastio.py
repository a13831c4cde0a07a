"""fastio.UdpBatch on loopback: real recvmmsg/sendmmsg on 127.0.0.1 and ::1 (no root).

Batches of datagrams in, answers back to each asker, an empty socket, an empty send, a datagram
longer than a slot (truncated, as recvfrom would), an empty datagram, a gap closed with
move_name, and a send whose one bad destination does not stop the others.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from composenet.dns import fastio
from composenet.dns.udp import sockaddr_tuple

SIZE = 64  # bytes per slot: small, so truncation is cheap to provoke


def udp(family: int, host: str) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(2)
    return s


@pytest.fixture(params=[(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["v4", "v6"])
def family_host(request) -> tuple[int, str]:
    return request.param


@pytest.fixture
def server(family_host) -> Iterator[socket.socket]:
    s = udp(*family_host)
    s.setblocking(False)
    yield s
    s.close()


def received(batch: fastio.UdpBatch, n: int) -> list[tuple[bytes, tuple, bytes]]:
    """(payload, source address, asker key) of the first n slots, read as server.py reads them."""
    out = []
    for _i, off, length_ix, key, name in batch.slots[:n]:
        out.append((batch.bufs[off : off + batch.lengths[length_ix]], sockaddr_tuple(batch.names_raw[name]),
                    batch.names_raw[key]))
    return out


def recv_all(batch: fastio.UdpBatch, fd: int, limit: int = 20) -> list[int]:
    """Counts of successive recv calls until one returns 0 (bounded)."""
    counts = []
    for _ in range(limit):
        n = batch.recv(fd)
        counts.append(n)
        if n == 0:
            break
    return counts


def test_open_batch_is_available_here(family_host):
    # Linux with glibc: the daemon's fast path must really be on unless COMPOSENET_DNS_MMSG=0.
    assert isinstance(fastio.open_batch(family_host[0], 8, SIZE), fastio.UdpBatch)
    assert fastio.open_batch(socket.AF_UNIX, 8, SIZE) is None


def test_empty_socket_and_empty_send(family_host, server):
    batch = fastio.open_batch(family_host[0], 8, SIZE)
    assert batch is not None
    assert batch.recv(server.fileno()) == 0
    assert batch.send(server.fileno(), 0) == 0
    assert batch.recv(server.fileno()) == 0  # nothing was sent to ourselves either


def test_batch_in_answers_out(family_host, server):
    family, host = family_host
    batch = fastio.open_batch(family, 8, SIZE)
    assert batch is not None
    dest = server.getsockname()
    clients = [udp(family, host) for _ in range(2)]
    try:
        sent = []
        for i in range(11):  # more than one batch of 8
            c = clients[i % 2]
            payload = f"query-{i}".encode()
            c.sendto(payload, dest)
            sent.append((payload, c.getsockname()))
        assert recv_all(batch, server.fileno()) == [8, 3, 0]

        # one batch again, answered: slot i's answer goes back to slot i's asker
        for payload, _src in sent[:5]:
            clients[int(payload.split(b"-")[1]) % 2].sendto(payload, dest)
        assert batch.recv(server.fileno()) == 5
        got = received(batch, 5)
        want_key = socket.inet_pton(family, host) + (bytes(4) if family == socket.AF_INET6 else b"")
        assert [(p, a[:2]) for p, a, _k in got] == [(p, s[:2]) for p, s in sent[:5]]
        assert all(k == want_key for _p, _a, k in got)
        # no answer for slot 1: close the gap as server.py does, answers in slots 0..3
        k = 0
        for i, (payload, _a, _k) in enumerate(got):
            if i == 1:
                continue
            if k != i:
                batch.move_name(i, k)
            batch.put(k, b"answer:" + payload)
            k += 1
        assert batch.send(server.fileno(), k) == 0
        assert [clients[0].recv(SIZE) for _ in range(3)] == [b"answer:query-0", b"answer:query-2",
                                                            b"answer:query-4"]
        assert clients[1].recv(SIZE) == b"answer:query-3"  # query-1 got no answer
        for c in clients:
            c.setblocking(False)
            with pytest.raises(BlockingIOError):
                c.recv(SIZE)
    finally:
        for c in clients:
            c.close()


def test_oversized_datagram_is_truncated_and_empty_one_kept(family_host, server):
    family, host = family_host
    batch = fastio.open_batch(family, 4, SIZE)
    assert batch is not None
    c = udp(family, host)
    try:
        big = bytes(range(256)) * 2  # 512 bytes into a 64-byte slot
        for payload in (big, b"", b"x" * SIZE, b"tail"):
            c.sendto(payload, server.getsockname())
        assert batch.recv(server.fileno()) == 4
        got = [p for p, _a, _k in received(batch, 4)]
        assert got == [big[:SIZE], b"", b"x" * SIZE, b"tail"]
        # the truncated slot did not spill into its neighbour, and the socket is drained
        assert batch.recv(server.fileno()) == 0
        # a full-size answer fits a slot exactly
        batch.put(0, b"y" * SIZE)
        assert batch.send(server.fileno(), 1) == 0
        assert c.recv(1024) == b"y" * SIZE
    finally:
        c.close()


def test_one_bad_destination_does_not_stop_the_rest(family_host, server):
    family, host = family_host
    batch = fastio.open_batch(family, 4, SIZE)
    assert batch is not None
    c = udp(family, host)
    try:
        for i in range(3):
            c.sendto(b"q%d" % i, server.getsockname())
        assert batch.recv(server.fileno()) == 3
        # slot 1's destination port becomes 0: sendmmsg fails on that message (EINVAL)
        start = 1 * fastio._NAME_SIZE  # names_raw holds one sockaddr slot per message
        batch.names_raw[start + 2 : start + 4] = struct.pack("!H", 0)
        for i in range(3):
            batch.put(i, b"a%d" % i)
        assert batch.send(server.fileno(), 3) == 1
        assert [c.recv(SIZE), c.recv(SIZE)] == [b"a0", b"a2"]
        c.setblocking(False)
        with pytest.raises(BlockingIOError):
            c.recv(SIZE)
    finally:
        c.close()
