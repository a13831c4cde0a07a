"""The cluster agent between simulated hosts (root; cluster_lab.py), with real packets and real
DNS answers.

Each host runs the agent (TTL 3 s) and what part B's `up` will make: the network joined and its
endpoints published in the store (composenet.cluster.host), a bridge with the gateway, a VXLAN
device with learning off labelled for the network, the project's nft table with the VTEP set
and its guard, container namespaces, and the project's resolver (a hand-written config in the
host's run directory). The tests assert what the agents program: FDB, neighbour and bridge
entries, the VTEP set, names; pings across hosts over VXLAN with learning off; VXLAN from an
underlay address that is no member dropped (counters, with the member's traffic as the positive
control); a killed host gone from the others within TTL + 2 s; the store stopped: data plane and
names stay, and everything converges when it returns.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tests.integration.cluster_lab import (
    Host,
    Lab,
    add_container,
    agent_log,
    build_overlay,
    call_in_netns,
    join_and_publish,
    registry_on,
    reload_agent,
    start_agent,
    vxlan_counters,
    wait_until,
)

TTL = 3
PROJECT = "p"
NET = "fab"
LOCAL_NET = "p_loc"  # a local (non-cluster) network of h1: its containers never see remote names
MACS = {"p-a-1": "02:42:0a:00:00:0a", "p-web-1@h1": "02:42:0a:00:00:1a", "p-b-1": "02:42:0a:00:00:0b",
        "p-web-1@h2": "02:42:0a:00:00:2a", "p-x-1": "02:42:0a:00:00:3a"}


class Cluster:
    """Two member hosts (h1: a, web; h2: b, web), h3 a bystander with the same VNI by hand."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.h1, self.h2, self.h3 = lab.hosts
        self.ips: dict[str, str] = {}  # "<container>@<host>" -> address
        self.record = None
        self.resolvers: dict[str, object] = {}

    def up(self) -> None:
        for h in (self.h1, self.h2):
            start_agent(self.lab, h, ttl=TTL)
        self.record, ips = join_and_publish(self.lab, self.h1, PROJECT, NET, [
            ("p-a-1", "a", MACS["p-a-1"], ("alias-a",)), ("p-web-1", "web", MACS["p-web-1@h1"], ())])
        self.ips.update({f"{n}@h1": ip for n, ip in ips.items()})
        _, ips = join_and_publish(self.lab, self.h2, PROJECT, NET, [
            ("p-b-1", "b", MACS["p-b-1"], ("alias-b",)), ("p-web-1", "web", MACS["p-web-1@h2"], ())])
        self.ips.update({f"{n}@h2": ip for n, ip in ips.items()})
        prefix = int(self.record.subnet.split("/")[1])
        for h in (self.h1, self.h2, self.h3):
            build_overlay(h, PROJECT, NET, self.record.vni, self.record.gateway, prefix)
        for key, ip in self.ips.items():
            name, host = key.split("@")
            add_container(self.host(host), name, NET, ip, prefix, MACS.get(key, MACS.get(name, "")),
                          self.record.gateway)
        # h1's local network, with a container on it only
        self.h1.run("sh", "-ec", "ip link add cnb-p_loc type bridge\nip addr add 172.31.0.1/24 dev cnb-p_loc\n"
                                 "ip link set cnb-p_loc up")
        add_container(self.h1, "p-c-1", LOCAL_NET, "172.31.0.2", 24, "02:42:ac:1f:00:02", "172.31.0.1")
        for h in (self.h1, self.h2):
            self.start_resolver(h)
            assert reload_agent(h), agent_log(h)

    def host(self, name: str) -> Host:
        return {"h1": self.h1, "h2": self.h2, "h3": self.h3}[name]

    def start_resolver(self, h: Host) -> None:
        local = {k.split("@")[0]: ip for k, ip in self.ips.items() if k.endswith("@" + h.name)}
        containers = [{"name": n, "service": n.split("-")[1], "endpoints": [{"network": NET, "ipv4": ip,
                                                                              "aliases": ["alias-" + n.split("-")[1]]}]}
                      for n, ip in sorted(local.items())]
        listeners = [{"network": NET, "address": self.record.gateway, "port": 53}]
        if h is self.h1:
            containers.append({"name": "p-c-1", "service": "c", "endpoints": [{"network": LOCAL_NET,
                                                                               "ipv4": "172.31.0.2"}]})
            listeners.append({"network": LOCAL_NET, "address": "172.31.0.1", "port": 53})
        cfg = {"project": PROJECT, "pidfile": "/run/composenet/p/dns.pid", "upstreams": [], "listeners": listeners,
               "containers": containers}
        Path(h.path("/run/composenet/p")).mkdir(exist_ok=True)
        Path(h.path("/run/composenet/p/dns.json")).write_text(json.dumps(cfg))
        h.popen(sys.executable, "-m", "composenet.dns.server",
                "/run/composenet/p/dns.json", log=self.lab.tmp / f"dns-{h.name}.log")
        wait_until(lambda: Path(h.path("/run/composenet/p/dns.pid")).exists(), 10, f"resolver of {h.name}")

    def wait(self, cond, timeout: float, what: str):  # type: ignore[no-untyped-def]
        """wait_until, and on failure the agents' logs in the message (what they saw and did)."""
        try:
            return wait_until(cond, timeout, what)
        except AssertionError as e:
            logs = "".join(f"\n--- agent of {h.name}:\n{agent_log(h)[-3000:]}" for h in (self.h1, self.h2))
            raise AssertionError(f"{e}{logs}") from None

    # -- probes ---------------------------------------------------------------------------------

    def ping(self, h: Host, ns: str, ip: str) -> bool:
        return h.run("ip", "netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "1", ip, check=False).returncode == 0

    def dns(self, h: Host, ns: str, server: str, name: str) -> tuple[str, list[str]]:
        def go() -> tuple[str, list[str]]:
            q = DNSRecord.question(name, "A")
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.7)
            try:
                for _ in range(3):
                    try:
                        s.sendto(q.pack(), (server, 53))
                        data, _ = s.recvfrom(4096)
                    except TimeoutError:
                        continue
                    r = DNSRecord.parse(data)
                    return RCODE[r.header.rcode], sorted(str(rr.rdata) for rr in r.rr if rr.rtype == QTYPE.A)
                return "TIMEOUT", []
            finally:
                s.close()

        return call_in_netns(h.path(f"/run/netns/{ns}"), go)

    def fdb(self, h: Host) -> list[dict]:
        return json.loads(h.run("bridge", "-j", "fdb", "show", "dev", f"cnx-{NET}").stdout or "[]")

    def neighbours(self, h: Host) -> list[dict]:
        return json.loads(h.run("ip", "-j", "neigh", "show", "dev", f"cnx-{NET}").stdout or "[]")

    def vteps(self, h: Host) -> list[str]:
        out = json.loads(h.run("nft", "-j", "list", "set", "inet", f"composenet_{PROJECT}", "cluster_vteps").stdout)
        return sorted(e for it in out["nftables"] if "set" in it for e in it["set"].get("elem", []))


