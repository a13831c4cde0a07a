"""What `composenet check` expects of a project (composenet/core/checks.py), derived from the plan
and the kernel's listening sockets: Docker's name scoping (replicas, aliases, links,
``<name>.<network>``), ports (declared and listening, loopback ones left out), ICC off,
isolation, internal networks, published ports per host address, depends_on across networks,
network_mode sharers, and the command-line selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from composenet.core.checks import Expect, Facts, Selection, SelectionError, derive, parse_selection
from composenet.core.desired import Upstreams
from composenet.core.state import ObservedState
from composenet.pipeline import make_plan
from tests.unit.helpers import load_text

FACTS = Facts(host_address="203.0.113.1", upstreams=("198.51.100.53",), host_addresses=("203.0.113.1",))


def expects(tmp_path: Path, text: str, facts: Facts = FACTS, selection: Selection | None = None) -> list[Expect]:
    project = load_text(tmp_path, text)
    planned = make_plan(project, project.name, ObservedState(offline=True), Upstreams(("198.51.100.53",)))
    return derive(project, planned.desired, facts, selection)


def pick(es: list[Expect], **want: object) -> list[Expect]:
    return [e for e in es if all(getattr(e, k) == v for k, v in want.items())]


def addr(es: list[Expect], src: str, name: str) -> tuple[str, ...]:
    (e,) = pick(es, kind="dns", src_label=src, target=name, qtype="A")
    return e.want


SCALED = """
name: p
services:
  api:
    scale: 2
    expose: ["8080"]
    networks:
      back: {aliases: [service-api]}
  client:
    links: ["api:backend"]
    networks: [back, front]
  web:
    networks: [front]
networks:
  back: {}
  front: {}
"""


def test_names_follow_dockers_scoping(tmp_path: Path) -> None:
    es = expects(tmp_path, SCALED)
    api = sorted(e.want[0] for e in es if e.kind == "dns" and e.target in ("p-api-1", "p-api-2")
                 and e.src_label == "client")
    assert len(api) == 2
    assert addr(es, "client", "api") == tuple(api)  # a scaled service: every replica
    assert addr(es, "client", "service-api") == tuple(api)  # an alias
    assert addr(es, "client", "api.p_back") == tuple(api)  # <name>.<network>
    assert addr(es, "client", "backend") == tuple(api)  # a link alias, for the linking container only
    assert not pick(es, kind="dns", src_label="web", target="backend")
    assert addr(es, "api-1", "api") == tuple(api)  # its own service's name: both replicas
    # web shares no network with api: every name of api is NXDOMAIN for it, with the reason.
    nx = pick(es, kind="dns", src_label="web", dst_label="api-1")
    assert nx and all(e.expected == "NXDOMAIN" for e in nx)
    assert "attaching web to p_back would put it there" in nx[0].why
    # api-1 shares back with client but not front: client.p_front is NXDOMAIN, and says why.
    (q,) = pick(es, kind="dns", src_label="api-1", target="client.p_front")
    assert q.expected == "NXDOMAIN" and q.why == "client.p_front names client on p_front, which api-1 is not on"


def test_ports_isolation_and_listeners(tmp_path: Path) -> None:
    project_ns = "p-api-1"
    facts = Facts(listening={project_ns: (("tcp", 9000, "0.0.0.0"), ("tcp", 9001, "127.0.0.1"),
                                          ("udp", 53, "::"))},
                  host_address="203.0.113.1", upstreams=("198.51.100.53",), host_addresses=("203.0.113.1",))
    es = expects(tmp_path, SCALED, facts)
    ports = {(e.proto, e.port) for e in pick(es, src_label="client", dst_label="api-1") if e.kind in ("tcp", "udp")}
    assert ports == {("tcp", 8080), ("tcp", 9000), ("udp", 53)}  # declared + listening; not 127.0.0.1:9001
    assert {(e.proto, e.port) for e in pick(es, src_label="client", dst_label="api-2") if e.kind == "tcp"} == {
        ("tcp", 8080)}
    assert all(e.expected == "open" and e.network == "p_back" for e in pick(es, kind="tcp", src_label="client"))
    blocked = pick(es, kind="tcp", src_label="web", dst_label="api-1")
    assert len(blocked) == 1 and blocked[0].expected == "blocked" and blocked[0].port == 8080
    assert blocked[0].why == "web and api-1 share no network (web: p_front; api-1: p_back)"
    # A target that listens on nothing still gets one isolation probe (a reply would prove a leak).
    (nothing,) = pick(es, kind="tcp", src_label="api-1", dst_label="web")
    assert nothing.expected == "blocked" and nothing.port == 9


def test_icc_off_blocks_connects_but_not_names(tmp_path: Path) -> None:
    es = expects(tmp_path, """
name: p
services:
  a: {networks: [quiet], expose: ["80"]}
  b: {networks: [quiet], expose: ["80"]}
networks:
  quiet:
    driver_opts: {com.docker.network.bridge.enable_icc: "false"}
""")
    (ab,) = pick(es, kind="tcp", src_label="a", dst_label="b")
    assert ab.expected == "blocked" and ab.why == "enable_icc is off on p_quiet"
    assert pick(es, kind="dns", src_label="a", target="b")[0].want


def test_internal_networks_and_upstreams(tmp_path: Path) -> None:
    text = """
name: p
services:
  db: {networks: [back]}
  web: {networks: [back, front]}
networks:
  back: {internal: true}
  front: {}
