"""Pure parts of the status commands and of the nft handler: rule identities read back from
``nft -j list table``, stale DNAT ports, and ps/port over a hand-built ObservedState."""

from __future__ import annotations

import json

import pytest

from composenet.core.desired import HOSTS_HEADER
from composenet.core.resources import Address, Netns, NetnsFile, NftTable, Process, Veth
from composenet.core.ruleset import NetRules, PortMap, build
from composenet.core.state import ObservedState
from composenet.core.status import containers, parse_mappings, pick, port, render_ps
from composenet.errors import ComposenetError
from composenet.kernel.nft import identities, stale_ports

# `nft -j list table inet t1` (nftables 1.0.6) plus an empty chain: chains come first, then rules.
LISTING = {"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "t1", "handle": 2}},
    {"chain": {"family": "inet", "table": "t1", "name": "published", "handle": 1}},
    {"chain": {"family": "inet", "table": "t1", "name": "nat_out", "handle": 2, "type": "nat", "hook": "output",
               "prio": -100, "policy": "accept"}},
    {"chain": {"family": "inet", "table": "t1", "name": "empty", "handle": 6}},
    {"rule": {"family": "inet", "table": "t1", "chain": "published", "handle": 3, "comment": "cn:dnat web * 5555",
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 5555}},
                       {"dnat": {"family": "ip", "addr": "127.0.0.1", "port": 6666}}]}},
    {"rule": {"family": "inet", "table": "t1", "chain": "published", "handle": 4,
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 1}},
                       {"counter": {"packets": 7, "bytes": 420}}]}},
    {"rule": {"family": "inet", "table": "t1", "chain": "nat_out", "handle": 5, "comment": "cn:x",
              "expr": [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}},
                       {"jump": {"target": "published"}}]}},
]}


def test_identities_format() -> None:
    got = identities(LISTING)
    unknown = json.dumps([{"match": {"left": {"payload": {"field": "dport", "protocol": "udp"}}, "op": "==", "right": 1}},
                          {"counter": None}], sort_keys=True, separators=(",", ":"))
    assert got == (
        "chain empty",
        "chain nat_out nat output -100 accept",
        "nat_out: cn:x",
        "chain published",
        "published: cn:dnat web * 5555",
        f"published: ?{unknown}",
    )


def test_identities_ignore_counter_values_and_order_chains_by_name() -> None:
    more = json.loads(json.dumps(LISTING))
    more["nftables"][6]["rule"]["expr"][1]["counter"] = {"packets": 99999, "bytes": 1}
    assert identities(more) == identities(LISTING)
    assert identities({"nftables": []}) == ()


def test_identities_match_the_ruleset_builder_shape() -> None:
    # The builder's identities for base chains use the same "chain <name> <type> <hook> <prio> <policy>".
    _, idents = build("composenet_x", [NetRules("x_front", "cnb-1", ("10.1.0.0/24",), ("10.1.0.1",))], [])
    heads = [i for i in idents if i.startswith("chain ")]
    assert heads == sorted(heads)
    assert "chain filter_fwd filter forward 0 accept" in heads
    assert "chain published" in heads


def test_stale_ports() -> None:
    a = "published: cn:dnat web *:8080/tcp -> 10.1.0.2:80"
    a2 = "published: cn:dnat web *:8080/tcp -> 10.1.0.3:80"
    b = "published: cn:dnat dns 127.0.0.1:53/udp -> 10.1.0.4:53"
    c6 = "published: cn:dnat web [*]:8080/tcp -> [fd00::2]:80"
    d6 = "published: cn:dnat web [::1]:9090/sctp -> [fd00::2]:90,[fd00::3]:90"
    assert stale_ports((a, b), (a, b)) == []
    assert stale_ports((a, b), (a2, b)) == [("ipv4", 8080, "tcp")]
    assert stale_ports((a, b, c6, d6), ()) == [("ipv4", 53, "udp"), ("ipv4", 8080, "tcp"),
                                             ("ipv6", 8080, "tcp"), ("ipv6", 9090, "sctp")]
    assert stale_ports(("filter_fwd: cn:published ports (DNAT) pass isolation",), ()) == []


# ---- status ---------------------------------------------------------------------------------

P = "shop"