@pytest.fixture
def cluster(tmp_path):
    lab = Lab(tmp_path, hosts=3)
    lab.setup()
    try:
        lab.start_etcd()
        c = Cluster(lab)
        c.up()
        yield c
    finally:
        lab.teardown()
        assert lab.leftovers() == []


def test_agents_program_the_overlay_and_the_names(cluster: Cluster):
    c = cluster
    h1, h2, h3 = c.h1, c.h2, c.h3
    b, web2, a = c.ips["p-b-1@h2"], c.ips["p-web-1@h2"], c.ips["p-a-1@h1"]
    # The kernel objects of h1 for h2's endpoints: learning off, unicast + flood FDB to h2's VTEP,
    # static bridge entries, permanent neighbours (the proxy answers ARP locally), the VTEP set.
    info = json.loads(h1.run("ip", "-d", "-j", "link", "show", f"cnx-{NET}").stdout)[0]["linkinfo"]["info_data"]
    assert info["learning"] is False and info["proxy"] is True
    fdb = c.fdb(h1)
    assert {(e["mac"], e.get("dst")) for e in fdb if "self" in e.get("flags", [])} == {
        (MACS["p-b-1"], h2.addr), (MACS["p-web-1@h2"], h2.addr), ("00:00:00:00:00:00", h2.addr)}
    assert {e["mac"] for e in fdb if e.get("master") and e.get("state") == "static"} == {
        MACS["p-b-1"], MACS["p-web-1@h2"]}
    assert {(n["dst"], n["lladdr"]) for n in c.neighbours(h1) if "PERMANENT" in n["state"]} == {
        (b, MACS["p-b-1"]), (web2, MACS["p-web-1@h2"])}
    assert c.vteps(h1) == [h2.addr] and c.vteps(h2) == [h1.addr]
    # Real packets across hosts, over VXLAN without learning.
    assert c.ping(h1, "p-a-1", b) and c.ping(h2, "p-b-1", a)
    # Names, each host's own resolver: remote containers by name, alias and service; a service
    # with replicas on both hosts answers both; a clashing container name is local, the remote
    # one NAME.NODE; a container of a local network sees none of it (a project name: NXDOMAIN).
    gw = c.record.gateway
    assert c.dns(h1, "p-a-1", gw, "b") == ("NOERROR", [b])
    assert c.dns(h1, "p-a-1", gw, "alias-b") == ("NOERROR", [b])
    assert c.dns(h1, "p-a-1", gw, "p-b-1") == ("NOERROR", [b])
    assert c.dns(h1, "p-a-1", gw, "web") == ("NOERROR", sorted([c.ips["p-web-1@h1"], web2]))
    assert c.dns(h1, "p-a-1", gw, "p-web-1") == ("NOERROR", [c.ips["p-web-1@h1"]])
    assert c.dns(h1, "p-a-1", gw, "p-web-1.h2") == ("NOERROR", [web2])
    assert c.dns(h2, "p-b-1", gw, "a") == ("NOERROR", [a])
    assert c.dns(h2, "p-b-1", gw, "web") == ("NOERROR", sorted([c.ips["p-web-1@h1"], web2]))
    assert c.dns(h1, "p-c-1", "172.31.0.1", "c") == ("NOERROR", ["172.31.0.2"])  # positive control
    assert c.dns(h1, "p-c-1", "172.31.0.1", "b") == ("NXDOMAIN", [])
    # VXLAN from an underlay address that is no member (h3: same VNI, entries by hand) is dropped
    # by h2's guard; h1's packets (a member) pass the same rule set.
    x = "10.0.0.200"
    prefix = int(c.record.subnet.split("/")[1])
    add_container(h3, "p-x-1", NET, x, prefix, MACS["p-x-1"], c.record.gateway)
    h3.run("sh", "-ec", f"bridge fdb add {MACS['p-b-1']} dev cnx-{NET} dst {h2.addr} self permanent\n"
                        f"ip neigh add {b} lladdr {MACS['p-b-1']} dev cnx-{NET} nud permanent")
    before = vxlan_counters(h2, PROJECT)
    assert not c.ping(h3, "p-x-1", b)
    middle = vxlan_counters(h2, PROJECT)
    assert c.ping(h1, "p-a-1", b)
    after = vxlan_counters(h2, PROJECT)
    drop, ok = "cn:cluster:vxlan-unknown-vtep", "cn:cluster:vxlan"
    # (members' multicast, e.g. IPv6 neighbour discovery, reaches the flood entries meanwhile:
    # "ok" counts it too; the drop rule sees h3's packets only)
    assert middle[drop] > before[drop]
    assert after[ok] > middle[ok] and after[drop] == middle[drop]
    # What `composenet node ls` will show (part B): every node, its VTEP, networks, containers.
    rows = registry_on(c.lab, h1, lambda reg: reg.nodes())
    assert [(r.node, r.address, r.networks, r.containers) for r in rows] == [
        ("h1", h1.addr, (NET,), 2), ("h2", h2.addr, (NET,), 2)]
    assert all(r.last_seen is not None and 0 <= r.last_seen <= TTL for r in rows)


