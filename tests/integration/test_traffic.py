"""`composenet up` checked with real TCP/UDP packets (root, throwaway sandbox namespaces).

The stacks are the reference stacks of ../shared/DOCKER-BEHAVIOUR.md: (a) the frontend/backend
split with an internal network and a scaled service, (c) every published-port path. Servers
are tests/integration/stacks/echo.py (it answers with the source address it saw), run as the
services' commands and, for egress, in the sandbox's outside namespace on 198.51.100.10.
Blocked connections are probed with a 1 s timeout; every wait is bounded.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import sys
import uuid

import pytest

from tests.integration.sandbox import (
    BLOCKED,
    HOST_ADDR,
    OUTSIDE_ADDR,
    REACHED,
    WEB_ADDR,
    Sandbox,
    check_matrix,
    tcp,
    udp,
    wait_for,
)
from tests.integration.stacks import ECHO, render


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def addr_in(sb: Sandbox, ns: str, subnet: str) -> str:
    """The address namespace ``ns`` has in ``subnet``."""
    net = ipaddress.ip_network(subnet)
    for ip, _plen in sb.addrs(ns).values():
        if ipaddress.ip_address(ip) in net:
            return ip
    raise AssertionError(f"{ns} has no address in {subnet}: {sb.addrs(ns)}")


def test_split_reachability_matrix(sandbox: Sandbox, tmp_path) -> None:
    """DOCKER-BEHAVIOUR (a): same network ok; across networks blocked (also to web's address on
    the other network); internal-only services have no egress and no ingress; non-internal
    egress is masqueraded to the host's address; db's port (internal only) is not published."""
    sb, p = sandbox, project()
    compose = render("split", tmp_path)
    r = sb.up(compose, p)
    assert re.search(r"warning:.*\bdb\b.*internal", r.stderr), f"`up` did not warn about db's port:\n{r.stderr}"

    web, fe, db = f"{p}-web-1", f"{p}-fe-1", f"{p}-db-1"
    api = [f"{p}-api-{i}" for i in (1, 2, 3)]
    assert sorted(sb.namespaces(p)) == sorted([web, fe, db, *api])
    sb.start_outside_web()
    for ns in (web, fe, *api):
        wait_for(ns, "127.0.0.1", 80)
    wait_for(db, "127.0.0.1", 5432)

    frontend, backend = sb.subnet(fe), sb.subnet(api[0])
    assert frontend != backend
    web_fe, web_be = addr_in(sb, web, frontend), addr_in(sb, web, backend)
    fe_ip, db_ip = sb.ipv4(fe), sb.ipv4(db)
    api_ip = [sb.ipv4(ns) for ns in api]
    assert len(set(api_ip)) == 3 and all(ipaddress.ip_address(a) in ipaddress.ip_network(backend) for a in api_ip)
    assert ipaddress.ip_address(db_ip) in ipaddress.ip_network(backend)

    # A route to the backend subnet in the outside ns: internal networks must still be closed.
    sb.ip(sb.outside, f"route add {backend} via {HOST_ADDR}")
    sb.ip(sb.outside, f"route add {frontend} via {HOST_ADDR}")

    probes = {
        # same network
        "fe -> web (frontend ip)": (tcp, (fe, web_fe, 80)),
        "fe -> web (frontend ip) udp": (udp, (fe, web_fe, 80)),
        "web -> fe": (tcp, (web, fe_ip, 80)),
        "api-1 -> api-2": (tcp, (api[0], api_ip[1], 80)),
        "api-3 -> api-1 udp": (udp, (api[2], api_ip[0], 80)),
        "api-2 -> db": (tcp, (api[1], db_ip, 5432)),
        "db -> web (backend ip)": (tcp, (db, web_be, 80)),
        # across networks
        "fe -> web (backend ip)": (tcp, (fe, web_be, 80)),
        "fe -> web (backend ip) udp": (udp, (fe, web_be, 80)),
        "fe -> api-1": (tcp, (fe, api_ip[0], 80)),
        "fe -> db": (tcp, (fe, db_ip, 5432)),
        "api-1 -> web (frontend ip)": (tcp, (api[0], web_fe, 80)),
        "api-1 -> fe": (tcp, (api[0], fe_ip, 80)),
        "db -> fe": (tcp, (db, fe_ip, 80)),
        # egress: masqueraded from non-internal networks, none from internal-only services
        "web -> outside": (tcp, (web, WEB_ADDR, 80)),
        "fe -> outside": (tcp, (fe, WEB_ADDR, 80)),
        "fe -> outside udp": (udp, (fe, WEB_ADDR, 80)),
        "api-1 -> outside": (tcp, (api[0], WEB_ADDR, 80)),
        "api-2 -> outside udp": (udp, (api[1], WEB_ADDR, 80)),
        "db -> outside": (tcp, (db, WEB_ADDR, 80)),
        # ingress: the published port works; nothing reaches the internal network from outside
        "outside -> host:8080": (tcp, (sb.outside, HOST_ADDR, 8080)),
        "outside -> host:8091 (db, not published)": (tcp, (sb.outside, HOST_ADDR, 8091)),
        "host -> 127.0.0.1:8091 (db, not published)": (tcp, (sb.host, "127.0.0.1", 8091)),
        "outside -> api-1 routed": (tcp, (sb.outside, api_ip[0], 80)),
        "outside -> api-1 routed udp": (udp, (sb.outside, api_ip[0], 80)),
        "outside -> db routed": (tcp, (sb.outside, db_ip, 5432)),
        "outside -> web (backend ip) routed": (tcp, (sb.outside, web_be, 80)),
        # the host reaches containers directly, internal ones included (as Docker)
        "host -> api-1": (tcp, (sb.host, api_ip[0], 80)),
        "host -> fe": (tcp, (sb.host, fe_ip, 80)),
    }
    expect = {
        "fe -> web (frontend ip)": fe_ip,
        "fe -> web (frontend ip) udp": fe_ip,
        "web -> fe": web_fe,
        "api-1 -> api-2": api_ip[0],
        "api-3 -> api-1 udp": api_ip[2],
        "api-2 -> db": api_ip[1],
        "db -> web (backend ip)": db_ip,
        "fe -> web (backend ip)": BLOCKED,
        "fe -> web (backend ip) udp": BLOCKED,
        "fe -> api-1": BLOCKED,
        "fe -> db": BLOCKED,
        "api-1 -> web (frontend ip)": BLOCKED,
        "api-1 -> fe": BLOCKED,
        "db -> fe": BLOCKED,
        "web -> outside": HOST_ADDR,
        "fe -> outside": HOST_ADDR,
        "fe -> outside udp": HOST_ADDR,
        "api-1 -> outside": BLOCKED,
        "api-2 -> outside udp": BLOCKED,
        "db -> outside": BLOCKED,
        "outside -> host:8080": OUTSIDE_ADDR,
        "outside -> host:8091 (db, not published)": BLOCKED,
        "host -> 127.0.0.1:8091 (db, not published)": BLOCKED,
        "outside -> api-1 routed": BLOCKED,
        "outside -> api-1 routed udp": BLOCKED,
        "outside -> db routed": BLOCKED,
        "outside -> web (backend ip) routed": BLOCKED,
        "host -> api-1": REACHED,
        "host -> fe": REACHED,
    }
    check_matrix(probes, expect)

    sb.down(p, compose)
    sb.assert_clean(p)


def port_of(sb: Sandbox, compose, p: str, service: str, target: int) -> int:
    r = sb.composenet("-f", str(compose), "-p", p, "port", service, str(target), cwd=str(sb.tmp))
    m = re.search(r":(\d+)\s*$", r.stdout.strip().splitlines()[0] if r.stdout.strip() else "")
    assert m, f"`composenet port {service} {target}` printed no HOST:PORT:\n{r.stdout}\n{r.stderr}"
    return int(m.group(1))


def test_published_port_paths(sandbox: Sandbox, tmp_path) -> None:
    """DOCKER-BEHAVIOUR (c), without a userland proxy: every path to a published port, with the
    source address the container sees; loopback-only binding; udp; a range; an ephemeral port
    (shown by `composenet port`, stable across `up`); an unpublished port stays closed even
    with a route to the container."""
    sb, p = sandbox, project()
    compose = render("ports", tmp_path)
    sb.up(compose, p)
    pns, eph, client, other = f"{p}-p-1", f"{p}-eph-1", f"{p}-client-1", f"{p}-other-1"
    for port in (80, 9000, 9001, 7070):
        wait_for(pns, "127.0.0.1", port)
    wait_for(pns, "127.0.0.1", 5353, "udp")
    wait_for(eph, "127.0.0.1", 80)

    p_ip, other_ip = sb.ipv4(pns), sb.ipv4(other)
    gw1 = sb.gateway_for(p_ip)
    net1 = sb.subnet(pns)
    assert sb.subnet(client) == net1 and sb.subnet(other) != net1

    eph_port = port_of(sb, compose, p, "eph", 80)
    assert eph_port not in (80, 8080, 8081, 9000, 9001, 5353), eph_port

    # outside gets a route to p's subnet: unpublished 7070 must stay closed anyway
    sb.ip(sb.outside, f"route add {net1} via {HOST_ADDR}")
    assert f"via {HOST_ADDR}" in sb.ip(sb.outside, f"route get {p_ip}")

    probes = {
        "outside -> host:8080": (tcp, (sb.outside, HOST_ADDR, 8080)),
        "outside -> host:5353/udp": (udp, (sb.outside, HOST_ADDR, 5353)),
        "outside -> host:9000": (tcp, (sb.outside, HOST_ADDR, 9000)),
        "outside -> host:9001": (tcp, (sb.outside, HOST_ADDR, 9001)),
        "outside -> host:ephemeral": (tcp, (sb.outside, HOST_ADDR, eph_port)),
        "host -> 203.0.113.1:8080": (tcp, (sb.host, HOST_ADDR, 8080)),
        "host -> 127.0.0.1:8080": (tcp, (sb.host, "127.0.0.1", 8080)),
        "host -> 127.0.0.1:5353/udp": (udp, (sb.host, "127.0.0.1", 5353)),
        "host -> 203.0.113.1:5353/udp": (udp, (sb.host, HOST_ADDR, 5353)),
        "client -> host:8080 (hairpin)": (tcp, (client, HOST_ADDR, 8080)),
        "client -> host:5353/udp (hairpin)": (udp, (client, HOST_ADDR, 5353)),
        "client -> its gateway:8080": (tcp, (client, gw1, 8080)),
        "p -> host:8080 (itself)": (tcp, (pns, HOST_ADDR, 8080)),
        "other -> host:8080 (other network)": (tcp, (other, HOST_ADDR, 8080)),
        "other -> p direct (other network)": (tcp, (other, p_ip, 80)),
        # 127.0.0.1:8081:80 is for host loopback only
        "host -> 127.0.0.1:8081": (tcp, (sb.host, "127.0.0.1", 8081)),
        "host -> 203.0.113.1:8081": (tcp, (sb.host, HOST_ADDR, 8081)),
        "outside -> host:8081": (tcp, (sb.outside, HOST_ADDR, 8081)),
        "client -> host:8081": (tcp, (client, HOST_ADDR, 8081)),
        "client -> 127.0.0.1:8081 (its own loopback)": (tcp, (client, "127.0.0.1", 8081)),
        # 7070 is served but not published
        "host -> p:7070 direct (server is up)": (tcp, (sb.host, p_ip, 7070)),
        "outside -> host:7070": (tcp, (sb.outside, HOST_ADDR, 7070)),
        "outside -> p:7070 routed": (tcp, (sb.outside, p_ip, 7070)),
    }
    expect = {
        "outside -> host:8080": OUTSIDE_ADDR,
        "outside -> host:5353/udp": OUTSIDE_ADDR,
        "outside -> host:9000": OUTSIDE_ADDR,
        "outside -> host:9001": OUTSIDE_ADDR,
        "outside -> host:ephemeral": OUTSIDE_ADDR,
        "host -> 203.0.113.1:8080": REACHED,
        "host -> 127.0.0.1:8080": gw1,
        "host -> 127.0.0.1:5353/udp": gw1,
        "host -> 203.0.113.1:5353/udp": REACHED,
        "client -> host:8080 (hairpin)": gw1,
        "client -> host:5353/udp (hairpin)": gw1,
        "client -> its gateway:8080": REACHED,
        "p -> host:8080 (itself)": gw1,
        "other -> host:8080 (other network)": REACHED,
        "other -> p direct (other network)": BLOCKED,
        "host -> 127.0.0.1:8081": gw1,
        "host -> 203.0.113.1:8081": BLOCKED,
        "outside -> host:8081": BLOCKED,
        "client -> host:8081": BLOCKED,
        "client -> 127.0.0.1:8081 (its own loopback)": BLOCKED,
        "host -> p:7070 direct (server is up)": REACHED,
        "outside -> host:7070": BLOCKED,
        "outside -> p:7070 routed": BLOCKED,
    }
    check_matrix(probes, expect)
    assert other_ip != p_ip

    # With br_netfilter loaded (any Docker host) bridged frames also traverse the inet hooks,
    # which changes the hairpin path: check it in the other mode too when this kernel has it.
    mode = sb.bridge_nf_call_iptables()
    if mode is not None:
        sb.bridge_nf_call_iptables(1 - mode)
        hairpin = ["client -> host:8080 (hairpin)", "client -> host:5353/udp (hairpin)", "p -> host:8080 (itself)",
                   "host -> 127.0.0.1:8080", "outside -> host:8080", "other -> host:8080 (other network)",
                   "other -> p direct (other network)"]
        check_matrix({k: probes[k] for k in hairpin}, {k: expect[k] for k in hairpin})
        sb.bridge_nf_call_iptables(mode)

    # The ephemeral port is stable across a second `up`, which changes nothing.
    sb.up(compose, p)
    assert port_of(sb, compose, p, "eph", 80) == eph_port
    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_for(sb.outside, HOST_ADDR, eph_port).split()[0] == OUTSIDE_ADDR

    sb.down(p, compose)
    sb.assert_clean(p)


BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"

# Hairpin and isolation with br_netfilter: p publishes 8080 and 5353/udp on net1, client shares
# net1, other is on net2, q1/q2 share "quiet", a network with ICC off (bridge ports isolated).
HAIRPIN_STACK = """\
services:
  p:
    command: "@PY@ @ECHO@ --tcp 80 --udp 5353"
    networks: [net1]
    ports: ["8080:80", "5353:5353/udp"]
  client:
    networks: [net1]
  other:
    networks: [net2]
  q1:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [quiet]
  q2:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [quiet]
    ports: ["8082:80"]
