"""The cluster store client, watch and registry against a real etcd (root; etcd in its own
namespace, data in the test's tmp: see cluster_lab.py).

Client operations and failover; create-if-absent under contention (10 rounds of three
simultaneous allocators never hand out one address twice; three hosts creating networks at once
get distinct subnets and VNIs, or the same record for the same name); a follower that survives a
compaction and an etcd restart by re-listing; a dead node's records removed by lease expiry, a
leaving node's at once.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading

import pytest

from composenet.cluster import keys
from composenet.cluster.client import KV, cmp_absent, op_put, op_range
from composenet.cluster.errors import ClusterConflict, StoreError, StoreUnavailable
from composenet.cluster.records import AddressLease, EndpointRecord, MemberRecord, NodeRecord, decode, encode
from composenet.cluster.registry import Registry
from composenet.cluster.watch import Event, Follower, WatchCompacted, watch
from tests.integration.cluster_lab import ETCD_ADDR, ROOT, Lab, wait_until


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path, hosts=0)
    lab.setup()
    try:
        lab.start_etcd()
        yield lab
    finally:
        lab.teardown()
        assert lab.leftovers() == []


def test_client_operations(lab: Lab):
    def ops(s):
        out = {}
        rev1 = s.put("/composenet/v1/t/a", b"1")
        s.put("/composenet/v1/t/b", b"2")
        s.put("/composenet/v1/u", b"other prefix")
        rev, kvs = s.range("/composenet/v1/t/")
        out["range"] = (rev > rev1, [(kv.key, kv.value) for kv in kvs])
        out["get"] = s.get("/composenet/v1/t/a").value, s.get("/composenet/v1/t/none")
        out["create"] = s.create("/composenet/v1/t/a", b"mine"), s.create("/composenet/v1/t/c", b"3")
        r = s.txn([cmp_absent("/composenet/v1/t/b")], [op_put("/composenet/v1/t/b", b"x")],
                  [op_range("/composenet/v1/t/", prefix=True)])
        out["txn"] = r.succeeded, [kv.key for kv in r.kvs(0)]
        lease, ttl = s.grant(30)
        s.put("/composenet/v1/t/leased", b"L", lease)
        out["lease"] = ttl, s.keepalive(lease) > 0, s.get("/composenet/v1/t/leased").lease == lease
        out["revoke"] = s.revoke(lease), s.get("/composenet/v1/t/leased"), s.keepalive(lease)
        out["delete"] = s.delete("/composenet/v1/t/", prefix=True), s.range("/composenet/v1/t/")[1]
        try:
            s.put("/composenet/v1/t/z", b"z", lease)  # a revoked lease: the store says no
        except StoreError as e:
            out["refused"] = type(e).__name__, "lease not found" in e.message
        return out

    out = lab.store(ops)
    assert out["range"] == (True, [("/composenet/v1/t/a", b"1"), ("/composenet/v1/t/b", b"2")])
    assert out["get"] == (b"1", None)
    (ok_a, holder_a), (ok_c, holder_c) = out["create"]
    assert (ok_a, holder_a.value, ok_c, holder_c) == (False, b"1", True, None)
    assert out["txn"] == (False, ["/composenet/v1/t/a", "/composenet/v1/t/b", "/composenet/v1/t/c"])
    assert out["lease"] == (30, True, True)
    assert out["revoke"] == (True, None, 0)
    assert out["delete"] == (3, [])
    assert out["refused"] == ("StoreError", True)


def test_failover_and_unavailable_store(lab: Lab):
    # 127.0.0.2:1 refuses at once; the second endpoint answers: the client moves to it and stays.
    url = f"etcd://127.0.0.2:1,{ETCD_ADDR}:2379"

    def two(s):
        s.put("/composenet/v1/f", b"ok")
        return s.current, s.get("/composenet/v1/f").value

    assert lab.store(two, url=url) == (1, b"ok")

    def dead(s):
        try:
            s.status()
        except StoreUnavailable as e:
            return e.message, e.retryable
        return None

    message, retryable = lab.store(dead, url="etcd://127.0.0.2:1,127.0.0.3:1")
    assert retryable and message.startswith("cannot reach the cluster store etcd://127.0.0.2:1,127.0.0.3:1: ")
    assert "127.0.0.2:1" in message and "127.0.0.3:1" in message


def test_three_simultaneous_allocators_never_share_an_address(lab: Lab, tmp_path):
    """10 rounds: three processes start together and lease 9 addresses each from 29 free ones
    (10.50.R.0/27 minus its gateway) with create-if-absent; no address is handed out twice, each
    got what it asked for, and the store holds exactly their leases."""
    for rnd in range(10):
        net, subnet, gw = f"race{rnd}", f"10.50.{rnd}.0/27", f"10.50.{rnd}.1"
        go = tmp_path / f"go{rnd}"
        procs = []
        for i in range(3):
            out = tmp_path / f"alloc{rnd}-{i}"
            procs.append((out, subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{lab.etcd_ns}", sys.executable, "-m", "tests.integration.cluster_lab",
                 "alloc", lab.store_url, f"n{i}", net, subnet, gw, subnet, "9", str(go), str(out)],
                cwd=ROOT, stdin=subprocess.DEVNULL)))
            lab.procs.append(procs[-1][1])
        ready = [out.with_name(out.name + ".ready") for out, _ in procs]
        wait_until(lambda ready=ready: all(r.exists() for r in ready), 30, "the allocators ready")
        go.write_text("go")  # all three start leasing at once
        got: dict[str, list[str]] = {}
        for i, (out, p) in enumerate(procs):
            assert p.wait(60) == 0
            got[f"n{i}"] = out.read_text().split()
        assert all(len(v) == 9 and not any(x.startswith("ERROR") for x in v) for v in got.values()), got
        every = [ip for v in got.values() for ip in v]
        assert len(set(every)) == 27, f"round {rnd}: an address was handed out twice: {got}"
        assert gw not in every and all(ipaddress.ip_address(ip) in ipaddress.ip_network(subnet) for ip in every)

        def leases(s, net=net):
            return {kv.key.rsplit("/", 1)[1]: decode(AddressLease, kv.key, kv.value).node
                    for kv in s.range(keys.addresses_prefix(net))[1]}

        stored = lab.store(leases)
        assert stored == {ip: node for node, ips in got.items() for ip in ips}


def test_networks_created_at_once_get_distinct_subnets_and_vnis(lab: Lab):
    def create(s, node, name, out, barrier):
        barrier.wait(10)
        try:
            out[(node, name)] = Registry(s, node).ensure_network(name, routes=("10.0.1.0/24",))
        except Exception as e:  # noqa: BLE001 -- the assertion shows it
            out[(node, name)] = e

    def race(s_unused):
        from composenet.cluster.client import Store
        from composenet.cluster.settings import parse_store_url

        out: dict = {}
        barrier = threading.Barrier(6)
        threads = [threading.Thread(target=create, args=(Store(parse_store_url(lab.store_url, {})), n, name, out,
                                                         barrier))
                   for n in ("h1", "h2", "h3") for name in (f"net-{n}", "shared")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return out

    out = lab.store(race)
    assert not [v for v in out.values() if isinstance(v, Exception)], out
    own = [out[(n, f"net-{n}")] for n in ("h1", "h2", "h3")]
    shared = {out[(n, "shared")] for n in ("h1", "h2", "h3")}
    assert len(shared) == 1, "every host must get the one record of the shared network"
    records = [*own, *shared]
    assert len({r.subnet for r in records}) == 4 and len({r.vni for r in records}) == 4
    nets = [ipaddress.ip_network(r.subnet) for r in records]
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    assert ipaddress.ip_network("10.0.1.0/24") not in nets  # a host's route is avoided
    assert all(str(n).startswith("10.") and n.prefixlen == 24 for n in nets)

    def mismatch(s):
        reg = Registry(s, "h1")
        rec = out[("h1", "shared")]
        lease, _ = s.grant(30)
        reg.join("shared", "10.99.0.11", "p", lease)
        try:
            reg.ensure_network("shared", subnet="10.200.0.0/24")
        except ClusterConflict as e:
            msg = e.message
        else:
            msg = ""
        reg.leave("shared")  # the last member: the record goes
        gone = s.get(keys.network_key("shared"))
        return rec, msg, gone

    rec, msg, gone = lab.store(mismatch)
    assert msg == (f"network shared: the file says subnet 10.200.0.0/24 (the cluster's is {rec.subnet}), but the "
                   f"cluster's record /composenet/v1/networks/shared (subnet {rec.subnet}, gateway {rec.gateway}, "
                   f"VNI {rec.vni}, created by node {rec.created_by}) is in use by node(s) h1")
    assert gone is None


class Collect:
    """A follower's consumer that keeps what it was told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshots: list[tuple[int, dict[str, bytes]]] = []
        self.seen: list[Event] = []
        self.states: list[tuple[bool, str]] = []

    def snapshot(self, revision: int, kvs: list[KV]) -> None:
        with self.lock:
            self.snapshots.append((revision, {kv.key: kv.value for kv in kvs}))

    def events(self, revision: int, events: list[Event]) -> None:
        with self.lock:
            self.seen.extend(events)

    def connection(self, up: bool, why: str) -> None:
        with self.lock:
            self.states.append((up, why))

    def keys_seen(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(e.kind, e.key) for e in self.seen]


