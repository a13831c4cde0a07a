"""Names across projects (composenet/dns/peers.py and the planner's side of it): what a project
publishes for networks it does not own, how a resolver merges other projects' records (only for
networks that concern it, never stale or foreign ones), and that scoping stays per network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from composenet.core.desired import Upstreams, desire
from composenet.core.resources import DnsRecords, NetnsFile, Resolver
from composenet.core.state import ObservedState
from composenet.dns import peers
from composenet.dns.zone import build_zone
from composenet.paths import DNS_PEERS
from tests.unit.helpers import load_text

JOINER = """
name: b
services:
  app:
    networks: [shared, priv]
  solo:
    networks: [shared]
  hidden:
    networks: [priv]
networks:
  shared:
    external: true
    name: a_shared
  priv: {}
"""


def shared_observed() -> ObservedState:
    return ObservedState(networks={"a_shared": {"bridge": "cnb-0a0a0a0a", "owner": "a", "cidrs": ["10.70.0.1/24"],
                                                "used": ["10.70.0.2"]}})


def test_a_project_publishes_its_endpoints_on_networks_it_does_not_own(tmp_path) -> None:
    d = desire(load_text(tmp_path, JOINER), shared_observed(), Upstreams(("192.0.2.53",)))
    rec = next(r for r in d.resources.values() if isinstance(r, DnsRecords))
    assert rec.networks == ("a_shared",) and rec.namespaces == ("b-app-1", "b-solo-1")
    data = json.loads(rec.records)
    assert {c["name"]: [e["network"] for e in c["endpoints"]] for c in data["containers"]} == {
        "b-app-1": ["a_shared"], "b-solo-1": ["a_shared"]}  # never the private network
    # Own resolver first; a container only on the external network asks the network's owner.
    files = {r.ns: r.content for r in d.resources.values() if isinstance(r, NetnsFile) and r.name == "resolv.conf"}
    priv_gw = next(n["gateway"] for n in d.networks if n["name"] == "b_priv")
    assert files["b-app-1"].startswith(f"nameserver {priv_gw}\n")
    assert files["b-solo-1"].startswith("nameserver 10.70.0.1\n")
    resolver = next(r for r in d.resources.values() if isinstance(r, Resolver))
    assert resolver.listeners == (f"b_priv={priv_gw}",)  # a_shared is served by its owner


def test_every_owned_network_is_served_even_without_containers_of_the_project(tmp_path) -> None:
    project = load_text(tmp_path, "name: a\nservices:\n  x:\n    networks: [one]\nnetworks:\n  one: {}\n  proxy: {}\n")
    d = desire(project, ObservedState(), Upstreams())
    resolver = next(r for r in d.resources.values() if isinstance(r, Resolver))
    assert [x.split("=")[0] for x in resolver.listeners] == ["a_one", "a_proxy"]
    assert not [r for r in d.resources.values() if isinstance(r, DnsRecords)]


# ---- the resolver's side -----------------------------------------------------------------------


def ep(network: str, ipv4: str, aliases: tuple[str, ...] = ()) -> dict:
    return {"network": network, "ipv4": ipv4, "ipv6": None, "aliases": list(aliases), "internal": False}


def ctr(name: str, service: str, *eps: dict) -> dict:
    return {"name": name, "service": service, "hostname": None, "register": True, "upstreams": ["192.0.2.53"],
            "links": [], "endpoints": list(eps)}


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    """A runtime directory with project a (owns a_shared, internal) and b's records on it."""
    netns = tmp_path / "netns"
    netns.mkdir()
    monkeypatch.setattr(peers, "NETNS_DIR", str(netns))
    run = tmp_path / "run"
    (run / "a").mkdir(parents=True)
    (run / "b").mkdir()
    cfg = {"project": "a", "pidfile": str(run / "a" / "dns.pid"), "upstreams": ["192.0.2.53"],
           "listeners": [{"network": "a_shared", "address": "10.70.0.1", "port": 53, "internal": True}],
           "containers": [ctr("a-srv-1", "srv", ep("a_shared", "10.70.0.2"))]}
    (run / "a" / "dns.json").write_text(json.dumps(cfg))
    records = {"project": "b", "host_netns": peers.host_netns(), "containers": [
        ctr("b-app-1", "app", ep("a_shared", "10.70.0.3", ("app-alias",)), ep("b_priv", "172.30.0.2")),
        ctr("b-gone-1", "gone", ep("a_shared", "10.70.0.9")),  # its namespace is gone: stale
        ctr("b-bad-1", "bad", ep("a_shared", "not-an-ip")),  # invalid: skipped alone
    ]}
    (run / "b" / DNS_PEERS).write_text(json.dumps(records))
    for ns in ("b-app-1", "b-bad-1"):
        (netns / ns).write_text("")
    return run


