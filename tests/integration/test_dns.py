"""The resolver daemon with real sockets in real namespaces (root).

Each topology (``tests/integration/dnstopo.py``) builds a "host" namespace with one bridge per
network (the daemon runs there, via nsenter --net, on the gateway addresses), one namespace per
container, and an "outside" namespace with a fake upstream that records every query it gets.
Queries are sent from inside the container namespaces.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dnslib import EDNS0, RCODE, DNSRecord

from tests.integration.dnstopo import (
    UPSTREAM,
    WEB_ADDR,
    Topo,
    container,
    endpoint,
    naming_config,
    ns_socket,
    sh,
    split_config,
)

SPLIT_SUBNETS = {"split_frontend": "172.18.0.1/16", "split_backend": "172.19.0.1/16"}
NAMING_SUBNETS = {"naming_net1": "10.201.1.1/24", "naming_net2": "10.201.2.254/24"}
FE_DNS, BE_DNS = "172.18.0.1", "172.19.0.1"
N1_DNS, N2_DNS = "10.201.1.1", "10.201.2.254"


def _topo(tmp: Path, config: dict, subnets: dict, subnets6: dict | None = None, upstream: bool = True,
          mmsg: bool = True, namespaces_for: set[str] | None = None):
    t = Topo(tmp, config, subnets, subnets6, mmsg=mmsg, namespaces_for=namespaces_for)
    try:
        t.setup()
        if upstream:
            t.start_upstream()
        t.start_resolver()
    except BaseException:
        t.teardown()
        raise
    return t


def _finish(t: Topo) -> None:
    t.teardown()
    assert t.leftovers() == []


def _resolver_env(t: Topo) -> str | None:
    """COMPOSENET_DNS_MMSG as the running resolver sees it."""
    env = Path(f"/proc/{t.resolver_pid()}/environ").read_bytes().split(b"\0")
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"COMPOSENET_DNS_MMSG=")), None)


@pytest.fixture(scope="module", params=[True, False], ids=["mmsg", "plain"])
def mmsg(request) -> bool:
    """Both UDP paths of the resolver: recvmmsg/sendmmsg batches (fastio.py), and one
    recvfrom/sendto per query (COMPOSENET_DNS_MMSG=0). Every test taking it runs on both."""
    return request.param


@pytest.fixture(scope="module")
def split(tmp_path_factory, mmsg):
    t = _topo(tmp_path_factory.mktemp("split"), split_config(), SPLIT_SUBNETS, mmsg=mmsg)
    assert _resolver_env(t) == ("1" if mmsg else "0")
    yield t
    _finish(t)


@pytest.fixture(scope="module")
def naming(tmp_path_factory, mmsg):
    t = _topo(tmp_path_factory.mktemp("naming"), naming_config(), NAMING_SUBNETS, mmsg=mmsg)
    yield t
    _finish(t)


def addrs(r: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in r.rr]


def outcome(r: DNSRecord) -> object:
    """NXDOMAIN / REFUSED / NOERROR-empty as a word, else the sorted addresses."""
    if r.header.rcode != RCODE.NOERROR:
        return RCODE.get(r.header.rcode)
    return sorted(addrs(r)) or "EMPTY"


API = ["172.19.0.3", "172.19.0.4", "172.19.0.5"]

# DOCKER-BEHAVIOUR.md (a), with composenet's improvements: names a container cannot see are
# NXDOMAIN locally (never forwarded) and internal-only containers get REFUSED at once.
SPLIT_MATRIX = [
    ("split-web-1", FE_DNS, {
        "web": ["172.18.0.2"], "api": API, "db": ["172.19.0.6"], "fe": ["172.18.0.3"],
        "split-web-1": ["172.18.0.2"], "web-host": ["172.18.0.2"], "web.split_frontend": ["172.18.0.2"],
        "web.split_backend": ["172.19.0.2"], "split-api-2": ["172.19.0.4"], "foo.example": [WEB_ADDR],
        "nosuchname": "NXDOMAIN"}),
    ("split-fe-1", FE_DNS, {
        "web": ["172.18.0.2"], "api": "NXDOMAIN", "db": "NXDOMAIN", "fe": ["172.18.0.3"],
        "split-web-1": ["172.18.0.2"], "web-host": ["172.18.0.2"], "web.split_frontend": ["172.18.0.2"],
        "web.split_backend": "NXDOMAIN", "split-api-2": "NXDOMAIN", "fe.split_backend": "NXDOMAIN",
        "foo.example": [WEB_ADDR], "nosuchname": "NXDOMAIN"}),
    ("split-api-1", BE_DNS, {
        "web": ["172.19.0.2"], "api": API, "db": ["172.19.0.6"], "fe": "NXDOMAIN",
        "split-web-1": ["172.19.0.2"], "web-host": ["172.19.0.2"], "web.split_frontend": "NXDOMAIN",
        "web.split_backend": ["172.19.0.2"], "foo.example": "REFUSED", "nosuchname": "REFUSED"}),
    ("split-db-1", BE_DNS, {
        "web": ["172.19.0.2"], "api": API, "db": ["172.19.0.6"], "fe": "NXDOMAIN",
        "foo.example": "REFUSED"}),
]


@pytest.mark.parametrize("asker,server,expected", SPLIT_MATRIX, ids=[row[0] for row in SPLIT_MATRIX])
def test_split_scoping_matrix(split, asker, server, expected):
    got = {name: outcome(split.query(split.ns[asker], name, server=server)) for name in expected}
    want = {name: sorted(v) if isinstance(v, list) else v for name, v in expected.items()}
    assert got == want


def test_split_local_answer_flags_and_ttl(split):
    r = split.query(split.ns["split-fe-1"], "web")
    assert (r.header.qr, r.header.aa, r.header.rd, r.header.ra) == (1, 0, 1, 1)
    assert [rr.ttl for rr in r.rr] == [5]
    assert str(r.q.qname) == "web."


def test_split_scaled_service_all_records_in_shuffled_order(split):
    orders = set()
    for _ in range(40):
        r = split.query(split.ns["split-web-1"], "api")
        assert sorted(addrs(r)) == API
        orders.add(tuple(addrs(r)))
    assert len(orders) > 1  # 40 draws among 6 orders: all equal has probability 6**-39


def test_split_case_trailing_dot_and_types(split):
    web = split.ns["split-web-1"]
    assert addrs(split.query(web, "WeB.Split_FrontEnd.")) == ["172.18.0.2"]
    raw = bytes(DNSRecord.question("API", "A").pack())
    r = DNSRecord.parse(split.raw(web, raw))
    assert str(r.q.qname) == "API."  # the question comes back as asked (0x20 clients)
    for qtype in ("AAAA", "MX", "TXT", "SRV"):
        r = split.query(web, "web", qtype)
        assert (r.header.rcode, r.rr) == (RCODE.NOERROR, []), qtype
    r = split.query(web, "api", "ANY")
    assert sorted(addrs(r)) == API


def test_split_ptr(split):
    web, fe = split.ns["split-web-1"], split.ns["split-fe-1"]
    r = split.query(fe, "2.0.18.172.in-addr.arpa", "PTR")
    assert [str(rr.rdata) for rr in r.rr] == ["split-web-1.split_frontend."]
    r = split.query(web, "4.0.19.172.in-addr.arpa", "PTR")
    assert [str(rr.rdata) for rr in r.rr] == ["split-api-2.split_backend."]
    # fe does not share backend: a backend address is a project name it cannot see
    assert split.query(fe, "4.0.19.172.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN


def test_split_tcp(split):
    web = split.ns["split-web-1"]
    r = split.query(web, "api", tcp=True)
    assert sorted(addrs(r)) == API
    r = split.query(web, "tcp-forward.example", tcp=True)
    assert addrs(r) == [WEB_ADDR]
    seen = [q for q in split.upstream_queries() if q["name"] == "tcp-forward.example."]
    assert [q["proto"] for q in seen] == ["tcp"]


def test_split_project_names_never_reach_upstream(split):
    """Every name of the project, asked from every container: none is forwarded."""
    names = set()
    for c in split.config["containers"]:
        for ep in c["endpoints"]:
            for n in [c["service"], c["name"], c["hostname"], *ep["aliases"]]:
                if n:
                    names |= {n, f"{n}.split_frontend", f"{n}.split_backend"}
    for c in split.config["containers"]:
        for ep in c["endpoints"]:
            names.add(".".join(reversed(ep["ipv4"].split("."))) + ".in-addr.arpa")
    names |= {"split_frontend", "split_backend"}
    for asker in split.ns.values():
        for name in sorted(names):
            for qtype in ("A", "AAAA", "PTR"):
                r = split.query(asker, name, qtype)
                assert r.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN), (asker, name, qtype)
    leaked = {q["name"].rstrip(".") for q in split.upstream_queries()} & {n.lower() for n in names}
    assert leaked == set()


def test_split_internal_only_refused_and_not_forwarded(split):
    api = split.ns["split-api-2"]
    for qtype in ("A", "AAAA", "MX"):
        r = split.query(api, "internal-probe.example", qtype)
        assert r.header.rcode == RCODE.REFUSED
    r = split.query(api, "internal-probe.example", tcp=True)
    assert r.header.rcode == RCODE.REFUSED
    assert not [q for q in split.upstream_queries() if q["name"] == "internal-probe.example."]
    # web is on the internal backend too, but also on frontend: it may forward
    assert addrs(split.query(split.ns["split-web-1"], "internal-probe.example", server=BE_DNS)) == [WEB_ADDR]


def test_split_forward_cache_and_negative_cache(split):
    fe = split.ns["split-fe-1"]
    first = split.query(fe, "cache-me.example")
    second = split.query(fe, "CACHE-me.example")
    assert addrs(first) == addrs(second) == [WEB_ADDR]
    assert str(second.q.qname) == "CACHE-me.example."
    assert 0 < second.rr[0].ttl <= 60
    for _ in range(3):
        assert split.query(fe, "nxcache.example").header.rcode == RCODE.NXDOMAIN
    counts = [q["name"] for q in split.upstream_queries()]
    assert counts.count("cache-me.example.") == 1
    assert counts.count("nxcache.example.") == 1


def test_split_truncated_upstream_answer_is_retried_over_tcp(split):
    web = split.ns["split-web-1"]
    r = split.query(web, "big.example")  # plain UDP, 512 bytes: the full answer does not fit
    assert r.header.tc == 1
    r = split.query(web, "big.example", tcp=True)
    assert len(r.rr) == 40
    q = DNSRecord.question("big.example", "A")
    q.add_ar(EDNS0(udp_len=4096))
    r = DNSRecord.parse(split.raw(web, bytes(q.pack())))  # EDNS 4096: the TCP answer fits
    assert (r.header.tc, len(r.rr)) == (0, 40)
    protos = [q["proto"] for q in split.upstream_queries() if q["name"] == "big.example."]
    assert "udp" in protos and "tcp" in protos


def test_split_servfail_from_upstream(split):
    assert split.query(split.ns["split-fe-1"], "servfail.example").header.rcode == RCODE.SERVFAIL


def test_split_unknown_source_answered_as_member_of_listener_network(split):
    assert addrs(split.query(split.host, "web", server=FE_DNS)) == ["172.18.0.2"]
    assert split.query(split.host, "api", server=FE_DNS).header.rcode == RCODE.NXDOMAIN
    assert sorted(addrs(split.query(split.host, "api", server=BE_DNS))) == API
    assert split.query(split.host, "host-probe.example", server=BE_DNS).header.rcode == RCODE.REFUSED


def test_not_an_open_resolver(split):
    """The outside namespace, given a route to the project's subnets, asks the listeners over UDP
    and TCP: no answer at all (not even REFUSED), and nothing is forwarded. The daemon itself
    ignores sources that are neither containers of the zone, nor on the listener's network, nor
    the host (the nft table of a real `up` drops them before, see test_up_reload_*)."""
    out = split.outside
    split.ip(out, "route add 172.18.0.0/16 via 203.0.113.1")
    split.ip(out, "route add 172.19.0.0/16 via 203.0.113.1")
    try:
        for server in (FE_DNS, BE_DNS):
            with pytest.raises(TimeoutError):
                split.query(out, "open-probe.example", server=server, timeout=1)
            with pytest.raises(TimeoutError):
                split.query(out, "web", server=server, timeout=1)
            s = ns_socket(out, kind=socket.SOCK_STREAM)
            try:
                s.settimeout(3)
                s.connect((server, 53))  # accepted by the kernel, then closed unanswered
                q = bytes(DNSRecord.question("web", "A").pack())
                try:
                    s.sendall(struct.pack("!H", len(q)) + q)
                    assert s.recv(512) == b""
                except ConnectionResetError:
                    pass
            finally:
                s.close()
        # the routes are still there, members are still answered
        assert addrs(split.query(split.ns["split-fe-1"], "web")) == ["172.18.0.2"]
        assert addrs(split.query(split.host, "web", server=FE_DNS)) == ["172.18.0.2"]
    finally:
        split.ip(out, "route del 172.18.0.0/16 via 203.0.113.1")
        split.ip(out, "route del 172.19.0.0/16 via 203.0.113.1")
    assert "open-probe.example." not in [q["name"] for q in split.upstream_queries()]


def test_service_dns_is_its_upstream(tmp_path, mmsg):
    """A service's `dns:` (the container's upstreams) is where its forwarded names go; the
    others use the default upstreams; the two never share a cached answer."""
    other_dns, other_answer = "198.51.100.55", "198.51.100.99"
    net = "svcdns_net"
    cfg = {
        "project": "svcdns", "ttl": 5, "pidfile": "x", "upstreams": [UPSTREAM],
        "listeners": [{"network": net, "address": "10.211.0.1", "port": 53, "internal": False}],
        "containers": [
            container("svcdns-own-1", "own", [endpoint(net, "10.211.0.2")], upstreams=[other_dns]),
            container("svcdns-plain-1", "plain", [endpoint(net, "10.211.0.3")]),
        ],
    }
    t = Topo(tmp_path, cfg, {net: "10.211.0.1/24"}, mmsg=mmsg)
    try:
        t.setup()
        t.ip(t.outside, f"addr add {other_dns}/32 dev lo")
        t.start_upstream()
        t.start_upstream(other_dns, other_answer)
        t.start_resolver()
        own, plain = t.ns["svcdns-own-1"], t.ns["svcdns-plain-1"]
        for _ in range(2):  # the second round is answered from the cache: still per upstream
            assert addrs(t.query(own, "which.example")) == [other_answer]
            assert addrs(t.query(plain, "which.example")) == [WEB_ADDR]
            assert addrs(t.query(own, "which-tcp.example", tcp=True)) == [other_answer]
            assert addrs(t.query(plain, "which-tcp.example", tcp=True)) == [WEB_ADDR]
        names = [q["name"] for q in t.upstream_queries()]  # both upstreams log to one file
        assert names.count("which.example.") == 2 and names.count("which-tcp.example.") == 2
    finally:
        _finish(t)


# -- naming: aliases, links, hostname, container_name, failover ---------------------------------

NAMING_MATRIX = [
    ("alpha-box", N1_DNS, {
        "alpha": ["10.201.1.10"], "alpha-box": ["10.201.1.10"], "alpha-host": ["10.201.1.10"],
        "alpha-alias": ["10.201.1.10"], "shared-alias": ["10.201.1.10", "10.201.1.20"],
        "alpha-net2-only": ["10.201.2.129"], "alpha-link": "NXDOMAIN", "beta": ["10.201.1.20"],
        "beta-host": ["10.201.1.20"], "naming-beta-1": ["10.201.1.20"], "gamma": ["10.201.2.128"],
        "naming-gamma-1": ["10.201.2.128"], "alpha.naming_net1": ["10.201.1.10"],
        "alpha-box.naming_net2": ["10.201.2.129"]}),
    ("naming-beta-1", N1_DNS, {
        "alpha": ["10.201.1.10"], "alpha-box": ["10.201.1.10"], "alpha-host": ["10.201.1.10"],
        "alpha-alias": ["10.201.1.10"], "shared-alias": ["10.201.1.10", "10.201.1.20"],
        "alpha-net2-only": "NXDOMAIN", "alpha-link": ["10.201.1.10"], "beta": ["10.201.1.20"],
        "beta-host": ["10.201.1.20"], "naming-beta-1": ["10.201.1.20"], "gamma": "NXDOMAIN",
        "naming-gamma-1": "NXDOMAIN", "alpha.naming_net1": ["10.201.1.10"], "alpha-box.naming_net2": "NXDOMAIN"}),
    ("naming-gamma-1", N2_DNS, {
        "alpha": ["10.201.2.129"], "alpha-box": ["10.201.2.129"], "alpha-host": ["10.201.2.129"],
        "alpha-alias": "NXDOMAIN", "shared-alias": "NXDOMAIN", "alpha-net2-only": ["10.201.2.129"],
        "alpha-link": "NXDOMAIN", "beta": "NXDOMAIN", "beta-host": "NXDOMAIN", "naming-beta-1": "NXDOMAIN",
        "gamma": ["10.201.2.128"], "naming-gamma-1": ["10.201.2.128"], "alpha.naming_net1": "NXDOMAIN",
        "alpha-box.naming_net2": ["10.201.2.129"]}),
]


@pytest.mark.parametrize("asker,server,expected", NAMING_MATRIX, ids=[row[0] for row in NAMING_MATRIX])
def test_naming_matrix(naming, asker, server, expected):
    got = {name: outcome(naming.query(naming.ns[asker], name, server=server)) for name in expected}
    want = {name: sorted(v) if isinstance(v, list) else v for name, v in expected.items()}
    assert got == want
    assert not {q["name"].rstrip(".") for q in naming.upstream_queries()} & set(expected)


def test_naming_upstream_failover(naming):
    # gamma: first upstream's port is closed (ICMP), the second answers
    assert addrs(naming.query(naming.ns["naming-gamma-1"], "gamma-up.example", server=N2_DNS)) == [WEB_ADDR]
    # beta: first upstream never answers (forward_timeout 0.5 s), the second answers
    assert addrs(naming.query(naming.ns["naming-beta-1"], "beta-up.example")) == [WEB_ADDR]
    got = [q["name"] for q in naming.upstream_queries()]
    assert got.count("gamma-up.example.") == 1 and got.count("beta-up.example.") == 1


def test_servfail_when_every_upstream_fails(tmp_path, mmsg):
    cfg = naming_config()
    cfg["upstreams"] = ["198.51.100.54", "198.51.100.61:5353"]
    for c in cfg["containers"]:
        c["upstreams"] = None
    t = _topo(tmp_path, cfg, NAMING_SUBNETS, upstream=False, mmsg=mmsg)
    try:
        r = t.query(t.ns["alpha-box"], "nobody.example")
        assert r.header.rcode == RCODE.SERVFAIL
        r = t.query(t.ns["alpha-box"], "nobody.example", tcp=True)
        assert r.header.rcode == RCODE.SERVFAIL
        assert addrs(t.query(t.ns["alpha-box"], "alpha")) == ["10.201.1.10"]
    finally:
        _finish(t)


# -- IPv6 ---------------------------------------------------------------------------------------


def test_ipv6_aaaa_ptr_and_ipv6_listener(tmp_path, mmsg):
    net = "six_net"
    cfg = {
        "project": "six", "ttl": 5, "pidfile": "x", "upstreams": [UPSTREAM],
        "listeners": [{"network": net, "address": "10.210.0.1", "port": 53, "internal": False},
                      {"network": net, "address": "fd00:210::1", "port": 53, "internal": False}],
        "containers": [
            container("six-a-1", "a", [endpoint(net, "10.210.0.2", ipv6="fd00:210::2")]),
            container("six-b-1", "b", [endpoint(net, "10.210.0.3", ipv6="fd00:210::3")]),
        ],
    }
    t = _topo(tmp_path, cfg, {net: "10.210.0.1/24"}, {net: "fd00:210::1/64"}, mmsg=mmsg)
    try:
        b = t.ns["six-b-1"]
        for server in ("10.210.0.1", "fd00:210::1"):
            assert addrs(t.query(b, "a", "AAAA", server=server)) == ["fd00:210::2"]
            assert addrs(t.query(b, "a", "A", server=server)) == ["10.210.0.2"]
            assert sorted(addrs(t.query(b, "a", "ANY", server=server))) == ["10.210.0.2", "fd00:210::2"]
        ptr = t.query(b, "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.2.0.0.0.d.f.ip6.arpa", "PTR")
        assert [str(rr.rdata) for rr in ptr.rr] == ["six-a-1.six_net."]
        assert addrs(t.query(b, "v6.example", "AAAA", server="fd00:210::1")) == ["2001:db8::10"]
    finally:
        _finish(t)


# -- robustness ---------------------------------------------------------------------------------


def _garbage(rng: random.Random, valid: bytes) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 64))
    if kind == 1:
        return valid[: rng.randrange(0, len(valid))]  # truncated
    if kind == 2:
        b = bytearray(valid)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 3:
        return valid[:4] + struct.pack("!HHHH", 0, 0, 0, 0)  # zero questions
    if kind == 4:
        return valid[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # compression loop in the question
    if kind == 5:
        return valid[:4] + struct.pack("!HHHH", 65535, 65535, 65535, 65535) + valid[12:]
    if kind == 6:
        return valid[:12] + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 200  # labels running off the end
    return valid + rng.randbytes(rng.randrange(1, 600))  # trailing junk


def test_fuzzed_packets_never_stop_the_resolver(split):
    web = split.ns["split-web-1"]
    rng = random.Random(5)
    valid = bytes(DNSRecord.question("api", "A").pack())
    s = ns_socket(web)
    try:
        for i in range(3000):
            s.sendto(_garbage(rng, valid), (FE_DNS, 53))
            if i % 500 == 0:
                assert sorted(addrs(split.query(web, "api"))) == API
    finally:
        s.close()
    # a response (QR=1) sent to the resolver gets no answer: on a fresh socket, the first packet
    # back is the answer to the query sent after it
    s = ns_socket(web)
    try:
        s.settimeout(3)
        resp = bytearray(valid)
        resp[2] |= 0x80
        s.sendto(bytes(resp), (FE_DNS, 53))
        q = DNSRecord.question("fe", "A")
        s.sendto(bytes(q.pack()), (FE_DNS, 53))
        first = DNSRecord.parse(s.recv(65535))
        assert first.header.id == q.header.id and addrs(first) == ["172.18.0.3"]
    finally:
        s.close()
    # malformed but answerable: FORMERR, NOTIMP
    zero = split.raw(web, valid[:4] + b"\x00" * 8)
    assert zero[3] & 0x0F == RCODE.FORMERR
    notify = bytearray(valid)
    notify[2] = 4 << 3  # opcode NOTIFY
    assert split.raw(web, bytes(notify))[3] & 0x0F == RCODE.NOTIMP
    assert split.resolver.poll() is None
    assert sorted(addrs(split.query(web, "api", tcp=True))) == API


def test_tcp_abuse_never_stops_the_resolver(split):
    fe = split.ns["split-fe-1"]
    held = []
    try:
        # slowloris: more idle half-queries than the resolver keeps; it evicts the oldest
        for _ in range(160):
            s = ns_socket(fe, kind=socket.SOCK_STREAM)
            s.settimeout(3)
            s.connect((FE_DNS, 53))
            s.send(b"\x00")
            held.append(s)
        assert addrs(split.query(fe, "web", tcp=True)) == ["172.18.0.2"]
        # a huge length prefix is closed at once, not buffered
        s = ns_socket(fe, kind=socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect((FE_DNS, 53))
        s.sendall(b"\xff\xff" + b"x" * 1000)
        assert s.recv(10) == b""
        s.close()
        # pipelined queries on one connection, answered in order for local names
        s = ns_socket(fe, kind=socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect((FE_DNS, 53))
        qs = [DNSRecord.question(n, "A") for n in ("web", "fe", "split-web-1")]
        s.sendall(b"".join(struct.pack("!H", len(q.pack())) + bytes(q.pack()) for q in qs))
        got = []
        for _ in qs:
            n = struct.unpack("!H", _recv(s, 2))[0]
            got.append(addrs(DNSRecord.parse(_recv(s, n))))
        s.close()
        assert got == [["172.18.0.2"], ["172.18.0.3"], ["172.18.0.2"]]
    finally:
        for s in held:
            s.close()
    assert split.resolver.poll() is None
    assert addrs(split.query(fe, "web")) == ["172.18.0.2"]


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    for _ in range(1000):
        if len(buf) == n:
            break
        chunk = s.recv(n - len(buf))
        assert chunk
        buf += chunk
    return buf


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_udp_flood_of_forwarded_names_keeps_local_answers(split):
    """Waves of thousands of distinct forwarded names at once: locals are still answered, and
    memory stays bounded (pending table and cache are capped): once the first waves have filled
    the tables, more waves of new names do not grow the daemon."""
    fe = split.ns["split-fe-1"]
    pid = split.resolver_pid()
    rss = []
    s = ns_socket(fe)
    try:
        for wave in range(4):
            for i in range(6000):
                s.sendto(bytes(DNSRecord.question(f"flood{wave}x{i}.nx", "A").pack()), (FE_DNS, 53))
            assert addrs(split.query(fe, "web")) == ["172.18.0.2"]
            # let the forwards of this wave end (answered or timed out: forward_timeout 2 s)
            for _ in range(100):
                r = split.query(fe, f"settle{wave}.example")
                if r.header.rcode == RCODE.NOERROR:
                    break
            time.sleep(2.5)
            rss.append(_rss_kib(pid))
    finally:
        s.close()
    assert split.resolver.poll() is None
    assert rss[3] - rss[1] < 8 * 1024, rss  # KiB: the last waves add (almost) nothing


# -- life cycle: readiness, bind errors, reload, stop -------------------------------------------


def test_bind_failure_exits_nonzero_without_pidfile(tmp_path):
    cfg = split_config()
    cfg["listeners"].append({"network": "split_frontend", "address": "172.18.9.9", "port": 53, "internal": False})
    t = Topo(tmp_path, cfg, SPLIT_SUBNETS)
    try:
        t.setup()
        p = t.start_resolver(wait=False)
        assert p.wait(timeout=20) == 1
        err = t.resolver_log.read_text()
        assert "cannot listen on 172.18.9.9:53" in err and "Traceback" not in err
        assert not Path(t.config["pidfile"]).exists()
        (tmp_path / "bad.json").write_text('{"project": "x",\n  "listeners": [}')
        out = subprocess.run([sys.executable, "-m", "composenet.dns.server", str(tmp_path / "bad.json")],
                             capture_output=True, text=True, timeout=20)
        assert out.returncode == 1
        assert "bad.json:2:" in out.stderr and "invalid JSON" in out.stderr and "Traceback" not in out.stderr
    finally:
        _finish(t)


def test_sigterm_removes_pidfile_and_exits_zero(tmp_path):
    t = _topo(tmp_path, split_config(), SPLIT_SUBNETS, upstream=False)
    try:
        pidfile = Path(t.config["pidfile"])
        assert int(pidfile.read_text()) == t.resolver.pid
        os.kill(t.resolver.pid, signal.SIGTERM)
        assert t.resolver.wait(timeout=10) == 0
        assert not pidfile.exists()
    finally:
        _finish(t)


def test_reload_without_losses(tmp_path, mmsg):
    """A client queries without pause while the config is rewritten and reloaded several times:
    every query is answered, each reload's changes show, new listeners open, removed ones close."""
    base = split_config()
    late_net = "split_late"
    subnets = dict(SPLIT_SUBNETS, **{late_net: "172.20.0.1/16"})
    t = _topo(tmp_path, base, subnets, mmsg=mmsg)
    try:
        # a namespace for the container that only exists in the odd configs
        late_ns = f"cnd{t.tag}late"
        sh("ip", "netns", "add", late_ns)
        t.ns["split-late-1"] = late_ns
        t.ip(late_ns, "link set lo up")
        t.attach(late_ns, "vlate", "eth0", endpoint(late_net, "172.20.0.2"))

        with_late = json.loads(json.dumps(base))
        with_late["listeners"].append({"network": late_net, "address": "172.20.0.1", "port": 53, "internal": False})
        with_late["containers"].append(container("split-late-1", "late", [endpoint(late_net, "172.20.0.2")]))
        with_late["containers"][0]["endpoints"].append(endpoint(late_net, "172.20.0.3"))  # web joins too

        fe = t.ns["split-fe-1"]
        stop = threading.Event()
        results: list[object] = []

        def client() -> None:
            s = ns_socket(fe)
            s.settimeout(2)
            try:
                for i in range(200000):
                    if stop.is_set():
                        break
                    q = DNSRecord.question("web" if i % 2 else "split-web-1", "A")
                    s.sendto(bytes(q.pack()), (FE_DNS, 53))
                    try:
                        while True:
                            r = DNSRecord.parse(s.recv(4096))
                            if r.header.id == q.header.id:
                                break
                        results.append(addrs(r))
                    except TimeoutError:
                        results.append("timeout")
            finally:
                s.close()

        th = threading.Thread(target=client)
        th.start()
        try:
            pid = t.resolver.pid
            web = t.ns["split-web-1"]
            for n in range(6):
                cfg = with_late if n % 2 == 0 else base
                t.write_config(cfg)
                os.kill(pid, signal.SIGHUP)
                want = ["172.20.0.2"] if cfg is with_late else "NXDOMAIN"
                for _ in range(250):  # the reload is asynchronous: wait until it shows
                    if outcome(t.query(web, "late")) == want:
                        break
                    time.sleep(0.02)
                assert outcome(t.query(web, "late")) == want
                try:
                    r = t.query(late_ns, "web", server="172.20.0.1", timeout=1)
                    late_answer: object = addrs(r)
                except ConnectionRefusedError:  # ICMP port unreachable: nothing listens
                    late_answer = "closed"
                if cfg is with_late:
                    # the new listener serves the new network: web's address there
                    assert late_answer == ["172.20.0.3"]
                else:
                    assert late_answer == "closed"
                time.sleep(0.1)
        finally:
            stop.set()
            th.join(30)
        assert len(results) > 100
        assert results.count("timeout") == 0
        assert all(r == ["172.18.0.2"] for r in results)
        # a broken config on reload keeps the previous one
        t.config_path.write_text("{broken")
        os.kill(t.resolver.pid, signal.SIGHUP)
        for _ in range(200):
            if "reload failed" in t.resolver_log.read_text():
                break
            time.sleep(0.02)
        assert "reload failed" in t.resolver_log.read_text()
        assert addrs(t.query(fe, "web")) == ["172.18.0.2"]
        assert t.resolver.poll() is None
    finally:
        _finish(t)