def observed() -> ObservedState:
    st = ObservedState()
    nets = {"shop_front": "cnb-aaaa", "shop_back": "cnb-bbbb"}
    addrs = {
        ("shop-web-1", "shop_front"): "172.20.0.2/24", ("shop-web-2", "shop_front"): "172.20.0.3/24",
        ("shop-web-1", "shop_back"): "172.21.0.2/24", ("shop-web-2", "shop_back"): "172.21.0.3/24",
        ("shop-db-1", "shop_back"): "172.21.0.4/24",
    }
    for name, svc in (("shop-web-1", "web"), ("shop-web-2", "web"), ("shop-db-1", "db"), ("shop-job-1", "job")):
        st.add(Netns(name, P, svc))
    for i, ((c, net), cidr) in enumerate(sorted(addrs.items())):
        peer = "eth0" if net == "shop_front" or c == "shop-db-1" else "eth1"
        st.add(Veth(f"cnv-{i}", f"composenet:{P}/{c}/{net}", c, peer, nets[net]))
        st.add(Address(c, peer, cidr))
        st.add(Address(c, "lo", "127.0.0.1/8"))
    _, idents = build("composenet_shop", [], [
        PortMap("web", None, 8080, "tcp", ("172.20.0.2", "172.20.0.3"), 80),
        PortMap("web", "::", 8080, "tcp", ("fd00::2",), 80, family=6),
        PortMap("db", "127.0.0.1", 32768, "tcp", ("172.21.0.4",), 5432),
    ])
    st.add(NftTable("inet", "composenet_shop", idents))
    st.add(Process("shop-web-1", "web", "shop-web-1", ("srv",), hostname="web"))
    st.add(NetnsFile("shop-web-2", "hosts", HOSTS_HEADER + "172.20.0.3\tweb.example\tweb-two\n"))
    return st


RECORDS = {
    "shop-web-1": {"kind": "process", "container": "shop-web-1", "service": "web", "ns": "shop-web-1", "pid": 4242},
    "shop-web-2": {"kind": "process", "container": "shop-web-2", "service": "web", "ns": "shop-web-2", "pid": 4343},
}


def test_containers() -> None:
    cs = containers(observed(), P, RECORDS)
    assert [(c.container, c.service, c.index, c.state, c.pid) for c in cs] == [
        ("shop-db-1", "db", 1, "no command", None),
        ("shop-job-1", "job", 1, "no command", None),
        ("shop-web-1", "web", 1, "running", 4242),
        ("shop-web-2", "web", 2, "exited", None),
    ]
    web1 = cs[2]
    assert web1.networks == {"shop_back": ["172.21.0.2/24"], "shop_front": ["172.20.0.2/24"]}
    assert web1.ports == ["0.0.0.0:8080->80/tcp"]
    assert cs[0].ports == ["127.0.0.1:32768->5432/tcp"]
    assert cs[3].hostname == "web-two"
    assert web1.hostname == "web"


def test_port_lookup() -> None:
    st = observed()
    cs = containers(st, P, RECORDS)
    assert port(cs, st, "web", 80) == ["0.0.0.0:8080"]
    assert port(cs, st, "web", 80, index=2) == ["0.0.0.0:8080"]
    assert port(cs, st, "db", 5432) == ["127.0.0.1:32768"]
    with pytest.raises(ComposenetError, match="no public port '80/udp' published for shop-web-1"):
        port(cs, st, "web", 80, "udp")
    with pytest.raises(ComposenetError, match="no container of service 'nope'"):
        pick(cs, "nope")
    with pytest.raises(ComposenetError, match="no container with index 3"):
        pick(cs, "web", 3)


def test_parse_mappings_v6() -> None:
    (m,) = parse_mappings(["published: cn:dnat web [*]:8080/tcp -> [fd00::2]:80,[fd00::3]:80"])
    assert (m.host_ip, m.host_port, m.protocol, m.targets) == ("[::]", 8080, "tcp", (("fd00::2", 80), ("fd00::3", 80)))


def test_render_ps() -> None:
    cs = containers(observed(), P, RECORDS)
    text = render_ps(cs)
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "SERVICE", "STATE", "RUNS", "AS", "NAMESPACE", "ADDRESSES", "PORTS"]
    assert "running (pid 4242)" in text
    web1 = next(ln for ln in lines if ln.startswith("shop-web-1"))
    assert "shop_back=172.21.0.2/24, shop_front=172.20.0.2/24" in web1 and web1.endswith("0.0.0.0:8080->80/tcp")
    data = json.loads(render_ps(cs, "json"))
    assert [d["container"] for d in data] == ["shop-db-1", "shop-job-1", "shop-web-1", "shop-web-2"]
    assert data[2]["networks"]["shop_front"] == ["172.20.0.2/24"] and data[2]["state"] == "running"