networks:
  net1: {}
  net2: {}
  quiet:
    driver_opts:
      com.docker.network.bridge.enable_icc: "false"
"""


def require_br_netfilter(sb: Sandbox) -> None:
    """Make bridged frames traverse the inet hooks in the sandbox host namespace only (the
    bridge-nf-call-* sysctls are per namespace): load br_netfilter if needed, then set them to 1.
    Fails (never skips) when this kernel cannot provide it."""
    if sb.run_in(sb.host, "cat", BRIDGE_NF, check=False).returncode != 0:
        modprobe = shutil.which("modprobe")
        r = sb.run_in(sb.host, modprobe, "br_netfilter", check=False) if modprobe else None
        if sb.run_in(sb.host, "cat", BRIDGE_NF, check=False).returncode != 0:
            why = f"modprobe said: {(r.stderr or r.stdout).strip()!r}" if r else "no modprobe on PATH"
            pytest.fail(f"br_netfilter is not available: {BRIDGE_NF} is missing after `modprobe br_netfilter` "
                        f"({why}); this test needs a kernel with br_netfilter (module or built in)",
                        pytrace=False)
    for fam in ("iptables", "ip6tables"):
        sb.run_in(sb.host, "sysctl", "-q", "-w", f"net.bridge.bridge-nf-call-{fam}=1")
    assert sb.bridge_nf_call_iptables() == 1


def test_hairpin_and_isolation_with_br_netfilter(sandbox: Sandbox, tmp_path) -> None:
    """With br_netfilter on (as on any Docker host), a DNATed frame that goes back out of its
    own bridge is bridged, and postrouting sees no input device: hairpin from a container to its
    own network's published port, through the host address and from the container to itself,
    is still masqueraded to the gateway; the filter rules and ICC off still isolate."""
    sb, p = sandbox, project()
    require_br_netfilter(sb)
    compose = tmp_path / "hairpin.yaml"
    compose.write_text(HAIRPIN_STACK.replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO)))
    sb.up(compose, p)
    pns, client, other, q1, q2 = (f"{p}-{s}-1" for s in ("p", "client", "other", "q1", "q2"))
    for ns in (pns, q1, q2):
        wait_for(ns, "127.0.0.1", 80)
    wait_for(pns, "127.0.0.1", 5353, "udp")
    sb.start_outside_web()
    # up did not turn br_netfilter off in this namespace
    assert sb.bridge_nf_call_iptables() == 1

    p_ip, client_ip, q1_ip, q2_ip = sb.ipv4(pns), sb.ipv4(client), sb.ipv4(q1), sb.ipv4(q2)
    gw1, gwq = sb.gateway_for(p_ip), sb.gateway_for(q1_ip)
    assert sb.subnet(client) == sb.subnet(pns) != sb.subnet(other)
    assert sb.subnet(q1) == sb.subnet(q2)

    probes = {
        "client -> host:8080 (hairpin)": (tcp, (client, HOST_ADDR, 8080)),
        "client -> host:5353/udp (hairpin)": (udp, (client, HOST_ADDR, 5353)),
        "client -> its gateway:8080": (tcp, (client, gw1, 8080)),
        "p -> host:8080 (itself)": (tcp, (pns, HOST_ADDR, 8080)),
        "p -> host:5353/udp (itself)": (udp, (pns, HOST_ADDR, 5353)),
        "client -> p direct (same network)": (tcp, (client, p_ip, 80)),
        "host -> 127.0.0.1:8080": (tcp, (sb.host, "127.0.0.1", 8080)),
        "outside -> host:8080": (tcp, (sb.outside, HOST_ADDR, 8080)),
        "other -> host:8080 (other network)": (tcp, (other, HOST_ADDR, 8080)),
        "other -> p direct (other network)": (tcp, (other, p_ip, 80)),
        "p -> outside": (tcp, (pns, WEB_ADDR, 80)),
        # ICC off: no direct traffic between q1 and q2, in either direction
        "q1 -> q2 direct (icc off)": (tcp, (q1, q2_ip, 80)),
        "q2 -> q1 direct (icc off)": (tcp, (q2, q1_ip, 80)),
        "q1 -> outside (icc off)": (tcp, (q1, WEB_ADDR, 80)),
        "host -> q1": (tcp, (sb.host, q1_ip, 80)),
        "outside -> host:8082 (q2)": (tcp, (sb.outside, HOST_ADDR, 8082)),
    }
    expect = {
        "client -> host:8080 (hairpin)": gw1,
        "client -> host:5353/udp (hairpin)": gw1,
        "client -> its gateway:8080": gw1,
        "p -> host:8080 (itself)": gw1,
        "p -> host:5353/udp (itself)": gw1,
        "client -> p direct (same network)": client_ip,
        "host -> 127.0.0.1:8080": gw1,
        "outside -> host:8080": OUTSIDE_ADDR,
        "other -> host:8080 (other network)": REACHED,
        "other -> p direct (other network)": BLOCKED,
        "p -> outside": HOST_ADDR,
        "q1 -> q2 direct (icc off)": BLOCKED,
        "q2 -> q1 direct (icc off)": BLOCKED,
        "q1 -> outside (icc off)": HOST_ADDR,
        "host -> q1": gwq,
        "outside -> host:8082 (q2)": OUTSIDE_ADDR,
    }
    check_matrix(probes, expect)

    sb.down(p, compose)
    sb.assert_clean(p)
