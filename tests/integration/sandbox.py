"""Throwaway network topology for integration tests (root only).

    outside ns (203.0.113.254/24 on the uplink; 198.51.100.10 web, 198.51.100.53 DNS on lo)
        |  veth uplink
    host ns (203.0.113.1/24, default via 203.0.113.254)   <- composenet runs here, via nsenter --net

composenet is run inside the host namespace with ``nsenter --net=/run/netns/<host>``: unlike
``ip netns exec`` it keeps the mount namespace, so the namespaces composenet creates under
/run/netns stay visible after it exits. Traffic goes only to addresses inside these namespaces.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dnslib import QTYPE, RCODE, DNSRecord

HOST_ADDR = "203.0.113.1"
OUTSIDE_ADDR = "203.0.113.254"
WEB_ADDR = "198.51.100.10"
DNS_ADDR = "198.51.100.53"


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def sh(*args: str, check: bool = True, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout, input=input)


class Sandbox:
    def __init__(self, tmp: Path, tag: str | None = None):
        self.tag = tag or uuid.uuid4().hex[:6]
        self.host = f"cnt{self.tag}h"
        self.outside = f"cnt{self.tag}o"
        self.tmp = tmp
        self.resolv_conf = tmp / "resolv.conf"
        self.procs: list[subprocess.Popen] = []
        # Projects brought up in this sandbox (teardown runs `down` for each, then removes
        # whatever is left), and the processes seen in their namespaces (assert_clean).
        self.projects: set[str] = set()
        self.seen: dict[str, set[tuple[int, str]]] = {}
        self.seen_host: set[tuple[int, str]] = set()  # in the host ns, owner not known

    # -- topology ---------------------------------------------------------------------
    def setup(self) -> None:
        sh("ip", "netns", "add", self.host)
        sh("ip", "netns", "add", self.outside)
        sh("ip", "link", "add", "up0", "netns", self.host, "type", "veth", "peer", "name", "up0", "netns", self.outside)
        self.ip(self.host, "addr add 203.0.113.1/24 dev up0")
        self.ip(self.host, "link set up0 up")
        self.ip(self.host, "link set lo up")
        self.ip(self.host, "route add default via 203.0.113.254")
        self.ip(self.outside, "addr add 203.0.113.254/24 dev up0")
        self.ip(self.outside, "addr add 198.51.100.10/32 dev lo")
        self.ip(self.outside, "addr add 198.51.100.53/32 dev lo")
        self.ip(self.outside, "link set up0 up")
        self.ip(self.outside, "link set lo up")
        self.resolv_conf.write_text(f"nameserver {DNS_ADDR}\n")

    def ip(self, ns: str, cmd: str) -> str:
        return sh("ip", "-n", ns, *cmd.split()).stdout

    def run_in(self, ns: str, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command in a namespace (by name under /run/netns), keeping the mount namespace."""
        return sh("nsenter", f"--net=/run/netns/{ns}", *cmd, check=check, timeout=timeout)

    def spawn_in(self, ns: str, *cmd: str) -> subprocess.Popen:
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", *cmd],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        return p

    def composenet(self, *args: str, check: bool = True, timeout: float = 120, cwd: str | None = None,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        e = dict(os.environ)
        e["COMPOSENET_RESOLV_CONF"] = str(self.resolv_conf)
        if env:
            e.update(env)
        r = subprocess.run(["nsenter", f"--net=/run/netns/{self.host}", sys.executable, "-m", "composenet", *args],
                           capture_output=True, text=True, timeout=timeout, cwd=cwd, env=e)
        if check and r.returncode != 0:
            raise AssertionError(f"composenet {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    # -- teardown ---------------------------------------------------------------------
    def teardown(self) -> None:
        for project in sorted(self.projects):
            self._remove_project(project)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        for ns in (self.host, self.outside):
            sh("ip", "netns", "del", ns, check=False)


    # -- composenet runs and what they leave ---------------------------------------------
    def up(self, compose: Path | str, project: str, *extra: str, check: bool = True,
           env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """``composenet -f COMPOSE -p PROJECT up``; then records the project's processes."""
        self.projects.add(project)
        try:
            return self.composenet("-f", str(compose), "-p", project, "up", *extra, check=check, env=env,
                                   timeout=timeout, cwd=str(self.tmp))
        finally:
            self.snapshot(project)

    def down(self, project: str, compose: Path | str | None = None, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess:
        """``composenet [-f COMPOSE] -p PROJECT down`` (without -f: from kernel labels alone,
        run from an empty directory so no compose file is found)."""
        self.projects.add(project)
        self.snapshot(project)
        files = ("-f", str(compose)) if compose is not None else ()
        return self.composenet(*files, "-p", project, "down", check=check, timeout=timeout, cwd=str(self.empty_dir()))

    def plan(self, compose: Path | str, project: str, *extra: str) -> subprocess.CompletedProcess:
        """``composenet -f COMPOSE -p PROJECT plan --detailed-exitcode`` (never raises)."""
        return self.composenet("-f", str(compose), "-p", project, "plan", "--detailed-exitcode", *extra,
                               check=False, cwd=str(self.tmp))

    def empty_dir(self) -> Path:
        d = self.tmp / "empty"
        d.mkdir(exist_ok=True)
        return d

    def namespaces(self, project: str) -> list[str]:
        """The project's service namespaces (/run/netns/<project>-*)."""
        if not os.path.isdir("/run/netns"):
            return []
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(project + "-"))

    def snapshot(self, project: str) -> None:
        """Record every process in the project's namespaces, and those in the sandbox host ns
        (the resolver), so that assert_clean can check they are gone after `down`."""
        mine = {p.pid for p in self.procs} | {os.getpid()}
        inodes = {netns_inode(n) for n in self.namespaces(project)} - {None}
        host = netns_inode(self.host)
        seen = self.seen.setdefault(project, set())
        for pid, ino in all_process_netns():
            if pid in mine:
                continue
            ident = (pid, proc_start(pid))
            if ino in inodes:
                seen.add(ident)
            elif ino == host:
                if project in proc_cmdline(pid):
                    seen.add(ident)
                else:
                    self.seen_host.add(ident)

    def links(self) -> list[dict[str, Any]]:
        return json.loads(sh("ip", "-n", self.host, "-j", "link", "show").stdout or "[]")

    def nft(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """nft inside the sandbox host ns."""
        return self.run_in(self.host, "nft", *args, check=check)

    def problems(self, project: str) -> list[str]:
        """What a project left behind (empty when clean): see assert_clean."""
        found = leftovers(project)
        others_up = any(self.namespaces(p) for p in self.projects if p != project)
        for link in self.links():
            name = link.get("ifname", "")
            mine = str(link.get("ifalias", "")).startswith(f"composenet:{project}/")
            if mine or (not others_up and name.startswith(("cnb-", "cnv-"))):
                found.append(f"link {name} ({link.get('ifalias', '')}) in {self.host}")
        from composenet.core.resources import nft_table_name

        table = nft_table_name(project)
        tables = self.nft("list", "tables", check=False).stdout
        if table in tables.split():
            found.append(f"nft table inet {table} in {self.host}")
        procs = [(pid, start, "") for pid, start in sorted(self.seen.get(project, set()))]
        if not others_up:
            procs += [(pid, start, f" in {self.host}") for pid, start in sorted(self.seen_host)]
        for pid, _start, where in _still_running(procs):
            found.append(f"process {pid} still running{where}: {proc_cmdline(pid)!r} (state {proc_state(pid)})")
        return found

    def assert_clean(self, project: str) -> None:
        """After `down`: no namespaces of the project under /run/netns, no /etc/netns/<project>-*,
        no /run/composenet/<project>, no cnb-/cnv- links (or links labelled for the project) and
        no table of the project in the sandbox host ns, and none of the processes recorded by
        ``snapshot`` still alive (host-ns processes not attributable to a project are checked
        once no other project of this sandbox is up)."""
        found = self.problems(project)
        assert found == [], f"project {project} left behind:\n  " + "\n  ".join(found)

    def _remove_project(self, project: str) -> None:
        """Best effort, for teardown after a failure: `down`, then remove by hand what is left."""
        try:
            self.down(project, check=False, timeout=60)
        except (subprocess.TimeoutExpired, OSError):
            pass
        inodes = {netns_inode(n) for n in self.namespaces(project)} - {None}
        for pid, ino in all_process_netns():
            if ino in inodes:
                _kill(pid)
        for pid, start in self.seen.get(project, set()):
            if proc_start(pid) == start:
                _kill(pid)
        for n in self.namespaces(project):
            sh("ip", "netns", "del", n, check=False)
        for d in glob.glob(f"/etc/netns/{glob.escape(project)}-*"):
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(f"/run/composenet/{project}", ignore_errors=True)
        if not any(self.namespaces(p) for p in self.projects if p != project):
            for pid, start in self.seen_host:
                if proc_start(pid) == start:
                    _kill(pid)

    def start_outside_web(self) -> None:
        """The fake web server at 198.51.100.10:80 (tcp and udp; stacks/echo.py, which answers
        with the source address it saw) in the outside namespace; returns once it answers."""
        echo = Path(__file__).resolve().parent / "stacks" / "echo.py"
        self.spawn_in(self.outside, sys.executable, str(echo), "--bind", WEB_ADDR, "--tcp", "80", "--udp", "80")
        wait_for(self.outside, WEB_ADDR, 80)
        wait_for(self.outside, WEB_ADDR, 80, "udp")

    def bridge_nf_call_iptables(self, value: int | None = None) -> int | None:
        """Read (or set, in the sandbox host ns only: the sysctl is per namespace) whether bridged
        frames traverse the inet hooks. None when br_netfilter is not loaded (no sysctl)."""
        path = "/proc/sys/net/bridge/bridge-nf-call-iptables"
        r = self.run_in(self.host, "cat", path, check=False)
        if r.returncode != 0:
            return None
        if value is not None:
            self.run_in(self.host, "sysctl", "-q", "-w", f"net.bridge.bridge-nf-call-iptables={value}")
            self.run_in(self.host, "conntrack", "-F", check=False)  # this namespace's table only
            return value
        return int(r.stdout.strip())

    # -- addresses ------------------------------------------------------------------------
    def addrs(self, ns: str) -> dict[str, tuple[str, int]]:
        """IPv4 address and prefix length per interface in a namespace (lo excluded)."""
        out = {}
        for link in json.loads(sh("ip", "-n", ns, "-j", "-4", "addr", "show").stdout or "[]"):
            for a in link.get("addr_info", []):
                if link["ifname"] != "lo" and a.get("family") == "inet":
                    out[link["ifname"]] = (a["local"], int(a["prefixlen"]))
        return out

    def ipv4(self, ns: str, ifname: str = "eth0") -> str:
        return self.addrs(ns)[ifname][0]

    def subnet(self, ns: str, ifname: str = "eth0") -> str:
        import ipaddress

        ip, plen = self.addrs(ns)[ifname]
        return str(ipaddress.ip_interface(f"{ip}/{plen}").network)

    def gateway_for(self, ip: str) -> str:
        """The address of the sandbox host's bridge whose subnet holds ``ip``."""
        import ipaddress

        for ifname, (addr, plen) in self.addrs(self.host).items():
            if ifname.startswith("cnb-") and ipaddress.ip_address(ip) in ipaddress.ip_interface(f"{addr}/{plen}").network:
                return addr
        raise AssertionError(f"no bridge in {self.host} holds {ip}")


# -- probes: real packets from inside a namespace ------------------------------------------


def in_netns(ns: str, fn: Callable[[], T], timeout: float = 30) -> T:
    """Run ``fn`` in a short-lived thread that joined network namespace ``ns`` (setns() only
    switches the calling thread; the test's own threads never change namespace)."""
    result: list[Any] = []

    def worker() -> None:
        try:
            with open(f"/run/netns/{ns}") as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            result.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread
            result.append(("err", e))

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise AssertionError(f"probe in {ns} did not finish within {timeout} s")
    status, value = result[0]
    if status == "err":
        raise value
    return value


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def tcp(ns: str, addr: str, port: int, timeout: float = 1.0) -> str | None:
    """Connect from namespace ``ns`` to addr:port (IPv4 or IPv6) and read the one-line reply of
    echo.py (or echo_dual.py). Returns the reply (``"<peer seen> <hostname>"``), or None when the
    connection is refused, dropped or times out (blocked)."""

    def go() -> str | None:
        s = socket.socket(_family(addr), socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
            data = b""
            while len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.decode().strip() if data else None
        except OSError:
            return None
        finally:
            s.close()

    return in_netns(ns, go)


def udp(ns: str, addr: str, port: int, timeout: float = 1.0, tries: int = 3) -> str | None:
    """Send a datagram from namespace ``ns`` to addr:port; the reply of echo.py, or None."""

    def go() -> str | None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout / tries)
        try:
            for _ in range(tries):
                try:
                    s.sendto(b"ping", (addr, port))
                    data, _peer = s.recvfrom(4096)
                    return data.decode().strip()
                except TimeoutError:
                    continue
                except OSError:
                    return None
            return None
        finally:
            s.close()

    return in_netns(ns, go)


def peer(reply: str | None) -> str | None:
    """The source address the server saw, from an echo.py reply."""
    return reply.split()[0] if reply else None


def probe_all(probes: dict[str, tuple[Callable[..., str | None], tuple]]) -> dict[str, str | None]:
    """Run many probes at once (each blocked one costs its timeout): {label: (fn, args)}."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as ex:
        futs = {label: ex.submit(fn, *args) for label, (fn, args) in probes.items()}
        return {label: f.result() for label, f in futs.items()}


BLOCKED = "blocked"
REACHED = "reached"


def check_matrix(probes: dict[str, tuple[Callable[..., str | None], tuple]], expect: dict[str, str]) -> None:
    """Run the probes at once and compare with ``expect``: per label BLOCKED, REACHED, or the
    source address the server must have seen. One assertion lists every mismatch."""
    assert set(probes) == set(expect), set(probes) ^ set(expect)
    got = probe_all(probes)
    wrong = []
    for label, want in sorted(expect.items()):
        reply = got[label]
        if want == BLOCKED:
            ok = reply is None
        elif want == REACHED:
            ok = reply is not None
        else:
            ok = peer(reply) == want
        if not ok:
            fn, args = probes[label]
            wrong.append(f"{label}: {fn.__name__}{args} expected {want}, got {reply!r}")
    assert not wrong, "traffic matrix mismatches:\n  " + "\n  ".join(wrong)


def wait_for(ns: str, addr: str, port: int, proto: str = "tcp", deadline: float = 10.0) -> str:
    """Poll (bounded) until echo.py (or echo_dual.py) answers on addr:port from namespace ``ns``;
    the port of an IPv6 ``addr`` is reached over TCP (``proto`` is not used)."""
    six = ":" in addr
    probe = tcp if proto == "tcp" or six else udp
    where = f"[{addr}]:{port}" if six else f"{addr}:{port}/{proto}"
    end = time.monotonic() + deadline
    while True:
        r = probe(ns, addr, port, 0.5)
        if r is not None:
            return r
        if time.monotonic() > end:
            raise AssertionError(f"nothing answers on {where} from {ns} after {deadline} s")
        time.sleep(0.05)


def dns(ns: str, server: str, name: str, qtype: str = "A", timeout: float = 2.0) -> tuple[str, list[str]]:
    """One DNS query from inside namespace ``ns`` to ``server`` (IPv4 or IPv6): (rcode name,
    answers of type ``qtype``). Bounded retries; ("TIMEOUT", []) when nothing answers."""

    def go() -> tuple[str, list[str]]:
        q = DNSRecord.question(name, qtype)
        s = socket.socket(_family(server), socket.SOCK_DGRAM)
        s.settimeout(timeout / 3)
        try:
            for _ in range(3):
                try:
                    s.sendto(q.pack(), (server, 53))
                    data, _peer = s.recvfrom(4096)
                except TimeoutError:
                    continue
                r = DNSRecord.parse(data)
                if r.header.id != q.header.id:
                    continue
                return RCODE[r.header.rcode], sorted(str(rr.rdata) for rr in r.rr if rr.rtype == getattr(QTYPE, qtype))
            return "TIMEOUT", []
        finally:
            s.close()

    return in_netns(ns, go)


# -- processes -----------------------------------------------------------------------------


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def all_process_netns() -> list[tuple[int, int]]:
    """(pid, network namespace inode) of every process we can see."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{d}/ns/net")  # "net:[4026532...]"
        except OSError:
            continue
        out.append((int(d), int(link[5:-1])))
    return out


def processes_in(ns: str) -> list[int]:
    """Pids of the processes whose network namespace is /run/netns/<ns>."""
    ino = netns_inode(ns)
    return sorted(pid for pid, i in all_process_netns() if ino is not None and i == ino)


def proc_start(pid: int) -> str:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), "" if it is gone
    or a zombie: (pid, start) identifies a process across pid reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    if fields[0] == "Z":
        return ""
    return fields[19]


def proc_state(pid: int) -> str:
    """The process's state letter (field 3 of /proc/PID/stat), "" if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _still_running(procs: list[tuple[int, str, str]], grace: float = 5.0) -> list[tuple[int, str, str]]:
    """Those of ``procs`` (pid, start time, where) still running after ``grace`` seconds at most.
    A process SIGKILLed by `down` can stay in the kernel's exit path for seconds (its memory
    already released: an empty command line, not yet a zombie; seen in 2 of 7 full runs, a
    moment after the grace period): it is dying, not left running, so it does not count. Every
    process composenet starts has a command line while it runs."""
    deadline = time.monotonic() + grace
    while True:
        alive = [p for p in procs if proc_start(p[0]) == p[1] and proc_cmdline(p[0])]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def proc_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def leftovers(project: str) -> list[str]:
    """Everything composenet could leave behind for a project, outside the sandbox namespaces."""
    found = []
    prefix = project + "-"
    if os.path.isdir("/run/netns"):
        found += [f"/run/netns/{n}" for n in os.listdir("/run/netns") if n.startswith(prefix)]
    if os.path.isdir("/etc/netns"):
        found += [f"/etc/netns/{n}" for n in os.listdir("/etc/netns") if n.startswith(prefix)]
    if os.path.exists(f"/run/composenet/{project}"):
        found.append(f"/run/composenet/{project}")
    return found
