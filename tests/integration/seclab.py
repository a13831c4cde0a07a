"""The security lab of tests/integration/test_security.py (root only): the sandbox of sandbox.py
plus two more namespaces it owns, and the probes sockets cannot express.

    outside (203.0.113.254) --up0-- host (composenet) --lan0-- lan   (192.0.2.66, 2001:db8:66::66)
                                         |  192.0.2.1, 2001:db8:66::1
                                         +--pv0-- private (198.18.99.2, 2001:db8:99::2;
                                                           the host is 198.18.99.1, 2001:db8:99::1)

- ``lan`` is a LAN neighbour of the host: it can route anything through the host, including
  127.0.0.0/8 (``route_loopback``: the moby/moby#41872 attack), and send raw Ethernet frames.
- ``private`` is a segment behind another host interface that the host never routed for the LAN
  before composenet came (issue: the host must not become a router).
- Raw frames (``Frames``, ``send_frames``, ``Sniffer``) go out of an interface with AF_PACKET,
  from inside a namespace the test owns or attacks from; nothing leaves the namespaces a test made.

Every wait is bounded; nothing here measures time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.sandbox import CLONE_NEWNET, Sandbox, _libc, in_netns, sh
from tests.integration.stacks import ECHO, HERE

LAN_HOST, LAN_PEER = "192.0.2.1", "192.0.2.66"
LAN6_HOST, LAN6_PEER = "2001:db8:66::1", "2001:db8:66::66"
PRIVATE_HOST, PRIVATE_PEER = "198.18.99.1", "198.18.99.2"
PRIVATE6_HOST, PRIVATE6_PEER = "2001:db8:99::1", "2001:db8:99::2"
ECHO_DUAL = HERE / "echo_dual.py"
LOOPBACK_TABLE = 100  # the routing table an attacker sends 127.0.0.0/8 through
ETH_P_ALL, ETH_P_IP, ETH_P_ARP, ETH_P_IPV6, ETH_P_8021Q = 0x0003, 0x0800, 0x0806, 0x86DD, 0x8100
PACKET_OUTGOING = 4


class Lab(Sandbox):
    """The sandbox, a LAN neighbour and a private segment (see the module docstring)."""

    def __init__(self, tmp: Path, tag: str | None = None):
        super().__init__(tmp, tag)
        self.lan = f"cnt{self.tag}n"
        self.private = f"cnt{self.tag}p"

    def setup(self) -> None:
        super().setup()
        sh("ip", "netns", "add", self.lan)
        sh("ip", "netns", "add", self.private)
        sh("ip", "link", "add", "lan0", "netns", self.host, "type", "veth", "peer", "name", "eth0", "netns", self.lan)
        sh("ip", "link", "add", "pv0", "netns", self.host, "type", "veth", "peer", "name", "eth0", "netns", self.private)
        for ns, cmds in (
            (self.host, [f"addr add {LAN_HOST}/24 dev lan0", f"-6 addr add {LAN6_HOST}/64 dev lan0 nodad",
                         "link set lan0 up", f"addr add {PRIVATE_HOST}/24 dev pv0",
                         f"-6 addr add {PRIVATE6_HOST}/64 dev pv0 nodad", "link set pv0 up"]),
            (self.lan, [f"addr add {LAN_PEER}/24 dev eth0", f"-6 addr add {LAN6_PEER}/64 dev eth0 nodad",
                        "link set eth0 up", "link set lo up"]),
            (self.private, [f"addr add {PRIVATE_PEER}/24 dev eth0", f"-6 addr add {PRIVATE6_PEER}/64 dev eth0 nodad",
                            "link set eth0 up", "link set lo up", f"route add default via {PRIVATE_HOST}",
                            f"-6 route add default via {PRIVATE6_HOST}"]),
        ):
            for cmd in cmds:
                self.ip(ns, cmd)

    def teardown(self) -> None:
        super().teardown()
        for ns in (self.lan, self.private):
            sh("ip", "netns", "del", ns, check=False)

    def sysctl(self, ns: str, name: str, value: str) -> None:
        """Set a sysctl in namespace ``ns`` (/proc/sys/net follows the opener's namespace)."""
        self.run_in(ns, "sysctl", "-q", "-w", f"{name}={value}")

    def read_sysctl(self, ns: str, name: str) -> str:
        return self.run_in(ns, "sysctl", "-n", name).stdout.strip()

    def route_loopback(self, ns: str, via: str, dev: str = "eth0") -> None:
        """Make namespace ``ns`` send everything for 127.0.0.0/8 to ``via`` (its gateway, or the
        host for the LAN neighbour) instead of its own loopback, and accept the answers: what an
        attacker with the namespace's root does (moby/moby#41872, Kubernetes CVE-2020-8558)."""
        self.sysctl(ns, f"net.ipv4.conf.{dev}.route_localnet", "1")
        self.ip(ns, f"route add 127.0.0.0/8 via {via} dev {dev} table {LOOPBACK_TABLE}")
        self.ip(ns, "rule add pref 1000 lookup local")
        self.ip(ns, "rule del pref 0 lookup local")
        self.ip(ns, f"rule add to 127.0.0.0/8 lookup {LOOPBACK_TABLE} pref 500")

    def serve(self, ns: str, *args: str, dual: bool = False) -> None:
        """echo.py (or echo_dual.py) in namespace ``ns``, killed at teardown."""
        self.spawn_in(ns, sys.executable, str(ECHO_DUAL if dual else ECHO), "--max-seconds", "300", *args)

    def mac(self, ns: str, ifname: str) -> str:
        return json.loads(sh("ip", "-n", ns, "-j", "link", "show", "dev", ifname).stdout)[0]["address"]

    def ipv6(self, ns: str, ifname: str = "eth0", link_local: bool = False) -> str:
        for link in json.loads(sh("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", ifname).stdout or "[]"):
            for a in link.get("addr_info", []):
                if (a.get("scope") == "link") == link_local:
                    return str(a["local"])
        raise AssertionError(f"{ns} {ifname} has no {'link-local' if link_local else 'global'} IPv6 address")

    def neighbour(self, ns: str, addr: str) -> str | None:
        """The MAC namespace ``ns`` has for ``addr`` (None: no entry, or not resolved)."""
        for n in json.loads(sh("ip", "-n", ns, "-j", "neigh", "show").stdout or "[]"):
            if n.get("dst") == addr:
                return n.get("lladdr")
        return None

    def fdb_port(self, bridge: str, mac: str) -> str | None:
        """The port of ``bridge`` through which the host's bridge learned ``mac``."""
        for e in json.loads(sh("bridge", "-n", self.host, "-j", "fdb", "show", "br", bridge).stdout or "[]"):
            if e.get("mac") == mac and "permanent" not in e.get("state", ""):
                return e.get("ifname")
        return None

    def counters(self, family: str, table: str) -> dict[str, int]:
        """Packets of every named counter of a table in the host namespace."""
        data = json.loads(self.nft("-j", "list", "counters", "table", family, table).stdout)
        return {o["counter"]["name"]: int(o["counter"]["packets"]) for o in data["nftables"] if "counter" in o}

    def rule_packets(self, family: str, table: str, chain: str, comment_part: str) -> int:
        """Packets counted by the rules of ``chain`` whose comment contains ``comment_part``."""
        data = json.loads(self.nft("-j", "list", "chain", family, table, chain).stdout)
        total = 0
        for o in data["nftables"]:
            r = o.get("rule")
            if r and comment_part in (r.get("comment") or ""):
                total += sum(int(e["counter"]["packets"]) for e in r["expr"] if isinstance(e, dict) and "counter" in e)
        return total


def write_stack(dest: Path, name: str, text: str, **subst: str) -> Path:
    """A compose file from ``text`` (``@PY@``, ``@ECHO@``, ``@ECHO_DUAL@`` and ``@NAME@`` filled
    in), written to dest/<name>.yaml."""
    values = {"PY": sys.executable, "ECHO": str(ECHO), "ECHO_DUAL": str(ECHO_DUAL), **subst}
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    out = dest / f"{name}.yaml"
    out.write_text(text)
    return out


# ---- probes ------------------------------------------------------------------------------------


def udp_any(ns: str, addr: str, port: int, timeout: float = 1.0, tries: int = 3) -> str | None:
    """Like sandbox.udp, for IPv4 or IPv6 ``addr``: the echo reply, or None."""

    def go() -> str | None:
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout / tries)
        try:
            for _ in range(tries):
                try:
                    s.sendto(b"ping", (addr, port))
                    return s.recvfrom(4096)[0].decode().strip()
                except TimeoutError:
                    continue
                except OSError:
                    return None
            return None
        finally:
            s.close()

    return in_netns(ns, go)


