"""Docker 29 size requests (``0.0.0.0/24``, ``::/64``: "a /N from the default pools") and the
located errors for subnets that cannot carry hosts (issue 14)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from composenet.core import ipam
from composenet.core.desired import Upstreams
from composenet.core.state import ObservedState
from composenet.pipeline import make_plan

from .helpers import errors, load_text

BAD = [
    ("this network", "0.0.0.0/8", "compose.yaml:7:25: networks.n.ipam.config[0].subnet: subnet 0.0.0.0/8 cannot carry hosts: "
     "a size request from the default pools is 0.0.0.0/16 to 0.0.0.0/30"),
    ("inside this network", "0.1.0.0/16", "compose.yaml:7:25: networks.n.ipam.config[0].subnet: subnet 0.1.0.0/16 cannot carry "
     "hosts: it is 'this network' (0.0.0.0/8)"),
    ("loopback", "127.0.0.0/8", "subnet 127.0.0.0/8 cannot carry hosts: it is loopback (127.0.0.0/8)"),
    ("loopback part", "127.5.0.0/24", "subnet 127.5.0.0/24 cannot carry hosts: it is loopback"),
    ("multicast", "239.1.0.0/16", "subnet 239.1.0.0/16 cannot carry hosts: it is multicast (224.0.0.0/4)"),
    ("ipv6 multicast", "ff05::/64", "subnet ff05::/64 cannot carry hosts: it is multicast (ff00::/8)"),
    ("a /31", "10.1.0.0/31", "compose.yaml:7:25: networks.n.ipam.config[0].subnet: subnet 10.1.0.0/31 has no room for a "
     "gateway and a host"),
    ("a /32", "10.1.0.7/32", "subnet 10.1.0.7/32 has no room for a gateway and a host"),
    ("size too large", "0.0.0.0/12", "subnet 0.0.0.0/12 cannot carry hosts"),
    ("size /31", "0.0.0.0/31", "subnet 0.0.0.0/31 cannot carry hosts"),
    ("ipv6 size too large", "::/32", "subnet ::/32 cannot carry hosts: a size request from the default pools "
     "is ::/48 to ::/124"),
]


@pytest.mark.parametrize("name,subnet,want", BAD, ids=[b[0] for b in BAD])
def test_subnet_that_cannot_carry_hosts_is_a_located_error(tmp_path: Path, name: str, subnet: str, want: str) -> None:
    text = f"""
services:
  web:
    networks: [n]
networks:
  n:
    ipam:
      config: [{{subnet: "{subnet}"}}]
"""
    got = errors(tmp_path, text)
    assert "[CS-NET-17]" in got, got
    assert want in got, got
    assert "compose.yaml:7:25: networks.n.ipam.config[0].subnet: " in got, got


def test_a_31_with_a_gateway_is_accepted(tmp_path: Path) -> None:
    load_text(tmp_path, """
services: {}
networks:
  n: {ipam: {config: [{subnet: 10.1.0.0/31, gateway: 10.1.0.0}]}}
""")


@pytest.mark.parametrize("key,value", [("gateway", "10.1.0.1"), ("ip_range", "10.1.0.0/25")])
def test_a_size_request_refuses_fields_that_need_a_literal_subnet(tmp_path: Path, key: str, value: str) -> None:
    got = errors(tmp_path, f"""
services: {{}}
networks:
  n:
    ipam:
      config:
        - {{subnet: 0.0.0.0/24, {key}: {value}}}
""")
    assert f"networks.n.ipam.config[0].{key}: {key} needs a literal subnet: 0.0.0.0/24 asks for any /24" in got, got


def test_a_static_address_needs_a_literal_subnet(tmp_path: Path) -> None:
    got = errors(tmp_path, """
services:
  web:
    networks:
      n: {ipv4_address: 172.17.0.5}
networks:
  n: {ipam: {config: [{subnet: 0.0.0.0/24}]}}
""")
    assert "services.web.networks.n.ipv4_address: static address 172.17.0.5 needs an IPv4 subnet" in got, got


def _plan(tmp_path: Path, text: str, observed: ObservedState | None = None):
    project = load_text(tmp_path, text)
    return make_plan(project, project.name, observed or ObservedState(offline=True), Upstreams(("192.0.2.53",)))


def _subnets(plan) -> dict[str, tuple[str | None, str | None]]:
    return {row["name"]: (row["subnet"], row["subnet6"]) for row in plan.plan.networks}


def test_size_requests_take_a_block_of_that_size_from_the_default_pools(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
name: sz
services:
  web: {networks: [a, b, c]}
networks:
  a: {ipam: {config: [{subnet: 0.0.0.0/24}]}}
  b: {ipam: {config: [{subnet: 0.0.0.0/26}]}}
  c:
    enable_ipv6: true
    ipam: {config: [{subnet: 172.17.0.0/25}, {subnet: "::/56"}]}
""")
    got = _subnets(plan)
    a4, b4 = ipaddress.ip_network(got["sz_a"][0]), ipaddress.ip_network(got["sz_b"][0])
    assert a4.prefixlen == 24 and b4.prefixlen == 26, got
    # From the first default pool, around the file's literal 172.17.0.0/25 and each other.
    for n in (a4, b4):
        assert n.subnet_of(ipaddress.ip_network("172.17.0.0/16")), got
        assert not n.overlaps(ipaddress.ip_network("172.17.0.0/25")), got
    assert not a4.overlaps(b4), got
    six = ipaddress.ip_network(got["sz_c"][1])
    assert six.prefixlen == 56 and six.subnet_of(ipaddress.ip_network("fc00::/7")), got


def test_a_size_request_skips_host_routes() -> None:
    got = ipam.allocate_subnet([], ["172.17.0.0/16", "172.18.0.0/24"], 24)
    assert str(got) == "172.18.1.0/24"
    assert str(ipam.allocate_subnet(["172.18.1.0/24"], ["172.17.0.0/16", "172.18.0.0/24"], 24)) == "172.18.2.0/24"
    # Larger than a /20 pool: only the /16 pools can hold it.
    every16 = [f"172.{i}.0.0/16" for i in range(17, 32)]
    with pytest.raises(Exception, match="no free /18 left in the default pools"):
        ipam.allocate_subnet(every16, [], 18)
    assert str(ipam.allocate_subnet(every16, [], 22)) == "192.168.0.0/22"


def test_size_request_recognition() -> None:
    assert ipam.size_request("0.0.0.0/24") == 24
    assert ipam.size_request("::/64") == 64
    assert ipam.size_request("0.0.0.0/8") is None
    assert ipam.size_request("10.0.0.0/24") is None
    assert ipam.size_request(None) is None
    assert ipam.explicit("10.0.0.0/24") and not ipam.explicit("0.0.0.0/24") and not ipam.explicit(None)


def test_enable_ipv4_false_needs_ipv6_and_no_ipv4_subnet(tmp_path: Path) -> None:
    got = errors(tmp_path, """
services:
  web: {networks: [a, b]}
networks:
  a: {enable_ipv4: false}
  b:
    enable_ipv4: false
    enable_ipv6: true
    ipam: {config: [{subnet: 10.1.0.0/24}, {subnet: "fd00::/64"}]}
""")
    assert "compose.yaml:4:20: networks.a.enable_ipv4: a network with enable_ipv4: false needs IPv6" in got, got
    assert "compose.yaml:8:30: networks.b.ipam.config[0].subnet: IPv4 subnet 10.1.0.0/24 on a network with " \
        "enable_ipv4: false" in got, got