def test_a_killed_host_vanishes_from_the_others_within_ttl(cluster: Cluster):
    c = cluster
    h1, h2 = c.h1, c.h2
    b = c.ips["p-b-1@h2"]
    gw = c.record.gateway
    assert c.dns(h1, "p-a-1", gw, "b") == ("NOERROR", [b]) and c.vteps(h1) == [h2.addr]
    c.lab.kill_host(h2)  # its agent SIGKILLed, its namespaces gone: no one renews its lease
    # Once h2's records are gone, "b" is no name of the project any more: it is forwarded, and
    # this resolver has no upstream (SERVFAIL).
    killed = time.monotonic()

    def gone() -> bool:
        macs = {e["mac"] for e in c.fdb(h1)}
        return (not macs & {MACS["p-b-1"], MACS["p-web-1@h2"]} and c.vteps(h1) == []
                and not c.neighbours(h1) and c.dns(h1, "p-a-1", gw, "b") == ("SERVFAIL", []))

    c.wait(gone, TTL + 2, "h2 gone from h1 (FDB, neighbours, VTEP set, names)")
    assert time.monotonic() - killed <= TTL + 2
    assert c.dns(h1, "p-a-1", gw, "web") == ("NOERROR", [c.ips["p-web-1@h1"]])  # h1's replica stays
    nodes = c.lab.store(lambda st: [kv.key.rsplit("/", 1)[1] for kv in st.range("/composenet/v1/nodes/")[1]])
    assert nodes == ["h1"]


