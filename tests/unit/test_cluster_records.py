"""The cluster's keys and records (composenet/cluster/keys.py, records.py, pure): the layout,
parsing keys back, record round trips, errors that name the key and the field, and a host's
records as its project file holds them."""

from __future__ import annotations

import json

import pytest

from composenet.cluster import keys
from composenet.cluster.records import (
    AddressLease,
    EndpointRecord,
    HostRecords,
    MemberRecord,
    NetworkRecord,
    NodeRecord,
    RecordError,
    decode,
    encode,
)

NET = NetworkRecord("fabric", "10.0.3.0/24", "10.0.3.1", 70000, 4789, "h1", 1700000000.5)
EP = EndpointRecord("fabric", "shop-web-1", "web", "10.0.3.7", "02:42:0a:00:03:07", "h2", "192.0.2.2",
                    hostname="web-host", aliases=("www", "front"), project="shop")


def test_key_layout_and_parsing():
    assert keys.node_key("h1") == "/composenet/v1/nodes/h1"
    assert keys.network_key("fabric") == "/composenet/v1/networks/fabric"
    assert keys.member_key("fabric", "h1") == "/composenet/v1/members/fabric/h1"
    assert keys.address_key("fabric", "10.0.3.7") == "/composenet/v1/addresses/fabric/10.0.3.7"
    assert keys.endpoint_key("fabric", "h2", "shop-web-1") == "/composenet/v1/endpoints/fabric/h2/shop-web-1"
    assert keys.parse_key(keys.node_key("h1")) == keys.Key("node", node="h1")
    assert keys.parse_key(keys.network_key("my.net-1")) == keys.Key("network", network="my.net-1")
    assert keys.parse_key(keys.member_key("n", "h1")) == keys.Key("member", network="n", node="h1")
    assert keys.parse_key(keys.address_key("n", "10.0.0.9")) == keys.Key("address", network="n", name="10.0.0.9")
    assert keys.parse_key(keys.endpoint_key("n", "h", "c")) == keys.Key("endpoint", network="n", node="h", name="c")
    for other in ("/other/x", "/composenet/v1/nodes/", "/composenet/v1/nodes/a/b", "/composenet/v1/addresses/n/x",
                  "/composenet/v1/addresses/n/10.0.0.01", "/composenet/v1/what/x", "/composenet/v1/members//h"):
        assert keys.parse_key(other) is None, other
    for bad in ("", "a/b", ".."):
        with pytest.raises(ValueError, match="cannot be part of a store key"):
            keys.network_key(bad)
    with pytest.raises(ValueError):
        keys.address_key("n", "10.0.0.300")


def test_prefix_ranges_hold_exactly_their_keys():
    p = keys.members_prefix("fab")
    end = keys.prefix_end(p)
    assert end == "/composenet/v1/members/fab0"
    inside = [keys.member_key("fab", "h1"), keys.member_key("fab", "zz")]
    outside = [keys.member_key("fab2", "h1"), keys.member_key("fa", "h1"), keys.network_key("fab")]
    assert all(p <= k < end for k in inside) and not any(p <= k < end for k in outside)


@pytest.mark.parametrize("record", [
    NodeRecord("h1", "192.0.2.1", "boot/4026531840", ("10.99.0.0/24", "172.17.0.0/16"), 1700000000.25),
    NET, MemberRecord("h1", "192.0.2.1", "shop"), AddressLease("h1", "shop-web-1"), EP,
])
def test_records_round_trip_as_compact_sorted_json(record):
    raw = encode(record)
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    assert decode(type(record), "k", raw) == record


@pytest.mark.parametrize("cls, value, error", [
    (NetworkRecord, b"not json", "/k: not JSON"),
    (NetworkRecord, b"[1]", "/k: expected a JSON object"),
    (NetworkRecord, {**json.loads(encode(NET)), "subnet": "10.0.3.0/33"}, "/k: subnet: '10.0.3.0/33' is not an IPv4 network"),
    (NetworkRecord, {**json.loads(encode(NET)), "gateway": "10.9.9.9"}, "/k: gateway: 10.9.9.9 is not in 10.0.3.0/24"),
    (NetworkRecord, {**json.loads(encode(NET)), "vni": 0}, "/k: vni: expected a whole number 1-16777215, got 0"),
    (NetworkRecord, {**json.loads(encode(NET)), "vni": True}, "/k: vni: expected a whole number"),
    (EndpointRecord, {**json.loads(encode(EP)), "mac": "02:42"}, "/k: mac: '02:42' is not a MAC address"),
    (EndpointRecord, {**json.loads(encode(EP)), "aliases": [""]}, "/k: aliases: expected a list of strings"),
    (EndpointRecord, {**json.loads(encode(EP)), "ipv4": "fe80::1"}, "/k: ipv4: 'fe80::1' is not an IPv4 address"),
    (MemberRecord, {"node": "h1"}, "/k: vtep: expected a non-empty string, got None"),
    (NodeRecord, {"node": "h1", "address": "192.0.2.1", "host_id": "x", "routes": ["nope"]},
     "/k: routes: 'nope' is not an IPv4 network"),
])
def test_bad_records_name_the_key_and_the_field(cls, value, error):
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    with pytest.raises(RecordError) as e:
        decode(cls, "/k", raw)
    assert str(e.value).startswith(error)


def test_endpoint_macs_are_lowered_and_optional_fields_default():
    obj = {**json.loads(encode(EP)), "mac": "02:42:0A:00:03:07"}
    del obj["hostname"], obj["aliases"], obj["project"]
    ep = decode(EndpointRecord, "k", json.dumps(obj))
    assert ep.mac == "02:42:0a:00:03:07" and ep.hostname is None and ep.aliases == () and ep.project == ""


def test_host_records_round_trip_merge_and_name_their_file():
    recs = HostRecords("h2", (NET,), (("fabric", MemberRecord("h2", "192.0.2.2", "shop")),),
                       (("fabric", "10.0.3.7", AddressLease("h2", "shop-web-1")),), (EP,))
    assert HostRecords.from_json(json.loads(json.dumps(recs.to_json())), "f") == recs
    other = HostRecords("h2", (NET,), (), (("fabric", "10.0.3.8", AddressLease("h2", "x-1")),), ())
    merged = recs.merged(other)
    assert merged.networks == (NET,) and len(merged.addresses) == 2 and merged.endpoints == (EP,)
    bad = recs.to_json()
    bad["addresses"][0]["ip"] = "10.0.3.999"
    with pytest.raises(RecordError, match=r"^/run/p/cluster.json: addresses\[0\]: ip: '10.0.3.999' is not an IPv4"):
        HostRecords.from_json(bad, "/run/p/cluster.json")
