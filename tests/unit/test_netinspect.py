"""`network inspect` in Docker's shape (composenet/core/netinspect.py), from what
kernel.netinfo.networks() reports: the keys and their order, addresses with their prefix, ids
that are stable hashes, Docker's omitempty fields, and `--format` one line per network."""

from __future__ import annotations

import json

from composenet.core.netinspect import ZERO_TIME, docker_network, render_format, render_json, stable_id

DUAL = {
    "name": "p_front", "driver": "bridge", "scope": "local", "project": "p", "bridge": "cnb-00000001",
    "subnet": "172.25.0.0/16", "gateway": "172.25.0.1", "ip_range": "172.25.8.0/24",
    "subnet6": "fd00:1::/64", "gateway6": "fd00:1::1", "internal": True, "ipv6": True, "options": {},
    "containers": [{"name": "p-web-1", "project": "p", "ifname": "eth0", "mac": "02:42:ac:19:08:00",
                    "ipv4": "172.25.8.0", "ipv6": "fd00:1::2"}],
}
KEYS = ["Name", "Id", "Created", "Scope", "Driver", "EnableIPv4", "EnableIPv6", "IPAM", "Internal", "Attachable",
        "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels"]


def test_shape_and_values() -> None:
    d = json.loads(render_json([DUAL]))[0]
    assert list(d) == KEYS
    assert d["Name"] == "p_front" and d["Driver"] == "bridge" and d["Scope"] == "local"
    assert d["Internal"] is True and d["EnableIPv4"] is True and d["EnableIPv6"] is True
    assert d["Created"] == ZERO_TIME  # netinfo reports no creation time: Go's zero time, not an invented one
    assert d["IPAM"] == {"Driver": "default", "Options": {}, "Config": [
        {"Subnet": "172.25.0.0/16", "IPRange": "172.25.8.0/24", "Gateway": "172.25.0.1"},
        {"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1"}]}
    (cid, c), = d["Containers"].items()
    assert c == {"Name": "p-web-1", "EndpointID": stable_id("endpoint", "p_front", "p-web-1"),
                 "MacAddress": "02:42:ac:19:08:00", "IPv4Address": "172.25.8.0/16", "IPv6Address": "fd00:1::2/64"}
    assert cid == stable_id("container", "p-web-1") and len(cid) == 64
    assert d["Options"] == {"com.docker.network.bridge.name": "cnb-00000001"}
    assert d["Labels"] == {"com.docker.compose.project": "p"}


def test_ids_are_stable_and_distinct() -> None:
    a, b = docker_network(DUAL), docker_network(dict(DUAL))
    assert a["Id"] == b["Id"] and len(a["Id"]) == 64 and int(a["Id"], 16) >= 0
    other = docker_network({**DUAL, "name": "p_back"})
    assert other["Id"] != a["Id"]
    assert list(other["Containers"]) == list(a["Containers"])  # the same container: the same id
    assert next(iter(other["Containers"].values()))["EndpointID"] != next(iter(a["Containers"].values()))["EndpointID"]


def test_what_netinfo_does_not_know_is_left_at_docker_defaults() -> None:
    bare = {"name": "x", "containers": [{"name": "c", "ipv4": None, "ipv6": None, "mac": None}]}
    d = json.loads(render_json([bare]))[0]
    assert d["Driver"] == "bridge" and d["IPAM"]["Config"] == [] and d["EnableIPv4"] is False
    c = next(iter(d["Containers"].values()))
    assert c["IPv4Address"] == "" and c["IPv6Address"] == "" and c["MacAddress"] == ""
    given = json.loads(render_json([{**bare, "created": "2026-01-02T03:04:05.000000006Z", "attachable": True,
                                     "labels": {"a": "b"}, "aux_addresses": {"router": "10.0.0.5"},
                                     "subnet": "10.0.0.0/24"}]))[0]
    assert given["Created"] == "2026-01-02T03:04:05.000000006Z" and given["Attachable"] is True
    assert given["Labels"] == {"a": "b"}
    assert given["IPAM"]["Config"] == [{"Subnet": "10.0.0.0/24", "AuxiliaryAddresses": {"router": "10.0.0.5"}}]


def test_format_per_network_and_json() -> None:
    nets = [DUAL, {**DUAL, "name": "p_back", "containers": []}]
    assert render_format(nets, "{{.Name}}") == "p_front\np_back\n"
    assert render_format(nets, "{{range .IPAM.Config}}{{.Subnet}} {{end}}") == \
        "172.25.0.0/16 fd00:1::/64 \n172.25.0.0/16 fd00:1::/64 \n"
    assert render_format(nets, "json") == render_json(nets)
    assert render_format(nets, "{{json .Containers}}").splitlines()[1] == "{}"
    assert render_json([]) == "[]\n"