def load(run: Path, project: str) -> tuple[dict, list[dict]]:
    path = str(run / project / "dns.json")
    cfg = json.loads(Path(path).read_text())
    return cfg, peers.gather(cfg, path)


def test_the_owner_merges_live_records_on_its_networks_only(run_dir) -> None:
    cfg, found = load(run_dir, "a")
    assert [(c["name"], [e["network"] for e in c["endpoints"]]) for c in found] == [("b-app-1", ["a_shared"])]
    zone = build_zone(peers.merge(cfg, found))
    srv = zone.views["10.70.0.2"]
    app = zone.views["10.70.0.3"]
    names = {b"\x03app\x00", b"\x09app-alias\x00", b"\x07b-app-1\x00", b"\x03srv\x00"}
    assert names <= srv.names and names <= app.names
    assert app.refuse  # the owner knows a_shared is internal: B's container is not forwarded either


def test_records_of_another_host_namespace_or_outside_a_run_dir_are_ignored(run_dir, tmp_path) -> None:
    path = run_dir / "b" / DNS_PEERS
    rec = json.loads(path.read_text())
    rec["host_netns"] = rec["host_netns"] + 1
    path.write_text(json.dumps(rec))
    assert load(run_dir, "a")[1] == []
    elsewhere = tmp_path / "dns.json"
    elsewhere.write_text((run_dir / "a" / "dns.json").read_text())
    assert peers.run_dir_of(str(elsewhere), "a") is None


def test_a_joiner_merges_the_owners_names_only_while_its_resolver_lives(run_dir, monkeypatch) -> None:
    cfg_b = {"project": "b", "pidfile": str(run_dir / "b" / "dns.pid"), "upstreams": [],
             "listeners": [{"network": "b_priv", "address": "172.30.0.1", "port": 53, "internal": False}],
             "containers": [ctr("b-app-1", "app", ep("a_shared", "10.70.0.3"), ep("b_priv", "172.30.0.2")),
                            ctr("b-hidden-1", "hidden", ep("b_priv", "172.30.0.3"))]}
    (run_dir / "b" / "dns.json").write_text(json.dumps(cfg_b))
    cfg, found = load(run_dir, "b")
    assert found == []  # a's resolver is not running: its config may be stale
    monkeypatch.setattr(peers, "resolver_pid", lambda run, q: 1 if q == "a" else None)
    monkeypatch.setattr(peers, "pid_netns", lambda pid: peers.host_netns())
    cfg, found = load(run_dir, "b")
    assert [c["name"] for c in found] == ["a-srv-1"]
    zone = build_zone(peers.merge(cfg, found))
    srv_a = b"\x03srv\x00" + b"\x00\x01\x00\x01"
    # app shares a_shared with srv: answered with srv's address there
    assert bytes([10, 70, 0, 2]) in zone.views["172.30.0.2"].table[srv_a][2][0]
    assert srv_a not in zone.views["172.30.0.3"].table  # hidden does not
    assert b"\x03srv\x00" in zone.views["172.30.0.3"].project  # but it is a project name: NXDOMAIN


def test_notify_signals_only_live_resolvers_concerned(run_dir, monkeypatch) -> None:
    sent: list[int] = []
    monkeypatch.setattr(peers, "resolver_pid", lambda run, q: {"a": 4242}.get(q))
    monkeypatch.setattr(peers, "pid_netns", lambda pid: peers.host_netns())
    monkeypatch.setattr(peers.os, "kill", lambda pid, sig: sent.append(pid))
    monkeypatch.setattr(peers, "_reloaded", lambda *a: True)
    assert peers.notify(str(run_dir), "b", {"b_priv"}) == []
    assert peers.notify(str(run_dir), "b", {"a_shared"}) == ["a"] and sent == [4242]
    assert peers.notify(str(run_dir), "a", {"a_shared"}) == []  # never itself