def test_watch_reports_compaction(lab: Lab):
    def go(s):
        s.put("/composenet/v1/w/a", b"1")
        rev = s.put("/composenet/v1/w/a", b"2")
        s.put("/composenet/v1/w/a", b"3")
        s.compact(rev + 1)
        try:
            for _message in watch(s, "/composenet/v1/w/", rev - 1, idle=5):
                pass  # "created", then the cancel with the compaction
        except WatchCompacted as e:
            return e.compact_revision == rev + 1
        return "no compaction reported"

    assert lab.store(go) is True


def test_follower_resyncs_after_compaction_and_etcd_restart(lab: Lab):
    collect = Collect()
    stop = threading.Event()
    prefix = "/composenet/v1/f/"

    def start(s):
        s.put(prefix + "before", b"0")
        follower = Follower(s, prefix, collect, idle=0.5)
        threading.Thread(target=follower.run, args=(stop,), daemon=True).start()
        return follower

    follower = lab.store(start)
    try:
        wait_until(lambda: follower.lists == 1 and collect.states, 10, "first listing")
        assert collect.snapshots[0][1] == {prefix + "before": b"0"}
        lab.store(lambda s: s.put(prefix + "live", b"1"))
        wait_until(lambda: ("PUT", prefix + "live") in collect.keys_seen(), 5, "a live event")
        # Compaction past the follower's revision: writes elsewhere move the store on, then the
        # next re-watch (after 0.5 s of silence) starts at a compacted revision: it lists again.
        # (No timing here: whenever the re-watch comes, its start revision is compacted.)
        def compact(s):
            s.put(prefix + "during", b"2")
            rev = 0
            for i in range(20):
                rev = s.put(f"/composenet/v1/other/{i}", b"x")
            s.compact(rev)

        before = follower.lists
        lab.store(compact)
        wait_until(lambda: follower.lists > before, 10, "a listing after the compaction")
        assert follower.compactions == 1
        assert prefix + "during" in collect.snapshots[-1][1] or ("PUT", prefix + "during") in collect.keys_seen()
        # etcd restarts: the stream breaks, the follower backs off, reconnects and lists again.
        lab.stop_etcd()
        wait_until(lambda: any(not up for up, _ in collect.states), 10, "the loss reported")
        before = follower.lists
        lab.start_etcd()
        wait_until(lambda: follower.lists > before, 15, "a listing after the restart")
        lab.store(lambda s: s.put(prefix + "after", b"3"))
        wait_until(lambda: ("PUT", prefix + "after") in collect.keys_seen(), 10, "an event after the restart")
        assert collect.snapshots[-1][1].keys() >= {prefix + "before", prefix + "live", prefix + "during"}
    finally:
        stop.set()


