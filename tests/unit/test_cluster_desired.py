"""Cluster networks in the desired state (core/desired/cluster.py), planned from a recorded
``ObservedState.cluster``: the record's values, the proposal `up` creates, the located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from composenet.cluster.ipam import propose_network
from composenet.cluster.records import NetworkRecord
from composenet.core.desired import Upstreams, desire
from composenet.core.desired.cluster import _containers
from composenet.core.desired.containers import container_names
from composenet.core.state import ObservedState
from composenet.errors import InputError, PlanError
from tests.golden.harness import load

REC = {"name": "shop_fabric", "subnet": "10.0.3.0/24", "gateway": "10.0.3.1", "vni": 5000, "port": 4789,
       "created_by": "h2", "created": 0.0}


def plan(tmp_path: Path, text: str, cluster: dict):
    f = tmp_path / "compose.yaml"
    f.write_text("name: shop\n" + text)
    return desire(load(f), ObservedState(cluster=cluster, host_routes=("192.0.2.0/24",)), Upstreams(("192.0.2.53",)))


def base(**extra) -> dict:
    return {"node": "h1", "vtep": "192.0.2.11", "networks": {}, "members": {}, "leases": {}, "routes": [], **extra}


FABRIC = """
services:
  client:
    command: "sleep 600"
    networks: [fabric]
networks:
  fabric:
    driver: overlay
