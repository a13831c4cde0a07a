"""Published ports and the host firewall (issue 14): source allowlists (a port's, a service's,
a network's), their located errors, their rules, the firewall detection, localhost-only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from composenet.core.desired import Upstreams
from composenet.core.ruleset import PortMap, build
from composenet.core.state import ObservedState
from composenet.kernel.firewall import describe
from composenet.pipeline import make_plan

from .helpers import errors, load_text

BASE = """
name: pa
services:
  web:
    image: x
    ports:
      - target: 80
        published: 8080
        x-composenet-allow: [192.0.2.0/24]
      - "8081:80"
  api:
    image: x
    x-composenet-allow: "198.51.100.7, 198.51.100.8"
    ports: ["9000:9000"]
  edge:
    image: x
    networks: [edge]
    ports: ["9500:95"]
networks:
  edge:
    labels:
      com.composenet.publish.allow: 203.0.113.0/24
"""


def _exposure(tmp_path: Path, text: str = BASE, observed: ObservedState | None = None, **kw) -> dict:
    project = load_text(tmp_path, text)
    if kw:
        project = replace(project, **kw)
    planned = make_plan(project, project.name, observed or ObservedState(offline=True), Upstreams(("192.0.2.53",)))
    return {f"{e['service']} {e['host_ip']}:{e['host_port']}": e for e in planned.plan.exposure}


def test_allowlists_come_from_the_port_then_the_service_then_the_network(tmp_path: Path) -> None:
    rows = _exposure(tmp_path)
    assert rows["web *:8080"]["allow"] == ["192.0.2.0/24"]
    assert "from 192.0.2.0/24 only (port's allowlist)" in rows["web *:8080"]["scope"]
    assert "allow" not in rows["web *:8081"] and rows["web *:8081"]["scope"] == "every host address, from anywhere"
    assert rows["api *:9000"]["allow"] == ["198.51.100.7/32", "198.51.100.8/32"]
    assert "(service's allowlist)" in rows["api *:9000"]["scope"]
    assert rows["edge *:9500"]["allow"] == ["203.0.113.0/24"]
    assert "(network pa_edge's allowlist)" in rows["edge *:9500"]["scope"]


def test_the_exposure_table_says_the_host_firewall_does_not_apply(tmp_path: Path) -> None:
    text = BASE + "    \n"
    rows = _exposure(tmp_path, text.replace('"8081:80"', '"8081:80"\n      - "127.0.0.1:8082:80"'),
                     ObservedState(host_firewall="firewalld"))
    note = "the host firewall (firewalld) does not filter it: published ports are DNATed before its input rules"
    for key in ("web *:8080", "web *:8081", "api *:9000", "edge *:9500"):
        assert note in rows[key]["scope"], rows[key]
    assert rows["web 127.0.0.1:8082"]["scope"] == "host loopback only"  # not reachable from outside anyway
    assert not any("firewall" in r["scope"] for r in _exposure(tmp_path).values())


def test_publish_localhost_only_moves_ports_without_a_host_ip_to_loopback(tmp_path: Path) -> None:
    text = BASE.replace('"9000:9000"', '"192.0.2.1:9000:9000"')
    rows = _exposure(tmp_path, text, publish_localhost_only=True)
    assert sorted(rows) == ["api 192.0.2.1:9000", "edge 127.0.0.1:9500", "web 127.0.0.1:8080", "web 127.0.0.1:8081"]
    assert rows["web 127.0.0.1:8081"]["scope"] == "host loopback only, by --publish-localhost-only"
    assert load_text(tmp_path, BASE).publish_localhost_only is False
    assert load_text(tmp_path, BASE, env={"COMPOSENET_PUBLISH_LOCALHOST_ONLY": "1"}).publish_localhost_only is True


@pytest.mark.parametrize("where,value,want", [
    ("port", "[10.0.0.1/8]", "compose.yaml:7:29: services.web.ports[0].x-composenet-allow: '10.0.0.1/8': host bits "
     "are set (hint: did you mean 10.0.0.0/8?)"),
    ("port", "[]", "services.web.ports[0].x-composenet-allow: an empty allowlist would refuse every source"),
    ("port", "[nope]", "services.web.ports[0].x-composenet-allow: 'nope' is not a CIDR or an IP address"),
    ("service", "{a: 1}", "compose.yaml:4:25: services.web.x-composenet-allow: expected a list of CIDRs"),
    ("network", "10.0.0.0/33", "compose.yaml:9:51: networks.n.driver_opts[\"com.composenet.publish.allow\"]: '10.0.0.0/33' is not a CIDR"),
])
def test_an_invalid_allowlist_is_a_located_error(tmp_path: Path, where: str, value: str, want: str) -> None:
    port = f"x-composenet-allow: {value}" if where == "port" else "protocol: tcp"
    svc = f"x-composenet-allow: {value}" if where == "service" else "image: x"
    net = f"{{driver_opts: {{com.composenet.publish.allow: '{value}'}}}}" if where == "network" else "{}"
    got = errors(tmp_path, f"""
services:
  web:
    networks: [n]
    {svc}
    ports:
      - target: 80
        {port}
networks:
  n: {net}
