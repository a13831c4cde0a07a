"""Name tables of the resolver (composenet/dns/zone.py): pure, no sockets, no root."""

from __future__ import annotations

import json
import struct

import pytest
from dnslib import EDNS0, RCODE, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from composenet.dns.answer import respond
from composenet.dns.config import ConfigError, load_config
from composenet.dns.wire import encode_name, fit_udp, question_end
from composenet.dns.zone import build_zone
from tests.integration.dnstopo import container, endpoint, naming_config, split_config

FE, BE = "172.18.0.1", "172.19.0.1"
API = ["172.19.0.3", "172.19.0.4", "172.19.0.5"]


def ask(zone, source: str, name: str, qtype: str = "A", listener: str = FE, packet: bytes | None = None):
    """NXDOMAIN/REFUSED/FORWARD/EMPTY or the sorted answers (addresses or PTR targets)."""
    data = packet if packet is not None else bytes(DNSRecord.question(name, qtype).pack())
    r = respond(zone.view_for(source, listener), data)
    if isinstance(r, int):
        return "FORWARD"
    assert isinstance(r, bytes)
    d = DNSRecord.parse(r)
    assert d.header.id == DNSRecord.parse(data).header.id
    if d.header.rcode:
        return RCODE.get(d.header.rcode)
    return sorted(str(rr.rdata) for rr in d.rr) or "EMPTY"


@pytest.fixture(scope="module")
def split():
    return build_zone(split_config())


@pytest.fixture(scope="module")
def naming():
    return build_zone(naming_config())


WEB, FEC, API1, DB = "172.18.0.2", "172.18.0.3", "172.19.0.3", "172.19.0.6"

SPLIT = [
    # (asker address, name, expected)   -- DOCKER-BEHAVIOUR.md (a), improved where Docker leaks
    (WEB, "web", ["172.18.0.2"]), (WEB, "api", API), (WEB, "db", ["172.19.0.6"]), (WEB, "fe", ["172.18.0.3"]),
    (WEB, "split-web-1", ["172.18.0.2"]), (WEB, "web-host", ["172.18.0.2"]),
    (WEB, "web.split_frontend", ["172.18.0.2"]), (WEB, "web.split_backend", ["172.19.0.2"]),
    (WEB, "foo.example", "FORWARD"), (WEB, "nosuchname", "FORWARD"),
    (FEC, "web", ["172.18.0.2"]), (FEC, "api", "NXDOMAIN"), (FEC, "db", "NXDOMAIN"), (FEC, "fe", ["172.18.0.3"]),
    (FEC, "split-api-1", "NXDOMAIN"), (FEC, "web.split_backend", "NXDOMAIN"), (FEC, "fe.split_backend", "NXDOMAIN"),
    (FEC, "anything.split_backend", "NXDOMAIN"), (FEC, "split_backend", "NXDOMAIN"),
    (FEC, "foo.example", "FORWARD"),
    (API1, "web", ["172.19.0.2"]), (API1, "api", API), (API1, "fe", "NXDOMAIN"), (API1, "split-fe-1", "NXDOMAIN"),
    (API1, "web.split_frontend", "NXDOMAIN"), (API1, "foo.example", "REFUSED"), (API1, "nosuchname", "REFUSED"),
    (DB, "split-api-2", ["172.19.0.4"]), (DB, "db", ["172.19.0.6"]),
]


@pytest.mark.parametrize("source,name,expected", SPLIT)
def test_split_scoping(split, source, name, expected):
    assert ask(split, source, name, listener=FE if source.startswith("172.18") else BE) == expected


