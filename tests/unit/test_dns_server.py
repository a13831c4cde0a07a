"""The daemon's decisions that need no sockets of their own (composenet/dns/server.py): the TTL
rules of the forwarding cache, cache expiry, and who is a stranger (not an open resolver)."""

from __future__ import annotations

import ipaddress
import json
import socket

import pytest
from dnslib import QTYPE, RCODE, RR, SOA, A, DNSRecord

from composenet.dns import server as srv
from composenet.dns.wire import question_end
from tests.integration.dnstopo import split_config

FE, BE = "172.18.0.1", "172.19.0.1"


def _answer(name: str = "x.example", ttls: tuple[int, ...] = (60,), rcode: int = 0, soa: tuple[int, int] | None = None,
            tc: bool = False) -> tuple[bytes, int]:
    q = DNSRecord.question(name, "A")
    r = q.reply()
    r.header.rcode = rcode
    r.header.tc = int(tc)
    for i, ttl in enumerate(ttls):
        r.add_answer(RR(name, QTYPE.A, ttl=ttl, rdata=A(f"198.51.100.{i + 1}")))
    if soa is not None:
        ttl, minimum = soa
        r.add_auth(RR("example.", QTYPE.SOA, ttl=ttl, rdata=SOA("ns.example.", "a.example.", (1, 60, 60, 60, minimum))))
    data = bytes(r.pack())
    return data, question_end(bytes(q.pack()))


def test_cache_ttl_positive_is_the_smallest_record_ttl():
    data, end = _answer(ttls=(300, 30, 120))
    ttl, offsets = srv.cache_ttl(data, end)  # type: ignore[misc]
    assert ttl == 30 and len(offsets) == 3
    data, end = _answer(ttls=(10**6,))
    assert srv.cache_ttl(data, end)[0] == srv.CACHE_MAX_TTL  # type: ignore[index]


def test_cache_ttl_negative_needs_an_soa():
    data, end = _answer(ttls=(), rcode=RCODE.NXDOMAIN, soa=(600, 45))
    assert srv.cache_ttl(data, end)[0] == 45  # type: ignore[index]
    data, end = _answer(ttls=(), rcode=RCODE.NXDOMAIN, soa=(10**6, 10**6))
    assert srv.cache_ttl(data, end)[0] == srv.NEGATIVE_MAX_TTL  # type: ignore[index]
    data, end = _answer(ttls=(), rcode=RCODE.NXDOMAIN)
    assert srv.cache_ttl(data, end) is None
    data, end = _answer(ttls=(), soa=(60, 20))  # NOERROR, no answers
    assert srv.cache_ttl(data, end)[0] == 20  # type: ignore[index]


def test_not_cached_truncated_failed_zero_ttl_or_broken():
    data, end = _answer(tc=True)
    assert srv.cache_ttl(data, end) is None
    data, end = _answer(rcode=RCODE.SERVFAIL)
    assert srv.cache_ttl(data, end) is None
    data, end = _answer(ttls=(0,))
    assert srv.cache_ttl(data, end) is None
    data, end = _answer()
    assert srv.cache_ttl(data[:-3], end) is None


@pytest.fixture
def server(tmp_path):
    cfg = split_config(str(tmp_path / "dns.pid"))
    cfg["upstreams"] = []  # nothing is ever sent: an expired entry ends in SERVFAIL
    path = tmp_path / "dns.json"
    path.write_text(json.dumps(cfg))
    s = srv.Server(str(path))
    yield s
    s.sel.close()
    s.wake_r.close()
    s.wake_w.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_honours_the_upstream_ttl(server, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(srv.time, "monotonic", clock)
    query = bytes(DNSRecord.question("x.example", "A").pack())
    end = question_end(query)
    view = server.zone.views["172.18.0.3"]
    key = srv.cache_key(query, end) + ",".join(view.upstreams).encode()
    resp, _ = _answer(ttls=(30,))
    pending = srv.Pending(client_id=query[:2], query=query, end=end, cache_key=key, upstreams=(),
                          udp_sock=None, udp_addr=None, tcp_client=None)
    server._store(pending, resp)
    assert key in server.cache
    clock.now += 10
    out = DNSRecord.parse(server._from_cache(server.cache[key], query, end, clock.now))
    assert [rr.ttl for rr in out.rr] == [20]  # the TTL counts down while cached
    server._forward(view, query, end, None, None, None)
    assert server.stats["cache-hit"] == 1
    clock.now += 21  # past the upstream's TTL: dropped, asked again (here: no upstream)
    server._forward(view, query, end, None, None, None)
    assert server.stats["cache-hit"] == 1 and key not in server.cache


def test_cache_is_bounded(server, monkeypatch):
    monkeypatch.setattr(srv, "CACHE_ENTRIES", 16)
    for i in range(100):
        query = bytes(DNSRecord.question(f"n{i}.example", "A").pack())
        end = question_end(query)
        resp, _ = _answer(f"n{i}.example")
        p = srv.Pending(client_id=query[:2], query=query, end=end, cache_key=query[12:end], upstreams=(),
                        udp_sock=None, udp_addr=None, tcp_client=None)
        server._store(p, resp)
        assert len(server.cache) <= 16


def test_strangers_get_nothing_unless_on_the_network_or_the_host(server):
    server.local_addrs = frozenset({FE, BE, "203.0.113.1", "127.0.0.1"})
    server.member_nets = {FE: (ipaddress.ip_network("172.18.0.0/16"),),
                          BE: (ipaddress.ip_network("172.19.0.0/16"),)}
    server._strangers = {}
    fe_view = server.zone.listener_views[FE]
    assert server._stranger("172.18.9.9", FE) is fe_view  # on the network, not in the zone yet
    assert server._stranger("203.0.113.1", FE) is fe_view  # the host itself
    assert server._stranger("127.0.0.1", FE) is fe_view
    assert server._stranger("203.0.113.254", FE) is None  # routed in from outside
    assert server._stranger("172.19.0.9", FE) is None  # another network of the project
    assert server._stranger("10.0.0.1", "192.0.2.1") is None  # no such listener
    assert server._stranger("not an address", FE) is None
    for i in range(5000):  # a flood of sources: the memo stays bounded
        server._stranger(f"198.18.{i // 256}.{i % 256}", FE)
    assert len(server._strangers) <= 4096


def test_interface_addresses_include_loopback():
    found = srv.interface_addresses()
    assert (ipaddress.ip_interface("127.0.0.1/8") in [a for _, a in found])
    lo = socket.if_nametoindex("lo")
    assert all(index == lo for index, a in found if a.ip.is_loopback)