def test_store_down_keeps_the_data_plane_and_names_then_converges(cluster: Cluster):
    c = cluster
    h1, h2 = c.h1, c.h2
    b, gw = c.ips["p-b-1@h2"], c.record.gateway
    c.lab.stop_etcd()
    c.wait(lambda: "store lost" in agent_log(h1), 15, "h1's agent notices the store is gone")
    # Nothing is removed: packets and names from the last known state.
    assert c.ping(h1, "p-a-1", b)
    assert c.dns(h1, "p-a-1", gw, "b") == ("NOERROR", [b])
    assert {e["mac"] for e in c.fdb(h1)} >= {MACS["p-b-1"], MACS["p-web-1@h2"]}
    c.lab.start_etcd()
    # The agents reconnect (leases survive a restart of etcd), and a new endpoint on h2 reaches h1.
    c.wait(lambda: agent_log(h2).count("store reachable") >= 2, 15, "h2's agent reconnects")
    _, ips = join_and_publish(c.lab, h2, PROJECT, NET, [("p-new-1", "new", "02:42:0a:00:00:4a", ())])
    new = ips["p-new-1"]
    prefix = int(c.record.subnet.split("/")[1])
    add_container(h2, "p-new-1", NET, new, prefix, "02:42:0a:00:00:4a", gw)
    c.wait(lambda: c.dns(h1, "p-a-1", gw, "new") == ("NOERROR", [new]), 5, "the new name on h1")
    c.wait(lambda: c.ping(h1, "p-a-1", new), 5, "the new container reachable from h1")
    assert c.dns(h1, "p-a-1", gw, "b") == ("NOERROR", [b])


