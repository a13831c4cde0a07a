"""Throwaway topologies for the DNS resolver's tests (root only), plus a fake upstream server.

    outside ns: 203.0.113.254 on the uplink; fake upstream DNS on 198.51.100.53 (lo);
                198.51.100.54 is on lo with nothing listening (ICMP port unreachable);
                any other 198.51.100.x is silently dropped (not local, no forwarding)
        |  veth up0
    host ns: 203.0.113.1, route 198.51.100.0/24 via the outside; one bridge per network with
             its gateway address; the resolver under test runs here (nsenter --net)
        |  one veth per endpoint
    one ns per container, eth<j> per endpoint with the endpoint's address

Every namespace name carries a random tag, so tests can run in parallel; ``teardown`` kills
the processes it started (by Popen handle) and deletes every namespace, and ``leftovers``
lists anything that survived. Traffic only goes to addresses inside these namespaces.

Also holds the configs of the reference stacks (``split_config``, ``naming_config``), shared
with the unit tests, and, run as a script, the fake upstream:
``python dnstopo.py upstream LOGFILE ADDRESS ANSWER`` (answers ``*.example`` with ANSWER and
writes one JSON line per query it receives).
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

CLONE_NEWNET = 0x40000000
UPSTREAM = "198.51.100.53"
DEAD_UPSTREAM = "198.51.100.54"  # local in the outside ns, nothing listening: ICMP refused
SILENT_UPSTREAM = "198.51.100.60"  # dropped in the outside ns: no answer at all
WEB_ADDR = "198.51.100.10"


# -- reference stacks (docker-reference/compose/{split,naming}) --------------------------------


def endpoint(network: str, ipv4: str | None, aliases: list[str] | None = None, internal: bool = False,
             ipv6: str | None = None) -> dict:
    return {"network": network, "ipv4": ipv4, "ipv6": ipv6, "aliases": aliases or [], "internal": internal}


def container(name: str, service: str, endpoints: list[dict], hostname: str | None = None,
              links: list[list[str]] | None = None, upstreams: list[str] | None = None,
              register: bool = True) -> dict:
    return {"name": name, "service": service, "hostname": hostname, "register": register,
            "upstreams": upstreams, "links": links or [], "endpoints": endpoints}


def split_config(pidfile: str = "/nonexistent/dns.pid") -> dict:
    """split with --scale api=3: web on frontend+backend, api x3/db on internal backend, fe on frontend."""
    fe, be = "split_frontend", "split_backend"
    return {
        "project": "split", "ttl": 5, "pidfile": pidfile, "upstreams": [UPSTREAM],
        "listeners": [
            {"network": fe, "address": "172.18.0.1", "port": 53, "internal": False},
            {"network": be, "address": "172.19.0.1", "port": 53, "internal": True},
        ],
        "containers": [
            container("split-web-1", "web", [endpoint(fe, "172.18.0.2"), endpoint(be, "172.19.0.2", internal=True)],
                      hostname="web-host"),
            container("split-api-1", "api", [endpoint(be, "172.19.0.3", internal=True)]),
            container("split-api-2", "api", [endpoint(be, "172.19.0.4", internal=True)]),
            container("split-api-3", "api", [endpoint(be, "172.19.0.5", internal=True)]),
            container("split-db-1", "db", [endpoint(be, "172.19.0.6", internal=True)]),
            container("split-fe-1", "fe", [endpoint(fe, "172.18.0.3")]),
        ],
    }


def naming_config(pidfile: str = "/nonexistent/dns.pid") -> dict:
    """naming: alpha (container_name, hostname, aliases, 2 nets), beta (link to alpha), gamma (net2)."""
    n1, n2 = "naming_net1", "naming_net2"
    return {
        "project": "naming", "ttl": 5, "pidfile": pidfile, "upstreams": [UPSTREAM], "forward_timeout": 0.5,
        "listeners": [
            {"network": n1, "address": "10.201.1.1", "port": 53, "internal": False},
            {"network": n2, "address": "10.201.2.254", "port": 53, "internal": False},
        ],
        "containers": [
            container("alpha-box", "alpha", [endpoint(n1, "10.201.1.10", ["alpha-alias", "shared-alias"]),
                                             endpoint(n2, "10.201.2.129", ["alpha-net2-only"])],
                      hostname="alpha-host"),
            # beta's upstreams: one that never answers, then the real one (timeout failover)
            container("naming-beta-1", "beta", [endpoint(n1, "10.201.1.20", ["shared-alias"])],
                      hostname="beta-host", links=[["alpha-link", "alpha"]],
                      upstreams=[SILENT_UPSTREAM, UPSTREAM]),
            # gamma's upstreams: a closed port first (ICMP failover), then the real one
            container("naming-gamma-1", "gamma", [endpoint(n2, "10.201.2.128")],
                      upstreams=[DEAD_UPSTREAM, UPSTREAM]),
        ],
    }


# -- namespaces --------------------------------------------------------------------------------


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    return r


_libc = ctypes.CDLL(None, use_errno=True)


def ns_socket(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket created inside network namespace ``ns`` (sockets keep their namespace).

    setns() only switches the calling thread, so a short-lived thread does it and the test's
    own thread never changes namespace."""
    result: list = []

    def worker() -> None:
        try:
            with open(f"/run/netns/{ns}") as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            result.append(socket.socket(family, kind))
        except BaseException as e:  # noqa: BLE001 -- re-raised in the caller's thread
            result.append(e)

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    if not result:
        raise AssertionError(f"could not open a socket in {ns}")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class Topo:
    """Namespaces, bridges and veths for a resolver config (see module doc)."""

    def __init__(self, tmp: Path, config: dict, subnets: dict[str, str], subnets6: dict[str, str] | None = None,
                 mmsg: bool = True, namespaces_for: set[str] | None = None):
        self.tag = uuid.uuid4().hex[:6]
        # The resolver's UDP path: recvmmsg/sendmmsg batches (fastio.py) or one recvfrom/sendto
        # per query (COMPOSENET_DNS_MMSG=0).
        self.mmsg = mmsg
        # Containers that get a namespace (default: every registered one); the others exist only
        # in the resolver's zone (many replicas without the cost of their namespaces).
        self.namespaces_for = namespaces_for
        self.tmp = tmp
        self.config = json.loads(json.dumps(config))
        self.config["pidfile"] = str(tmp / "run" / "dns.pid")
        self.subnets = subnets  # network -> cidr of its bridge (gateway/prefix)
        self.subnets6 = subnets6 or {}
        self.host = f"cnd{self.tag}h"
        self.outside = f"cnd{self.tag}o"
        self.ns: dict[str, str] = {}  # container name -> namespace
        self.procs: list[subprocess.Popen] = []
        self.config_path = tmp / "dns.json"
        self.upstream_log = tmp / "upstream.jsonl"
        self.resolver_log = tmp / "resolver.log"
        self.resolver: subprocess.Popen | None = None
        self._udp: dict[tuple[str, str, int], socket.socket] = {}

    # -- build ---------------------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return [self.host, self.outside, *self.ns.values()]

    def setup(self) -> None:
        sh("ip", "netns", "add", self.host)
        sh("ip", "netns", "add", self.outside)
        self.ip(self.host, "link set lo up")
        self.ip(self.outside, "link set lo up")
        sh("ip", "-n", self.host, "link", "add", "up0", "type", "veth", "peer", "name", "up0", "netns", self.outside)
        self.ip(self.host, "addr add 203.0.113.1/24 dev up0")
        self.ip(self.host, "link set up0 up")
        self.ip(self.host, "route add 198.51.100.0/24 via 203.0.113.254")
        self.ip(self.outside, "addr add 203.0.113.254/24 dev up0")
        self.ip(self.outside, "link set up0 up")
        for a in (UPSTREAM, DEAD_UPSTREAM, WEB_ADDR):
            self.ip(self.outside, f"addr add {a}/32 dev lo")
        for i, (net, cidr) in enumerate(sorted(self.subnets.items())):
            br = f"br{i}"
            self.ip(self.host, f"link add {br} type bridge")
            self.ip(self.host, f"addr add {cidr} dev {br}")
            if net in self.subnets6:
                self.ip(self.host, f"addr add {self.subnets6[net]} dev {br} nodad")
            self.ip(self.host, f"link set {br} up")
        for k, c in enumerate(self.config["containers"]):
            if not c.get("register", True):
                continue  # shares another container's namespace
            if self.namespaces_for is not None and c["name"] not in self.namespaces_for:
                continue
            ns = f"cnd{self.tag}c{k}"
            sh("ip", "netns", "add", ns)
            self.ns[c["name"]] = ns
            self.ip(ns, "link set lo up")
            for j, ep in enumerate(c["endpoints"]):
                self.attach(ns, f"v{k}x{j}", f"eth{j}", ep)

    def bridge(self, network: str) -> str:
        return f"br{sorted(self.subnets).index(network)}"

    def attach(self, ns: str, host_if: str, ns_if: str, ep: dict) -> None:
        sh("ip", "-n", self.host, "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
        self.ip(self.host, f"link set {host_if} master {self.bridge(ep['network'])} up")
        prefix = self.subnets[ep["network"]].split("/")[1]
        if ep.get("ipv4"):
            self.ip(ns, f"addr add {ep['ipv4']}/{prefix} dev {ns_if}")
        if ep.get("ipv6"):
            prefix6 = self.subnets6[ep["network"]].split("/")[1]
            self.ip(ns, f"addr add {ep['ipv6']}/{prefix6} dev {ns_if} nodad")
        self.ip(ns, f"link set {ns_if} up")

    def resolver_of(self, ns: str) -> str:
        """The listener a namespace's resolv.conf would name: its first network's gateway."""
        for c in self.config["containers"]:
            if self.ns.get(c["name"]) == ns and c["endpoints"]:
                net = c["endpoints"][0]["network"]
                for lst in self.config["listeners"]:
                    if lst["network"] == net:
                        return lst["address"]
        return self.config["listeners"][0]["address"]

    def ip(self, ns: str, cmd: str) -> str:
        return sh("ip", "-n", ns, *cmd.split()).stdout

    # -- processes -----------------------------------------------------------------------------

    def write_config(self, config: dict | None = None) -> None:
        if config is not None:
            pidfile = self.config["pidfile"]
            self.config = json.loads(json.dumps(config))
            self.config["pidfile"] = pidfile
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.config, indent=2))
        os.replace(tmp, self.config_path)

    def start_upstream(self, address: str = UPSTREAM, answer: str = WEB_ADDR) -> None:
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.outside}", sys.executable, __file__, "upstream",
                              str(self.upstream_log), address, answer],
                             stdout=subprocess.DEVNULL, stderr=open(self.tmp / "upstream.err", "w"),
                             start_new_session=True)
        self.procs.append(p)
        ready = self.tmp / f"upstream-{address}.ready"
        for _ in range(200):
            if ready.exists():
                return
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"fake upstream did not start: {(self.tmp / 'upstream.err').read_text()}")

    def start_resolver(self, wait: bool = True) -> subprocess.Popen:
        self.write_config()
        env = dict(os.environ, COMPOSENET_DNS_MMSG="1" if self.mmsg else "0")
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.host}", sys.executable, "-m",
                              "composenet.dns.server", str(self.config_path)],
                             stdout=subprocess.DEVNULL, stderr=open(self.resolver_log, "a"),
                             start_new_session=True, env=env)
        self.procs.append(p)
        self.resolver = p
        if wait:
            pidfile = Path(self.config["pidfile"])
            for _ in range(400):
                if pidfile.exists() and pidfile.read_text().strip():
                    return p
                if p.poll() is not None:
                    raise AssertionError(f"resolver exited {p.returncode}: {self.resolver_log.read_text()}")
                time.sleep(0.025)
            raise AssertionError(f"resolver not ready: {self.resolver_log.read_text()}")
        return p

    def resolver_pid(self) -> int:
        """The daemon's own pid (nsenter execs it, so it is the Popen's pid)."""
        return int(Path(self.config["pidfile"]).read_text())

    def upstream_queries(self) -> list[dict]:
        if not self.upstream_log.exists():
            return []
        return [json.loads(line) for line in self.upstream_log.read_text().splitlines() if line.strip()]

    # -- queries -------------------------------------------------------------------------------

    def query(self, ns: str, name: str, qtype: str = "A", server: str | None = None, tcp: bool = False,
              timeout: float = 3.0):
        """Ask ``server`` (default: the first listener) from namespace ``ns``; a dnslib DNSRecord."""
        from dnslib import DNSRecord

        q = DNSRecord.question(name, qtype)
        return DNSRecord.parse(self.raw(ns, q.pack(), server=server, tcp=tcp, timeout=timeout))

    def raw(self, ns: str, packet: bytes, server: str | None = None, tcp: bool = False, timeout: float = 3.0,
            port: int = 53) -> bytes:
        """Send one packet and return the reply with the same ID (bounded wait)."""
        server = server or self.resolver_of(ns)
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        if tcp:
            s = ns_socket(ns, family, socket.SOCK_STREAM)
            try:
                s.settimeout(timeout)
                s.connect((server, port))
                s.sendall(struct.pack("!H", len(packet)) + packet)
                head = _recv_exact(s, 2)
                return _recv_exact(s, struct.unpack("!H", head)[0])
            finally:
                s.close()
        # One connected socket per (namespace, server): ICMP "port unreachable" then surfaces as
        # ConnectionRefusedError, which is how tests see that nothing listens.
        key = (ns, server, port)
        cached = self._udp.get(key)
        if cached is None:
            cached = ns_socket(ns, family, socket.SOCK_DGRAM)
            cached.connect((server, port))
            self._udp[key] = cached
        s = cached
        s.settimeout(timeout)
        s.send(packet)
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            data = s.recv(65535)
            if data[:2] == packet[:2]:
                return data
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer with id {packet[:2].hex()}")

    # -- teardown ------------------------------------------------------------------------------

    def teardown(self) -> None:
        for s in self._udp.values():
            s.close()
        self._udp.clear()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        for ns in self.namespaces():
            sh("ip", "netns", "del", ns, check=False)

    def leftovers(self) -> list[str]:
        found = [f"/run/netns/{n}" for n in os.listdir("/run/netns") if n.startswith(f"cnd{self.tag}")] \
            if os.path.isdir("/run/netns") else []
        found += [f"pid {p.pid}" for p in self.procs if p.poll() is None]
        return found


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    for _ in range(10000):
        if len(buf) >= n:
            break
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


