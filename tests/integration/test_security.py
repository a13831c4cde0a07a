"""Security (issue 17), proven with real traffic from five vantage points: the host itself, a LAN
neighbour (also crafting 127.0.0.1 and ::1 destinations, and raw frames), a container on the
same network, one on another network of the project, and one of another project.

- Loopback stays loopback: what the plan's exposure table says is reachable is, from where it
  says; everything else is not, including ports published on 127.0.0.1 reached through a route
  to 127.0.0.0/8 via the host (moby/moby#41872) and the host's own loopback services reached by a
  container through its gateway (Kubernetes CVE-2020-8558).
- Forwarding stays the host's decision: `up` does not make the host a router for interfaces
  composenet does not own, and the last `down` restores the host's settings exactly.
- A port cannot be published on [::1] (refused at its FILE:LINE, nothing touched).
- No container can impersonate another: forged MAC, IPv4, ARP, IPv6 and NDP never reach their
  victim.

Each "unreachable" has a reachable control from the same vantage point in the same check, and
the attacks that are dropped are also counted by the rule that drops them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from composenet.core.resources import nft_table_name
from tests.integration.sandbox import BLOCKED, REACHED, check_matrix, dns, peer, tcp, udp, wait_for
from tests.integration.seclab import (
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    LAN6_HOST,
    LAN6_PEER,
    LAN_HOST,
    LAN_PEER,
    PRIVATE6_HOST,
    PRIVATE6_PEER,
    PRIVATE_HOST,
    PRIVATE_PEER,
    Lab,
    Sniffer,
    arp_reply,
    ether,
    eui64_link_local,
    ipv4_udp,
    ipv6_udp,
    neighbour_advert,
    router_advert,
    send_frames,
    syn_answered,
    udp_any,
    vlan,
    wait_until,
    write_stack,
)

GUARD_TABLE = "composenet-guard"  # the host-wide forwarding guard (inet), as `nft list tables` shows it


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


@pytest.fixture
def lab(tmp_path):
    sb = Lab(tmp_path)
    sb.setup()
    try:
        yield sb
    finally:
        sb.teardown()


EXPOSED = """\
services:
  web:
    command: "@PY@ @ECHO_DUAL@ --tcp 80 --tcp 7070 --udp 5353 --max-seconds 300"
    networks: [front]
    ports:
      - "8080:80"
      - "127.0.0.1:8081:80"
      - "192.0.2.1:8082:80"
      - "5353:5353/udp"
      - "127.0.0.1:5354:5353/udp"
  peer:
    networks: [front]
  other:
    networks: [back]
  db:
    command: "@PY@ @ECHO@ --tcp 5432 --max-seconds 300"
    networks: [hidden]
networks:
  front:
    enable_ipv6: true
  back: {}
  hidden:
    internal: true
"""

NEIGHBOUR = """\
services:
  q:
    networks: [qnet]
networks:
  qnet: {}
