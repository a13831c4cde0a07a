"""The project's bridge table (core/antispoof.py): every container port pinned to its MAC and
addresses, built from the desired veths and addresses; its identities are what nft.identities
reads back from nft 1.0.6's JSON listing."""

from __future__ import annotations

from pathlib import Path

from composenet.core.antispoof import COUNTERS, PortPin, build_bridge, link_local
from composenet.core.desired import Upstreams
from composenet.core.resources import NftTable, nft_table_name
from composenet.core.state import ObservedState
from composenet.kernel import nft
from composenet.pipeline import make_plan

from .helpers import load_text


def test_link_local_is_the_eui64_of_the_mac():
    assert link_local("02:42:ac:11:00:02") == "fe80::42:acff:fe11:2"
    assert link_local("00:16:3e:00:00:01") == "fe80::216:3eff:fe00:1"  # the universal bit flips on
    assert link_local("02:00:00:50:00:03") == "fe80::ff:fe50:3"


def test_every_port_is_pinned_to_its_own_mac_and_addresses():
    pins = [PortPin("cnv-b", "02:42:0a:00:00:03", ("10.0.0.3",)),
            PortPin("cnv-a", "02:42:0A:00:00:02", ("10.0.0.2",), ("fd00::2",))]
    text, idents = build_bridge("composenet_t", pins)
    assert text.startswith("table bridge composenet_t\ndelete table bridge composenet_t\ntable bridge composenet_t {")
    sets = [i for i in idents if i.startswith("set ")]
    assert sets == [
        "set port_ip4 ifname . ipv4_addr", "set port_ip4: cnv-a . 10.0.0.2", "set port_ip4: cnv-b . 10.0.0.3",
        "set port_ip6 ifname . ipv6_addr", "set port_ip6: cnv-a . fd00::2", "set port_ip6: cnv-a . fe80::42:aff:fe00:2",
        "set port_ip6: cnv-b . fe80::42:aff:fe00:3",
        "set port_mac ifname . ether_addr", "set port_mac: cnv-a . 02:42:0a:00:00:02",
        "set port_mac: cnv-b . 02:42:0a:00:00:03",
        "set port_nd ifname . integer", "set port_nd: cnv-a . 0xfd000000000000000000000000000002",
        "set port_nd: cnv-a . 0xfe8000000000000000420afffe000002", "set port_nd: cnv-b . 0xfe8000000000000000420afffe000003",
        "set ports ifname", "set ports: cnv-a", "set ports: cnv-b",
    ]
    for c in COUNTERS:
        assert f"counter {c} {{ }}" in text


def test_the_chains_end_in_verdicts_and_every_rule_says_why():
    text, idents = build_bridge("composenet_t", [PortPin("cnv-a", "02:42:0a:00:00:02", ("10.0.0.2",))])
    rules = [line.strip() for line in text.splitlines() if line.startswith("\t\t") and not line.startswith("\t\ttype ")]
    assert rules and all(' comment "cn:' in r for r in rules)
    assert not any(r.startswith("return") or " return " in r for r in rules)
    assert "type filter hook prerouting priority -200; policy accept;" in text  # before br_netfilter (0)
    for chain in ("v4", "arp4", "v6", "pre"):
        body = text.split(f"\tchain {chain} {{\n", 1)[1].split("\n\t}", 1)[0].splitlines()
        assert body[-1].strip().split(" comment")[0].endswith(("accept", "drop")), (chain, body[-1])
    assert len(idents) == len(set(idents))
    assert sum(1 for i in idents if not i.startswith(("chain ", "set "))) == len(rules)


