"""driver: overlay across two hosts (root, throwaway namespaces), with real packets.

    host 1 (project ova, service a)          host 2 (project ovb, service b)
      cnb bridge + cnx vxlan (vni 4242)        cnb bridge + cnx vxlan (vni 4242)
          ul0 192.0.2.1/24  ------- veth -------  ul0 192.0.2.2/24

Two sandboxes (each a fake host with its own outside namespace) whose host namespaces are joined
by an underlay veth the test creates. Both hosts get the same network (same subnet, VNI and
peer list naming both hosts: each leaves out its own address), each with its own ip_range
through ``${OVERLAY_RANGE}``. The test asserts TCP and UDP from a to b's overlay address (no
NAT: b sees a's overlay address), that the packets cross the underlay as VXLAN (the flood FDB
entries, b's MAC learned behind 192.0.2.2, a counter on UDP 4789 in host 2, a DF ping that fills
the 1450-byte MTU), an empty plan after `up`, the repair of a flood entry deleted by hand, a
changed peer list applied in place, and that both `down`s leave nothing.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from tests.integration.sandbox import Sandbox, sh, tcp, udp, wait_for
from tests.integration.stacks import ECHO

COMPOSE = """
services:
  @SVC@:
    command: "@PY@ @ECHO@ --tcp 8080 --udp 8080"
    networks: [ov]
networks:
  ov:
    name: fabric
    driver: overlay
    driver_opts:
      com.composenet.vxlan.peers: ${OVERLAY_PEERS:-192.0.2.1,192.0.2.2}
      com.composenet.vxlan.id: "4242"
    ipam:
      config:
        - subnet: 10.77.0.0/24
          gateway: 10.77.0.1
          ip_range: ${OVERLAY_RANGE}