def syn_answered(ns: str, ifname: str, dst_mac: str, src6: str, dst6: str, port: int, timeout: float = 1.5) -> bool:
    """Send a raw TCP SYN from ``src6`` to [``dst6``]:``port`` through ``dst_mac`` out of
    ``ifname`` in ``ns`` (a socket cannot send to [::1] over an interface) and say whether a
    SYN-ACK came back."""

    def go() -> bool:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        s.bind((ifname, ETH_P_IPV6))
        s.settimeout(0.2)
        try:
            src_mac = s.getsockname()[4].hex(":")
            sport = 40000 + port % 20000
            s.send(ether(dst_mac, src_mac, ETH_P_IPV6, tcp6_syn(src6, dst6, sport, port)))
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                try:
                    frame, addr = s.recvfrom(65535)
                except TimeoutError:
                    continue
                if addr[2] == PACKET_OUTGOING or len(frame) < 14 + 40 + 14:
                    continue
                ip6 = frame[14:]
                if ip6[6] != 6:
                    continue
                tcp = ip6[40:]
                fsport, fdport = struct.unpack("!HH", tcp[:4])
                if fsport == port and fdport == sport and tcp[13] & 0x12 == 0x12:
                    return True
            return False
        finally:
            s.close()

    return in_netns(ns, go, timeout=timeout + 10)