def test_the_table_is_built_from_the_projects_veths(tmp_path: Path):
    """Every veth of the project (one per container and network) with the container's addresses
    on that network; macvlan endpoints are not bridge ports."""
    project = load_text(tmp_path, """
        name: pin
        services:
          web:
            networks: [front, back]
          db:
            networks: [back]
            mac_address: 02:aa:bb:cc:dd:ee
          mv:
            networks: [lan]
        networks:
          front:
            enable_ipv6: true
          back: {}
          lan:
            driver: macvlan
            driver_opts: {parent: eth9}
    """)
    planned = make_plan(project, "pin", ObservedState(offline=True), Upstreams(("192.0.2.53",)))
    table = planned.desired.resources[f"nft:bridge {nft_table_name('pin')}"]
    assert isinstance(table, NftTable)
    veths = {r.ifname: r for r in planned.desired.resources.values() if r.kind == "veth"}
    assert len(veths) == 3
    ports = sorted(i.split(": ", 1)[1] for i in table.rules if i.startswith("set ports: "))
    assert ports == sorted(veths)
    macs = {i.split(": ", 1)[1] for i in table.rules if i.startswith("set port_mac: ")}
    assert macs == {f"{v.ifname} . {v.mac}" for v in veths.values()}
    assert any(m.endswith(" . 02:aa:bb:cc:dd:ee") for m in macs)
    addrs = {i.split(": ", 1)[1] for i in table.rules if i.startswith(("set port_ip4: ", "set port_ip6: "))}
    macvlans = {(r.ns, r.ifname) for r in planned.desired.resources.values() if r.kind == "macvlan"}
    assert macvlans
    for r in planned.desired.resources.values():
        if r.kind == "address" and r.ns:
            ip = r.cidr.split("/")[0]
            veth = next((v for v in veths.values() if v.ns == r.ns and v.peer == r.ifname), None)
            if veth is None:
                assert (r.ns, r.ifname) in macvlans and not any(a.endswith(f" . {ip}") for a in addrs)
            else:
                assert f"{veth.ifname} . {ip}" in addrs
    # The inet table is still the one `plan --show-ruleset` shows.
    assert planned.ruleset is not None and planned.ruleset.startswith("table inet ")


def test_identities_read_back_as_nft_lists_them():
    """nft 1.0.6 writes a raw 128-bit value that fits in 64 bits as a signed number (-1 for
    0xffffffffffffffff) and a longer one in hex; both read back as the builder writes them."""
    listing = {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "bridge", "name": "t", "handle": 1}},
        {"set": {"family": "bridge", "name": "port_nd", "table": "t", "type": ["ifname", "integer"], "handle": 7,
                 "elem": [{"concat": ["cnv-c8", "0x10000000000000000"]}, {"concat": ["cnv-c5", 4294967296]},
                          {"concat": ["cnv-c1", "0xfd000050000000000000000000000002"]}, {"concat": ["cnv-c7", -1]}]}},
        {"set": {"family": "bridge", "name": "ports", "table": "t", "type": "ifname", "elem": ["cnv-c1"]}},
        {"set": {"family": "inet", "name": "loopback_guarded", "table": "t", "type": ["inet_proto", "inet_service"],
                 "elem": [{"concat": ["tcp", 8080]}]}},
        {"chain": {"family": "bridge", "table": "t", "name": "pre", "type": "filter", "hook": "prerouting", "prio": -200,
                   "policy": "accept"}},
        {"rule": {"family": "bridge", "table": "t", "chain": "pre", "comment": "cn:x", "expr": []}},
    ]}
    assert nft.identities(listing) == (
        "chain pre filter prerouting -200 accept", "pre: cn:x",
        "set loopback_guarded inet_proto . inet_service", "set loopback_guarded: tcp . 8080",
        "set port_nd ifname . integer", "set port_nd: cnv-c1 . 0xfd000050000000000000000000000002",
        "set port_nd: cnv-c5 . 0x100000000", "set port_nd: cnv-c7 . 0xffffffffffffffff",
        "set port_nd: cnv-c8 . 0x10000000000000000",
        "set ports ifname", "set ports: cnv-c1",
    )


def test_an_edit_of_the_pins_is_a_set_element_delta_not_a_new_table():
    from composenet.kernel.nft import element_delta

    one = [PortPin("cnv-aaaaaaaaaa", "02:42:0a:00:00:02", ("10.0.0.2",))]
    two = [*one, PortPin("cnv-bbbbbbbbbb", "02:42:0a:00:00:03", ("10.0.0.3",))]
    _t1, before = build_bridge("composenet_p", one)
    _t2, after = build_bridge("composenet_p", two)
    delta = element_delta("bridge", "composenet_p", before, after)
    assert delta is not None
    lines = delta.splitlines()
    assert 'add element bridge composenet_p port_ip4 { "cnv-bbbbbbbbbb" . 10.0.0.3 }' in lines
    assert 'add element bridge composenet_p ports { "cnv-bbbbbbbbbb" }' in lines
    assert any(line.startswith("add element bridge composenet_p port_nd { \"cnv-bbbbbbbbbb\" . 0xfe80") for line in lines)
    assert not any("cnv-aaaaaaaaaa" in line for line in lines)  # the other container is left alone
    back = element_delta("bridge", "composenet_p", after, before)
    assert back is not None and all(line.startswith("delete element") for line in back.splitlines())
    assert element_delta("bridge", "composenet_p", after, after) == ""
    # A changed rule (or chain, or set declaration) replaces the table whole.
    assert element_delta("bridge", "composenet_p", before, (*before, "v4: cn:something new")) is None
