"""Loopback stays loopback (issue 17): the project's inet table DNATs ports published on
127.0.0.1 only for packets the host itself sends, drops 127.0.0.0/8 destinations from its
bridges and, for its ports, from every interface but lo, at raw priority; IPv6 every-address
ports leave [::1] alone; and a port on [::1] is refused where it is written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from composenet.compose.ports import parse_port
from composenet.compose.values import ValueProblem
from composenet.core.ruleset import LOOPBACK_PORTS, NetRules, PortMap, build

from .helpers import errors

NETS = [NetRules("front", "cnb-front", ("10.0.0.0/24", "fd00::/64"), ("10.0.0.1",)),
        NetRules("back", "cnb-back", ("10.0.1.0/24",), ("10.0.1.1",), internal=True)]
PORTS = [
    PortMap("web", None, 8080, "tcp", ("10.0.0.2",), 80),
    PortMap("web", None, 8080, "tcp", ("fd00::2",), 80, family=6),
    PortMap("web", "127.0.0.1", 8081, "tcp", ("10.0.0.2",), 80),
    PortMap("dns", "127.0.0.1", 5354, "udp", ("10.0.0.3",), 53),
    PortMap("web", "192.0.2.1", 8082, "tcp", ("10.0.0.2",), 80),
    PortMap("api", "fd00:99::1", 8083, "tcp", ("fd00::4",), 80, family=6),
]


def chains(text: str) -> dict[str, list[str]]:
    """Each chain's lines (its hook line first, for base chains)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\tchain (\S+) \{", line)
        if m:
            current = out.setdefault(m[1], [])
        elif line == "\t}":
            current = None
        elif current is not None:
            current.append(line.strip())
    return out


def test_loopback_publishes_are_dnated_only_from_the_output_hook():
    text, _ = build("composenet_t", NETS, PORTS)
    c = chains(text)
    assert c["nat_pre"] == ["type nat hook prerouting priority -100; policy accept;",
                            'fib daddr type local jump published comment "cn:published ports, arriving for a local address"']
    assert [x.split(" comment")[0] for x in c["nat_out"]] == ["type nat hook output priority -100; policy accept;",
                                                              "fib daddr type local jump published",
                                                              "fib daddr type local jump published_lo"]
    assert [x for x in c["published"] if "127.0.0.1" in x] == []
    assert [x.split(" comment")[0] for x in c["published_lo"]] == [
        "meta nfproto ipv4 ip daddr 127.0.0.1 udp dport 5354 dnat ip to 10.0.0.3:53",
        "meta nfproto ipv4 ip daddr 127.0.0.1 tcp dport 8081 dnat ip to 10.0.0.2:80",
    ]
    # Nothing jumps to published_lo but the output hook.
    assert [name for name, lines in c.items() if any("jump published_lo" in x for x in lines)] == ["nat_out"]


def test_no_loopback_jump_when_nothing_is_published_on_loopback():
    text, idents = build("composenet_t", NETS, [PORTS[0]])
    assert "jump published_lo" not in text and "chain published_lo" in idents


def test_raw_guard_drops_loopback_destinations_from_bridges_and_for_the_ports():
    text, idents = build("composenet_t", NETS, PORTS)
    raw = chains(text)["raw_pre"]
    assert raw[0] == "type filter hook prerouting priority -300; policy accept;"
    rules = [x.split(" comment")[0] for x in raw[1:]]
    assert rules == [
        'iifname "cnb-back" ip daddr 127.0.0.0/8 counter drop',
        'iifname "cnb-front" ip daddr 127.0.0.0/8 counter drop',
        f'iifname != "lo" ip daddr 127.0.0.0/8 meta l4proto . th dport @{LOOPBACK_PORTS} counter drop',
    ]
    # Every IPv4 port that answers on 127.0.0.1 (loopback ones and every-address ones); not the
    # one bound to another address, nor IPv6 ones (the kernel drops ::1 off lo by itself).
    assert [i for i in idents if i.startswith(f"set {LOOPBACK_PORTS}")] == [
        f"set {LOOPBACK_PORTS} inet_proto . inet_service",
        f"set {LOOPBACK_PORTS}: tcp . 8080", f"set {LOOPBACK_PORTS}: tcp . 8081", f"set {LOOPBACK_PORTS}: udp . 5354"]
    assert f"set {LOOPBACK_PORTS} {{ type inet_proto . inet_service; elements = {{ udp . 5354, tcp . 8080, tcp . 8081 }}; }}" \
        in text.replace("\t", "")
    # The identities match the text: one per rule, one per chain, the set and its elements.
    assert len(idents) == len(set(idents))
    assert sum(1 for i in idents if not i.startswith(("chain ", "set "))) == text.count(' comment "cn:')


def test_no_port_no_guard_set_but_the_bridges_are_still_guarded():
    text, idents = build("composenet_t", NETS, [])
    assert LOOPBACK_PORTS not in text and not any(i.startswith("set ") for i in idents)
    assert len([x for x in chains(text)["raw_pre"] if "127.0.0.0/8" in x]) == 2


def test_every_address_ipv6_ports_leave_the_hosts_own_ipv6_loopback_alone():
    text, _ = build("composenet_t", NETS, PORTS)
    v6 = [x.split(" comment")[0] for x in chains(text)["published"] if "nfproto ipv6" in x]
    assert v6 == ["meta nfproto ipv6 ip6 daddr != ::1 tcp dport 8080 dnat ip6 to [fd00::2]:80",
                  "meta nfproto ipv6 ip6 daddr fd00:99::1 tcp dport 8083 dnat ip6 to [fd00::4]:80"]


@pytest.mark.parametrize("spec", ["[::1]:8080:80", "::1:8080:80", "[0:0::1]:8080:80/udp", "[::1]::80",
                                  {"target": 80, "published": "8080", "host_ip": "::1"},
                                  {"target": 80, "host_ip": "[::1]"}])
def test_a_port_on_ipv6_loopback_is_refused_with_the_reason_and_a_hint(spec):
    with pytest.raises(ValueProblem) as ei:
        parse_port(spec)
    assert ei.value.message.startswith("a port cannot be published on [::1]: the kernel drops")
    assert ei.value.hint and "127.0.0.1" in ei.value.hint


@pytest.mark.parametrize("spec", ["127.0.0.1:8080:80", "[::]:8080:80", "[fd00::1]:8080:80",
                                  {"target": 80, "host_ip": "127.0.0.1"}])
def test_other_host_addresses_are_accepted(spec):
    assert parse_port(spec)


def test_the_refusal_names_file_line_and_key(tmp_path: Path):
    text = errors(tmp_path, """
        services:
          web:
            ports:
              - "127.0.0.1:8081:80"
              - "[::1]:8080:80"
              - target: 80
                host_ip: "::1"
    """)
    assert "compose.yaml:5:9: services.web.ports[1]: a port cannot be published on [::1]" in text
    assert "compose.yaml:6:9: services.web.ports[2]: a port cannot be published on [::1]" in text
    assert "hint: publish it on 127.0.0.1" in text
    assert "ports[0]" not in text
