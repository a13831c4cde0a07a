"""What one host makes of the store (composenet/cluster/mirror.py, pure), how a watch message is
read (watch.py), and the agent's config (agent.py): the copy moved on by events, the records
grouped with bad ones set aside, a network device's wanted entries with conflicts reported, the
remote names for the resolver."""

from __future__ import annotations

import json

import pytest

from composenet.cluster import keys
from composenet.cluster.agent import load_agent_config
from composenet.cluster.client import KV
from composenet.cluster.mirror import ClusterView, DeviceWant, Mirror, device_want, name_records
from composenet.cluster.records import EndpointRecord, MemberRecord, NetworkRecord, NodeRecord, encode
from composenet.cluster.watch import Event, WatchBroken, WatchCompacted, _message
from composenet.errors import ComposenetError

NET = NetworkRecord("fab", "10.0.0.0/24", "10.0.0.1", 5000, created_by="h1")


def ep(node: str, name: str, ip: str, mac: str, service: str = "web", aliases: tuple[str, ...] = ()) -> EndpointRecord:
    return EndpointRecord("fab", name, service, ip, mac, node, {"h1": "192.0.2.1", "h2": "192.0.2.2",
                                                                "h3": "192.0.2.3"}[node], aliases=aliases)


def store(*records) -> list[KV]:
    out = [KV(keys.network_key("fab"), encode(NET))]
    for r in records:
        if isinstance(r, EndpointRecord):
            out.append(KV(keys.endpoint_key(r.network, r.node, r.container), encode(r), lease=7))
        elif isinstance(r, MemberRecord):
            out.append(KV(keys.member_key("fab", r.node), encode(r), lease=7))
        elif isinstance(r, NodeRecord):
            out.append(KV(keys.node_key(r.node), encode(r), lease=7))
    return out


MEMBERS = [MemberRecord("h1", "192.0.2.1"), MemberRecord("h2", "192.0.2.2"), MemberRecord("h3", "192.0.2.3")]


def test_a_device_wants_the_remote_endpoints_and_members():
    view = ClusterView.of_kvs(9, store(*MEMBERS, ep("h1", "p-a-1", "10.0.0.2", "02:42:0a:00:00:02"),
                                       ep("h2", "p-b-1", "10.0.0.3", "02:42:0a:00:00:03"),
                                       ep("h3", "p-c-1", "10.0.0.4", "02:42:0a:00:00:04")))
    want, problems = device_want(view, "fab", "h1")
    assert problems == []
    assert want == DeviceWant(
        unicast=frozenset({("02:42:0a:00:00:03", "192.0.2.2"), ("02:42:0a:00:00:04", "192.0.2.3")}),
        flood=frozenset({"192.0.2.2", "192.0.2.3"}),
        neighbours=frozenset({("10.0.0.3", "02:42:0a:00:00:03"), ("10.0.0.4", "02:42:0a:00:00:04")}),
        statics=frozenset({"02:42:0a:00:00:03", "02:42:0a:00:00:04"}))
    assert device_want(view, "other", "h1") == (DeviceWant(), [])
    assert view.leases[keys.member_key("fab", "h2")] == 7 and view.node_networks("h2") == ["fab"]


def test_conflicting_remote_claims_keep_the_first_and_say_so():
    view = ClusterView.of_kvs(9, store(ep("h2", "p-b-1", "10.0.0.3", "02:42:0a:00:00:03"),
                                       ep("h3", "p-c-1", "10.0.0.3", "02:42:0a:00:00:09"),
                                       ep("h3", "p-d-1", "10.0.0.5", "02:42:0a:00:00:03")))
    want, problems = device_want(view, "fab", "h1")
    assert want.neighbours == {("10.0.0.3", "02:42:0a:00:00:03")}
    assert problems == [
        "network fab: address 10.0.0.3 of p-c-1 on h3 is claimed twice; ignored",
        "network fab: MAC 02:42:0a:00:00:03 of p-d-1 on h3 is also behind 192.0.2.2; ignored"]