""")
    assert want in got, got


def _rules(ports: list[PortMap]) -> list[str]:
    text, _ = build("t", [], ports)
    return [line.strip() for line in text.splitlines() if " drop comment \"cn:allow" in line]


def test_allowlist_rules_drop_every_other_source_after_dnat() -> None:
    v4 = PortMap("web", None, 8080, "tcp", ("172.17.0.2", "172.17.0.3"), 80, 4, ("192.0.2.0/24", "2001:db8::/32"))
    v6 = replace(v4, targets=("fd00::2",), family=6)
    fixed = replace(v4, host_ip="203.0.113.1", host_port=8443, allow=("2001:db8::/32",))
    lo = replace(v4, host_ip="127.0.0.1", host_port=8444)
    none = replace(v4, host_port=8445, allow=())
    got = _rules([v4, v6, fixed, lo, none])
    assert got == [
        'ct status dnat ip daddr { 172.17.0.2, 172.17.0.3 } meta l4proto tcp th dport 80 ct original proto-dst 8080 '
        'ip saddr != { 192.0.2.0/24 } drop comment "cn:allow web *:8080/tcp from 192.0.2.0/24"',
        'ct status dnat ip6 daddr { fd00::2 } meta l4proto tcp th dport 80 ct original proto-dst 8080 '
        'ip6 saddr != { 2001:db8::/32 } drop comment "cn:allow web [*]:8080/tcp from 2001:db8::/32"',
        'ct status dnat ip daddr { 172.17.0.2, 172.17.0.3 } meta l4proto tcp th dport 80 ct original proto-dst 8443 '
        'ct original ip daddr 203.0.113.1 drop comment "cn:allow web 203.0.113.1:8443/tcp from no source of this family"',
    ]
    # Before the DNAT accept, so they are reached.
    text, _ = build("t", [], [v4])
    assert text.index("cn:allow web") < text.index("cn:published ports (DNAT) pass isolation")


def test_firewall_detection() -> None:
    def chains(*cs: dict) -> dict:
        return {"nftables": [{"metainfo": {}}, *({"chain": c} for c in cs)]}

    assert describe(chains()) == ""
    assert describe(chains({"family": "inet", "table": "firewalld", "name": "filter_INPUT", "hook": "input",
                            "policy": "accept"})) == "firewalld"
    assert describe(chains({"family": "ip", "table": "filter", "name": "ufw-user-input"})) == "ufw"
    assert describe(chains({"family": "inet", "table": "filter", "name": "input", "hook": "input",
                            "policy": "drop"})) == "table inet filter, chain input: input policy drop"
    assert describe(chains({"family": "inet", "table": "filter", "name": "input", "hook": "input",
                            "policy": "accept"})) == ""
    # composenet's own tables are never the host's firewall.
    assert describe(chains({"family": "inet", "table": "composenet-guard", "name": "input", "hook": "input",
                            "policy": "drop"})) == ""


@pytest.mark.parametrize("driver,value,want", [
    ("bridge", "natt", 'compose.yaml:6:64: networks.n.driver_opts["com.docker.network.bridge.gateway_mode_ipv4"]: '
     "unknown gateway mode 'natt' (hint: use nat, nat-unprotected, routed, isolated)"),
    ("macvlan", "routed", "a gateway mode needs driver: bridge (the network's driver is macvlan)"),
])
def test_an_invalid_gateway_mode_is_a_located_error(tmp_path: Path, driver: str, value: str, want: str) -> None:
    got = errors(tmp_path, f"""
services:
  web: {{networks: [n]}}
networks:
  n:
    driver: {driver}
    driver_opts: {{com.docker.network.bridge.gateway_mode_ipv4: {value}}}
""")
    assert want in got, got


def test_isolated_networks_have_no_gateway_and_resolve_in_the_namespace(tmp_path: Path) -> None:
    project = load_text(tmp_path, """
name: iso
services:
  a: {image: x, networks: [iso]}
  b: {image: x, networks: [iso, plain]}
networks:
  iso:
    driver_opts: {com.docker.network.bridge.gateway_mode_ipv4: isolated}
  plain: {}
""")
    planned = make_plan(project, project.name, ObservedState(offline=True), Upstreams(("192.0.2.53",)))
    rows = {r["key"]: r for r in planned.plan.networks}
    assert rows["iso"]["gateway"] is None and rows["iso"]["gateway_modes"] == {"ipv4": "isolated", "ipv6": "nat"}
    keys = set(planned.desired.resources)
    assert not any(k.startswith("address:-:") and rows["iso"]["bridge"] in k for k in keys), sorted(keys)
    routes = sorted(k for k in keys if k.startswith("route:"))
    assert len(routes) == 1 and "iso-b-1" in routes[0], routes  # b's through plain; a has none
    resolv = {r.ns: r.content for r in planned.desired.resources.values() if getattr(r, "name", "") == "resolv.conf"}
    assert resolv["iso-a-1"].startswith("nameserver 127.0.0.11\n"), resolv
    assert not resolv["iso-b-1"].startswith("nameserver 127.0.0.11"), resolv


def test_trusted_host_interfaces(tmp_path: Path) -> None:
    text = """
name: tr
services:
  web:
    image: x
    networks: [lan]
    ports: ["8080:80"]
networks:
  lan:
    driver_opts: {com.docker.network.bridge.trusted_host_interfaces: "eth1:wg0"}
"""
    rows = _exposure(tmp_path, text)
    assert "every port of 172.17.0.2 is reachable directly from host interfaces eth1, wg0 (trusted_host_interfaces)" \
        in rows["web *:8080"]["scope"], rows
    got = errors(tmp_path, text.replace("eth1:wg0", "eth1:bad/name"))
    assert "'bad/name' is not a valid interface name" in got, got
