"""`composenet check` after issue 14: its own model of the names (per record type, as the
resolver now answers) and of published ports (gateway mode routed has no host port)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_checks import FACTS, expects, pick

MULTI = """
name: m
services:
  b:
    networks: [four, dual]
  c:
    networks: [four, dual]
networks:
  four:
    ipam: {config: [{subnet: 10.92.1.0/24}]}
  dual:
    enable_ipv6: true
    ipam: {config: [{subnet: 10.92.2.0/24}, {subnet: "fd00:92:2::/64"}]}
"""


def test_aaaa_expected_from_the_first_network_where_the_target_has_ipv6(tmp_path: Path) -> None:
    es = expects(tmp_path, MULTI)
    (a,) = pick(es, kind="dns", src_label="b", target="c", qtype="A")
    (aaaa,) = pick(es, kind="dns", src_label="b", target="c", qtype="AAAA")
    assert a.want == ("10.92.1.3",) and aaaa.want == ("fd00:92:2::3",)


def test_routed_ports_are_not_probed_on_the_host(tmp_path: Path) -> None:
    es = expects(tmp_path, """
name: r
services:
  web:
    networks: [routed]
    ports: ["8080:80"]
  api:
    ports: ["9000:90"]
networks:
  routed:
    driver_opts: {com.docker.network.bridge.gateway_mode_ipv4: routed}
""", FACTS)
    assert pick(es, kind="publish", dst_service="web") == []
    assert pick(es, kind="publish", dst_service="api")
