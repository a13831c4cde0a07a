"""Per-endpoint sysctls (``com.docker.network.endpoint.sysctls``, issue 14): parsing, located
errors, and the resources they become (in the namespace, IFNAME replaced)."""

from __future__ import annotations

from pathlib import Path

import pytest

from composenet.core.desired import Upstreams
from composenet.core.desired.common import endpoint_sysctls
from composenet.core.resources import Sysctl
from composenet.core.state import ObservedState
from composenet.pipeline import make_plan

from .helpers import errors, load_text


def test_parsing() -> None:
    assert endpoint_sysctls("net.ipv4.conf.IFNAME.forwarding=1, net.ipv6.conf.IFNAME.accept_ra=2", "eth1") == [
        ("net.ipv4.conf.eth1.forwarding", "1"), ("net.ipv6.conf.eth1.accept_ra", "2")]
    assert endpoint_sysctls("") == []
    for bad in ("net.ipv4.ip_forward=1", "net.ipv4.conf.eth0.forwarding=1", "net.ipv4.conf.IFNAME.forwarding",
                "net.ipv4.conf.IFNAME.x=1 2", "kernel.IFNAME.x=1"):
        with pytest.raises(ValueError):
            endpoint_sysctls(bad)


def test_an_invalid_endpoint_sysctl_is_a_located_error(tmp_path: Path) -> None:
    got = errors(tmp_path, """
services:
  web:
    networks:
      n:
        driver_opts:
          com.docker.network.endpoint.sysctls: "net.ipv4.ip_forward=1"
networks:
  n: {}
""")
    assert ('compose.yaml:6:48: services.web.networks.n.driver_opts["com.docker.network.endpoint.sysctls"]: '
            "'net.ipv4.ip_forward' is not a per-interface sysctl") in got, got


def test_endpoint_sysctls_become_sysctls_in_the_namespace(tmp_path: Path) -> None:
    project = load_text(tmp_path, """
name: es
services:
  a:
    networks:
      one: {}
      two:
        driver_opts:
          com.docker.network.endpoint.sysctls: net.ipv4.conf.IFNAME.arp_ignore=8
networks:
  one: {}
  two: {}
""")
    planned = make_plan(project, project.name, ObservedState(offline=True), Upstreams(("192.0.2.53",)))
    got = [r for r in planned.desired.resources.values() if isinstance(r, Sysctl) and r.ns]
    assert got == [Sysctl("es-a-1", "net.ipv4.conf.eth1.arp_ignore", "8", "eth1")]