NAMING = [
    ("10.201.1.10", "shared-alias", ["10.201.1.10", "10.201.1.20"]),
    ("10.201.1.10", "alpha-net2-only", ["10.201.2.129"]),
    ("10.201.1.10", "alpha-link", "NXDOMAIN"),
    ("10.201.1.10", "alpha-box.naming_net2", ["10.201.2.129"]),
    ("10.201.1.10", "gamma", ["10.201.2.128"]),
    ("10.201.1.20", "alpha-link", ["10.201.1.10"]),
    ("10.201.1.20", "alpha-net2-only", "NXDOMAIN"),
    ("10.201.1.20", "alpha-host", ["10.201.1.10"]),
    ("10.201.1.20", "beta-host", ["10.201.1.20"]),
    ("10.201.1.20", "gamma", "NXDOMAIN"),
    ("10.201.2.128", "alpha", ["10.201.2.129"]),
    ("10.201.2.128", "alpha-alias", "NXDOMAIN"),
    ("10.201.2.128", "shared-alias", "NXDOMAIN"),
    ("10.201.2.128", "naming-beta-1", "NXDOMAIN"),
    ("10.201.2.128", "alpha-host", ["10.201.2.129"]),
]


@pytest.mark.parametrize("source,name,expected", NAMING)
def test_naming_aliases_links_hostnames(naming, source, name, expected):
    assert ask(naming, source, name, listener="10.201.1.1") == expected


def test_multihomed_target_answers_from_askers_first_network(naming):
    # alpha asks for itself: on net1 and net2, eth0 (net1) wins, as in Docker
    assert ask(naming, "10.201.1.10", "alpha") == ["10.201.1.10"]
    assert ask(naming, "10.201.2.129", "alpha") == ["10.201.1.10"]  # same container, any of its addresses


def test_ptr(split):
    assert ask(split, FEC, "2.0.18.172.in-addr.arpa", "PTR") == ["split-web-1.split_frontend."]
    assert ask(split, WEB, "3.0.19.172.in-addr.arpa", "PTR") == ["split-api-1.split_backend."]
    assert ask(split, FEC, "3.0.19.172.in-addr.arpa", "PTR") == "NXDOMAIN"  # not shared: never forwarded
    assert ask(split, FEC, "2.0.18.172.in-addr.arpa", "A") == "EMPTY"
    assert ask(split, FEC, "9.9.9.10.in-addr.arpa", "PTR") == "FORWARD"


def test_case_and_trailing_dot(split):
    assert ask(split, WEB, "WEB.Split_Frontend.") == ["172.18.0.2"]
    assert ask(split, WEB, "Api") == API
    data = bytes(DNSRecord.question("ApI", "A").pack())
    r = respond(split.view_for(WEB, FE), data)
    assert isinstance(r, bytes) and str(DNSRecord.parse(r).q.qname) == "ApI."


def test_known_name_other_types_are_empty_noerror(split):
    for qtype in ("AAAA", "MX", "TXT", "SRV", "CAA", "HTTPS"):
        assert ask(split, WEB, "web", qtype) == "EMPTY", qtype
    assert ask(split, WEB, "api", "ANY") == API
    assert ask(split, FEC, "api", "MX") == "NXDOMAIN"


def test_flags_ttl_and_rd(split):
    q = DNSRecord.question("web", "A")
    q.header.rd = 0
    r = DNSRecord.parse(respond(split.view_for(WEB, FE), bytes(q.pack())))  # type: ignore[arg-type]
    assert (r.header.qr, r.header.aa, r.header.rd, r.header.ra, r.rr[0].ttl) == (1, 0, 0, 1, 5)
    cfg = split_config()
    cfg["ttl"] = 30
    r = DNSRecord.parse(respond(build_zone(cfg).view_for(WEB, FE), bytes(DNSRecord.question("web").pack())))  # type: ignore[arg-type]
    assert (r.header.rd, r.rr[0].ttl) == (1, 30)
    del cfg["ttl"]
    r = DNSRecord.parse(respond(build_zone(cfg).view_for(WEB, FE), bytes(DNSRecord.question("web").pack())))  # type: ignore[arg-type]
    assert r.rr[0].ttl == 5