def send_frames(ns: str, ifname: str, frames: list[bytes]) -> None:
    """Send raw Ethernet frames out of ``ifname`` in namespace ``ns``, in order. The sending
    thread stays on one CPU: frames enter the receiving side's backlog of the CPU that sent them,
    so a thread moved between two sends could see them overtake each other."""

    def go() -> None:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # this thread only
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            s.bind((ifname, 0))
            for f in frames:
                s.send(f)
        finally:
            s.close()

    in_netns(ns, go)


class Sniffer:
    """Every frame that arrives on ``ifname`` in ``ns`` (not those it sends), from ``start``
    until ``stop``, in a thread of its own that joined the namespace."""

    def __init__(self, ns: str, ifname: str):
        self.ns, self.ifname = ns, ifname
        self.frames: list[bytes] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sniffer:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError(f"sniffer on {self.ns} {self.ifname} did not start")
        if self._error:
            raise self._error
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            with open(f"/run/netns/{self.ns}") as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(f"setns {self.ns}")
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((self.ifname, ETH_P_ALL))
            s.settimeout(0.05)
        except BaseException as e:  # noqa: BLE001 -- handed to the test's thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    frame, addr = s.recvfrom(65535)
                except TimeoutError:
                    continue
                if addr[2] != PACKET_OUTGOING:
                    self.frames.append(frame)
        finally:
            s.close()

    def seen(self, marker: bytes) -> bool:
        return any(marker in f for f in list(self.frames))

    def wait_for(self, marker: bytes, deadline: float = 5.0) -> bool:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.seen(marker):
                return True
            time.sleep(0.02)
        return self.seen(marker)


def wait_until(check: Callable[[], bool], deadline: float = 5.0) -> bool:
    """Poll ``check`` (bounded) until it holds; its last answer."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


# ---- frames (pure) -----------------------------------------------------------------------------


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eui64_link_local(mac: str) -> str:
    """The link-local address a fresh namespace gives an interface with this MAC (RFC 4291)."""
    b = bytearray(_mac(mac))
    b[0] ^= 0x02
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])))


def ether(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return _mac(dst) + _mac(src) + struct.pack("!H", ethertype) + payload


def vlan(dst: str, src: str, vid: int, ethertype: int, payload: bytes) -> bytes:
    """An 802.1Q-tagged frame."""
    return _mac(dst) + _mac(src) + struct.pack("!HHH", ETH_P_8021Q, vid & 0xFFF, ethertype) + payload


def ipv4_udp(src: str, dst: str, sport: int, dport: int, data: bytes, ttl: int = 64) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data  # checksum 0: none (IPv4)
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, ttl, 17, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    head = head[:10] + struct.pack("!H", _sum16(head)) + head[12:]
    return head + udp


def _ipv6(src: str, dst: str, nh: int, payload: bytes, hlim: int) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, hlim, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def _pseudo6(src: str, dst: str, nh: int, upper: bytes) -> int:
    pseudo = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + struct.pack("!I3xB", len(upper), nh)
    return _sum16(pseudo + upper)


def ipv6_udp(src: str, dst: str, sport: int, dport: int, data: bytes, hlim: int = 64) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    udp = udp[:6] + struct.pack("!H", _pseudo6(src, dst, 17, udp) or 0xFFFF) + udp[8:]
    return _ipv6(src, dst, 17, udp, hlim)


def icmp6(src: str, dst: str, typ: int, code: int, body: bytes) -> bytes:
    msg = struct.pack("!BBH", typ, code, 0) + body
    msg = msg[:2] + struct.pack("!H", _pseudo6(src, dst, 58, msg)) + msg[4:]
    return _ipv6(src, dst, 58, msg, 255)


def neighbour_advert(src: str, dst: str, target: str, lladdr: str) -> bytes:
    """An unsolicited NA with the override flag: "``target`` is at ``lladdr``"."""
    body = struct.pack("!I", 0x20000000) + ipaddress.IPv6Address(target).packed + bytes([2, 1]) + _mac(lladdr)
    return icmp6(src, dst, 136, 0, body)


def router_advert(src: str, lladdr: str) -> bytes:
    """A router advertisement from ``src`` (a link-local address) to all nodes: "I am your
    default router for 1800 s"."""
    ra = struct.pack("!BBHII", 64, 0, 1800, 0, 0)
    return icmp6(src, "ff02::1", 134, 0, ra + bytes([1, 1]) + _mac(lladdr))


def arp_reply(sender_mac: str, sender_ip: str, target_mac: str, target_ip: str) -> bytes:
    """ARP payload: "``sender_ip`` is at ``sender_mac``", to ``target``."""
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 2, _mac(sender_mac), ipaddress.IPv4Address(sender_ip).packed,
                       _mac(target_mac), ipaddress.IPv4Address(target_ip).packed)


def tcp6_syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", _pseudo6(src, dst, 6, tcp)) + tcp[18:]
    return _ipv6(src, dst, 6, tcp, 64)