def test_bad_records_are_set_aside_with_their_key():
    kvs = store(ep("h2", "p-b-1", "10.0.0.3", "02:42:0a:00:00:03"))
    kvs.append(KV(keys.endpoint_key("fab", "h2", "broken"), b"{"))
    kvs.append(KV(keys.endpoint_key("fab", "h3", "p-b-1"), encode(ep("h2", "p-b-1", "10.0.0.3", "02:42:0a:00:00:03"))))
    kvs.append(KV("/composenet/v1/unknown/x", b"ignored"))
    view = ClusterView.of_kvs(3, kvs)
    assert [e.container for e in view.endpoints["fab"]] == ["p-b-1"]
    assert view.problems == [
        "/composenet/v1/endpoints/fab/h2/broken: not JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))",
        "/composenet/v1/endpoints/fab/h3/p-b-1: the record names ('fab', 'h2', 'p-b-1'), the key ('fab', 'h3', 'p-b-1')"]


def test_the_mirror_moves_with_events():
    m = Mirror()
    m.reset(5, store(MEMBERS[1]))
    key = keys.endpoint_key("fab", "h2", "p-b-1")
    value = encode(ep("h2", "p-b-1", "10.0.0.3", "02:42:0a:00:00:03"))
    assert m.apply(6, [Event("PUT", key, value, 6, 7)]) == {key}
    assert m.apply(7, [Event("PUT", key, value, 7, 7)]) == set()  # same value, same lease
    assert m.apply(8, [Event("DELETE", keys.member_key("fab", "h2"), b"", 8)]) == {keys.member_key("fab", "h2")}
    assert m.apply(9, [Event("DELETE", "/composenet/v1/none", b"", 9)]) == set()
    view = m.view()
    assert view.revision == 9 and view.members == {} and [e.container for e in view.endpoints["fab"]] == ["p-b-1"]


def test_remote_names_are_resolver_records():
    view = ClusterView.of_kvs(9, store(ep("h1", "p-a-1", "10.0.0.2", "02:42:0a:00:00:02"),
                                       ep("h2", "p-web-1", "10.0.0.3", "02:42:0a:00:00:03", aliases=("www",))))
    assert name_records(view, "fab", "h1") == [{
        "name": "p-web-1", "service": "web", "hostname": None, "register": True, "upstreams": None, "links": [],
        "node": "h2", "endpoints": [{"network": "fab", "ipv4": "10.0.0.3", "ipv6": None, "aliases": ["www"],
                                     "internal": False}]}]


def test_watch_messages():
    def line(obj: dict) -> bytes:
        return json.dumps(obj).encode()

    created = {"result": {"header": {"revision": "12"}, "created": True}}
    assert _message(line(created)) == (12, [], True)
    put = {"result": {"header": {"revision": "13"}, "events": [
        {"kv": {"key": "L2E=", "value": "MQ==", "mod_revision": "13", "lease": "99"}},
        {"type": "DELETE", "kv": {"key": "L2I=", "mod_revision": "13"}}]}}
    assert _message(line(put)) == (13, [Event("PUT", "/a", b"1", 13, 99), Event("DELETE", "/b", b"", 13, 0)], False)
    assert _message(line({"result": {"header": {"revision": "20"}}})) == (20, [], False)  # progress
    with pytest.raises(WatchCompacted) as e:
        _message(line({"result": {"header": {}, "canceled": True, "compact_revision": "18"}}))
    assert e.value.compact_revision == 18
    with pytest.raises(WatchBroken, match="transport is closing"):
        _message(line({"error": {"grpc_code": 14, "http_code": 503, "message": "transport is closing"}}))
    with pytest.raises(WatchBroken, match="watch canceled"):
        _message(line({"result": {"header": {}, "canceled": True}}))
    with pytest.raises(WatchBroken, match="not JSON"):
        _message(b"<html>")


def test_the_agent_config_is_checked(tmp_path):
    path = tmp_path / "agent.json"
    good = {"store": "etcd://10.99.0.1:2379", "node": "h1", "advertise": "10.99.0.11", "ttl": 3,
            "run_dir": "/run/composenet"}
    path.write_text(json.dumps(good))
    cfg = load_agent_config(str(path))
    assert (cfg.node, cfg.ttl, cfg.idle, cfg.tls_env()) == ("h1", 3, 5.0, {})
    for change, why in (({"ttl": "3"}, "ttl: expected int"), ({"node": "-x"}, "node name '-x' is not valid"),
                        ({"store": "redis://x"}, "unknown scheme"), ({"advertise": "::1"}, "not an IPv4 address"),
                        ({"ca": "/nonexistent", "store": "etcds://h"}, "no such file")):
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(ComposenetError, match=why):
            load_agent_config(str(path))
    path.write_text("[")
    with pytest.raises(ComposenetError, match="cannot read the cluster agent's config"):
        load_agent_config(str(path))
