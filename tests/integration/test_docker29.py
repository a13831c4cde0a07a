"""Docker 28/29 network features end to end (issue 14), root, in throwaway sandbox namespaces,
with real traffic: reachable and blocked pairs are both asserted, and every test ends with
``down`` and ``sandbox.assert_clean``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import uuid
from pathlib import Path

import pytest

from composenet.compose.project import LOCALHOST_ONLY_ENV as LOCAL_ENV
from tests.integration.checkrun import check
from tests.integration.sandbox import (
    DNS_ADDR,
    HOST_ADDR,
    OUTSIDE_ADDR,
    WEB_ADDR,
    Sandbox,
    dns,
    in_netns,
    tcp,
    wait_for,
)
from tests.integration.stacks import ECHO, HERE

ECHO6 = HERE / "echo_dual.py"


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def write(tmp: Path, text: str) -> Path:
    path = tmp / "compose.yaml"
    path.write_text(text.replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO)).replace("@ECHO6@", str(ECHO6)))
    return path


# ---- size requests: 0.0.0.0/24 = "a /24 from the default pools" ---------------------------

SIZES = """
services:
  a:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [small, tiny]
  b:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [small]
  c:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [tiny]
networks:
  small:
    ipam: {config: [{subnet: 0.0.0.0/24}]}
  tiny:
    ipam: {config: [{subnet: 0.0.0.0/28}]}