def test_scaled_service_orders_are_shuffled(split):
    view = split.view_for(WEB, FE)
    data = bytes(DNSRecord.question("api").pack())
    orders = {tuple(str(rr.rdata) for rr in DNSRecord.parse(respond(view, data)).rr) for _ in range(300)}  # type: ignore[arg-type]
    assert len(orders) == 6  # every permutation of 3 shows up in 300 draws


def test_many_replicas_all_records(split):
    cfg = split_config()
    for i in range(4, 41):
        cfg["containers"].append(container(f"split-api-{i}", "api", [endpoint("split_backend", f"172.19.1.{i}", internal=True)]))
    z = build_zone(cfg)
    got = ask(z, WEB, "api")
    assert isinstance(got, list) and len(got) == 40
    q = DNSRecord.question("api")
    r = respond(z.view_for(WEB, FE), bytes(q.pack()))
    assert isinstance(r, bytes) and len(r) > 512
    small = DNSRecord.parse(fit_udp(bytes(q.pack()), question_end(bytes(q.pack())), r))
    assert (small.header.tc, small.rr) == (1, [])
    q.add_ar(EDNS0(udp_len=1232))
    assert fit_udp(bytes(q.pack()), question_end(bytes(q.pack())), r) == r


def test_unknown_source_is_a_member_of_the_listeners_network(split):
    assert ask(split, "172.18.0.1", "web", listener=FE) == ["172.18.0.2"]
    assert ask(split, "172.18.0.1", "api", listener=FE) == "NXDOMAIN"
    assert ask(split, "203.0.113.7", "api", listener=BE) == API
    assert ask(split, "203.0.113.7", "foo.example", listener=FE) == "FORWARD"
    assert ask(split, "203.0.113.7", "foo.example", listener=BE) == "REFUSED"  # internal listener


def test_unregistered_sharer_is_a_project_name_but_not_resolvable():
    cfg = naming_config()
    # side: network_mode service:alpha -> alpha's endpoints, not registered, with its own link
    alpha = cfg["containers"][0]
    cfg["containers"].append(container("naming-side-1", "side", alpha["endpoints"], register=False,
                                       links=[["g", "gamma"]]))
    z = build_zone(cfg)
    assert ask(z, "10.201.1.20", "side") == "NXDOMAIN"
    assert ask(z, "10.201.1.20", "naming-side-1") == "NXDOMAIN"
    assert ask(z, "10.201.1.10", "side") == "NXDOMAIN"
    assert ask(z, "10.201.1.10", "alpha") == ["10.201.1.10"]  # the shared namespace keeps alpha's view
    assert ask(z, "10.201.1.10", "g") == ["10.201.2.128"]  # its link applies to the shared namespace


def test_ipv6_records_and_ptr():
    cfg = {"project": "six", "pidfile": "p", "upstreams": [],
           "listeners": [{"network": "six_n", "address": "fd00::1"}],
           "containers": [container("a1", "a", [endpoint("six_n", "10.9.0.2", ipv6="fd00::2")]),
                          container("b1", "b", [endpoint("six_n", None, ipv6="fd00::3")])]}
    z = build_zone(cfg)
    assert ask(z, "fd00::3", "a", "AAAA", listener="fd00::1") == ["fd00::2"]
    assert ask(z, "fd00::3", "b", "A", listener="fd00::1") == "EMPTY"
    assert ask(z, "fd00::3", "b", "AAAA", listener="fd00::1") == ["fd00::3"]
    assert ask(z, "10.9.0.2", "a", "ANY", listener="fd00::1") == ["10.9.0.2", "fd00::2"]
    rev = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"
    assert ask(z, "fd00::3", rev, "PTR", listener="fd00::1") == ["a1.six_n."]
    # no upstreams at all still decides: forward (the daemon answers SERVFAIL)
    assert ask(z, "fd00::3", "x.example", listener="fd00::1") == "FORWARD"