# -- through `composenet up`: reload while the project changes, not an open resolver ------------

UP_BASE = """
services:
  a: {networks: [net]}
  b: {networks: [net]}
networks:
  net: {}
"""
UP_GROWN = """
services:
  a: {networks: [net]}
  b: {networks: [net]}
  c: {networks: [net, net2]}
  d: {networks: [net2]}
networks:
  net: {}
  net2: {}
"""


def _nameserver(ns: str) -> str:
    for line in Path(f"/etc/netns/{ns}/resolv.conf").read_text().splitlines():
        if line.startswith("nameserver "):
            return line.split()[1]
    raise AssertionError(f"no nameserver in /etc/netns/{ns}/resolv.conf")


def _ask(ns: str, name: str, server: str, tcp: bool = False, timeout: float = 3.0) -> object:
    q = DNSRecord.question(name, "A")
    packet = bytes(q.pack())
    s = ns_socket(ns, kind=socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.connect((server, 53))
        if tcp:
            s.sendall(struct.pack("!H", len(packet)) + packet)
            n = struct.unpack("!H", _recv(s, 2))[0]
            return outcome(DNSRecord.parse(_recv(s, n)))
        s.send(packet)
        for _ in range(100):
            data = s.recv(4096)
            if data[:2] == packet[:2]:
                return outcome(DNSRecord.parse(data))
        raise AssertionError("no answer with our id")
    finally:
        s.close()


def test_up_reload_without_losses_and_not_open(sandbox, tmp_path):
    """`composenet up` of a changed project reconfigures the running resolver in place (same
    pid) while a client inside a service namespace queries without pause: no query is lost,
    every answer is right, the new names and the new network's listener show, removed ones go.
    From the outside namespace, routed to the project's networks, the resolver answers nothing."""
    import uuid

    sb = sandbox
    p = f"t{uuid.uuid4().hex[:6]}"
    base, grown = tmp_path / "base.yaml", tmp_path / "grown.yaml"
    base.write_text(UP_BASE)
    grown.write_text(UP_GROWN)
    sb.up(base, p)
    a, b = f"{p}-a-1", f"{p}-b-1"
    server = _nameserver(a)
    b_addr = sb.ipv4(b)
    assert _ask(a, "b", server) == [b_addr]
    pidfile = Path(f"/run/composenet/{p}/dns.pid")
    pid = int(pidfile.read_text())

    stop = threading.Event()
    results: list[object] = []
    lost: list[str] = []

    def client() -> None:
        s = ns_socket(a)
        # glibc's resolver waits 5 s before it retries (resolv.conf `timeout:`): an answer later
        # than that is one a client lost; a slower one, on a loaded CI machine, is not a loss.
        s.settimeout(5)
        try:
            for i in range(200000):
                if stop.is_set():
                    break
                q = DNSRecord.question("b" if i % 2 else f"{p}-b-1", "A")
                s.sendto(bytes(q.pack()), (server, 53))
                try:
                    for _ in range(100):
                        r = DNSRecord.parse(s.recv(4096))
                        if r.header.id == q.header.id:
                            break
                    results.append(outcome(r))
                except TimeoutError:
                    results.append("timeout")
                    lost.append(f"{time.strftime('%H:%M:%S')} {q.q.qname}")
        finally:
            s.close()

    th = threading.Thread(target=client)
    th.start()
    try:
        for compose in (grown, base, grown):
            sb.up(compose, p)
            assert int(pidfile.read_text()) == pid  # reloaded in place, not restarted
            if compose is grown:
                c_addr = sb.ipv4(f"{p}-c-1")
                assert _ask(a, "c", server) == [c_addr]
                assert _ask(a, "d", server) == "NXDOMAIN"  # d is on net2 only
                d = f"{p}-d-1"
                d_server = _nameserver(d)
                assert d_server != server
                assert _ask(d, "c", d_server) == [sb.ipv4(f"{p}-c-1", "eth1")]
                assert _ask(d, "c", d_server, tcp=True) == [sb.ipv4(f"{p}-c-1", "eth1")]
                assert _ask(d, "b", d_server) == "NXDOMAIN"
            else:
                # gone: no longer a project name (forwarded: no upstream answers in the sandbox),
                # and as <name>.<network> of a project network, NXDOMAIN at once
                assert _ask(a, "c", server) in ("NXDOMAIN", "SERVFAIL")
                assert _ask(a, f"c.{p}_net", server) == "NXDOMAIN"
                assert _ask(a, f"{p}-c-1.{p}_net", server, tcp=True) == "NXDOMAIN"
    finally:
        stop.set()
        th.join(30)
    assert len(results) > 50
    dns_log = Path(f"/run/composenet/{p}/logs/dns.log")
    assert results.count("timeout") == 0, (lost, dns_log.read_text()[-3000:] if dns_log.exists() else "")
    assert all(r == [b_addr] for r in results), {str(r) for r in results}

    # not an open resolver: the outside namespace routes to the project's subnet and asks
    subnet = sb.subnet(a)
    sb.ip(sb.outside, f"route add {subnet} via 203.0.113.1")
    with pytest.raises(TimeoutError):
        _ask(sb.outside, "b", server, timeout=1)
    with pytest.raises((TimeoutError, ConnectionError, OSError)):
        _ask(sb.outside, "b", server, tcp=True, timeout=1)
    assert _ask(a, "b", server) == [b_addr]

    sb.down(p, base)
    sb.assert_clean(p)


# -- the two UDP paths --------------------------------------------------------------------------

BIG_REPLICAS = 300  # A records of "big": ~4.8 KB, more than a recvmmsg slot (4096 bytes)


def _equivalence_queries() -> list[bytes]:
    """Queries (IDs set per send) whose answers must not depend on the UDP path: local names,
    types, case, PTR, forwarded and refused names, answers over 512 and over 4096 bytes, a
    datagram longer than the read size, and malformed packets (some get no answer at all)."""
    def q(name: str, qtype: str = "A", edns: int | None = None) -> bytes:
        r = DNSRecord.question(name, qtype)
        if edns:
            r.add_ar(EDNS0(udp_len=edns))
        return bytes(r.pack())

    valid = q("web")
    notify = bytearray(valid)
    notify[2] = 4 << 3
    return [
        q("web"), q("WeB.split_frontend."), q("api"), q("db"), q("fe"), q("split-web-1"), q("web-host"),
        q("web", "AAAA"), q("api", "ANY"), q("web", "MX"), q("2.0.18.172.in-addr.arpa", "PTR"),
        q("4.0.19.172.in-addr.arpa", "PTR"), q("nosuchname"), q("path.example"), q("servfail.example"),
        q("big"),                      # no EDNS: TC=1
        q("big", edns=1232),           # still too big: TC=1
        q("big", edns=65000),          # the whole answer, larger than a slot
        q("web", edns=4096),
        q("fe") + bytes(5000),         # longer than the 4096 bytes read: both paths truncate alike
        valid[:4] + bytes(8),          # no question: FORMERR
        bytes(notify),                 # NOTIFY: NOTIMP
        valid[:7],                     # shorter than a header: dropped
        valid[:2] + b"\x81\x00" + valid[4:],  # a response: dropped
    ]


def _normalise(data: bytes) -> object:
    """An answer without its ID and with record order sorted (scaled services are shuffled)."""
    try:
        r = DNSRecord.parse(data)
    except Exception:  # noqa: BLE001 -- not parseable: compare the bytes
        return data[2:]
    rrs = sorted((str(rr.rname), rr.rtype, rr.ttl, str(rr.rdata)) for rr in r.rr)
    return (data[2:4], r.header.q, r.header.a, r.header.auth, r.header.ar, str(r.q.qname) if r.questions else None,
            rrs)


def _burst(t: Topo, askers: list[tuple[str, str]], rounds: int) -> dict[tuple[str, int, int], object]:
    """Send every query ``rounds`` times from each (namespace, server) at once, without waiting
    (more datagrams per listener than one recvmmsg reads), then collect the answers by ID until
    none comes for 0.5 s (bounded). Unanswered queries map to None."""
    queries = _equivalence_queries()
    socks = []
    sent: dict[tuple[int, int], tuple[str, int, int]] = {}
    try:
        for a, (ns, server) in enumerate(askers):
            s = ns_socket(ns)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.connect((server, 53))
            socks.append(s)
            for rnd in range(rounds):
                for i, packet in enumerate(queries):
                    qid = (rnd * len(queries) + i + 1) & 0xFFFF
                    s.send(struct.pack("!H", qid) + packet[2:])
                    sent[(a, qid)] = (ns, rnd, i)
        got: dict[tuple[str, int, int], object] = dict.fromkeys(sent.values())
        deadline = time.monotonic() + 10
        for a, s in enumerate(socks):
            s.settimeout(0.5)
            for _ in range(len(sent) * 2):
                if time.monotonic() > deadline:
                    break
                try:
                    data = s.recv(65535)
                except TimeoutError:
                    break
                key = sent.get((a, struct.unpack("!H", data[:2])[0]))
                if key is not None:
                    got[key] = _normalise(data)
        return got
    finally:
        for s in socks:
            s.close()


def test_mmsg_and_plain_paths_give_the_same_answers(tmp_path):
    """The same bursts of queries, once against a resolver on the recvmmsg/sendmmsg path and
    once on the plain loop (COMPOSENET_DNS_MMSG=0): the same answers, and the same silences."""
    cfg = split_config()
    fe = "split_frontend"
    for k in range(BIG_REPLICAS):
        cfg["containers"].append(container(f"split-big-{k + 1}", "big", [endpoint(fe, f"172.18.{10 + k // 200}.{k % 200 + 2}")]))
    askers = {"split-fe-1": FE_DNS, "split-web-1": FE_DNS, "split-api-1": BE_DNS}
    t = _topo(tmp_path, cfg, SPLIT_SUBNETS, namespaces_for=set(askers) | {"split-db-1"})
    try:
        pairs = [(t.ns[c], server) for c, server in askers.items()]
        results = {}
        for mmsg in (True, False):
            if not mmsg:
                t.resolver.terminate()
                assert t.resolver.wait(timeout=10) == 0
                t.mmsg = False
                t.start_resolver()
            assert _resolver_env(t) == ("1" if mmsg else "0")
            results[mmsg] = _burst(t, pairs, rounds=3)
        differ = sorted(k for k in results[True] if results[True][k] != results[False][k])
        assert not differ, f"{len(differ)} answers differ between the paths, e.g. {differ[:5]}"
        # and the answers are the right ones, not the same failure twice
        fe_ns = t.ns["split-fe-1"]
        r = results[True]
        n = len(_equivalence_queries())
        assert all(r[(fe_ns, rnd, i)] is not None for rnd in range(3) for i in range(n - 2))
        assert all(r[(fe_ns, rnd, i)] is None for rnd in range(3) for i in range(n - 2, n))
        big_full = r[(fe_ns, 0, 17)]
        assert isinstance(big_full, tuple) and len(big_full[6]) == BIG_REPLICAS
        assert r[(fe_ns, 0, 15)][6] == [] and r[(fe_ns, 0, 15)][0][0] & 0x02  # type: ignore[index]
        assert r[(fe_ns, 0, 0)][6] == [("web.", 1, 5, "172.18.0.2")]  # type: ignore[index]
        assert t.resolver.poll() is None
    finally:
        _finish(t)