"""
    es = expects(tmp_path, text)
    assert [(e.kind, e.target, e.expected) for e in pick(es, src_label="db", dst="outside")] == [
        ("dns", "example.com", "REFUSED"), ("egress", "198.51.100.53:53", "blocked")]
    assert not pick(es, src_label="web", dst="outside")  # not internal-only
    none = expects(tmp_path, text, Facts())
    assert [e.kind for e in pick(none, src_label="db", dst="outside")] == ["dns"]  # no upstream: no egress probe


def test_published_ports_per_host_address(tmp_path: Path) -> None:
    es = expects(tmp_path, """
name: p
services:
  web:
    networks: [front]
    ports: ["8080:80", "127.0.0.1:8081:80", "203.0.113.1:8082:80", "192.0.2.9:8083:80", "5353:53/udp"]
networks:
  front: {}
""")
    got = {(e.target, e.expected, e.proto, e.warning) for e in pick(es, kind="publish")}
    assert got == {
        ("127.0.0.1:8080", "open", "tcp", False), ("203.0.113.1:8080", "open", "tcp", False),
        ("127.0.0.1:8081", "open", "tcp", False), ("203.0.113.1:8081", "closed", "tcp", False),
        ("203.0.113.1:8082", "open", "tcp", False), ("127.0.0.1:8082", "closed", "tcp", False),
        ("192.0.2.9:8083", "open", "tcp", True), ("127.0.0.1:8083", "closed", "tcp", False),
        ("203.0.113.1:8083", "closed", "tcp", False),
        ("127.0.0.1:5353", "open", "udp", False), ("203.0.113.1:5353", "open", "udp", False),
    }
    (warn,) = pick(es, kind="publish", warning=True)
    assert "192.0.2.9 is not an address of this host" in warn.why
    assert {e.target for e in pick(es, kind="hostport")} == {
        "*:8080/tcp", "127.0.0.1:8081/tcp", "203.0.113.1:8082/tcp", "192.0.2.9:8083/tcp", "*:5353/udp"}
    (p80,) = pick(es, kind="publish", target="127.0.0.1:8080")
    assert p80.dst_port == 80 and p80.dst_spaces == ("p-web-1",) and len(p80.dst_addresses) == 1


def test_depends_on_across_networks_is_a_warning(tmp_path: Path) -> None:
    es = expects(tmp_path, """
name: p
services:
  web: {networks: [front], depends_on: [db, cache]}
  db: {networks: [back]}
  cache: {networks: [front]}
networks:
  back: {}
  front: {}
""")
    (w,) = pick(es, kind="scope")
    assert w.warning and w.src == "web" and w.dst == "db"
    assert w.why == ("web depends on db; db is not in web's scope: web is on p_front, db on p_back; "
                     "attaching web to p_back would put it there")


def test_network_mode_sharers(tmp_path: Path) -> None:
    es = expects(tmp_path, """
name: p
services:
  base: {networks: [n], expose: ["80"]}
  side: {network_mode: "service:base", expose: ["81"]}
  peer: {networks: [n]}
  hostnet: {network_mode: host}
networks:
  n: {}
""")
    assert {e.port for e in pick(es, kind="tcp", src_label="peer", dst_label="base")} == {80, 81}
    assert not [e for e in es if "side" in (e.src_label, e.dst_label) or "hostnet" in (e.src_label, e.dst_label)]


def test_selection(tmp_path: Path) -> None:
    services = ["api", "client", "web", "p-api-1"]
    assert parse_selection([], services) == Selection()
    assert parse_selection(["api:8080"], services) == Selection("api", None, 8080)
    assert parse_selection(["client", "api:8080"], services) == Selection("client", "api", 8080)
    assert parse_selection(["host", "web"], services) == Selection("host", "web", None)
    for args, message in ((["nope"], "no service or container 'nope'"), (["api:x"], "the port must be a number"),
                          (["api:80", "web"], "give the port on the second"), (["a", "b", "c"], "at most two")):
        with pytest.raises(SelectionError, match=message):
            parse_selection(args, services)
    pair = expects(tmp_path, SCALED, selection=Selection("client", "api", 8080))
    assert pair and all(e.src_label == "client" and e.dst_service == "api" for e in pair)
    assert {e.port for e in pair if e.kind == "tcp"} == {8080}
    one = expects(tmp_path, SCALED, selection=Selection("web"))
    assert one and all("web" in (e.src_service, e.dst_service) for e in one)


def test_deterministic_and_sorted(tmp_path: Path) -> None:
    a, b = expects(tmp_path, SCALED), expects(tmp_path, SCALED)
    assert a == b and a == sorted(a, key=lambda e: e.sort_key) and len(set(a)) == len(a)


def test_published_replicas_pair_each_namespace_with_its_address(tmp_path: Path) -> None:
    text = """
name: p
services:
  api: {scale: 3, networks: [n], ports: ["8080:80"]}
networks:
  n: {}
"""
    project = load_text(tmp_path, text)
    planned = make_plan(project, project.name, ObservedState(offline=True), Upstreams(()))
    own = {c["ns"]: c["endpoints"][0]["ipv4"] for c in planned.desired.containers}
    (e,) = pick(derive(project, planned.desired, FACTS), kind="publish", target="127.0.0.1:8080")
    assert e.dst_spaces == ("p-api-1", "p-api-2", "p-api-3") and e.dst == "api" and e.dst_label == "api"
    assert dict(zip(e.dst_spaces, e.dst_addresses, strict=True)) == own