"""


def net_row(d, name: str) -> dict:
    return next(r for r in d.networks if r["name"] == name)


def test_an_existing_record_gives_subnet_vni_and_skips_addresses_leased_elsewhere(tmp_path):
    d = plan(tmp_path, FABRIC, base(networks={"shop_fabric": REC}, members={"shop_fabric": {"h2": "192.0.2.12"}},
                                   leases={"shop_fabric": {"10.0.3.2": {"node": "h2", "container": "shop-api-1"}}}))
    row = net_row(d, "shop_fabric")
    assert (row["subnet"], row["gateway"], row["vxlan"]["vni"], row["vxlan"]["cluster"]) == ("10.0.3.0/24", "10.0.3.1",
                                                                                           5000, True)
    assert d.containers[0]["endpoints"][0]["ipv4"] == "10.0.3.3"
    vx = next(r for r in d.resources.values() if r.kind == "vxlan")
    assert (vx.learning, vx.proxy, vx.peers, vx.local) == (False, True, (), "192.0.2.11")
    nft = next(r for r in d.resources.values() if r.kind == "nft" and r.family == "inet")
    assert "set cluster_vteps ipv4_addr" in nft.rules and "udp dport 4789 ip saddr != @cluster_vteps" in nft.ruleset


def test_the_proposal_is_the_record_up_creates(tmp_path):
    others = {"shop_other": {**REC, "name": "shop_other"}}
    d = plan(tmp_path, FABRIC, base(networks=others, routes=["10.0.0.0/23"]))
    row = net_row(d, "shop_fabric")
    want = propose_network("shop_fabric", {"shop_other": NetworkRecord("shop_other", "10.0.3.0/24", "10.0.3.1", 5000)},
                           ["10.0.0.0/23", "192.0.2.0/24"], None, None, None, 4789, "h1")
    assert (row["subnet"], row["gateway"], row["vxlan"]["vni"]) == (want.subnet, want.gateway, want.vni)
    assert row["subnet"] == "10.0.2.0/24"


def test_two_new_networks_of_one_plan_get_two_subnets(tmp_path):
    text = FABRIC + "  mesh:\n    driver: overlay\n"
    text = text.replace("networks: [fabric]", "networks: [fabric, mesh]")
    d = plan(tmp_path, text, base())
    assert {net_row(d, "shop_fabric")["subnet"], net_row(d, "shop_mesh")["subnet"]} == {"10.0.0.0/24", "10.0.1.0/24"}


def test_a_file_that_disagrees_with_a_record_in_use_is_a_located_error(tmp_path):
    text = FABRIC + "    ipam:\n      config:\n        - subnet: 10.0.9.0/24\n"
    with pytest.raises(InputError) as e:
        plan(tmp_path, text, base(networks={"shop_fabric": REC}, members={"shop_fabric": {"h2": "192.0.2.12"}}))
    msg = str(e.value)
    assert "compose.yaml:" in msg and "networks.fabric: " in msg
    assert "subnet 10.0.9.0/24 (the cluster's is 10.0.3.0/24)" in msg and "created by node h2" in msg
    # Without members, the file's values replace the record.
    d = plan(tmp_path, text, base(networks={"shop_fabric": REC}))
    assert net_row(d, "shop_fabric")["subnet"] == "10.0.9.0/24"


def test_a_static_address_leased_to_another_container_is_a_located_error(tmp_path):
    text = FABRIC.replace("networks: [fabric]", "networks:\n      fabric:\n        ipv4_address: 10.0.3.2")
    text += "    ipam:\n      config:\n        - subnet: 10.0.3.0/24\n"  # a static address needs one [CS-SNET-07]
    with pytest.raises(InputError) as e:
        plan(tmp_path, text, base(networks={"shop_fabric": REC},
                                  leases={"shop_fabric": {"10.0.3.2": {"node": "h2", "container": "shop-api-1"}}}))
    assert "services.client.networks.fabric.ipv4_address: " in str(e.value)
    assert "leased to container shop-api-1 on node h2" in str(e.value)


def test_a_store_that_did_not_answer_fails_the_plan_and_only_for_cluster_networks(tmp_path):
    down = {"node": "h1", "error": "cannot reach the cluster store etcd://192.0.2.1:2379", "hint": "is etcd running?"}
    with pytest.raises(PlanError, match="cannot reach the cluster store"):
        plan(tmp_path, FABRIC, down)
    d = plan(tmp_path, FABRIC.replace("driver: overlay", "driver: bridge"), down)
    assert "vxlan" not in net_row(d, "shop_fabric")


def test_static_peers_keep_the_static_overlay(tmp_path):
    text = FABRIC + ("    driver_opts:\n      com.composenet.vxlan.peers: 192.0.2.12\n"
                     "    ipam:\n      config:\n        - subnet: 10.0.3.0/24\n")
    d = plan(tmp_path, text, base(networks={"shop_fabric": REC}))
    vx = next(r for r in d.resources.values() if r.kind == "vxlan")
    assert (vx.learning, vx.peers) == (True, ("192.0.2.12",)) and "cluster" not in net_row(d, "shop_fabric")["vxlan"]



def test_this_nodes_leases_for_another_projects_containers_are_held(tmp_path):
    leases = {"shop_fabric": {"10.0.3.2": {"node": "h1", "container": "other-api-1"},
                              "10.0.3.3": {"node": "h1", "container": "shop-client-1"}}}
    d = plan(tmp_path, FABRIC, base(networks={"shop_fabric": REC}, members={"shop_fabric": {"h1": "192.0.2.11"}},
                                   leases=leases))
    # other-api-1's address is held, shop-client-1 keeps its own.
    assert d.containers[0]["endpoints"][0]["ipv4"] == "10.0.3.3"
    d = plan(tmp_path, FABRIC.replace("client", "web"), base(networks={"shop_fabric": REC}, leases=leases))
    assert d.containers[0]["endpoints"][0]["ipv4"] == "10.0.3.4"  # shop-client-1 is not a container of this file


def test_a_static_address_this_node_leased_to_another_project_is_a_located_error(tmp_path):
    text = FABRIC.replace("networks: [fabric]", "networks:\n      fabric:\n        ipv4_address: 10.0.3.2")
    text += "    ipam:\n      config:\n        - subnet: 10.0.3.0/24\n"
    with pytest.raises(InputError, match="leased to container other-api-1 on node h1"):
        plan(tmp_path, text, base(networks={"shop_fabric": REC},
                                  leases={"shop_fabric": {"10.0.3.2": {"node": "h1", "container": "other-api-1"}}}))



def test_container_names_are_the_containers_modules(tmp_path):
    f = tmp_path / "compose.yaml"
    f.write_text("name: p\nservices:\n  a: {command: x, deploy: {replicas: 2}}\n  b: {command: x, container_name: bee}\n")
    p = load(f)
    assert _containers(p) == {n for s in p.services for n in container_names(p, s)} == {"p-a-1", "p-a-2", "bee"}


def test_an_address_this_node_leased_to_the_container_is_kept_though_a_lower_one_is_free(tmp_path):
    # An `up` that lost its planned address to another host leases a free one to the container
    # and plans again (kernel/cluster.py): the new plan must keep that lease, not race for .2 again.
    leases = {"shop_fabric": {"10.0.3.7": {"node": "h1", "container": "shop-client-1"},
                              "10.0.3.9": {"node": "h2", "container": "shop-client-1"}}}
    d = plan(tmp_path, FABRIC, base(networks={"shop_fabric": REC}, leases=leases))
    assert d.containers[0]["endpoints"][0]["ipv4"] == "10.0.3.7"
    text = FABRIC.replace('command: "sleep 600"', 'command: "sleep 600"\n    deploy: {replicas: 2}')
    d = plan(tmp_path, text, base(networks={"shop_fabric": REC}, leases=leases))
    assert [c["endpoints"][0]["ipv4"] for c in d.containers] == ["10.0.3.7", "10.0.3.2"]


def test_the_plan_lists_the_cluster_store_steps_and_none_once_the_store_holds_them(tmp_path):
    from composenet.core.planner import make_plan
    from composenet.core.render import render_text

    members = {"shop_fabric": {"h1": "192.0.2.11", "h2": "192.0.2.12"}}
    mine = {"shop_fabric": {"10.0.3.2": {"node": "h1", "container": "shop-client-1"}}}
    d = plan(tmp_path, FABRIC, base(networks={"shop_fabric": REC}, members={"shop_fabric": {"h2": "192.0.2.12"}}))
    assert [(r["op"], r["kind"]) for r in d.cluster] == [("+", "member"), ("+", "lease"), ("+", "endpoint")]
    assert d.cluster[1]["what"] == "10.0.3.2 on shop_fabric to shop-client-1"
    # The store holds this node's membership and the lease: nothing to write.
    d = plan(tmp_path, FABRIC, base(networks={"shop_fabric": REC}, members=members, leases=mine))
    assert d.cluster == []
    # A static address replaces the one leased: the new one is leased, the old one released.
    text = FABRIC.replace("networks: [fabric]", "networks:\n      fabric:\n        ipv4_address: 10.0.3.9")
    text += "    ipam:\n      config:\n        - subnet: 10.0.3.0/24\n"
    d = plan(tmp_path, text, base(networks={"shop_fabric": REC}, members=members, leases=mine))
    assert [(r["op"], r["kind"], r["what"]) for r in d.cluster] == [
        ("+", "lease", "10.0.3.9 on shop_fabric to shop-client-1"),
        ("+", "endpoint", "shop-client-1 on shop_fabric  10.0.3.9  mac 02:42:0a:00:03:09  node h1"),
        ("-", "lease", "10.0.3.2 on shop_fabric to shop-client-1  (moves to 10.0.3.9)")]
    f = tmp_path / "compose.yaml"
    p = make_plan(load(f), "shop", ObservedState(cluster=base(networks={"shop_fabric": REC}, members=members, leases=mine),
                                         host_routes=("192.0.2.0/24",)), Upstreams(("192.0.2.53",))).plan
    text_out = render_text(p)
    assert "Cluster store:\n  +   lease    10.0.3.9 on shop_fabric to shop-client-1  (missing)\n" in text_out
    assert text_out.rstrip().endswith("; cluster store: 2 to write, 1 to release.")