def test_a_dead_nodes_records_expire_and_a_leaving_nodes_go_at_once(lab: Lab):
    collect = Collect()
    stop = threading.Event()

    def setup(s):
        net = Registry(s, "n0").ensure_network("fab")
        for node in ("dead", "leaving"):
            reg = Registry(s, node)
            lease = reg.register(NodeRecord(node, f"10.99.0.{len(node)}", f"id-{node}"), ttl=2)
            reg.join("fab", "10.99.0.20", "p", lease)
            ip = reg.lease_next("fab", net.subnet, net.gateway, f"{node}-1", lease)
            reg.publish_endpoint(EndpointRecord("fab", f"{node}-1", "web", ip, "02:42:0a:00:00:02", node,
                                                "10.99.0.20"), lease)
            if node == "leaving":
                s.keepalive(lease)
        follower = Follower(s, keys.ROOT, collect, idle=5)
        threading.Thread(target=follower.run, args=(stop,), daemon=True).start()
        return follower

    def records_of(node):
        def go(s):
            return sorted(kv.key for kv in s.range(keys.ROOT)[1]
                          if f"/{node}" in kv.key or kv.value.find(f'"node":"{node}"'.encode()) >= 0)
        return go

    follower = lab.store(setup)
    try:
        wait_until(lambda: follower.lists == 1, 10, "listing")
        assert len(lab.store(records_of("dead"))) == 4  # node, member, address, endpoint
        # "leaving" goes at once: its lease is revoked.
        lease = lab.store(lambda s: s.get(keys.node_key("leaving")).lease)
        lab.store(lambda s: Registry(s, "leaving").deregister(lease))
        assert lab.store(records_of("leaving")) == []
        # "dead" never renews its 2 s lease: its records expire (DELETE events) within TTL + 2 s.
        wait_until(lambda: lab.store(records_of("dead")) == [], 4, "the dead node's records expire")
        gone = {k for kind, k in collect.keys_seen() if kind == "DELETE"}
        assert {keys.node_key("dead"), keys.member_key("fab", "dead"), keys.endpoint_key("fab", "dead", "dead-1")} <= gone
    finally:
        stop.set()