"""

# What `plan` promises for EXPOSED: (host address:port/protocol, scope).
EXPOSURE_ROWS = [
    ("*:5353/udp", "every host address, from anywhere"),
    ("127.0.0.1:5354/udp", "host loopback only"),
    ("*:8080/tcp", "every host address, from anywhere"),
    ("127.0.0.1:8081/tcp", "host loopback only"),
    ("192.0.2.1:8082/tcp", "address 192.0.2.1 only"),
]


def exposure_rows(plan_text: str) -> list[tuple[str, str]]:
    rows = []
    for line in plan_text.split("Exposure:\n", 1)[1].split("\n\n", 1)[0].splitlines():
        m = re.match(r"\s+web\s+(\S+) -> .* \((.+)\)$", line)
        assert m, line
        rows.append((m[1], m[2]))
    return rows


def test_exposure_table_holds_from_five_vantage_points(lab: Lab, tmp_path) -> None:
    """For every row of the exposure table: reachable where it says, from the host, the LAN, a
    container on the same network, one on another network and one of another project, and
    nowhere else, with and without br_netfilter. Unpublished ports, the internal network and the
    resolver stay closed to the LAN."""
    sb, pa, pb = lab, project(), project()
    exposed = write_stack(tmp_path, "exposed", EXPOSED)
    neighbour = write_stack(tmp_path, "neighbour", NEIGHBOUR)
    r = sb.plan(exposed, pa)
    assert r.returncode == 2, r.stdout + r.stderr
    assert sorted(exposure_rows(r.stdout)) == sorted(EXPOSURE_ROWS), r.stdout
    sb.up(exposed, pa)
    sb.up(neighbour, pb)
    web, peer, other, db, q = f"{pa}-web-1", f"{pa}-peer-1", f"{pa}-other-1", f"{pa}-db-1", f"{pb}-q-1"
    sb.serve(sb.host, "--bind", "127.0.0.1", "--tcp", "9999", "--udp", "9999")  # a host service on loopback only
    wait_for(sb.host, "127.0.0.1", 9999)
    wait_for(web, "127.0.0.1", 80)
    wait_for(web, "127.0.0.1", 5353, "udp")
    wait_for(db, "127.0.0.1", 5432)

    web_ip, web6, db_ip = sb.ipv4(web), sb.ipv6(web), sb.ipv4(db)
    gw_front, gw_back, gw_q = sb.gateway_for(web_ip), sb.gateway_for(sb.ipv4(other)), sb.gateway_for(sb.ipv4(q))
    for net in (sb.subnet(web), sb.subnet(other), sb.subnet(db)):  # the LAN may route to every network
        sb.ip(sb.lan, f"route add {net} via {LAN_HOST}")
    sb.ip(sb.lan, f"-6 route add {ipaddress.ip_interface(web6 + '/64').network} via {LAN6_HOST}")
    # Every non-host vantage point sends 127.0.0.0/8 to its gateway (the attack of the issue).
    sb.route_loopback(sb.lan, LAN_HOST)
    for ns, gw in ((peer, gw_front), (other, gw_back), (q, gw_q)):
        sb.route_loopback(ns, gw)

    wait_for(sb.lan, LAN_HOST, 8080)  # the LAN's first contact (ND, ARP) settled: the paths work
    wait_for(sb.lan, LAN6_HOST, 8080)
    H, L, P, OT, Q = sb.host, sb.lan, peer, other, q  # the five vantage points
    probes = {
        # *:8080/tcp, every host address
        "H 127.0.0.1:8080": (tcp, (H, "127.0.0.1", 8080)),
        "H lan address:8080": (tcp, (H, LAN_HOST, 8080)),
        "L lan address:8080": (tcp, (L, LAN_HOST, 8080)),
        "L [lan address]:8080": (tcp, (L, LAN6_HOST, 8080)),
        "L 127.0.0.1:8080 (routed to the host)": (tcp, (L, "127.0.0.1", 8080)),
        "P gateway:8080 (hairpin)": (tcp, (P, gw_front, 8080)),
        "P lan address:8080": (tcp, (P, LAN_HOST, 8080)),
        "O lan address:8080": (tcp, (OT, LAN_HOST, 8080)),
        "Q lan address:8080": (tcp, (Q, LAN_HOST, 8080)),
        "Q 127.0.0.1:8080 (via its gateway)": (tcp, (Q, "127.0.0.1", 8080)),
        # 127.0.0.1:8081/tcp, host loopback only
        "H 127.0.0.1:8081": (tcp, (H, "127.0.0.1", 8081)),
        "H lan address:8081": (tcp, (H, LAN_HOST, 8081)),
        "L lan address:8081": (tcp, (L, LAN_HOST, 8081)),
        "L 127.0.0.1:8081 (routed to the host)": (tcp, (L, "127.0.0.1", 8081)),
        "P gateway:8081": (tcp, (P, gw_front, 8081)),
        "P 127.0.0.1:8081 (via its gateway)": (tcp, (P, "127.0.0.1", 8081)),
        "O 127.0.0.1:8081 (via its gateway)": (tcp, (OT, "127.0.0.1", 8081)),
        "Q 127.0.0.1:8081 (via its gateway)": (tcp, (Q, "127.0.0.1", 8081)),
        "Q lan address:8081": (tcp, (Q, LAN_HOST, 8081)),
        # 192.0.2.1:8082/tcp, that address only
        "H lan address:8082": (tcp, (H, LAN_HOST, 8082)),
        "H 127.0.0.1:8082": (tcp, (H, "127.0.0.1", 8082)),
        "H uplink address:8082": (tcp, (H, "203.0.113.1", 8082)),
        "L lan address:8082": (tcp, (L, LAN_HOST, 8082)),
        "L 127.0.0.1:8082 (routed to the host)": (tcp, (L, "127.0.0.1", 8082)),
        "P lan address:8082": (tcp, (P, LAN_HOST, 8082)),
        "P gateway:8082": (tcp, (P, gw_front, 8082)),
        "O lan address:8082": (tcp, (OT, LAN_HOST, 8082)),
        "Q lan address:8082": (tcp, (Q, LAN_HOST, 8082)),
        # *:5353/udp, every host address
        "H 127.0.0.1:5353/udp": (udp, (H, "127.0.0.1", 5353)),
        "L lan address:5353/udp": (udp, (L, LAN_HOST, 5353)),
        "L [lan address]:5353/udp": (udp_any, (L, LAN6_HOST, 5353)),
        "L 127.0.0.1:5353/udp (routed to the host)": (udp, (L, "127.0.0.1", 5353)),
        "Q lan address:5353/udp": (udp, (Q, LAN_HOST, 5353)),
        # 127.0.0.1:5354/udp, host loopback only
        "H 127.0.0.1:5354/udp": (udp, (H, "127.0.0.1", 5354)),
        "L lan address:5354/udp": (udp, (L, LAN_HOST, 5354)),
        "L 127.0.0.1:5354/udp (routed to the host)": (udp, (L, "127.0.0.1", 5354)),
        "P 127.0.0.1:5354/udp (via its gateway)": (udp, (P, "127.0.0.1", 5354)),
        "Q 127.0.0.1:5354/udp (via its gateway)": (udp, (Q, "127.0.0.1", 5354)),
        # the host's own loopback service (not composenet's)
        "H 127.0.0.1:9999": (tcp, (H, "127.0.0.1", 9999)),
        "P host 127.0.0.1:9999 (via its gateway)": (tcp, (P, "127.0.0.1", 9999)),
        "P host 127.0.0.1:9999/udp (via its gateway)": (udp, (P, "127.0.0.1", 9999)),
        "O host 127.0.0.1:9999 (via its gateway)": (tcp, (OT, "127.0.0.1", 9999)),
        "Q host 127.0.0.1:9999 (via its gateway)": (tcp, (Q, "127.0.0.1", 9999)),
        "Q host 127.0.0.1:9999/udp (via its gateway)": (udp, (Q, "127.0.0.1", 9999)),
        "L host 127.0.0.1:9999 (routed to the host)": (tcp, (L, "127.0.0.1", 9999)),
        # not published: web's 7070 and 80 themselves, the internal network's db
        "H web:7070": (tcp, (H, web_ip, 7070)),
        "P web:7070 (same network)": (tcp, (P, web_ip, 7070)),
        "L web:7070 (routed)": (tcp, (L, web_ip, 7070)),
        "L web:80 (routed)": (tcp, (L, web_ip, 80)),
        "L [web]:80 (routed)": (tcp, (L, web6, 80)),
        "L lan address:7070": (tcp, (L, LAN_HOST, 7070)),
        "O web:7070": (tcp, (OT, web_ip, 7070)),
        "Q web:7070": (tcp, (Q, web_ip, 7070)),
        "H db:5432": (tcp, (H, db_ip, 5432)),
        "L db:5432 (routed)": (tcp, (L, db_ip, 5432)),
        "P db:5432": (tcp, (P, db_ip, 5432)),
    }
    expect = {
        "H 127.0.0.1:8080": gw_front,
        "H lan address:8080": REACHED,
        "L lan address:8080": LAN_PEER,
        "L [lan address]:8080": LAN6_PEER,
        "L 127.0.0.1:8080 (routed to the host)": BLOCKED,
        "P gateway:8080 (hairpin)": gw_front,
        "P lan address:8080": gw_front,
        "O lan address:8080": REACHED,
        "Q lan address:8080": REACHED,
        "Q 127.0.0.1:8080 (via its gateway)": BLOCKED,
        "H 127.0.0.1:8081": gw_front,
        "H lan address:8081": BLOCKED,
        "L lan address:8081": BLOCKED,
        "L 127.0.0.1:8081 (routed to the host)": BLOCKED,
        "P gateway:8081": BLOCKED,
        "P 127.0.0.1:8081 (via its gateway)": BLOCKED,
        "O 127.0.0.1:8081 (via its gateway)": BLOCKED,
        "Q 127.0.0.1:8081 (via its gateway)": BLOCKED,
        "Q lan address:8081": BLOCKED,
        "H lan address:8082": REACHED,
        "H 127.0.0.1:8082": BLOCKED,
        "H uplink address:8082": BLOCKED,
        "L lan address:8082": LAN_PEER,
        "L 127.0.0.1:8082 (routed to the host)": BLOCKED,
        "P lan address:8082": gw_front,
        "P gateway:8082": BLOCKED,
        "O lan address:8082": REACHED,
        "Q lan address:8082": REACHED,
        "H 127.0.0.1:5353/udp": gw_front,
        "L lan address:5353/udp": LAN_PEER,
        "L [lan address]:5353/udp": LAN6_PEER,
        "L 127.0.0.1:5353/udp (routed to the host)": BLOCKED,
        "Q lan address:5353/udp": REACHED,
        "H 127.0.0.1:5354/udp": gw_front,
        "L lan address:5354/udp": BLOCKED,
        "L 127.0.0.1:5354/udp (routed to the host)": BLOCKED,
        "P 127.0.0.1:5354/udp (via its gateway)": BLOCKED,
        "Q 127.0.0.1:5354/udp (via its gateway)": BLOCKED,
        "H 127.0.0.1:9999": "127.0.0.1",
        "P host 127.0.0.1:9999 (via its gateway)": BLOCKED,
        "P host 127.0.0.1:9999/udp (via its gateway)": BLOCKED,
        "O host 127.0.0.1:9999 (via its gateway)": BLOCKED,
        "Q host 127.0.0.1:9999 (via its gateway)": BLOCKED,
        "Q host 127.0.0.1:9999/udp (via its gateway)": BLOCKED,
        "L host 127.0.0.1:9999 (routed to the host)": BLOCKED,
        "H web:7070": REACHED,
        "P web:7070 (same network)": REACHED,
        "L web:7070 (routed)": BLOCKED,
        "L web:80 (routed)": BLOCKED,
        "L [web]:80 (routed)": BLOCKED,
        "L lan address:7070": BLOCKED,
        "O web:7070": BLOCKED,
        "Q web:7070": BLOCKED,
        "H db:5432": REACHED,
        "L db:5432 (routed)": BLOCKED,
        "P db:5432": BLOCKED,
    }
    table_a, table_b = nft_table_name(pa), nft_table_name(pb)

    def guard_drops() -> int:
        return sum(sb.rule_packets("inet", t, "raw_pre", "loopback guard") for t in (table_a, table_b))

    lan_mac = sb.mac(sb.host, "lan0")
    drops_seen = 0  # loopback guard drops counted so far
    mode = sb.bridge_nf_call_iptables()
    for br_nf in ([mode, 1 - mode] if mode is not None else [None]):
        if br_nf is not None:
            sb.bridge_nf_call_iptables(br_nf)
        before = drops_seen
        check_matrix(probes, expect)
        # The crafted loopback probes did arrive, and the loopback guard dropped them.
        drops_seen = guard_drops()
        assert drops_seen > before
        # The resolver answers its own network only: not the LAN, not another project.
        assert dns(P, gw_front, "web")[0] == "NOERROR"
        assert dns(L, gw_front, "web") == ("TIMEOUT", [])
        assert dns(Q, gw_q, "q")[0] == "NOERROR"
        assert dns(Q, gw_front, "web") == ("TIMEOUT", [])
        # ::1 from the LAN (raw frames: no socket sends to ::1 over an interface): never answered;
        # the same SYN to the host's LAN address is.
        assert syn_answered(L, "eth0", lan_mac, LAN6_PEER, LAN6_HOST, 8080)
        assert not syn_answered(L, "eth0", lan_mac, LAN6_PEER, "::1", 8080)

    sb.down(pb, neighbour)
    sb.down(pa, exposed)
    sb.assert_clean(pa)
    sb.assert_clean(pb)


ROUTED = """\
services:
  app:
    command: "@PY@ @ECHO_DUAL@ --tcp 80 --max-seconds 300"
    networks: [net@N@]
    ports: ["@PORT@:80"]