def test_a_lost_lease_is_replaced_and_the_hosts_records_published_again(cluster: Cluster):
    """h2's lease is revoked behind its agent's back (as when etcd forgot it): its records vanish
    from h1; h2's agent registers again and publishes them again from its project's file."""
    c = cluster
    h1, h2 = c.h1, c.h2
    b, gw = c.ips["p-b-1@h2"], c.record.gateway
    lease = c.lab.store(lambda s: s.get("/composenet/v1/nodes/h2").lease)
    c.lab.store(lambda s: s.revoke(lease))
    c.wait(lambda: "expired: registering again" in agent_log(h2), TTL + 2, "h2's agent notices")
    c.wait(lambda: c.dns(h1, "p-a-1", gw, "b") == ("NOERROR", [b]), 5, "h2's names back on h1")
    c.wait(lambda: c.ping(h1, "p-a-1", b), 5, "h2's container reachable again")
    new = c.lab.store(lambda s: s.get("/composenet/v1/nodes/h2").lease)
    assert new and new != lease
    leases = c.lab.store(lambda s: {kv.key: kv.lease for kv in s.range("/composenet/v1/")[1] if "/h2" in kv.key})
    assert leases and set(leases.values()) == {new}, leases


def test_down_on_every_host_leaves_nothing_in_the_store(cluster: Cluster):
    from composenet.cluster import host

    c = cluster
    h1, h2 = c.h1, c.h2
    gone = registry_on(c.lab, h2, lambda reg: host.withdraw(h2.path("/run/composenet"), reg, PROJECT))
    assert gone == []  # h1 is still a member
    c.wait(lambda: not {e["mac"] for e in c.fdb(h1)} & {MACS["p-b-1"], MACS["p-web-1@h2"]}
           and c.vteps(h1) == [], 5, "h2 gone from h1's device and VTEP set")
    gone = registry_on(c.lab, h1, lambda reg: host.withdraw(h1.path("/run/composenet"), reg, PROJECT))
    assert gone == [NET]  # the last member: the network's record went with it
    for h in (h1, h2):
        assert not Path(h.path(f"/run/composenet/{PROJECT}/cluster.json")).exists()
        h.python("-c", "from composenet.cluster import agentctl; assert agentctl.stop_agent('/run/composenet')")
    assert c.lab.store(lambda s: s.range("/composenet/v1/")[1]) == []


def test_two_hosts_sharing_a_run_directory_are_refused(tmp_path):
    """Host-wide cluster files live in the run directory: a second host (another network
    namespace) pointed at the same one is refused with the reason, the first one keeps running."""
    lab = Lab(tmp_path, hosts=2)
    lab.setup()
    try:
        lab.start_etcd()
        shared = str(tmp_path / "shared-run")
        first = start_agent(lab, lab.hosts[0], ttl=TTL, run_dir=shared)
        second = start_agent(lab, lab.hosts[1], ttl=TTL, run_dir=shared, check=False)
        assert isinstance(second, str) and second.startswith(
            f"ERROR the run directory {shared} holds the cluster agent of another host (pid {first}")
        assert Path(shared, ".cluster", "agent.pid").read_text().strip() == str(first)
        assert start_agent(lab, lab.hosts[1], ttl=TTL) != first  # its own run directory: fine
    finally:
        lab.teardown()
        assert lab.leftovers() == []


def test_a_killed_agent_vanishes_and_comes_back_with_its_records(cluster: Cluster):
    """Only h2's agent is SIGKILLed (its containers live on): h2 vanishes from h1 within TTL + 2 s;
    a new agent on h2 registers again and publishes h2's records from its project's file."""
    import os
    import signal

    c = cluster
    h1, h2 = c.h1, c.h2
    b, gw = c.ips["p-b-1@h2"], c.record.gateway
    pid = int(Path(h2.path("/run/composenet/.cluster/agent.pid")).read_text())
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    c.wait(lambda: c.vteps(h1) == [] and not c.neighbours(h1) and c.dns(h1, "p-a-1", gw, "b")[1] == [],
           TTL + 2, "h2 gone from h1 after its agent died")
    assert time.monotonic() - killed <= TTL + 2
    assert c.ping(h2, "p-b-1", c.record.gateway)  # h2's own containers never noticed
    start_agent(c.lab, h2, ttl=TTL)
    c.wait(lambda: c.dns(h1, "p-a-1", gw, "b") == ("NOERROR", [b]) and c.vteps(h1) == [h2.addr], 5,
           "h2 back on h1")
    c.wait(lambda: c.ping(h1, "p-a-1", b), 5, "h2's container reachable again")
