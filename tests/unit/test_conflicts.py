"""Refusals the planner makes from the observed host, before anything is touched: a published port
a host program holds (ObservedState.host_ports), an explicit subnet that overlaps a host route, a
host address or another composenet network. Pure: hand-built observed states, no kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from composenet.core.desired import Upstreams
from composenet.core.desired.ports import _blocks
from composenet.core.resources import Supervisor
from composenet.core.state import ObservedState
from composenet.errors import InputError
from composenet.pipeline import make_plan
from tests.unit.helpers import load_text

UP = Upstreams(("192.0.2.53",))


def sock(addr: str, port: int, proto: str = "tcp", v6only: bool = False, pid: int | None = 4321,
         name: str | None = "nginx") -> dict:
    return {"proto": proto, "address": addr, "port": port, "v6only": v6only, "pid": pid, "process": name}


@pytest.mark.parametrize("held,family,host_ip,blocks", [
    (sock("0.0.0.0", 1), 4, None, True),
    (sock("0.0.0.0", 1), 4, "127.0.0.1", True),
    (sock("127.0.0.1", 1), 4, None, True),  # a DNAT of every address takes 127.0.0.1 too
    (sock("127.0.0.1", 1), 4, "127.0.0.1", True),
    (sock("127.0.0.1", 1), 4, "10.9.9.9", False),
    (sock("10.9.9.9", 1), 4, "127.0.0.1", False),
    (sock("::", 1), 4, None, True),  # dual-stack [::] covers IPv4
    (sock("::", 1, v6only=True), 4, None, False),
    (sock("::", 1, v6only=True), 6, None, True),
    (sock("::1", 1), 6, "::1", True),
    (sock("::1", 1), 6, "fd00::1", False),
    (sock("0.0.0.0", 1), 6, None, False),
])
def test_which_held_sockets_block_a_publish(held: dict, family: int, host_ip: str | None, blocks: bool):
    assert _blocks(held, family, host_ip) is blocks


PORTS = """
services:
  web:
    command: "true"
    ports:
      - "3000:80"
      - "8000-8002:81"
"""


def plan(tmp_path: Path, text: str, observed: ObservedState):
    project = load_text(tmp_path, text)
    return make_plan(project, project.name, observed, UP)


def test_fixed_port_held_by_a_host_program_is_refused_at_the_port(tmp_path: Path):
    st = ObservedState(host_ports=[sock("0.0.0.0", 3000)])
    with pytest.raises(InputError) as ei:
        plan(tmp_path, PORTS, st)
    assert str(ei.value).endswith(
        "compose.yaml:5:9: services.web.ports[0]: host port *:3000/tcp is already in use on this host: "
        "0.0.0.0:3000/tcp is held by pid 4321 (nginx) (hint: stop that program or move it to another port, or "
        "publish another host port (Docker: port is already allocated))")
    st = ObservedState(host_ports=[sock("0.0.0.0", 3000, pid=None, name=None)])
    with pytest.raises(InputError, match="is held by a socket no process holds"):
        plan(tmp_path, PORTS, st)


def test_other_protocol_or_address_is_not_in_the_way_and_ranges_skip_held_ports(tmp_path: Path):
    st = ObservedState(host_ports=[sock("0.0.0.0", 3000, proto="udp"), sock("0.0.0.0", 8000), sock("::", 8001)])
    planned = plan(tmp_path, PORTS, st)
    got = sorted((e["host_port"], e["protocol"]) for e in planned.plan.exposure)
    assert got == [(3000, "tcp"), (8002, "tcp")]  # 8000 and 8001 held: the range takes 8002


def test_the_supervisor_holds_the_published_ports(tmp_path: Path):
    planned = plan(tmp_path, """
services:
  web:
    command: "true"
    ports: ["3000:80", "127.0.0.1:3001:81/udp", "3002:82/sctp"]
""", ObservedState())
    sup = planned.desired.resources["supervisor:" + planned.plan.project]
    assert sup == Supervisor(planned.plan.project, ("tcp/0.0.0.0/3000", "udp/127.0.0.1/3001"))
    assert "supervisor of project" in sup.describe() and "127.0.0.1:3001/udp" in sup.describe()


def test_a_project_without_commands_or_ports_has_no_supervisor(tmp_path: Path):
    planned = plan(tmp_path, "services:\n  web: {}\n", ObservedState())
    assert not [k for k in planned.desired.resources if k.startswith("supervisor:")]


SUBNET = """
services: {}
networks:
  n:
    ipam:
      config:
        - subnet: %s
"""


@pytest.mark.parametrize("subnet,observed,why", [
    ("198.18.40.0/25", ObservedState(host_routes=("198.18.40.0/24",)), "overlaps 198.18.40.0/24, a route of this host"),
    ("198.18.0.0/16", ObservedState(host_routes=("198.18.40.0/24",)), "overlaps 198.18.40.0/24, a route of this host"),
    ("203.0.113.0/28", ObservedState(host_addresses=("203.0.113.1/24",)),
     "overlaps 203.0.113.1/24, an address of this host"),
    ("10.61.5.0/24", ObservedState(networks={"lan": {"owner": "-lan", "bridge": "cnb-1", "cidrs": ["10.61.0.1/16"]}}),
     "overlaps 10.61.0.0/16, the subnet of composenet standalone network 'lan'"),
    ("10.62.7.0/24", ObservedState(networks={"o_n": {"owner": "o", "bridge": "cnb-2", "cidrs": ["10.62.0.1/16"]}}),
     "overlaps 10.62.0.0/16, the subnet of composenet network 'o_n' of project 'o'"),
    ("fd00:5::/64", ObservedState(host_routes=("fd00::/16",)), "overlaps fd00::/16, a route of this host"),
])
def test_explicit_subnet_overlapping_the_host_is_refused_at_the_subnet(tmp_path: Path, subnet: str,
                                                                      observed: ObservedState, why: str):
    with pytest.raises(InputError) as ei:
        plan(tmp_path, SUBNET % subnet, observed)
    assert f"compose.yaml:6:19: networks.n.ipam.config[0].subnet: subnet {subnet} {why}" in str(ei.value)


def test_explicit_subnet_that_overlaps_nothing_or_its_own_network_is_kept(tmp_path: Path):
    st = ObservedState(host_routes=("198.18.40.0/24", "10.0.0.0/8"), host_addresses=("192.0.2.1/24",),
                       networks={"x_n": {"owner": "x", "bridge": "cnb-3", "cidrs": ["172.30.0.1/24"]}})
    planned = plan(tmp_path, SUBNET % "198.18.41.0/24", st)
    assert planned.plan.networks[0]["subnet"] == "198.18.41.0/24"
    # The project's own network (same owner: an earlier `up`) is not in its way.
    own = ObservedState(networks={"x_n": {"owner": "x", "bridge": "cnb-3", "cidrs": ["172.30.0.1/24"]}})
    project = load_text(tmp_path, SUBNET % "172.30.0.0/24", env={"COMPOSE_PROJECT_NAME": "x"})
    assert make_plan(project, "x", own, UP).plan.networks[0]["subnet"] == "172.30.0.0/24"


def test_macvlan_subnet_may_be_the_parents_lan(tmp_path: Path):
    planned = plan(tmp_path, """
services: {}
networks:
  lan:
    driver: macvlan
    driver_opts: {parent: eth0}
    ipam:
      config:
        - subnet: 192.0.2.0/24
""", ObservedState(host_routes=("192.0.2.0/24",), host_addresses=("192.0.2.1/24",)))
    assert planned.plan.networks[0]["subnet"] == "192.0.2.0/24"