networks:
  net@N@:
    enable_ipv6: true
"""

FORWARDING = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")


def forwarding_state(sb: Lab) -> dict[str, str]:
    """The host's forwarding settings: the global switches, and every interface's own."""
    out = {name: sb.read_sysctl(sb.host, name) for name in FORWARDING}
    for fam in ("ipv4", "ipv6"):
        for dev in ("default", "lo", "up0", "lan0", "pv0"):
            name = f"net.{fam}.conf.{dev}.forwarding"
            out[name] = sb.read_sysctl(sb.host, name)
    return out


def host_section(plan_text: str) -> str:
    """The plan's "Host:" section ("" when it has none)."""
    return plan_text.split("Host:\n", 1)[1].split("\n\n", 1)[0] if "Host:\n" in plan_text else ""


def guard_listing(sb: Lab) -> str:
    return sb.nft("list", "table", "inet", GUARD_TABLE, check=False).stdout


def test_up_does_not_make_the_host_a_router_and_down_restores_it(lab: Lab, tmp_path) -> None:
    """With forwarding off, two projects brought up at once: the LAN neighbour still cannot reach
    the private segment behind another host interface (the guard drops it and counts it), while
    the projects' containers reach it and the LAN reaches their published ports; a project killed
    in the middle of `up` leaves the host guarded; the last `down` restores every forwarding
    setting exactly as it was, an interface's own one included."""
    sb = lab
    sb.sysctl(sb.host, "net.ipv4.ip_forward", "0")
    sb.sysctl(sb.host, "net.ipv6.conf.all.forwarding", "0")
    sb.sysctl(sb.host, "net.ipv4.conf.pv0.forwarding", "1")  # an interface of its own: restored too
    sb.ip(sb.lan, f"route add {PRIVATE_PEER}/32 via {LAN_HOST}")
    sb.ip(sb.lan, f"-6 route add {PRIVATE6_PEER}/128 via {LAN6_HOST}")
    sb.serve(sb.private, "--tcp", "80", dual=True)
    wait_for(sb.host, PRIVATE_PEER, 80)  # the segment is up, the host itself reaches it
    wait_for(sb.host, PRIVATE6_PEER, 80)
    original = forwarding_state(sb)
    assert original["net.ipv4.ip_forward"] == "0" and original["net.ipv4.conf.pv0.forwarding"] == "1"
    assert tcp(sb.lan, PRIVATE_PEER, 80) is None and tcp(sb.lan, PRIVATE6_PEER, 80) is None  # not a router before

    pa, pb, pc = project(), project(), project()
    files = {p: write_stack(tmp_path, p, ROUTED, N=str(i), PORT=str(8090 + i)) for i, p in enumerate((pa, pb, pc))}
    plan = sb.plan(files[pa], pa)
    # Two `up`s at once: they serialise on the guard's lock, both end up members.
    env = {"COMPOSENET_RESOLV_CONF": str(sb.resolv_conf)}
    ups = [subprocess.Popen(["nsenter", f"--net=/run/netns/{sb.host}", sys.executable, "-m", "composenet", "-f",
                             str(files[p]), "-p", p, "up"], cwd=str(tmp_path), env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in (pa, pb)]
    sb.projects.update((pa, pb))
    for proc in ups:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
    for p in (pa, pb):
        sb.snapshot(p)
        wait_for(f"{p}-app-1", "127.0.0.1", 80)
    assert sb.read_sysctl(sb.host, "net.ipv4.ip_forward") == "1"

    def drops() -> int:
        return sb.rule_packets("inet", GUARD_TABLE, "forward", "forwarding guard")

    probes = {
        "lan -> private (routed through the host)": (tcp, (sb.lan, PRIVATE_PEER, 80)),
        "lan -> [private] (routed through the host)": (tcp, (sb.lan, PRIVATE6_PEER, 80)),
        "lan -> published port of a": (tcp, (sb.lan, LAN_HOST, 8090)),
        "lan -> [published port of a]": (tcp, (sb.lan, LAN6_HOST, 8090)),
        "lan -> published port of b": (tcp, (sb.lan, LAN_HOST, 8091)),
        "a's container -> private": (tcp, (f"{pa}-app-1", PRIVATE_PEER, 80)),
        "a's container -> [private]": (tcp, (f"{pa}-app-1", PRIVATE6_PEER, 80)),
        "b's container -> private": (tcp, (f"{pb}-app-1", PRIVATE_PEER, 80)),
    }
    expect = {
        "lan -> private (routed through the host)": BLOCKED,
        "lan -> [private] (routed through the host)": BLOCKED,
        "lan -> published port of a": LAN_PEER,
        "lan -> [published port of a]": LAN6_PEER,
        "lan -> published port of b": LAN_PEER,
        "a's container -> private": PRIVATE_HOST,
        "a's container -> [private]": PRIVATE6_HOST,
        "b's container -> private": PRIVATE_HOST,
    }
    for addr in (LAN_HOST, LAN6_HOST):  # the LAN's first contact (ND, ARP) settled: the paths work
        wait_for(sb.lan, addr, 8090)
    mode = sb.bridge_nf_call_iptables()
    for br_nf in ([mode, 1 - mode] if mode is not None else [None]):  # bridged frames cross forward or not
        if br_nf is not None:
            sb.bridge_nf_call_iptables(br_nf)
        check_matrix(probes, expect)
    listing = guard_listing(sb)
    assert f"composenet:{pa} ipv4 ipv6" in listing and f"composenet:{pb} ipv4 ipv6" in listing, listing
    assert drops() > 0  # the LAN's attempt, dropped and counted by the guard
    host = host_section(plan.stdout)
    assert "net.ipv4.ip_forward" in host and "net.ipv6.conf.all.forwarding" in host and "restores" in host, plan.stdout

    # A third project killed right after its guard step: the host stays guarded.
    steps = json.loads(sb.composenet("-f", str(files[pc]), "-p", pc, "plan", "--format", "json",
                                     cwd=str(tmp_path)).stdout)["steps"]
    k = next(s["index"] + 1 for s in steps if s["kind"] == "guard")
    r = sb.up(files[pc], pc, check=False, env={"COMPOSENET_TEST_KILL_AFTER_STEP": str(k)})
    assert r.returncode == -9, r.stdout + r.stderr
    assert f"composenet:{pc} ipv4 ipv6" in guard_listing(sb)

    # The guard deleted by hand (`nft flush ruleset` does that): the plan repairs it, and the
    # host's values recorded before any of it are still the ones restored.
    sb.nft("delete", "table", "inet", GUARD_TABLE)
    assert tcp(sb.lan, PRIVATE_PEER, 80) is not None  # what the guard is for
    r = sb.plan(files[pa], pa)
    assert r.returncode == 2 and "guard" in r.stdout, r.stdout
    sb.up(files[pa], pa)
    assert tcp(sb.lan, PRIVATE_PEER, 80) is None
    sb.up(files[pb], pb)
    assert f"composenet:{pb} ipv4 ipv6" in guard_listing(sb)
    # Another engine's bridge, added as the README says: composenet's rewrites keep it.
    sb.run_in(sb.host, "nft", 'add element inet composenet-guard bridges { "lxdbr0" }')

    # Two `down`s at once (a and the killed c, from its kernel labels alone): they serialise on
    # the guard's lock; b stays guarded and routed.
    downs = [subprocess.Popen(["nsenter", f"--net=/run/netns/{sb.host}", sys.executable, "-m", "composenet",
                               *(("-f", str(files[p])) if p == pa else ()), "-p", p, "down"],
                              cwd=str(sb.empty_dir()), env={**os.environ, **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in (pa, pc)]
    for proc in downs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
    listing = guard_listing(sb)
    assert f"composenet:{pb} ipv4 ipv6" in listing and pa not in listing and pc not in listing, listing
    assert '"lxdbr0"' in listing, listing
    assert sb.read_sysctl(sb.host, "net.ipv4.ip_forward") == "1"
    check_matrix({"lan -> private": (tcp, (sb.lan, PRIVATE_PEER, 80)),
                  "b's container -> private": (tcp, (f"{pb}-app-1", PRIVATE_PEER, 80))},
                 {"lan -> private": BLOCKED, "b's container -> private": PRIVATE_HOST})
    r = sb.down(pb, files[pb])
    assert "restores net.ipv4.ip_forward = 0, net.ipv6.conf.all.forwarding = 0" in r.stderr, r.stderr
    assert forwarding_state(sb) == original
    assert GUARD_TABLE not in sb.nft("list", "tables").stdout
    assert tcp(sb.lan, PRIVATE_PEER, 80) is None and tcp(sb.lan, PRIVATE6_PEER, 80) is None
    assert wait_for(sb.host, PRIVATE_PEER, 80)
    for p in (pa, pb, pc):
        sb.assert_clean(p)


def test_a_host_that_routes_already_keeps_routing(lab: Lab, tmp_path) -> None:
    """Forwarding already on: composenet adds no drop rule (the host routes on purpose), the LAN
    still reaches the private segment, and `down` leaves forwarding on."""
    sb = lab
    sb.sysctl(sb.host, "net.ipv4.ip_forward", "1")
    sb.sysctl(sb.host, "net.ipv6.conf.all.forwarding", "1")
    sb.ip(sb.lan, f"route add {PRIVATE_PEER}/32 via {LAN_HOST}")
    sb.ip(sb.lan, f"-6 route add {PRIVATE6_PEER}/128 via {LAN6_HOST}")
    sb.serve(sb.private, "--tcp", "80", dual=True)
    wait_for(sb.host, PRIVATE_PEER, 80)
    wait_for(sb.host, PRIVATE6_PEER, 80)
    original = forwarding_state(sb)
    p = project()
    compose = write_stack(tmp_path, p, ROUTED, N="1", PORT="8090")
    host = host_section(sb.plan(compose, p).stdout)
    sb.up(compose, p)
    wait_for(f"{p}-app-1", "127.0.0.1", 80)
    listing = guard_listing(sb)
    assert f"composenet:{p} ipv4 ipv6" in listing and "drop" not in listing, listing
    check_matrix({
        "lan -> private": (tcp, (sb.lan, PRIVATE_PEER, 80)),
        "lan -> [private]": (tcp, (sb.lan, PRIVATE6_PEER, 80)),
        "lan -> published port": (tcp, (sb.lan, LAN_HOST, 8090)),
        "container -> private": (tcp, (f"{p}-app-1", PRIVATE_PEER, 80)),
    }, {"lan -> private": LAN_PEER, "lan -> [private]": LAN6_PEER, "lan -> published port": LAN_PEER,
        "container -> private": PRIVATE_HOST})
    assert "already on" in host, host
    sb.down(p, compose)
    assert forwarding_state(sb) == original
    assert GUARD_TABLE not in sb.nft("list", "tables").stdout
    assert peer(tcp(sb.lan, PRIVATE_PEER, 80)) == LAN_PEER
    sb.assert_clean(p)


V6_LOOPBACK = """\
services:
  web:
    command: "@PY@ @ECHO@ --tcp 80 --max-seconds 300"
    ports:
      - "8080:80"
      - "@LOOPBACK@:8081:80"
      - target: 80
        published: "8083"
        host_ip: "@LONG@"
"""


def test_a_port_on_ipv6_loopback_is_refused_where_it_is_written(lab: Lab, tmp_path) -> None:
    """[::1] cannot be published (the kernel drops ::1 on any interface but lo): `validate`,
    `plan` and `up` refuse it at the port's FILE:LINE, say why and what to do, and touch nothing;
    the same file with 127.0.0.1 is accepted and works from the host."""
    sb, p = lab, project()
    bad = write_stack(tmp_path, "bad", V6_LOOPBACK, LOOPBACK="[::1]", LONG="::1")
    for cmd in (("validate",), ("plan",), ("up",)):
        r = sb.composenet("-f", str(bad), "-p", p, *cmd, check=False, cwd=str(tmp_path))
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert f"{bad}:6:9: services.web.ports[1]: a port cannot be published on [::1]" in r.stderr, r.stderr
        assert f"{bad}:7:9: services.web.ports[2]: a port cannot be published on [::1]" in r.stderr, r.stderr
        assert "hint: publish it on 127.0.0.1" in r.stderr, r.stderr
    assert sb.namespaces(p) == [] and nft_table_name(p) not in sb.nft("list", "tables").stdout
    good = write_stack(tmp_path, "good", V6_LOOPBACK, LOOPBACK="127.0.0.1", LONG="127.0.0.1")
    sb.up(good, p)
    wait_for(f"{p}-web-1", "127.0.0.1", 80)
    assert tcp(sb.host, "127.0.0.1", 8081) is not None and tcp(sb.host, "127.0.0.1", 8083) is not None
    sb.down(p, good)
    sb.assert_clean(p)


SPOOF = """\
services:
  victim:
    command: "@PY@ @ECHO_DUAL@ --udp 5555 --max-seconds 300"
    networks: [lan1]
  attacker:
    networks: [lan1]
networks:
  lan1:
    enable_ipv6: true
"""


class Spoof:
    """The spoofing scene: an attacker container, a victim container and the host, on one network."""

    def __init__(self, sb: Lab, p: str):
        self.sb, self.p = sb, p
        self.att, self.vic = f"{p}-attacker-1", f"{p}-victim-1"
        self.att_ip, self.vic_ip = sb.ipv4(self.att), sb.ipv4(self.vic)
        self.att6, self.vic6 = sb.ipv6(self.att), sb.ipv6(self.vic)
        self.att_ll = sb.ipv6(self.att, link_local=True)
        self.att_mac, self.vic_mac = sb.mac(self.att, "eth0"), sb.mac(self.vic, "eth0")
        self.gw = sb.gateway_for(self.vic_ip)
        self.bridge = next(n for n, (a, _l) in sb.addrs(sb.host).items() if a == self.gw)
        self.gw_mac = sb.mac(sb.host, self.bridge)
        self.gw6 = next(a for a in sb.run_in(sb.host, "ip", "-6", "-o", "addr", "show", "dev", self.bridge).stdout.split()
                        if a.startswith("fd") and "/" in a).split("/")[0]

    def attack(self, victim_ns: str, victim_if: str, forged: list[bytes], legit: bytes, marker: bytes) -> bool:
        """Send the ``forged`` frames (carrying ``FORGED-<marker>``), then the ``legit`` one
        (``LEGIT-<marker>``); once the victim saw the legit frame (the positive control: it
        travels the same path right after), say whether it saw a forged one."""
        with Sniffer(victim_ns, victim_if) as sniff:
            send_frames(self.att, "eth0", [*forged, legit])
            assert sniff.wait_for(b"LEGIT-" + marker), f"{victim_ns} {victim_if} never saw the attacker's legit frame"
            return sniff.seen(b"FORGED-" + marker)


BOGUS_MAC = "02:00:5e:00:53:99"  # what a neighbour entry is set to before a legit announcement fixes it
# The attacker's legit frames to the victim go to its MAC but not to its address: the victim sees
# them and stays silent (its answers would teach the bridge its MAC again, hiding an FDB attack).
SILENT4, SILENT6 = "10.254.254.1", "fd00:5117:e47::1"


def run_spoofs(sc: Spoof) -> list[str]:
    """Every attack of the scene, each followed by the attacker's legit counterpart on the same
    path (the control that it arrives and takes effect); the attacks that reached their victim."""
    sb = sc.sb
    reached = []

    def udp4(src: str, dst: str, dst_mac: str, tag: bytes, src_mac: str | None = None) -> bytes:
        return ether(dst_mac, src_mac or sc.att_mac, ETH_P_IP, ipv4_udp(src, dst, 4444, 5555, tag))

    def udp6(src: str, dst: str, dst_mac: str, tag: bytes) -> bytes:
        return ether(dst_mac, sc.att_mac, ETH_P_IPV6, ipv6_udp(src, dst, 4444, 5555, tag))

    # Forged IPv4 source, to the host and to the other container (bridged).
    for name, src in (("ip4-as-victim", sc.vic_ip), ("ip4-made-up", "10.254.254.254")):
        m = name.encode()
        if sc.attack(sb.host, sc.bridge, [udp4(src, sc.gw, sc.gw_mac, b"FORGED-" + m)],
                     udp4(sc.att_ip, sc.gw, sc.gw_mac, b"LEGIT-" + m), m):
            reached.append(f"{name} -> host")
    m = b"ip4-bridged"
    if sc.attack(sc.vic, "eth0", [udp4("10.254.254.253", sc.vic_ip, sc.vic_mac, b"FORGED-" + m)],
                 udp4(sc.att_ip, SILENT4, sc.vic_mac, b"LEGIT-" + m), m):
        reached.append("ip4-made-up -> victim")
    # Forged IPv6 source, to the host.
    m = b"ip6-as-victim"
    if sc.attack(sb.host, sc.bridge, [udp6(sc.vic6, sc.gw6, sc.gw_mac, b"FORGED-" + m)],
                 udp6(sc.att6, sc.gw6, sc.gw_mac, b"LEGIT-" + m), m):
        reached.append("ip6-as-victim -> host")
    # An 802.1Q-tagged frame: nothing but IPv4, ARP and IPv6 leaves a container.
    m = b"vlan"
    if sc.attack(sc.vic, "eth0", [vlan(sc.vic_mac, sc.att_mac, 7, ETH_P_IP,
                                        ipv4_udp(sc.gw, sc.vic_ip, 4444, 5555, b"FORGED-" + m))],
                 udp4(sc.att_ip, SILENT4, sc.vic_mac, b"LEGIT-" + m), m):
        reached.append("vlan-tagged -> victim")
    # A DHCP server's answer from a container.
    m = b"dhcp"
    if sc.attack(sc.vic, "eth0", [ether("ff:ff:ff:ff:ff:ff", sc.att_mac, ETH_P_IP,
                                        ipv4_udp(sc.att_ip, "255.255.255.255", 67, 68, b"FORGED-" + m))],
                 udp4(sc.att_ip, SILENT4, sc.vic_mac, b"LEGIT-" + m), m):
        reached.append("dhcp-server -> victim")
    # A router advertisement: the victim would take the attacker as its default router.
    with Sniffer(sc.vic, "eth0") as sniff:
        send_frames(sc.att, "eth0", [ether("33:33:00:00:00:01", sc.att_mac, ETH_P_IPV6,
                                           router_advert(sc.att_ll, sc.att_mac)),
                                     udp6(sc.att6, SILENT6, sc.vic_mac, b"LEGIT-ra")])
        assert sniff.wait_for(b"LEGIT-ra"), "the victim never saw the attacker's legit frame"
        if any(f[12:14] == b"\x86\xdd" and f[20] == 58 and f[54] == 134 for f in sniff.frames):
            reached.append("router-advert -> victim")

    # ARP to the victim: "the gateway is at the attacker"; then the attacker's own announcement,
    # which must replace the bogus entry the victim was given for it. (Both are sent again until
    # that happens: an ARP reply in the same jiffy as the entry's last change does not override it.)
    assert sb.neighbour(sc.vic, sc.gw) == sc.gw_mac
    sb.ip(sc.vic, f"neigh replace {sc.att_ip} lladdr {BOGUS_MAC} dev eth0 nud stale")
    arp = [ether(sc.vic_mac, sc.att_mac, ETH_P_ARP, arp_reply(sc.att_mac, sc.gw, sc.vic_mac, sc.vic_ip)),
           ether(sc.vic_mac, sc.att_mac, ETH_P_ARP, arp_reply(sc.att_mac, sc.att_ip, sc.vic_mac, sc.vic_ip))]
    assert wait_until(lambda: send_frames(sc.att, "eth0", arp) or sb.neighbour(sc.vic, sc.att_ip) == sc.att_mac), \
        "the legit ARP reply had no effect"
    if sb.neighbour(sc.vic, sc.gw) == sc.att_mac:
        reached.append("arp: gateway is-at attacker -> victim")
    # NDP to the host: "the victim's address is at the attacker" (from the attacker's own
    # address, so only the target is forged); then the attacker's own advertisement.
    assert sb.neighbour(sb.host, sc.vic6) == sc.vic_mac
    sb.ip(sb.host, f"neigh replace {sc.att6} lladdr {BOGUS_MAC} dev {sc.bridge} nud stale")
    na = [ether(sc.gw_mac, sc.att_mac, ETH_P_IPV6, neighbour_advert(sc.att6, sc.gw6, sc.vic6, sc.att_mac)),
          ether(sc.gw_mac, sc.att_mac, ETH_P_IPV6, neighbour_advert(sc.att6, sc.gw6, sc.att6, sc.att_mac))]
    assert wait_until(lambda: send_frames(sc.att, "eth0", na) or sb.neighbour(sb.host, sc.att6) == sc.att_mac), \
        "the legit NA had no effect"
    if sb.neighbour(sb.host, sc.vic6) == sc.att_mac:
        reached.append("na: victim is-at attacker -> host")
    # Last (when it gets through, frames for the victim go to the attacker): a forged source MAC,
    # the victim's. The frame must not arrive, nor move the victim in the bridge's FDB.
    victim_port = sb.fdb_port(sc.bridge, sc.vic_mac)
    assert victim_port is not None and victim_port != sb.fdb_port(sc.bridge, sc.att_mac)
    m = b"mac-as-victim"
    if sc.attack(sb.host, sc.bridge, [udp4(sc.att_ip, sc.gw, sc.gw_mac, b"FORGED-" + m, src_mac=sc.vic_mac)],
                 udp4(sc.att_ip, sc.gw, sc.gw_mac, b"LEGIT-" + m), m):
        reached.append("mac-as-victim -> host")
    if sb.fdb_port(sc.bridge, sc.vic_mac) != victim_port:
        reached.append("mac-as-victim: the FDB moved the victim")
    return reached


ATTACKS = ["arp: gateway is-at attacker -> victim", "dhcp-server -> victim", "ip4-as-victim -> host",
           "ip4-made-up -> host", "ip4-made-up -> victim", "ip6-as-victim -> host", "mac-as-victim -> host",
           "mac-as-victim: the FDB moved the victim", "na: victim is-at attacker -> host", "router-advert -> victim",
           "vlan-tagged -> victim"]


def test_no_container_can_impersonate_another(lab: Lab, tmp_path) -> None:
    """Forged source MAC, IPv4, IPv6, ARP and NDP answers, router advertisements, DHCP answers and
    VLAN-tagged frames from a container never reach their victim (the other container or the
    host), with and without br_netfilter, and are counted; the attacker's own frames, sent right
    after on the same path, do. With the bridge table deleted every attack gets through: the
    scene itself works."""
    sb, p = lab, project()
    compose = write_stack(tmp_path, "spoof", SPOOF)
    sb.up(compose, p)
    sc = Spoof(sb, p)
    # The table pins each port's EUI-64 link-local address: what the kernel gave the containers.
    assert (sc.att_ll, sb.ipv6(sc.vic, link_local=True)) == (eui64_link_local(sc.att_mac), eui64_link_local(sc.vic_mac))
    wait_for(sc.vic, "127.0.0.1", 5555, "udp")
    sb.sysctl(sc.vic, "net.ipv4.neigh.eth0.locktime", "0")
    # The entries the ARP and NDP attacks go for, made the normal way.
    assert udp(sc.vic, sc.gw, 9) is None and tcp(sb.host, sc.vic6, 5555) is None
    assert wait_until(lambda: sb.neighbour(sc.vic, sc.gw) == sc.gw_mac)
    assert wait_until(lambda: sb.neighbour(sb.host, sc.vic6) == sc.vic_mac)
    table = nft_table_name(p)
    counted: dict[str, int] = {}  # the bridge table's counters so far
    mode = sb.bridge_nf_call_iptables()
    for br_nf in ([mode, 1 - mode] if mode is not None else [None]):
        if br_nf is not None:
            sb.bridge_nf_call_iptables(br_nf)
        before = counted
        assert run_spoofs(sc) == []
        after = counted = sb.counters("bridge", table)
        assert "counter spoof_mac" in sb.nft("list", "counters", "table", "bridge", table).stdout  # as README says
        grew = sorted(k for k in after if after[k] > before.get(k, 0))
        assert grew == ["other_l2", "rogue", "spoof_arp", "spoof_ip4", "spoof_ip6", "spoof_mac", "spoof_nd"], (before, after)
    # Legit traffic still flows both ways (ARP and NDP included, after a flush).
    sb.ip(sc.vic, "neigh flush all")
    assert udp_any(sb.host, sc.vic_ip, 5555) and udp_any(sb.host, sc.vic6, 5555) and udp_any(sc.att, sc.vic_ip, 5555)
    # Without the table: each attack works (so the checks above can fail).
    sb.nft("delete", "table", "bridge", table)
    assert sorted(run_spoofs(sc)) == ATTACKS
    r = sb.plan(compose, p)
    assert r.returncode == 2 and f"table bridge {table}" in r.stdout, r.stdout
    sb.down(p, compose)
    sb.assert_clean(p)