"""


def test_size_requests_build_networks_of_that_size(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, SIZES)
    sb.up(compose, p)  # used to fail half-way: "default via 0.0.0.1 ... Nexthop has invalid gateway"
    a, b, c = f"{p}-a-1", f"{p}-b-1", f"{p}-c-1"
    small = ipaddress.ip_network(sb.subnet(b))
    tiny = ipaddress.ip_network(sb.subnet(c))
    assert small.prefixlen == 24 and tiny.prefixlen == 28, (small, tiny)
    for n in (small, tiny):
        assert n.subnet_of(ipaddress.ip_network("172.16.0.0/12")) or n.subnet_of(ipaddress.ip_network("192.168.0.0/16"))
        assert not n.network_address.is_unspecified
    assert not small.overlaps(tiny)
    # The default route goes through the network's real gateway (the first host).
    assert f"default via {small.network_address + 1}" in sb.ip(b, "route show")
    # Reachable: peers on the same network; blocked: b and c share no network.
    b_ip, c_ip = sb.ipv4(b), sb.ipv4(c)
    assert wait_for(a, b_ip, 80)
    assert wait_for(a, c_ip, 80)
    assert tcp(b, c_ip, 80, 0.5) is None
    assert tcp(c, b_ip, 80, 0.5) is None
    # Converged: the same sizes are kept (a second plan is empty).
    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    sb.down(p, compose)
    sb.assert_clean(p)


def test_a_subnet_that_cannot_carry_hosts_is_refused_before_the_kernel(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, SIZES.replace("0.0.0.0/28", "127.0.0.0/24"))
    r = sb.up(compose, p, check=False)
    assert r.returncode != 0, r.stdout + r.stderr
    assert f"{compose}:16:" in r.stderr and "subnet 127.0.0.0/24 cannot carry hosts" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert sb.namespaces(p) == []
    sb.assert_clean(p)


# ---- published ports: source allowlists, the host firewall, localhost-only ----------------

def tcp_from(ns: str, src: str, addr: str, port: int, timeout: float = 1.0) -> str | None:
    """Like sandbox.tcp, from source address ``src`` (one of the namespace's own addresses)."""

    def go() -> str | None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.bind((src, 0))
            s.connect((addr, port))
            data = s.recv(4096)
            return data.decode().strip() if data else None
        except OSError:
            return None
        finally:
            s.close()

    return in_netns(ns, go)


ALLOW = """
services:
  web:
    command: "@PY@ @ECHO@ --tcp 80"
    ports:
      - target: 80
        published: 8080
        x-composenet-allow: [198.51.100.10/32]
      - "8081:80"
  api:
    command: "@PY@ @ECHO@ --tcp 90"
    x-composenet-allow: ["198.51.100.53"]
    ports: ["9000:90"]
  pub:
    command: "@PY@ @ECHO@ --tcp 95"
    networks: [edge]
    ports: ["9500:95"]
networks:
  edge:
    driver_opts:
      com.composenet.publish.allow: "203.0.113.254/32"
"""

FIREWALL = """table inet fw@TAG@ {
  chain input {
    type filter hook input priority 0; policy drop;
    iifname "lo" accept
    ct state established,related accept
  }
}
"""


def test_allowlists_drop_other_sources_and_the_plan_names_the_host_firewall(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, ALLOW)
    # A host firewall in the sandbox host namespace: input policy drop (what ufw/firewalld set up).
    fw = tmp_path / "fw.nft"
    fw.write_text(FIREWALL.replace("@TAG@", sb.tag))
    sb.run_in(sb.host, "nft", "-f", str(fw))
    r = sb.plan(compose, p)
    assert r.returncode == 2, r.stdout + r.stderr
    exposure = r.stdout.split("Exposure:")[1].split("\n\n")[0]
    note = f"the host firewall (table inet fw{sb.tag}, chain input: input policy drop) does not filter it"
    assert exposure.count(note) == 4, exposure
    assert "*:8080/tcp" in exposure and "from 198.51.100.10/32 only (port's allowlist)" in exposure, exposure
    assert "from 198.51.100.53/32 only (service's allowlist)" in exposure, exposure
    assert f"from 203.0.113.254/32 only (network {p}_edge's allowlist)" in exposure, exposure

    sb.up(compose, p)
    web, api, pub = f"{p}-web-1", f"{p}-api-1", f"{p}-pub-1"
    wait_for(web, "127.0.0.1", 80)
    wait_for(api, "127.0.0.1", 90)
    wait_for(pub, "127.0.0.1", 95)
    # A program of the host itself is behind the firewall: blocked from outside.
    sb.spawn_in(sb.host, sys.executable, str(ECHO), "--bind", HOST_ADDR, "--tcp", "7000")
    wait_for(sb.host, HOST_ADDR, 7000)
    assert tcp_from(sb.outside, OUTSIDE_ADDR, HOST_ADDR, 7000, 0.5) is None

    a, b, c = WEB_ADDR, DNS_ADDR, OUTSIDE_ADDR  # three outside source addresses
    # Reachable: the allowed source (the client's address is preserved), and every source on the
    # port without an allowlist, although the host firewall drops input: published ports bypass it.
    got = tcp_from(sb.outside, a, HOST_ADDR, 8080)
    assert got is not None and got.split()[0] == a, got
    for src in (a, b, c):
        got = tcp_from(sb.outside, src, HOST_ADDR, 8081)
        assert got is not None and got.split()[0] == src, (src, got)
    assert (tcp_from(sb.outside, b, HOST_ADDR, 9000) or "").split()[:1] == [b]
    assert (tcp_from(sb.outside, c, HOST_ADDR, 9500) or "").split()[:1] == [c]
    # Blocked: every other source of each allowlist.
    for src, port in ((b, 8080), (c, 8080), (a, 9000), (c, 9000), (a, 9500), (b, 9500)):
        assert tcp_from(sb.outside, src, HOST_ADDR, port, 0.5) is None, (src, port)
    # The host itself is never filtered (its packets are not forwarded).
    assert tcp(sb.host, HOST_ADDR, 8080) is not None

    sb.run_in(sb.host, "nft", "delete", "table", "inet", f"fw{sb.tag}")
    sb.down(p, compose)
    sb.assert_clean(p)


LOCAL = """
services:
  web:
    command: "@PY@ @ECHO@ --tcp 80"
    ports: ["8081:80", "@HOST@:8082:80"]
"""


def test_publish_localhost_only(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, LOCAL.replace("@HOST@", HOST_ADDR))
    for how in ("flag", "env"):
        extra, env = (("--publish-localhost-only",), None) if how == "flag" else ((), {LOCAL_ENV: "1"})
        r = sb.composenet("-f", str(compose), "-p", p, "plan", *extra, check=False, env=env, cwd=str(tmp_path))
        assert "127.0.0.1:8081/tcp" in r.stdout and "host loopback only, by --publish-localhost-only" in r.stdout, r.stdout
        assert f"{HOST_ADDR}:8082/tcp" in r.stdout, r.stdout  # an explicit host_ip is kept
        sb.up(compose, p, *extra, env=env)
        web = f"{p}-web-1"
        wait_for(web, "127.0.0.1", 80)
        # Reachable: from the host on 127.0.0.1; the explicit host_ip from outside.
        assert wait_for(sb.host, "127.0.0.1", 8081)
        assert (tcp(sb.outside, HOST_ADDR, 8082) or "").split()[:1] == [OUTSIDE_ADDR]
        # Blocked: 8081 from outside (it is not published there), and from the host's own address.
        assert tcp(sb.outside, HOST_ADDR, 8081, 0.5) is None
        assert tcp(sb.host, HOST_ADDR, 8081, 0.5) is None
        if how == "flag":
            # The choice is recorded: a later `plan`/`up` without the flag keeps it ...
            r = sb.composenet("-f", str(compose), "-p", p, "plan", check=False, cwd=str(tmp_path))
            assert "No changes" in r.stdout and "host loopback only, by --publish-localhost-only" in r.stdout, r.stdout
            sb.up(compose, p)
            assert tcp(sb.outside, HOST_ADDR, 8081, 0.5) is None
            # ... until --no-publish-localhost-only, which publishes on every address again.
            sb.up(compose, p, "--no-publish-localhost-only")
            assert (tcp(sb.outside, HOST_ADDR, 8081) or "").split()[:1] == [OUTSIDE_ADDR]
            r = sb.composenet("-f", str(compose), "-p", p, "plan", check=False, cwd=str(tmp_path))
            assert "No changes" in r.stdout and "host loopback only" not in r.stdout, r.stdout
        sb.down(p, compose)
        sb.assert_clean(p)


# ---- bridge gateway modes: nat, nat-unprotected, routed, isolated -------------------------

MODES = """
services:
  r:
    command: "@PY@ @ECHO@ --tcp 80 --tcp 81"
    networks: [routed]
    ports: ["8080:80"]
  u:
    command: "@PY@ @ECHO@ --tcp 80 --tcp 81"
    networks: [unprot]
    ports: ["8090:80"]
  n:
    command: "@PY@ @ECHO@ --tcp 80 --tcp 81"
    networks: [natnet]
    ports: ["8070:80"]
  i1:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [iso]
  i2:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [iso]
networks:
  routed:
    driver_opts: {com.docker.network.bridge.gateway_mode_ipv4: routed}
    ipam: {config: [{subnet: 10.91.1.0/24}]}
  unprot:
    driver_opts: {com.docker.network.bridge.gateway_mode_ipv4: nat-unprotected}
    ipam: {config: [{subnet: 10.91.2.0/24}]}
  natnet:
    ipam: {config: [{subnet: 10.91.3.0/24}]}
  iso:
    driver_opts: {com.docker.network.bridge.gateway_mode_ipv4: isolated}
    ipam: {config: [{subnet: 10.91.4.0/24}]}
"""


def test_gateway_modes(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, MODES)
    r = sb.plan(compose, p)
    exposure = r.stdout.split("Exposure:")[1].split("\n\n")[0]
    assert "no host port, from anywhere; IPv4 routed (no NAT): reachable directly at 10.91.1.2:80" in exposure, exposure
    assert "IPv4 nat-unprotected: every port of 10.91.2.2 is reachable directly" in exposure, exposure
    sb.up(compose, p)
    rr, uu, nn, i1, i2 = (f"{p}-{s}-1" for s in ("r", "u", "n", "i1", "i2"))
    r_ip, u_ip, n_ip, i1_ip, i2_ip = (sb.ipv4(x) for x in (rr, uu, nn, i1, i2))
    for ns in (rr, uu, nn, i1, i2):
        wait_for(ns, "127.0.0.1", 80)
    sb.start_outside_web()
    # The outside routes the containers' subnets through the host, as a LAN router would.
    sb.ip(sb.outside, f"route add 10.91.0.0/16 via {HOST_ADDR}")

    # routed: the published port at the container's own address, the client's address kept;
    # no other port, no host port; egress not masqueraded.
    assert (tcp(sb.outside, r_ip, 80) or "").split()[:1] == [OUTSIDE_ADDR]
    assert tcp(sb.outside, r_ip, 81, 0.5) is None
    assert tcp(sb.outside, HOST_ADDR, 8080, 0.5) is None
    assert (tcp(rr, WEB_ADDR, 80) or "").split()[:1] == [r_ip]
    # nat-unprotected: the mapping, and every port directly; egress masqueraded.
    assert (tcp(sb.outside, HOST_ADDR, 8090) or "").split()[:1] == [OUTSIDE_ADDR]
    assert (tcp(sb.outside, u_ip, 81) or "").split()[:1] == [OUTSIDE_ADDR]
    assert (tcp(uu, WEB_ADDR, 80) or "").split()[:1] == [HOST_ADDR]
    # nat (the default): the mapping only, never the container's address directly.
    assert (tcp(sb.outside, HOST_ADDR, 8070) or "").split()[:1] == [OUTSIDE_ADDR]
    assert tcp(sb.outside, n_ip, 80, 0.5) is None
    assert tcp(sb.outside, n_ip, 81, 0.5) is None
    assert (tcp(nn, WEB_ADDR, 80) or "").split()[:1] == [HOST_ADDR]
    # Networks stay apart whatever their mode.
    assert tcp(rr, u_ip, 81, 0.5) is None
    assert tcp(uu, r_ip, 80, 0.5) is None
    # isolated: no address on the bridge, no default route; the containers reach each other
    # (and resolve each other's names on 127.0.0.11 in their namespace), nothing else.
    assert not any(addr.startswith("10.91.4.") for addr, _ in sb.addrs(sb.host).values())
    assert "default" not in sb.ip(i1, "route show")
    assert wait_for(i1, i2_ip, 80)
    assert dns(i1, "127.0.0.11", "i2") == ("NOERROR", [i2_ip])
    assert tcp(i1, WEB_ADDR, 80, 0.5) is None
    assert tcp(sb.host, i2_ip, 80, 0.5) is None
    assert tcp(sb.outside, i1_ip, 80, 0.5) is None
    assert tcp(i1, r_ip, 80, 0.5) is None
    r = check(sb, compose, p)
    assert r.returncode == 0, r.stdout + r.stderr

    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    sb.down(p, compose)
    sb.assert_clean(p)


# ---- enable_ipv4: false (IPv6-only) and AAAA for multi-homed services ---------------------

SIX = """
services:
  a:
    command: "@PY@ @ECHO6@ --tcp 80"
    networks: [six]
  b:
    command: "@PY@ @ECHO6@ --tcp 80"
    networks: [four, dual, six]
  c:
    command: "@PY@ @ECHO6@ --tcp 80"
    networks: [four, dual]
networks:
  four:
    ipam: {config: [{subnet: 10.92.1.0/24}]}
  dual:
    enable_ipv6: true
    ipam: {config: [{subnet: 10.92.2.0/24}, {subnet: "fd00:92:2::/64"}]}
  six:
    enable_ipv4: false
    enable_ipv6: true
    ipam: {config: [{subnet: "fd00:92:6::/64"}]}
"""


def test_ipv6_only_networks_and_aaaa_for_multi_homed_services(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, SIX)
    sb.up(compose, p)
    a, b, c = f"{p}-a-1", f"{p}-b-1", f"{p}-c-1"
    # a is IPv6-only: no IPv4 address, no IPv4 route; the six bridge has no IPv4 address.
    assert sb.addrs(a) == {}
    assert sb.ip(a, "-4 route show").strip() == ""
    assert "default via fd00:92:6::1" in sb.ip(a, "-6 route show")
    six_bridge = next(link["ifname"] for link in json.loads(sb.ip(sb.host, "-j -6 addr show") or "[]")
                      if any(x.get("local") == "fd00:92:6::1" for x in link.get("addr_info", [])))
    assert sb.ip(sb.host, f"-4 addr show dev {six_bridge}").strip() == ""
    a6 = "fd00:92:6::2" if "fd00:92:6::2/64" in sb.ip(a, "-6 addr show") else None
    assert a6 is not None, sb.ip(a, "-6 addr show")
    gw4 = sb.gateway_for(sb.ipv4(b, "eth0"))
    # Names: a has AAAA only; c's AAAA comes from the dual-stack network although b's first
    # network (four) is IPv4-only (it used to be NOERROR with no records).
    assert dns(b, gw4, "a", "A") == ("NOERROR", [])
    assert dns(b, gw4, "a", "AAAA") == ("NOERROR", [a6])
    assert dns(b, gw4, "c", "A") == ("NOERROR", ["10.92.1.3"])
    assert dns(b, gw4, "c", "AAAA") == ("NOERROR", ["fd00:92:2::3"])
    # a asks the resolver inside its namespace (it has no IPv4 gateway to ask).
    assert dns(a, "127.0.0.11", "b", "AAAA") == ("NOERROR", ["fd00:92:6::3"])
    assert dns(a, "127.0.0.11", "b", "A") == ("NOERROR", [])
    assert dns(a, "127.0.0.11", "c") == ("NXDOMAIN", [])
    # Traffic: over IPv6 on six and dual; not over IPv4 from a, not between a and c.
    assert (tcp(b, a6, 80) or "").split()[:1] == ["fd00:92:6::3"]
    assert (tcp(a, "fd00:92:6::3", 80) or "").split()[:1] == [a6]
    assert (tcp(b, "fd00:92:2::3", 80) or "").split()[:1] == ["fd00:92:2::2"]
    assert tcp(a, "10.92.1.2", 80, 0.5) is None
    assert tcp(a, "fd00:92:2::3", 80, 0.5) is None
    assert tcp(c, a6, 80, 0.5) is None
    # `check` derives the same names and reachability on its own, and finds them so.
    r = check(sb, compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    sb.down(p, compose)
    sb.assert_clean(p)


# ---- per-endpoint sysctls ------------------------------------------------------------------

SYSCTLS = """
services:
  t:
    command: "@PY@ @ECHO@ --tcp 80"
    networks:
      quiet:
        driver_opts:
          com.docker.network.endpoint.sysctls: "net.ipv4.conf.IFNAME.arp_ignore=8,net.ipv4.conf.IFNAME.accept_local=1"
      loud: {}
  peer:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [quiet, loud]
networks:
  quiet:
    ipam: {config: [{subnet: 10.93.1.0/24}]}
  loud:
    ipam: {config: [{subnet: 10.93.2.0/24}]}
"""


def read_sysctl(sb: Sandbox, ns: str, name: str) -> str:
    return sb.run_in(ns, "cat", "/proc/sys/" + name.replace(".", "/")).stdout.strip()


def test_endpoint_sysctls_are_applied_in_the_namespace_and_observed_back(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, SYSCTLS)
    sb.up(compose, p)
    t, peer = f"{p}-t-1", f"{p}-peer-1"
    quiet_if = next(i for i, (a, _) in sb.addrs(t).items() if a.startswith("10.93.1."))
    loud_if = next(i for i, (a, _) in sb.addrs(t).items() if a.startswith("10.93.2."))
    # Set on the quiet endpoint's interface only (IFNAME replaced), inside t's namespace.
    assert read_sysctl(sb, t, f"net.ipv4.conf.{quiet_if}.arp_ignore") == "8"
    assert read_sysctl(sb, t, f"net.ipv4.conf.{quiet_if}.accept_local") == "1"
    assert read_sysctl(sb, t, f"net.ipv4.conf.{loud_if}.arp_ignore") == "0"
    assert read_sysctl(sb, peer, f"net.ipv4.conf.{quiet_if}.arp_ignore") == "0"
    # Real traffic: arp_ignore=8 answers no ARP on that interface: t is unreachable on quiet,
    # reachable on loud; peer (no sysctl) is reachable on quiet.
    wait_for(t, "127.0.0.1", 80)
    t_quiet, t_loud = sb.addrs(t)[quiet_if][0], sb.addrs(t)[loud_if][0]
    peer_quiet = next(a for a, _ in sb.addrs(peer).values() if a.startswith("10.93.1."))
    peer_loud = next(a for a, _ in sb.addrs(peer).values() if a.startswith("10.93.2."))
    assert (tcp(peer, t_loud, 80) or "").split()[:1] == [peer_loud]
    assert tcp(peer, t_quiet, 80, 0.5) is None
    assert wait_for(t, peer_quiet, 80)
    # Observed back: the plan is empty; a value changed by hand is drift that `up` repairs.
    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    sb.run_in(t, "sysctl", "-q", "-w", f"net.ipv4.conf.{quiet_if}.arp_ignore=0")
    r = sb.plan(compose, p)
    assert r.returncode == 2 and f"net.ipv4.conf.{quiet_if}.arp_ignore = 8" in r.stdout, r.stdout + r.stderr
    sb.up(compose, p)
    assert read_sysctl(sb, t, f"net.ipv4.conf.{quiet_if}.arp_ignore") == "8"
    assert sb.plan(compose, p).returncode == 0
    sb.down(p, compose)
    sb.assert_clean(p)


# ---- trusted host interfaces -----------------------------------------------------------------

TRUSTED = """
services:
  t:
    command: "@PY@ @ECHO@ --tcp 81"
    networks: [trusting]
  n:
    command: "@PY@ @ECHO@ --tcp 81"
    networks: [plain]
networks:
  trusting:
    driver_opts: {com.docker.network.bridge.trusted_host_interfaces: "up0:nosuch0"}
    ipam: {config: [{subnet: 10.95.1.0/24}]}
  plain:
    ipam: {config: [{subnet: 10.95.2.0/24}]}
"""


def test_trusted_host_interfaces(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, TRUSTED)
    sb.up(compose, p)
    t, n = f"{p}-t-1", f"{p}-n-1"
    t_ip, n_ip = sb.ipv4(t), sb.ipv4(n)
    wait_for(t, "127.0.0.1", 81)
    wait_for(n, "127.0.0.1", 81)
    # A second link between the outside and the host, which the network does not trust.
    sb.ip(sb.host, "link add tv0 type veth peer name tv1")
    sb.ip(sb.host, f"link set tv1 netns {sb.outside}")
    sb.ip(sb.host, "addr add 192.0.2.1/30 dev tv0")
    sb.ip(sb.host, "link set tv0 up")
    sb.ip(sb.outside, "addr add 192.0.2.2/30 dev tv1")
    sb.ip(sb.outside, "link set tv1 up")
    sb.ip(sb.outside, f"route add 10.95.0.0/16 via {HOST_ADDR}")
    # Through the trusted uplink: t's unpublished port, directly; not n's (its network trusts nothing).
    assert (tcp(sb.outside, t_ip, 81) or "").split()[:1] == [OUTSIDE_ADDR]
    assert tcp(sb.outside, n_ip, 81, 0.5) is None
    # Through the untrusted link (which works: a host program answers over it): blocked.
    sb.spawn_in(sb.host, sys.executable, str(ECHO), "--bind", "192.0.2.1", "--tcp", "7001")
    assert wait_for(sb.outside, "192.0.2.1", 7001).split()[0] == "192.0.2.2"
    sb.ip(sb.outside, "route replace 10.95.0.0/16 via 192.0.2.1 dev tv1")
    assert tcp(sb.outside, t_ip, 81, 0.5) is None
    # Containers of other networks are not trusted either.
    assert tcp(n, t_ip, 81, 0.5) is None
    sb.ip(sb.host, "link del tv0")
    sb.down(p, compose)
    sb.assert_clean(p)


# ---- driver: ipvlan ----------------------------------------------------------------------------

IPVLAN = """
services:
  a:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [l2]
  e:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [l3]
  b:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [l2]
  c:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [priv]
  d:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [priv]
networks:
  l2:
    driver: ipvlan
    driver_opts: {parent: ipv0}
    ipam: {config: [{subnet: 192.168.70.0/24, gateway: 192.168.70.1}]}
  l3:
    driver: ipvlan
    driver_opts: {parent: ipv0, ipvlan_mode: l3}
    ipam: {config: [{subnet: 192.168.71.0/24}]}
  priv:
    driver: ipvlan
    driver_opts: {parent: ipv0, ipvlan_flag: private}
    ipam: {config: [{subnet: 192.168.72.0/24}]}
"""


def _ipvlan_parent(sb: Sandbox) -> None:
    sb.ip(sb.host, "link add ipv0 type veth peer name ipv1")
    sb.ip(sb.host, "link set ipv0 up")
    sb.ip(sb.host, "link set ipv1 up")


def test_ipvlan_is_refused_at_the_driver_where_the_kernel_lacks_it(sandbox: Sandbox, tmp_path: Path) -> None:
    from composenet.kernel.ipvlan import missing_reason

    sb, p = sandbox, project()
    _ipvlan_parent(sb)
    compose = write(tmp_path, IPVLAN)
    reason = missing_reason()
    if not reason:
        # This kernel has ipvlan: the refusal is exercised through a recorded kernel that
        # lacks it (`plan --observed`), the path `up` takes before it applies anything.
        from composenet.core.state import ObservedState
        from composenet.kernel.ipvlan import MISSING

        obs = tmp_path / "observed.json"
        obs.write_text(json.dumps(ObservedState(ipvlan_missing=MISSING).to_json()))
        r = sb.composenet("-f", str(compose), "-p", p, "plan", "--observed", str(obs), check=False, cwd=str(tmp_path))
    else:
        r = sb.up(compose, p, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{compose}:20:13: networks.l2.driver: driver ipvlan: " in r.stderr, r.stderr
    assert "CONFIG_IPVLAN" in r.stderr and "Traceback" not in r.stderr
    # Nothing was touched: no namespace, no link, no table.
    assert sb.namespaces(p) == []
    assert sorted(lk["ifname"] for lk in sb.links()) == ["ipv0", "ipv1", "lo", "up0"]
    sb.assert_clean(p)


def test_ipvlan_traffic(sandbox: Sandbox, tmp_path: Path) -> None:
    from composenet.kernel.ipvlan import missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(f"driver ipvlan cannot be built here: {reason}")
    sb, p = sandbox, project()
    _ipvlan_parent(sb)
    compose = write(tmp_path, IPVLAN)
    sb.up(compose, p)
    a, b, c, d = (f"{p}-{s}-1" for s in "abcd")
    for ns in (a, b, c, d):
        wait_for(ns, "127.0.0.1", 80)
    a2, b2 = "192.168.70.2", "192.168.70.3"
    assert sb.ipv4(b) == b2
    # l2, flag bridge: peers reach each other; names on 127.0.0.11 in the namespace.
    assert (tcp(a, b2, 80) or "").split()[:1] == [a2]
    assert dns(a, "127.0.0.11", "b") == ("NOERROR", [b2])
    # l2: the network's gateway; l3: the default route is the device itself, no gateway.
    assert "default via 192.168.70.1 dev eth0" in sb.ip(a, "route show")
    assert "default dev eth0" in sb.ip(f"{p}-e-1", "route show")
    # flag private: peers on the same parent cannot talk.
    c_ip, d_ip = sb.ipv4(c), sb.ipv4(d)
    assert tcp(c, d_ip, 80, 0.5) is None
    assert tcp(d, c_ip, 80, 0.5) is None
    # Different ipvlan networks on the same parent stay apart (no route between them).
    assert tcp(b, c_ip, 80, 0.5) is None
    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    sb.down(p, compose)
    sb.assert_clean(p)
