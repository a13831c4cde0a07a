"""Docker 28/29 network features end to end (issue 14), root, in throwaway sandbox namespaces,
with real traffic: reachable and blocked pairs are both asserted, and every test ends with
``down`` and ``sandbox.assert_clean``.
"""

from __future__ import annotations

import ipaddress
import sys
import uuid
from pathlib import Path

from tests.integration.sandbox import Sandbox, tcp, wait_for
from tests.integration.stacks import ECHO


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def write(tmp: Path, text: str) -> Path:
    path = tmp / "compose.yaml"
    path.write_text(text.replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO)))
    return path


# ---- size requests: 0.0.0.0/24 = "a /24 from the default pools" ---------------------------

SIZES = """
services:
  a:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [small, tiny]
  b:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [small]
  c:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [tiny]
networks:
  small:
    ipam: {config: [{subnet: 0.0.0.0/24}]}
  tiny:
    ipam: {config: [{subnet: 0.0.0.0/28}]}
"""


def test_size_requests_build_networks_of_that_size(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, SIZES)
    sb.up(compose, p)  # used to fail half-way: "default via 0.0.0.1 ... Nexthop has invalid gateway"
    a, b, c = f"{p}-a-1", f"{p}-b-1", f"{p}-c-1"
    small = ipaddress.ip_network(sb.subnet(b))
    tiny = ipaddress.ip_network(sb.subnet(c))
    assert small.prefixlen == 24 and tiny.prefixlen == 28, (small, tiny)
    for n in (small, tiny):
        assert n.subnet_of(ipaddress.ip_network("172.16.0.0/12")) or n.subnet_of(ipaddress.ip_network("192.168.0.0/16"))
        assert not n.network_address.is_unspecified
    assert not small.overlaps(tiny)
    # The default route goes through the network's real gateway (the first host).
    assert f"default via {small.network_address + 1}" in sb.ip(b, "route show")
    # Reachable: peers on the same network; blocked: b and c share no network.
    b_ip, c_ip = sb.ipv4(b), sb.ipv4(c)
    assert wait_for(a, b_ip, 80)
    assert wait_for(a, c_ip, 80)
    assert tcp(b, c_ip, 80, 0.5) is None
    assert tcp(c, b_ip, 80, 0.5) is None
    # Converged: the same sizes are kept (a second plan is empty).
    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    sb.down(p, compose)
    sb.assert_clean(p)


def test_a_subnet_that_cannot_carry_hosts_is_refused_before_the_kernel(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, SIZES.replace("0.0.0.0/28", "127.0.0.0/24"))
    r = sb.up(compose, p, check=False)
    assert r.returncode != 0, r.stdout + r.stderr
    assert f"{compose}:16:" in r.stderr and "subnet 127.0.0.0/24 cannot carry hosts" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert sb.namespaces(p) == []
    sb.assert_clean(p)
