"""Service names on a macvlan network, end to end (root, throwaway sandbox namespaces).

A container on a macvlan network cannot reach the bridge gateways the resolver listens on, so
the resolver also listens inside its namespace on 127.0.0.11:53 (Docker's embedded DNS) and
answers it with that container's view. Real queries from inside the containers' namespaces
(UDP and TCP), a TCP connection by service name through the container's own resolv.conf,
reload when services come and go, a namespace deleted behind composenet's back, and `down`.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
import uuid
from pathlib import Path

from dnslib import QTYPE, RCODE, DNSRecord

from tests.integration.sandbox import Sandbox, dns, in_netns, sh, wait_for
from tests.integration.stacks import ECHO

DNS_IN_NS = "127.0.0.11"

STACK = """
services:
  a:
    command: "@PY@ @ECHO@ --tcp 80"
    networks:
      lan:
        ipv4_address: 192.168.57.10
        aliases: [alpha-alias]
  b:
    command: "@PY@ @ECHO@ --tcp 80"
    networks:
      lan:
        aliases: [beta-alias]
      side: {}
  c:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [side]
@EXTRA@
networks:
  lan:
    driver: macvlan
    driver_opts:
      parent: @PARENT@
    ipam:
      config:
        - subnet: 192.168.57.0/24
          gateway: 192.168.57.1
  side:
    ipam:
      config:
        - subnet: 10.157.0.0/24