# -- fake upstream (runs in the outside namespace) ---------------------------------------------


def _upstream_answer(data: bytes, answer: str, proto: str, log) -> bytes | None:
    from dnslib import AAAA, QTYPE, RCODE, RR, SOA, A, DNSRecord

    try:
        q = DNSRecord.parse(data)
    except Exception:  # noqa: BLE001 -- a fake server ignores garbage
        return None
    name = str(q.q.qname).lower()
    log.write(json.dumps({"name": name, "type": QTYPE.get(q.q.qtype), "proto": proto}) + "\n")
    log.flush()
    r = q.reply()
    r.header.ra = 1
    soa = RR("example.", QTYPE.SOA, ttl=60, rdata=SOA("ns.example.", "admin.example.", (1, 60, 60, 60, 30)))
    if not name.endswith(".example."):
        r.header.rcode = RCODE.NXDOMAIN
        r.add_auth(soa)
    elif name.startswith("servfail."):
        r.header.rcode = RCODE.SERVFAIL
    elif name.startswith("nx"):
        r.header.rcode = RCODE.NXDOMAIN
        r.add_auth(soa)
    elif name.startswith("big."):
        if proto == "udp":
            r.header.tc = 1
        else:
            for i in range(1, 41):
                r.add_answer(RR(q.q.qname, QTYPE.A, ttl=60, rdata=A(f"198.51.100.{i}")))
    elif q.q.qtype == QTYPE.A:
        r.add_answer(RR(q.q.qname, QTYPE.A, ttl=60, rdata=A(answer)))
    elif q.q.qtype == QTYPE.AAAA and name.startswith("v6."):
        r.add_answer(RR(q.q.qname, QTYPE.AAAA, ttl=60, rdata=AAAA("2001:db8::10")))
    else:
        r.add_auth(soa)
    return r.pack()


def run_upstream(logfile: str, address: str, answer: str) -> None:
    log = open(logfile, "a")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, 53))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((address, 53))
    tcp.listen(16)
    lock = threading.Lock()

    def serve_tcp() -> None:
        while True:
            conn, _ = tcp.accept()
            conn.settimeout(5)
            try:
                n = struct.unpack("!H", _recv_exact(conn, 2))[0]
                with lock:
                    resp = _upstream_answer(_recv_exact(conn, n), answer, "tcp", log)
                if resp:
                    conn.sendall(struct.pack("!H", len(resp)) + resp)
            except (OSError, struct.error):
                pass
            finally:
                conn.close()

    threading.Thread(target=serve_tcp, daemon=True).start()
    Path(logfile).with_name(f"upstream-{address}.ready").write_text("ok")
    while True:
        data, addr = udp.recvfrom(65535)
        with lock:
            resp = _upstream_answer(data, answer, "udp", log)
        if resp:
            udp.sendto(resp, addr)


def _cidr_gateway(cidr: str) -> str:
    return str(ipaddress.ip_interface(cidr).ip)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "upstream":
        run_upstream(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("usage: dnstopo.py upstream LOGFILE ADDRESS ANSWER")