def test_malformed_queries():
    z = build_zone(split_config())
    view = z.view_for(WEB, FE)
    good = bytes(DNSRecord.question("web").pack())
    assert respond(view, b"") is None
    assert respond(view, good[:11]) is None
    assert respond(view, bytes([good[0], good[1], good[2] | 0x80]) + good[3:]) is None  # a response
    notimp = respond(view, good[:2] + bytes([good[2] | 0x10]) + good[3:])
    assert isinstance(notimp, bytes) and notimp[3] & 0x0F == RCODE.NOTIMP
    for bad in (good[:4] + b"\x00\x00" + good[6:], good[:4] + b"\x00\x02" + good[6:], good[:-1],
                good[:12] + b"\xc0\x0c\x00\x01\x00\x01", good[:12] + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
                good[:12] + (b"\x3fa" + b"b" * 62) * 5 + b"\x00\x00\x01\x00\x01"):
        r = respond(view, bad)
        assert isinstance(r, bytes) and r[:2] == good[:2] and r[3] & 0x0F == RCODE.FORMERR, bad
    assert respond(view, good + b"trailing junk") is not None


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_respond_never_raises(data):
    z = _FUZZ_ZONE
    r = respond(z.view_for(WEB, FE), data)
    assert r is None or isinstance(r, (bytes, int))
    if isinstance(r, bytes):
        assert r[:2] == data[:2] and r[2] & 0x80
    if isinstance(r, int):
        assert 17 <= r <= len(data) and question_end(data) == r


_FUZZ_ZONE = build_zone(split_config())


def test_encode_name():
    assert encode_name("Web.Net.") == b"\x03web\x03net\x00"
    for bad in ("", "a..b", "x" * 64, ".".join(["abcdefgh"] * 40), "é"):
        with pytest.raises((ValueError, UnicodeError)):
            encode_name(bad)


def test_unusable_names_are_warned_not_fatal():
    cfg = split_config()
    cfg["containers"][0]["endpoints"][0]["aliases"] = ["x" * 70]
    z = build_zone(cfg)
    assert any("x" * 70 in w for w in z.warnings)
    assert ask(z, FEC, "web") == ["172.18.0.2"]


def test_tables_are_shared_between_askers_with_the_same_networks(split):
    assert split.views["172.19.0.3"].table is split.views["172.19.0.4"].table
    assert split.views["172.19.0.3"].table is not split.views["172.18.0.2"].table


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c.pop("listeners"), "listeners: missing"),
    (lambda c: c["listeners"][0].update(address="300.1.1.1"), "listeners[0].address: '300.1.1.1' is not an IP"),
    (lambda c: c["containers"][1]["endpoints"][0].update(ipv4="fd00::1"), "containers[1].endpoints[0].ipv4"),
    (lambda c: c["containers"][0].update(links=[["a"]]), "containers[0].links[0]"),
    (lambda c: c.update(ttl="5"), "ttl: expected int"),
    (lambda c: c.update(upstreams=["not-an-ip"]), "upstreams[0]"),
    (lambda c: c["listeners"].append(dict(c["listeners"][0])), "listed twice"),
    (lambda c: c["containers"][0].update(register="yes"), "containers[0].register"),
])
def test_config_errors_name_the_key(mutate, message):
    cfg = split_config()
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        build_zone(cfg, "dns.json")
    assert message in str(e.value) and str(e.value).startswith("dns.json: ")


def test_load_config_errors(tmp_path):
    p = tmp_path / "dns.json"
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(p)
    p.write_text('{\n "project": }')
    with pytest.raises(ConfigError, match=r"dns.json:2:\d+: invalid JSON"):
        load_config(p)
    p.write_text(json.dumps(split_config()))
    assert build_zone(load_config(p), str(p)).project == "split"


def test_upstream_forms():
    cfg = split_config()
    cfg["upstreams"] = ["198.51.100.53", "198.51.100.53:5353", "2001:db8::1", "[2001:db8::1]:5353"]
    assert build_zone(cfg).upstreams == tuple(cfg["upstreams"])


def test_question_end_matches_wire_layout():
    q = bytes(DNSRecord.question("a.bc", "AAAA").pack())
    assert question_end(q) == 12 + len(b"\x01a\x02bc\x00") + 4 == len(q)
    assert struct.unpack_from("!H", q, question_end(q) - 4)[0] == 28