"""

EXTRA_D = """  d:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [lan]
"""


def write(tmp: Path, parent: str, extra: str = "") -> Path:
    text = STACK.replace("@EXTRA@", extra).replace("@PARENT@", parent)
    text = text.replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO))
    path = tmp / "compose.yaml"
    path.write_text(text)
    return path


def dns_tcp(ns: str, server: str, name: str) -> tuple[str, list[str]]:
    """One A query over TCP from inside ``ns``: (rcode name, addresses)."""

    def go() -> tuple[str, list[str]]:
        q = DNSRecord.question(name, "A")
        packet = bytes(q.pack())
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(3.0)
        try:
            s.connect((server, 53))
            s.sendall(struct.pack("!H", len(packet)) + packet)
            data = b""
            for _ in range(100):  # bounded: a DNS message is at most 64 KiB
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) >= 2 and len(data) >= 2 + struct.unpack("!H", data[:2])[0]:
                    break
            r = DNSRecord.parse(data[2:])
            assert r.header.id == q.header.id
            return RCODE[r.header.rcode], sorted(str(rr.rdata) for rr in r.rr if rr.rtype == QTYPE.A)
        finally:
            s.close()

    return in_netns(ns, go)


def connect_by_name(ns: str, name: str, port: int) -> str:
    """A TCP connection by name from inside ``ns`` the way a service makes it: a process under
    `ip netns exec`, which sees /etc/netns/<ns>/resolv.conf as /etc/resolv.conf, resolving with
    the C library. Returns echo.py's reply (the source address it saw)."""
    code = ("import socket,sys\n"
            "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3)\n"
            "print(s.recv(4096).decode().strip())\n")
    r = sh("ip", "netns", "exec", ns, sys.executable, "-c", code, name, str(port), check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def resolver_pid(project: str) -> int:
    return int(Path(f"/run/composenet/{project}/dns.pid").read_text().strip())


def log_text(project: str) -> str:
    path = Path(f"/run/composenet/{project}/logs/dns.log")
    return path.read_text() if path.exists() else ""


def test_macvlan_service_names(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, f"t{uuid.uuid4().hex[:6]}"
    parent = "mvd0"
    sb.ip(sb.host, f"link add {parent} type veth peer name mvd1")
    sb.ip(sb.host, f"link set {parent} up")
    sb.ip(sb.host, "link set mvd1 up")
    compose = write(tmp_path, parent)
    sb.up(compose, p)
    a, b, c = f"{p}-a-1", f"{p}-b-1", f"{p}-c-1"
    a_ip, b_lan, b_side, c_ip = sb.ipv4(a), sb.ipv4(b, "eth0"), sb.ipv4(b, "eth1"), sb.ipv4(c)
    assert a_ip == "192.168.57.10" and b_lan.startswith("192.168.57.") and b_side.startswith("10.157.0.")

    # resolv.conf: 127.0.0.11 for containers on the macvlan network; bridge-only c unchanged.
    for ns in (a, b):
        assert Path(f"/etc/netns/{ns}/resolv.conf").read_text() == "nameserver 127.0.0.11\noptions ndots:0\n"
    assert Path(f"/etc/netns/{c}/resolv.conf").read_text().startswith("nameserver 10.157.0.1\n")

    # Service names and aliases on the shared macvlan network, from both sides, over UDP.
    assert dns(a, DNS_IN_NS, "b") == ("NOERROR", [b_lan])
    assert dns(a, DNS_IN_NS, "beta-alias") == ("NOERROR", [b_lan])
    assert dns(a, DNS_IN_NS, f"{p}-b-1") == ("NOERROR", [b_lan])
    assert dns(b, DNS_IN_NS, "a") == ("NOERROR", [a_ip])
    assert dns(b, DNS_IN_NS, "ALPHA-alias.") == ("NOERROR", [a_ip])
    assert dns(a, DNS_IN_NS, "a") == ("NOERROR", [a_ip])
    # b shares the bridge network with c: b sees c (with its bridge address), a does not.
    assert dns(b, DNS_IN_NS, "c") == ("NOERROR", [c_ip])
    assert dns(a, DNS_IN_NS, "c") == ("NXDOMAIN", [])
    assert dns(a, DNS_IN_NS, f"b.{p}_side") == ("NXDOMAIN", [])
    # Over TCP too.
    assert dns_tcp(a, DNS_IN_NS, "b") == ("NOERROR", [b_lan])
    assert dns_tcp(b, DNS_IN_NS, "c") == ("NOERROR", [c_ip])
    # The bridge network is served as before, on its gateway: c sees b by its side address.
    assert dns(c, "10.157.0.1", "b") == ("NOERROR", [b_side])
    assert dns(c, "10.157.0.1", "a") == ("NXDOMAIN", [])

    # A TCP connection by service name, through each container's own resolv.conf.
    wait_for(b, a_ip, 80)
    wait_for(a, b_lan, 80)
    assert connect_by_name(a, "b", 80).split()[0] == a_ip
    assert connect_by_name(b, "alpha-alias", 80).split()[0] == b_lan

    # Reload: a new service on the macvlan network gets a listener of its own and is seen by
    # the others; the running resolver is the same process.
    pid = resolver_pid(p)
    sb.up(write(tmp_path, parent, EXTRA_D), p)
    d = f"{p}-d-1"
    assert resolver_pid(p) == pid
    d_ip = sb.ipv4(d)
    assert dns(d, DNS_IN_NS, "a") == ("NOERROR", [a_ip])
    assert dns(a, DNS_IN_NS, "d") == ("NOERROR", [d_ip])
    # ... and removing it closes that listener (the namespace is not kept alive by the daemon)
    # and removes its names.
    sb.up(write(tmp_path, parent), p)
    assert resolver_pid(p) == pid
    assert d not in sb.namespaces(p)
    assert f"in {d}" not in log_text(p).strip().splitlines()[-1]
    # (no longer a project name: forwarded, and the sandbox has no upstream server)
    assert dns(a, DNS_IN_NS, "d") == ("SERVFAIL", [])

    # A namespace deleted behind composenet's back: the daemon drops that listener and keeps
    # answering the others.
    sh("ip", "netns", "del", b)
    for _ in range(100):  # bounded: the daemon checks its namespaces every second
        if f"namespace {b} is gone" in log_text(p):
            break
        time.sleep(0.1)
    assert f"namespace {b} is gone" in log_text(p)
    assert os.path.exists(f"/proc/{pid}")
    assert dns(a, DNS_IN_NS, "a") == ("NOERROR", [a_ip])

    sb.down(p, compose)
    sb.assert_clean(p)
    assert parent in [x["ifname"] for x in sb.links()]