def test_records_round_trip_through_the_store(lab: Lab):
    member = MemberRecord("h1", "10.99.0.11", "p")

    def go(s):
        s.put(keys.member_key("fab", "h1"), encode(member))
        return decode(MemberRecord, "k", s.get(keys.member_key("fab", "h1")).value)

    assert lab.store(go) == member


def test_tls_with_client_certificates(tmp_path):
    """etcds:// with COMPOSENET_STORE_CA/_CERT/_KEY against an etcd that requires client
    certificates; REQUESTS_CA_BUNDLE in the environment (set on many hosts) does not override
    the store's CA; without a client certificate the store cannot be used, and says why."""
    lab = Lab(tmp_path, hosts=0)
    lab.setup()
    try:
        certs = lab.make_certs()
        lab.start_etcd(tls=certs)
        os.environ["REQUESTS_CA_BUNDLE"] = str(tmp_path / "no-such-bundle.pem")
        try:
            assert lab.store(lambda s: (s.put("/composenet/v1/tls", b"ok"), s.get("/composenet/v1/tls").value)[1]) == b"ok"
        finally:
            del os.environ["REQUESTS_CA_BUNDLE"]

        def refused(s):
            try:
                s.status()
            except StoreError as e:
                return e.message
            return None

        message = lab.store(refused, env={"COMPOSENET_STORE_CA": certs["COMPOSENET_STORE_CA"]})
        assert message and message.startswith(f"cannot reach the cluster store etcds://{ETCD_ADDR}:2379: ")
    finally:
        lab.teardown()
        assert lab.leftovers() == []


def test_static_addresses_are_checked_cluster_wide(lab: Lab):
    def go(s):
        out = {}
        h1, h2 = Registry(s, "h1"), Registry(s, "h2")
        l1, _ = s.grant(30)
        l2, _ = s.grant(30)
        h1.lease_address("fab", "10.0.0.10", "p-a-1", l1)
        h1.lease_address("fab", "10.0.0.10", "p-a-1", l1)  # again, the same container: fine
        try:
            h2.lease_address("fab", "10.0.0.10", "q-b-1", l2)
        except ClusterConflict as e:
            out["taken"] = e.message, e.hint
        out["next"] = h2.lease_next("fab", "10.0.0.0/24", "10.0.0.1", "q-b-1", l2, avoid=("10.0.0.2",))
        out["release"] = h2.release_address("fab", "10.0.0.10", "q-b-1"), h1.release_address("fab", "10.0.0.10", "p-a-1")
        out["left"] = sorted(kv.key for kv in s.range(keys.addresses_prefix("fab"))[1])
        return out

    out = lab.store(go)
    assert out["taken"] == ("network fab: address 10.0.0.10 is leased to container p-a-1 on node h1 "
                            "(/composenet/v1/addresses/fab/10.0.0.10)", "choose another ipv4_address, or leave it out")
    assert out["next"] == "10.0.0.3"  # .1 the gateway, .2 in use on the host (avoid)
    assert out["release"] == (False, True)  # only the holder releases
    assert out["left"] == ["/composenet/v1/addresses/fab/10.0.0.3"]