"""

COUNTER_TABLE = "cnt_overlay_probe"


def write(d: Path, svc: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / "compose.yaml"
    path.write_text(COMPOSE.replace("@SVC@", svc).replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO)))
    return path


def vxlan_link(sb: Sandbox, project: str) -> dict:
    links = [lk for lk in json.loads(sh("ip", "-n", sb.host, "-d", "-j", "link", "show", "type", "vxlan").stdout or "[]")
             if lk.get("ifalias") == f"composenet:{project}/fabric/vxlan"]
    assert len(links) == 1, links
    return links[0]


def fdb(sb: Sandbox, dev: str) -> list[dict]:
    return json.loads(sh("bridge", "-n", sb.host, "-j", "fdb", "show", "dev", dev).stdout or "[]")


def flood_peers(sb: Sandbox, dev: str) -> list[str]:
    return sorted(e["dst"] for e in fdb(sb, dev) if e.get("mac") == "00:00:00:00:00:00" and e.get("dst"))


def ping(sb: Sandbox, ns: str, addr: str, size: int) -> bool:
    r = sb.run_in(ns, "ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", str(size), addr, check=False)
    return r.returncode == 0


def test_overlay_vxlan_across_two_hosts(tmp_path):
    tag = uuid.uuid4().hex[:5]
    h1, h2 = Sandbox(tmp_path / "h1", tag=tag + "a"), Sandbox(tmp_path / "h2", tag=tag + "b")
    pa, pb = f"ova{tag}", f"ovb{tag}"
    for d in (h1.tmp, h2.tmp):
        d.mkdir(parents=True)
    try:
        h1.setup()
        h2.setup()
        # The underlay: one veth between the two host namespaces.
        sh("ip", "link", "add", "ul0", "netns", h1.host, "type", "veth", "peer", "name", "ul0", "netns", h2.host)
        for sb, addr in ((h1, "192.0.2.1/24"), (h2, "192.0.2.2/24")):
            sb.ip(sb.host, f"addr add {addr} dev ul0")
            sb.ip(sb.host, "link set ul0 up")
        fa, fb = write(h1.tmp / "ova", "a"), write(h2.tmp / "ovb", "b")
        h1.up(fa, pa, env={"OVERLAY_RANGE": "10.77.0.64/28"})
        h2.up(fb, pb, env={"OVERLAY_RANGE": "10.77.0.80/28"})
        for sb, f, p, rng in ((h1, fa, pa, "10.77.0.64/28"), (h2, fb, pb, "10.77.0.80/28")):
            r = sb.composenet("-f", str(f), "-p", p, "plan", "--detailed-exitcode", check=False, cwd=str(sb.tmp),
                              env={"OVERLAY_RANGE": rng})
            assert r.returncode == 0, r.stdout + r.stderr

        a_ns, b_ns = f"{pa}-a-1", f"{pb}-b-1"
        a_ip, b_ip = h1.ipv4(a_ns), h2.ipv4(b_ns)
        assert (a_ip, b_ip) == ("10.77.0.64", "10.77.0.80")
        for sb, p, peer in ((h1, pa, "192.0.2.2"), (h2, pb, "192.0.2.1")):
            lk = vxlan_link(sb, p)
            info = lk["linkinfo"]["info_data"]
            assert (info["id"], info["port"], lk["mtu"]) == (4242, 4789, 1450)
            assert lk["master"].startswith("cnb-") and "UP" in lk["flags"]
            assert flood_peers(sb, lk["ifname"]) == [peer]  # its own address left out
        # A counter on VXLAN's port in host 2: proof that a's packets arrive encapsulated.
        h2.run_in(h2.host, "nft", "add", "table", "inet", COUNTER_TABLE)
        h2.run_in(h2.host, "nft", "add", "chain", "inet", COUNTER_TABLE, "in",
                  "{ type filter hook input priority -10; policy accept; }")
        h2.run_in(h2.host, "nft", "add", "rule", "inet", COUNTER_TABLE, "in", "ip", "saddr", "192.0.2.1",
                  "udp", "dport", "4789", "counter")

        # TCP and UDP from a (host 1) to b's overlay address (host 2): no NAT on the way.
        wait_for(a_ns, b_ip, 8080)
        assert (tcp(a_ns, b_ip, 8080) or "").split()[0] == a_ip
        assert (udp(a_ns, b_ip, 8080) or "").split()[0] == a_ip
        # The path MTU is the overlay's 1450: a DF ping filling it crosses; one byte more does not.
        assert ping(h1, a_ns, b_ip, 1450 - 28)
        assert not ping(h1, a_ns, b_ip, 1450 - 27)
        rules = json.loads(h2.run_in(h2.host, "nft", "-j", "list", "table", "inet", COUNTER_TABLE).stdout)
        counters = [x["rule"]["expr"][-1]["counter"] for x in rules["nftables"] if "rule" in x]
        assert counters and counters[0]["packets"] > 0, counters
        # Host 1 learned b's MAC behind host 2's underlay address.
        dev1 = vxlan_link(h1, pa)["ifname"]
        b_mac = json.loads(h2.ip(b_ns, "-j link show eth0"))[0]["address"]
        assert any(e.get("mac") == b_mac and e.get("dst") == "192.0.2.2" for e in fdb(h1, dev1)), fdb(h1, dev1)

        # Drift: a flood entry deleted by hand is in the plan, and `up` puts it back.
        sh("bridge", "-n", h1.host, "fdb", "del", "00:00:00:00:00:00", "dev", dev1, "dst", "192.0.2.2")
        assert flood_peers(h1, dev1) == []
        env1 = {"OVERLAY_RANGE": "10.77.0.64/28"}
        r = h1.composenet("-f", str(fa), "-p", pa, "plan", "--detailed-exitcode", check=False, cwd=str(h1.tmp),
                          env=env1)
        assert r.returncode == 2 and "vxlan" in r.stdout and "peers" in r.stdout, r.stdout + r.stderr
        h1.up(fa, pa, env=env1)
        assert flood_peers(h1, dev1) == ["192.0.2.2"]
        r = h1.composenet("-f", str(fa), "-p", pa, "plan", "--detailed-exitcode", check=False, cwd=str(h1.tmp),
                          env=env1)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tcp(a_ns, b_ip, 8080) or "").split()[0] == a_ip

        # A changed peer list is an in-place update of the FDB: 192.0.2.9 (host 2's second
        # underlay address) added, 192.0.2.1 (this host) still left out; then back.
        h2.ip(h2.host, "addr add 192.0.2.9/24 dev ul0")
        index = vxlan_link(h1, pa)["ifindex"]
        h1.up(fa, pa, env={**env1, "OVERLAY_PEERS": "192.0.2.1,192.0.2.2,192.0.2.9"})
        assert flood_peers(h1, dev1) == ["192.0.2.2", "192.0.2.9"]
        assert vxlan_link(h1, pa)["ifindex"] == index  # updated, not re-created
        h1.up(fa, pa, env={**env1, "OVERLAY_PEERS": "192.0.2.2"})
        assert flood_peers(h1, dev1) == ["192.0.2.2"]
        assert (udp(a_ns, b_ip, 8080) or "").split()[0] == a_ip

        h1.down(pa)
        h2.down(pb)
        h1.assert_clean(pa)
        h2.assert_clean(pb)
        for sb in (h1, h2):
            assert not [lk for lk in sb.links() if lk.get("ifname", "").startswith(("cnb-", "cnx-", "cnv-"))]
    finally:
        h2.run_in(h2.host, "nft", "delete", "table", "inet", COUNTER_TABLE, check=False)
        h1.teardown()
        h2.teardown()
