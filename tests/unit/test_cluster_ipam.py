"""Cluster IPAM decisions (composenet/cluster/ipam.py, pure): subnets from the pool around other
networks and the nodes' routes, VNIs, addresses, leases held by others, and what a file may say
about a network the cluster already knows."""

from __future__ import annotations

import ipaddress

from composenet.cluster.ipam import (
    choose_subnet,
    choose_vni,
    default_gateway,
    derived_vni,
    free_addresses,
    lease_conflict,
    network_mismatch,
)
from composenet.cluster.records import VNI_MAX, VNI_MIN, AddressLease, NetworkRecord


def test_subnets_come_from_the_pool_in_slash_24s_around_networks_and_routes():
    assert choose_subnet([], []) == "10.0.0.0/24"
    assert choose_subnet(["10.0.0.0/24"], []) == "10.0.1.0/24"
    # a node's routes count, default routes do not; a big route is jumped over at once
    assert choose_subnet(["10.0.0.0/24"], ["0.0.0.0/0", "10.0.1.0/24", "10.0.2.128/25"]) == "10.0.3.0/24"
    assert choose_subnet([], ["10.0.0.0/9"]) == "10.128.0.0/24"
    assert choose_subnet([], ["10.0.0.5/32"]) == "10.0.1.0/24"
    assert choose_subnet([], ["192.168.0.0/16", "garbage"]) == "10.0.0.0/24"
    assert choose_subnet([], ["10.0.0.0/8"]) is None  # the pool is full
    assert choose_subnet([], [], pool="10.9.0.0/23", prefixlen=24) == "10.9.0.0/24"
    assert choose_subnet(["10.9.0.0/24", "10.9.1.0/24"], [], pool="10.9.0.0/23") is None
    assert choose_subnet([], [], pool="10.9.0.0/25", prefixlen=24) is None


def test_chosen_subnets_never_overlap_what_is_taken():
    taken, routes = ["10.0.0.0/24", "10.0.5.0/24"], ["10.0.2.0/23", "10.0.1.64/26"]
    got = choose_subnet(taken, routes)
    assert got == "10.0.4.0/24"
    assert not any(ipaddress.ip_network(got).overlaps(ipaddress.ip_network(n)) for n in taken + routes)


def test_vnis_are_derived_unique_and_in_range():
    v = derived_vni("fabric")
    assert VNI_MIN <= v <= VNI_MAX and derived_vni("fabric") == v and derived_vni("other") != v
    assert choose_vni("fabric", []) == v
    assert v + 3 <= VNI_MAX  # (so the next ones below do not wrap)
    assert choose_vni("fabric", [v]) == v + 1
    assert choose_vni("fabric", [v, v + 1, v + 2]) == v + 3
    assert choose_vni("x", [VNI_MAX], wanted=None) in range(VNI_MIN, VNI_MAX + 1)
    assert choose_vni("fabric", [], wanted=4242) == 4242  # the file's, even below VNI_MIN
    assert choose_vni("fabric", [4242], wanted=4242) is None


def test_free_addresses_skip_gateway_network_broadcast_and_leases():
    got = list(free_addresses("10.0.3.0/29", "10.0.3.1", ["10.0.3.3"]))
    assert got == ["10.0.3.2", "10.0.3.4", "10.0.3.5", "10.0.3.6"]
    assert list(free_addresses("10.0.3.0/24", "10.0.3.1", [], ip_range="10.0.3.128/30")) == [
        "10.0.3.128", "10.0.3.129", "10.0.3.130", "10.0.3.131"]
    assert default_gateway("10.0.3.0/24") == "10.0.3.1"


def test_a_lease_of_another_container_or_node_is_a_conflict():
    assert lease_conflict(None, "h1", "c1") is None
    assert lease_conflict(AddressLease("h1", "c1"), "h1", "c1") is None
    assert lease_conflict(AddressLease("h2", "c1"), "h1", "c1") == "leased to container c1 on node h2"
    assert lease_conflict(AddressLease("h1", "c2"), "h1", "c1") == "leased to container c2 on node h1"


def test_what_the_file_says_differently_from_the_record():
    rec = NetworkRecord("fabric", "10.0.3.0/24", "10.0.3.1", 5000)
    assert network_mismatch(rec, None, None, None) == []
    assert network_mismatch(rec, "10.0.3.7/24", "10.0.3.1", 5000) == []  # same network, host bits ignored
    assert network_mismatch(rec, "10.0.4.0/24", "10.0.4.1", 5001) == [
        "subnet 10.0.4.0/24 (the cluster's is 10.0.3.0/24)", "gateway 10.0.4.1 (the cluster's is 10.0.3.1)",
        "VNI 5001 (the cluster's is 5000)"]


def test_a_new_networks_record_proposed():
    from composenet.cluster.errors import ClusterConflict
    from composenet.cluster.ipam import propose_network

    others = {"a": NetworkRecord("a", "10.0.0.0/24", "10.0.0.1", 5000), "b": NetworkRecord("b", "10.0.2.0/24",
                                                                                         "10.0.2.1", 5001)}
    rec = propose_network("new", others, ["10.0.1.0/24"], None, None, None, 4789, "h1", 12.5)
    assert rec == NetworkRecord("new", "10.0.3.0/24", "10.0.3.1", derived_vni("new"), 4789, "h1", 12.5)
    rec = propose_network("new", others, [], "10.9.0.0/24", "10.9.0.254", 4242, 4790, "h2")
    assert (rec.subnet, rec.gateway, rec.vni, rec.port) == ("10.9.0.0/24", "10.9.0.254", 4242, 4790)
    for kw, why in (({"subnet": "10.0.0.128/25"}, "network new: subnet 10.0.0.128/25 overlaps cluster network a "
                                                   "(10.0.0.0/24)"),
                    ({"vni": 5001}, "network new: VNI 5001 is used by cluster network b")):
        args = {"subnet": None, "gateway": None, "vni": None, **kw}
        try:
            propose_network("new", others, [], args["subnet"], args["gateway"], args["vni"], 4789, "h1")
        except ClusterConflict as e:
            assert e.message == why
        else:
            raise AssertionError(f"no conflict for {kw}")