# -- listeners inside container namespaces (containers on macvlan networks) ---------------------


def _macvlan_config() -> dict:
    lan, side = "mv_lan", "mv_side"
    return {
        "project": "mv", "ttl": 5, "pidfile": "/nonexistent/dns.pid", "upstreams": ["192.0.2.53"],
        "listeners": [{"network": side, "address": "10.157.0.1", "port": 53, "internal": False}],
        "namespaces": [{"netns": "mv-a-1", "container": "mv-a-1", "network": lan},
                       {"netns": "mv-b-1", "container": "mv-b-1", "network": lan}],
        "containers": [
            container("mv-a-1", "a", [endpoint(lan, "192.168.57.10", ["alpha-alias"])], upstreams=["192.0.2.9"]),
            container("mv-b-1", "b", [endpoint(lan, "192.168.57.2", ["beta-alias"]), endpoint(side, "10.157.0.2")]),
            container("mv-c-1", "c", [endpoint(side, "10.157.0.3")]),
        ],
    }


def ask_ns(zone, netns: str, name: str) -> object:
    data = bytes(DNSRecord.question(name, "A").pack())
    r = respond(zone.ns_views[netns], data)
    if isinstance(r, int):
        return "FORWARD"
    assert isinstance(r, bytes)
    d = DNSRecord.parse(r)
    if d.header.rcode:
        return RCODE.get(d.header.rcode)
    return sorted(str(rr.rdata) for rr in d.rr) or "EMPTY"


def test_namespace_listeners_answer_with_their_containers_view():
    zone = build_zone(_macvlan_config())
    assert [(nl.netns, nl.address, nl.port) for nl in zone.ns_listeners] == [
        ("mv-a-1", "127.0.0.11", 53), ("mv-b-1", "127.0.0.11", 53)]
    assert ask_ns(zone, "mv-a-1", "b") == ["192.168.57.2"]
    assert ask_ns(zone, "mv-a-1", "beta-alias") == ["192.168.57.2"]
    assert ask_ns(zone, "mv-a-1", "c") == "NXDOMAIN"  # not on a shared network
    assert ask_ns(zone, "mv-a-1", "foo.example") == "FORWARD"
    assert zone.ns_views["mv-a-1"].upstreams == ("192.0.2.9",)  # the container's own `dns:`
    assert ask_ns(zone, "mv-b-1", "ALPHA-alias.") == ["192.168.57.10"]
    assert ask_ns(zone, "mv-b-1", "c") == ["10.157.0.3"]  # b shares the bridge network with c
    assert ask_ns(zone, "mv-b-1", "b") == ["192.168.57.2"]  # its first network's address
    # The bridge listener is unchanged.
    assert ask(zone, "10.157.0.3", "b", listener="10.157.0.1") == ["10.157.0.2"]


def test_namespace_listener_of_an_unknown_container_is_warned_and_skipped():
    cfg = _macvlan_config()
    cfg["namespaces"].append({"netns": "mv-x-1", "container": "mv-x-1", "network": "mv_lan"})
    zone = build_zone(cfg)
    assert [nl.netns for nl in zone.ns_listeners] == ["mv-a-1", "mv-b-1"]
    assert any("mv-x-1" in w for w in zone.warnings)


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c["namespaces"][0].pop("netns"), "namespaces[0].netns: missing"),
    (lambda c: c["namespaces"][0].update(netns="../x"), "namespaces[0].netns"),
    (lambda c: c["namespaces"][1].update(netns="mv-a-1"), "listed twice"),
    (lambda c: c["namespaces"][0].update(port=0), "namespaces[0].port"),
    (lambda c: c["namespaces"][0].update(address="nope"), "namespaces[0].address"),
])
def test_namespace_config_errors_name_the_key(mutate, message):
    cfg = _macvlan_config()
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        build_zone(cfg, "dns.json")
    assert message in str(e.value)
