"""`composenet up` with a cluster store, end to end (root; cluster_lab.py): one project name on three
simulated hosts and an etcd, real `composenet up`/`down` with COMPOSENET_STORE, real traffic.

The lab is shared by the tests of this module (building it and starting etcd costs seconds);
each test brings what it ups down again and checks that nothing of it is left, in the kernel or
in etcd, so their order does not matter. The module's last check (the fixture's teardown): no
namespace, link, table or process of the lab survives.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tests.integration.cluster_lab import Host, Lab, call_in_netns, wait_until

PROJECT = "shop"
TTL = 3  # the nodes' lease: a dead host is gone within TTL + 2 s
NETWORK = f"{PROJECT}_fabric"
# A server that answers each TCP connection and UDP datagram with the address it came from.
SERVER = (
    "import socket,threading\n"
    "t=socket.socket();t.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);t.bind(('',7000));t.listen(8)\n"
    "u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.bind(('',7000))\n"
    "def udp():\n"
    "    while True:\n"
    "        d,a=u.recvfrom(100);u.sendto(a[0].encode(),a)\n"
    "threading.Thread(target=udp,daemon=True).start()\n"
    "while True:\n"
    "    c,a=t.accept();c.sendall(a[0].encode());c.close()\n"
)


def compose(services: str) -> str:
    return f"services:\n{services}networks:\n  fabric:\n    driver: overlay\n"


def server(name: str, aliases: str = "") -> str:
    cmd = json.dumps([sys.executable, "-c", SERVER])
    nets = f"\n      fabric:\n        aliases: [{aliases}]" if aliases else " [fabric]"
    return f"  {name}:\n    command: {cmd}\n    networks:{nets}\n"


def sleeper(name: str) -> str:
    return f"  {name}:\n    command: \"sleep 600\"\n    networks: [fabric]\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("cluster-up")
    lab = Lab(tmp, hosts=3)
    try:
        lab.setup()
        lab.start_etcd()
        (tmp / "resolv.conf").write_text("nameserver 192.0.2.53\n")
        yield lab
    finally:
        lab.teardown()
        assert lab.leftovers() == []


def composenet(lab: Lab, h: Host, text: str | None, *args: str, check: bool = True,
               env: dict[str, str] | None = None):
    """`composenet -p shop ARGS` on ``h`` with the lab's store; ``text``: the host's compose file."""
    f = lab.tmp / f"{h.name}.yaml"
    if text is not None:
        f.write_text(text)
    e = {"COMPOSENET_RESOLV_CONF": str(lab.tmp / "resolv.conf"), "COMPOSENET_STORE": lab.store_url,
         "COMPOSENET_STORE_TTL": str(TTL), **(env or {})}
    return h.run(sys.executable, "-m", "composenet", "-f", str(f), "-p", PROJECT, *args, check=check, env=e,
                 timeout=90)


def store_keys(lab: Lab) -> list[str]:
    return [kv.key for kv in lab.store(lambda s: s.range("/composenet/v1/")[1])]


def resolv_ns(h: Host, container: str) -> str:
    return h.path(f"/run/netns/{container}")


def ask(h: Host, container: str, name: str) -> tuple[str, list[str]]:
    """An A query for ``name`` from ``container``'s namespace to the resolver its resolv.conf names."""
    conf = Path(h.path(f"/etc/netns/{container}/resolv.conf")).read_text()
    server_ip = next(line.split()[1] for line in conf.splitlines() if line.startswith("nameserver"))

    def go() -> tuple[str, list[str]]:
        q = DNSRecord.question(name, "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            for _ in range(3):
                try:
                    s.sendto(q.pack(), (server_ip, 53))
                    r = DNSRecord.parse(s.recvfrom(4096)[0])
                except TimeoutError:
                    continue
                return RCODE[r.header.rcode], sorted(str(rr.rdata) for rr in r.rr if rr.rtype == QTYPE.A)
        return "TIMEOUT", []

    return call_in_netns(resolv_ns(h, container), go)


def tcp_from(h: Host, container: str, ip: str) -> str:
    def go() -> str:
        with socket.create_connection((ip, 7000), timeout=3) as s:
            return s.recv(100).decode()

    return call_in_netns(resolv_ns(h, container), go)


def udp_from(h: Host, container: str, ip: str) -> str:
    def go() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            for _ in range(5):
                s.sendto(b"hi", (ip, 7000))
                try:
                    return s.recvfrom(100)[0].decode()
                except TimeoutError:
                    continue
        return "TIMEOUT"

    return call_in_netns(resolv_ns(h, container), go)


def own_ip(h: Host, container: str) -> str:
    out = h.run("ip", "-n", container, "-4", "-o", "addr", "show", "dev", "eth0").stdout
    return out.split()[3].split("/")[0]


def down_everywhere(lab: Lab) -> None:
    live = [h for h in lab.hosts if h.alive()]
    for h in live:
        composenet(lab, h, None, "down")
    for h in live:
        assert os.listdir(h.path("/run/netns")) == [], h.name
        assert h.run("nft", "list", "tables").stdout.strip() == "", h.name
        assert "cnx-" not in h.run("ip", "-o", "link").stdout, h.name
    assert store_keys(lab) == []


def test_three_hosts_names_and_traffic_across_hosts(lab: Lab):
    h1, h2, h3 = lab.hosts
    composenet(lab, h1, compose(sleeper("client")), "up")
    composenet(lab, h2, compose(server("api", "backend") + server("web")), "up")
    composenet(lab, h3, compose(server("web")), "up")
    try:
        api, web2, web3 = own_ip(h2, "shop-api-1"), own_ip(h2, "shop-web-1"), own_ip(h3, "shop-web-1")
        client = own_ip(h1, "shop-client-1")
        assert len({api, web2, web3, client}) == 4  # one address per endpoint across the cluster
        # h1 resolves h2's service by name and by alias, and a service on two hosts to both.
        for name in ("api", "backend"):
            wait_until(lambda n=name: ask(h1, "shop-client-1", n) == ("NOERROR", [api]), 5, f"{name} on h1")
        wait_until(lambda: ask(h1, "shop-client-1", "web") == ("NOERROR", sorted([web2, web3])), 5, "web on h1")
        # TCP and UDP across hosts; the server sees the client's own address: no NAT.
        assert tcp_from(h1, "shop-client-1", api) == client
        assert udp_from(h1, "shop-client-1", api) == client
        assert tcp_from(h1, "shop-client-1", web3) == client
        assert udp_from(h3, "shop-web-1", api) == web3
        # The VXLAN device learns nothing, neither itself nor as a bridge port: every remote MAC
        # is a static entry of the agent, none was learned from the traffic above.
        for h in lab.hosts:
            links = json.loads(h.run("ip", "-d", "-j", "link", "show", "type", "vxlan").stdout)
            assert len(links) == 1 and links[0]["linkinfo"]["info_data"]["learning"] is False, h.name
            port = json.loads(h.run("bridge", "-d", "-j", "link", "show", "dev", links[0]["ifname"]).stdout)[0]
            assert port["learning"] is False, (h.name, port)
            learned = [e for e in json.loads(h.run("bridge", "-j", "fdb", "show", "dev", links[0]["ifname"]).stdout)
                       if e.get("master") and e.get("state") != "static" and "permanent" not in str(e)]
            assert learned == [], (h.name, learned)
        # `node ls` lists every host with its address, network and containers.
        rows = json.loads(composenet(lab, h1, None, "node", "ls", "--format", "json").stdout)
        assert {(r["node"], r["address"], tuple(r["networks"]), r["containers"]) for r in rows} == {
            ("h1", h1.addr, (NETWORK,), 1), ("h2", h2.addr, (NETWORK,), 2), ("h3", h3.addr, (NETWORK,), 1)}
        # A second `up` changes nothing.
        again = composenet(lab, h2, None, "up")
        assert "No changes" in again.stdout + again.stderr
        plan = composenet(lab, h3, None, "plan")
        assert "No changes" in plan.stdout + plan.stderr
    finally:
        down_everywhere(lab)


def addresses(h: Host) -> dict[str, str]:
    """Every container namespace of ``h`` -> its address on the overlay."""
    return {ns: own_ip(h, ns) for ns in sorted(os.listdir(h.path("/run/netns")))}


def test_simultaneous_ups_on_three_hosts_never_hand_out_one_address_twice(lab: Lab):
    texts = {h.name: compose(sleeper("a") + sleeper("b") + "  c:\n    command: \"sleep 600\"\n    networks: [fabric]\n"
                             "    deploy: {replicas: 2}\n") for h in lab.hosts}
    for h in lab.hosts:
        (lab.tmp / f"{h.name}.yaml").write_text(texts[h.name])
    try:
        for rnd in range(10):
            procs = [h.popen(sys.executable, "-m", "composenet", "-f", str(lab.tmp / f"{h.name}.yaml"), "-p", PROJECT,
                             "up", log=lab.tmp / f"race-{h.name}.log",
                             env={"COMPOSENET_RESOLV_CONF": str(lab.tmp / "resolv.conf"),
                                  "COMPOSENET_STORE": lab.store_url, "COMPOSENET_STORE_TTL": str(TTL)})
                     for h in lab.hosts]
            for p, h in zip(procs, lab.hosts, strict=True):
                assert p.wait(120) == 0, (rnd, h.name, (lab.tmp / f"race-{h.name}.log").read_text()[-3000:])
            got = [ip for h in lab.hosts for ip in addresses(h).values()]
            assert len(got) == 12 and len(set(got)) == 12, (rnd, got)
            leases = [kv.key for kv in lab.store(lambda s: s.range(f"/composenet/v1/addresses/{NETWORK}/")[1])]
            assert len(leases) == 12, (rnd, leases)
            if rnd % 3 == 2:  # sometimes from scratch: the network record is created in the race too
                down_everywhere(lab)
    finally:
        down_everywhere(lab)


def vtep_drops(h: Host) -> int:
    out = h.run("nft", "-j", "list", "chain", "inet", f"composenet_{PROJECT}", "filter_in").stdout
    return sum(next((e["counter"]["packets"] for e in item["rule"]["expr"] if "counter" in e), 0)
               for item in json.loads(out)["nftables"]
               if "rule" in item and "unknown vtep" in item["rule"].get("comment", ""))


def test_vxlan_from_an_unknown_underlay_address_is_dropped(lab: Lab):
    h1, h2, _ = lab.hosts
    composenet(lab, h1, compose(server("api")), "up")
    composenet(lab, h2, compose(sleeper("client")), "up")
    try:
        api = own_ip(h1, "shop-api-1")
        assert tcp_from(h2, "shop-client-1", api) == own_ip(h2, "shop-client-1")  # members pass
        assert vtep_drops(h1) == 0
        vteps = h1.run("nft", "-j", "list", "set", "inet", f"composenet_{PROJECT}", "cluster_vteps").stdout
        assert h2.addr in vteps and "10.99.0.1\"" not in vteps

        def send() -> None:  # a VXLAN datagram from etcd's address: no member of the cluster
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(3):
                    s.sendto(bytes(8) + bytes(42), (h1.addr, 4789))

        call_in_netns(f"/run/netns/{lab.etcd_ns}", send)
        wait_until(lambda: vtep_drops(h1) == 3, 3, "3 drops counted")
        assert tcp_from(h2, "shop-client-1", api) == own_ip(h2, "shop-client-1")
    finally:
        down_everywhere(lab)


def test_store_down_keeps_traffic_and_names_up_fails_clearly_then_converges(lab: Lab):
    h1, h2, _ = lab.hosts
    composenet(lab, h1, compose(sleeper("client")), "up")
    composenet(lab, h2, compose(server("api", "backend")), "up")
    try:
        api, client = own_ip(h2, "shop-api-1"), own_ip(h1, "shop-client-1")
        wait_until(lambda: ask(h1, "shop-client-1", "backend") == ("NOERROR", [api]), 5, "backend on h1")
        lab.stop_etcd()
        assert tcp_from(h1, "shop-client-1", api) == client
        assert ask(h1, "shop-client-1", "backend") == ("NOERROR", [api])
        before = sorted(os.listdir(h2.path("/run/netns")))
        for cmd in ("plan", "up"):
            r = composenet(lab, h2, compose(server("api", "backend") + sleeper("extra")), cmd, check=False)
            assert r.returncode == 1 and "cluster store" in r.stderr and "hint:" in r.stderr, (cmd, r.stderr)
        assert sorted(os.listdir(h2.path("/run/netns"))) == before  # nothing touched
        assert tcp_from(h1, "shop-client-1", api) == client
        lab.start_etcd()
        composenet(lab, h2, None, "up")
        extra = own_ip(h2, "shop-extra-1")
        wait_until(lambda: ask(h1, "shop-client-1", "extra") == ("NOERROR", [extra]), 5, "extra on h1")
        assert tcp_from(h1, "shop-client-1", api) == client
    finally:
        down_everywhere(lab)


def test_a_killed_host_vanishes_from_the_others_within_ttl(lab: Lab):
    """Last in the module: h3 does not come back."""
    h1, _, h3 = lab.hosts
    composenet(lab, h1, compose(sleeper("client")), "up")
    composenet(lab, h3, compose(server("web")), "up")
    try:
        web = own_ip(h3, "shop-web-1")
        wait_until(lambda: ask(h1, "shop-client-1", "web") == ("NOERROR", [web]), 5, "web on h1")
        fdb = h1.run("bridge", "fdb", "show").stdout
        assert h3.addr in fdb
        lab.kill_host(h3)
        wait_until(lambda: ask(h1, "shop-client-1", "web")[1] == [], TTL + 2, "h3's web gone from h1's names")
        assert h3.addr not in h1.run("bridge", "fdb", "show").stdout
        assert h3.addr not in h1.run("nft", "list", "set", "inet", f"composenet_{PROJECT}", "cluster_vteps").stdout
        assert web not in h1.run("ip", "neigh", "show").stdout
        assert not [k for k in store_keys(lab) if "/h3" in k or k.endswith("h3")]
    finally:
        down_everywhere(lab)
