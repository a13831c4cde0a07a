"""A cluster on one machine: simulated hosts and an etcd, for tests and benchmarks (root only).

    underlay ns cnc<tag>u: bridge br0 (the hosts' LAN)
      |-- etcd ns cnc<tag>e: eth0 10.99.0.1/24, etcd on 10.99.0.1:2379 (and 127.0.0.1:2379 there)
      |-- host h1: eth0 10.99.0.11/24     each host: its own network namespace AND its own mount
      |-- host h2: eth0 10.99.0.12/24     namespace, with private /run/netns, /run/composenet and
      '-- host h3: eth0 10.99.0.13/24     /etc/netns: one project name runs on all three at once

The recipe (how to test a cluster on one machine, by hand too), per host:

1. A holder process owns the host's namespaces: ``unshare --net --mount --propagation private
   sleep infinity`` (an anonymous network namespace, so nothing is added to the real
   /run/netns, and a private mount namespace). Killing what runs inside frees everything.
2. Inside it (``nsenter --mount=/proc/PID/ns/mnt --net=/proc/PID/ns/net -- sh -c ...``):
   ``umount -R -l /run/netns`` FIRST (the new mount namespace inherited a copy of every
   namespace bind-mounted in the real /run/netns, and those copies would keep other people's
   namespaces alive as long as the host lives), then a tmpfs on each of /run/netns,
   /run/composenet and /etc/netns, a fresh sysfs on /sys (so /sys/class/net is this host's),
   and ``ip link set lo up``.
3. The underlay: ``ip link add u-h1 netns UNDERLAY type veth peer name eth0 netns PID``, u-h1 on
   the underlay bridge, an address on eth0.
4. Run composenet there with ``nsenter --mount=... --net=... --`` and
   ``COMPOSENET_ALLOW_PRIVATE_MOUNTNS=1``: composenet refuses a mount namespace other than PID
   1's (under ``ip netns exec`` its namespaces would vanish on exit); here the private mount
   namespace is meant to stay, held by the holder. The working directory becomes / (use
   absolute paths), and ``COMPOSENET_NODE`` must differ per host (they share the hostname).
5. Teardown: kill every process whose mount namespace is the host's, or whose network
   namespace is the host's or one created on it (``ip netns exec`` children live in a child
   mount namespace), the holder last; the host's namespaces, and those made on it, go with it.

A host's files are readable from outside through ``/proc/<holder>/root/...`` (``Host.path``).
Code that must run in a host's network namespace inside this process (sockets, a store client)
runs in a short-lived thread that joined it (``Host.call``); processes that need its mount
namespace too (composenet, the agent, resolvers) are started with ``Host.run`` / ``Host.popen``.

Every name carries a random tag, so labs run in parallel; ``Lab.teardown`` removes everything it
made and ``Lab.leftovers`` lists what survived (tests assert it is empty). Traffic stays inside
these namespaces; the test never touches port 2379 of the machine's own namespace.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.integration.sandbox import sh

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
ROOT = str(Path(__file__).resolve().parents[2])  # the checkout (PYTHONPATH of what runs on hosts)
PRIVATE_DIRS = ("/run/netns", "/run/composenet", "/etc/netns")
UNDERLAY = "10.99.0"
ETCD_ADDR = f"{UNDERLAY}.1"


def ns_inode(pid: int | str, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")  # e.g. "mnt:[4026533180]"
    except OSError:
        return None


def call_in_netns(path: str, fn: Callable[[], T], timeout: float = 60) -> T:
    """Run ``fn`` in a thread that joined the network namespace at ``path`` (threads it starts
    stay there too); the caller's thread never changes namespace."""
    result: list[tuple[str, Any]] = []

    def worker() -> None:
        try:
            with open(path) as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {path}")
            result.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 -- handed to the caller
            result.append(("err", e))

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise AssertionError(f"call in {path} did not finish within {timeout} s")
    status, value = result[0]
    if status == "err":
        raise value
    return value


class Host:
    """One simulated host (see the module doc)."""

    def __init__(self, lab: Lab, name: str, addr: str):
        self.lab = lab
        self.name = name
        self.addr = addr
        self.holder: subprocess.Popen | None = None
        self.pid = 0
        self.mnt = ""
        self.net = ""

    # -- running things on the host ---------------------------------------------------------

    def argv(self) -> list[str]:
        return ["nsenter", f"--mount=/proc/{self.pid}/ns/mnt", f"--net=/proc/{self.pid}/ns/net", "--"]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        e = dict(os.environ)
        e["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [e.get("PYTHONPATH")])])
        e["COMPOSENET_ALLOW_PRIVATE_MOUNTNS"] = "1"
        e["COMPOSENET_NODE"] = self.name
        e.update(extra or {})
        return e

    def run(self, *cmd: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run([*self.argv(), *cmd], capture_output=True, text=True, timeout=timeout,
                           env=self.env(env), input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{self.name}: {' '.join(cmd)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def popen(self, *cmd: str, log: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            p = subprocess.Popen([*self.argv(), *cmd], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True, env=self.env(env))
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self.lab.procs.append(p)
        return p

    def python(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return self.run(sys.executable, *args, **kw)

    def call(self, fn: Callable[[], T], timeout: float = 60) -> T:
        """``fn`` in this host's network namespace, in this process (see the module doc)."""
        return call_in_netns(f"/proc/{self.pid}/ns/net", fn, timeout)

    def path(self, inside: str) -> str:
        """A path of this host's file system, seen from outside."""
        return f"/proc/{self.pid}/root{inside}"

    def nested_netns(self) -> set[str]:
        """The namespaces bind-mounted under this host's /run/netns ("net:[inode]")."""
        out = set()
        try:
            with open(f"/proc/{self.pid}/mountinfo") as f:
                for line in f:
                    p = line.split()
                    if p[4].startswith("/run/netns/") and " - nsfs " in line:
                        out.add(p[3])  # the root of an nsfs mount: "net:[inode]"
        except OSError:
            pass
        return out

    def alive(self) -> bool:
        return bool(self.pid) and ns_inode(self.pid, "mnt") == self.mnt

    def processes(self) -> set[int]:
        """Every process of this host (mount ns, net ns, or a namespace made on it) but the holder."""
        if not self.pid:
            return set()
        nets = {self.net} | (self.nested_netns() if self.alive() else set())
        out = set()
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) not in (os.getpid(), self.pid):
                if ns_inode(d, "mnt") == self.mnt or ns_inode(d, "net") in nets:
                    out.add(int(d))
        return out


class Lab:
    """Simulated hosts plus an etcd (see the module doc). ``setup`` builds, ``teardown`` removes."""

    def __init__(self, tmp: Path, hosts: int = 3, tag: str | None = None):
        self.tag = tag or uuid.uuid4().hex[:6]
        self.tmp = tmp
        self.under = f"cnc{self.tag}u"
        self.etcd_ns = f"cnc{self.tag}e"
        self.hosts = [Host(self, f"h{i}", f"{UNDERLAY}.{10 + i}") for i in range(1, hosts + 1)]
        self.procs: list[subprocess.Popen] = []
        self.survivors: list[str] = []  # processes of the hosts that outlived teardown
        self.etcd: subprocess.Popen | None = None
        self.etcd_dir = tmp / "etcd-data"
        self.etcd_log = tmp / "etcd.log"
        self.store_url = f"etcd://{ETCD_ADDR}:2379"
        self.tls: dict[str, str] | None = None

    # -- build ------------------------------------------------------------------------------

    def setup(self) -> None:
        sh("ip", "netns", "add", self.under)
        sh("ip", "netns", "add", self.etcd_ns)
        for ns in (self.under, self.etcd_ns):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.under, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.under, "link", "set", "br0", "up")
        sh("ip", "link", "add", "eth0", "netns", self.etcd_ns, "type", "veth", "peer", "name", "u-etcd",
           "netns", self.under)
        sh("ip", "-n", self.under, "link", "set", "u-etcd", "master", "br0", "up")
        sh("ip", "-n", self.etcd_ns, "addr", "add", f"{ETCD_ADDR}/24", "dev", "eth0")
        sh("ip", "-n", self.etcd_ns, "link", "set", "eth0", "up")
        for d in PRIVATE_DIRS:  # mount points (left in place: they are the standard directories)
            os.makedirs(d, exist_ok=True)
        for h in self.hosts:
            self._add_host(h)

    def _add_host(self, h: Host) -> None:
        p = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "sleep", "infinity"],
                             stdin=subprocess.DEVNULL, start_new_session=True)
        h.holder, h.pid = p, p.pid
        me = ns_inode("self", "mnt")
        for _ in range(300):  # bounded: until unshare has exec'd sleep in its new namespaces
            comm = Path(f"/proc/{p.pid}/comm").read_text().strip() if os.path.exists(f"/proc/{p.pid}/comm") else ""
            if ns_inode(p.pid, "mnt") not in (None, me) and comm == "sleep":
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"holder of {h.name} did not start")
        h.mnt, h.net = ns_inode(p.pid, "mnt") or "", ns_inode(p.pid, "net") or ""
        script = "umount -R -l /run/netns 2>/dev/null || true\n"
        script += "".join(f"mount -t tmpfs -o mode=755,size=16m cnc-{h.name} {d}\n" for d in PRIVATE_DIRS)
        script += "mount -t sysfs sysfs /sys\nip link set lo up\n"
        h.run("sh", "-ec", script)
        sh("ip", "link", "add", f"u-{h.name}", "netns", self.under, "type", "veth", "peer", "name", "eth0",
           "netns", str(p.pid))
        sh("ip", "-n", self.under, "link", "set", f"u-{h.name}", "master", "br0", "up")
        h.run("ip", "addr", "add", f"{h.addr}/24", "dev", "eth0")
        h.run("ip", "link", "set", "eth0", "up")

    # -- etcd -------------------------------------------------------------------------------

    def make_certs(self) -> dict[str, str]:
        """A throwaway CA, a server certificate for the etcd address (with the clientAuth usage
        too: etcd 3.4's gateway dials its own gRPC port with it) and a client certificate, in
        the test's tmp; as the COMPOSENET_STORE_* variables."""
        d = self.tmp / "tls"
        d.mkdir(exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        sh("openssl", "req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-days", "1",
           "-subj", "/CN=composenet-test-ca")
        (d / "server.ext").write_text(f"subjectAltName=IP:{ETCD_ADDR},IP:127.0.0.1\n"
                                      "extendedKeyUsage=serverAuth,clientAuth\n")
        (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        for n in ("server", "client"):
            sh("openssl", "req", *ec, "-keyout", str(d / f"{n}.key"), "-out", str(d / f"{n}.csr"),
               "-subj", f"/CN=composenet-test-{n}")
            sh("openssl", "x509", "-req", "-in", str(d / f"{n}.csr"), "-CA", str(d / "ca.crt"), "-CAkey",
               str(d / "ca.key"), "-CAcreateserial", "-out", str(d / f"{n}.crt"), "-days", "1", "-extfile",
               str(d / f"{n}.ext"))
        return {"COMPOSENET_STORE_CA": str(d / "ca.crt"), "COMPOSENET_STORE_CERT": str(d / "client.crt"),
                "COMPOSENET_STORE_KEY": str(d / "client.key")}

    def start_etcd(self, *extra: str, tls: dict[str, str] | None = None) -> None:
        """etcd in its own namespace, data in the test's tmp; returns once it answers. With
        ``tls`` (from make_certs): HTTPS only, client certificates required."""
        self.etcd_dir.mkdir(exist_ok=True)
        scheme = "https" if tls else "http"
        urls = f"{scheme}://{ETCD_ADDR}:2379,{scheme}://127.0.0.1:2379"
        if tls:
            d = Path(tls["COMPOSENET_STORE_CA"]).parent
            extra = ("--cert-file", str(d / "server.crt"), "--key-file", str(d / "server.key"),
                     "--trusted-ca-file", str(d / "ca.crt"), "--client-cert-auth", *extra)
            self.store_url = f"etcds://{ETCD_ADDR}:2379"
        self.tls = tls
        with open(self.etcd_log, "ab") as log:
            self.etcd = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.etcd_ns}", "etcd", "--name", "lab", "--data-dir",
                 str(self.etcd_dir), "--listen-client-urls", urls, "--advertise-client-urls",
                 f"{scheme}://{ETCD_ADDR}:2379", "--listen-peer-urls", "http://127.0.0.1:2380",
                 "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                 "--initial-cluster", "lab=http://127.0.0.1:2380", *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.procs.append(self.etcd)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.etcd.poll() is not None:
                raise AssertionError(f"etcd exited {self.etcd.returncode}: {self.etcd_log.read_text()[-2000:]}")
            try:
                self.store(lambda s: s.status())
                return
            except Exception:  # noqa: BLE001 -- not up yet
                time.sleep(0.1)
        raise AssertionError(f"etcd did not answer: {self.etcd_log.read_text()[-2000:]}")

    def stop_etcd(self) -> None:
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(15)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait(5)
        self.etcd = None

    def store(self, fn: Callable[[Any], T], url: str | None = None, timeout: float = 60,
              env: dict[str, str] | None = None) -> T:
        """``fn(store)`` with a fresh client of the lab's etcd, run inside etcd's namespace
        (``env``: the COMPOSENET_STORE_* variables; default: the lab's certificates, if any)."""
        from composenet.cluster.client import Store
        from composenet.cluster.settings import parse_store_url

        def go() -> T:
            s = Store(parse_store_url(url or self.store_url, (self.tls or {}) if env is None else env))
            try:
                return fn(s)
            finally:
                s.close()

        return call_in_netns(f"/run/netns/{self.etcd_ns}", go, timeout)

    # -- teardown ---------------------------------------------------------------------------

    def kill_host(self, h: Host) -> None:
        """SIGKILL everything of ``h`` (its holder last): the host dies as a machine would.
        What does not die is recorded (``leftovers``). A host killed already is left alone."""
        if h.holder is None or h.holder.poll() is not None:
            return
        for _ in range(200):  # bounded (10 s): a process takes a moment to die after SIGKILL
            pids = h.processes()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        # Judged while the holder keeps the host's namespaces alive: once they are freed, their
        # inodes may be reused by anyone's new namespace, and a match would mean nothing.
        self.survivors += [f"{h.name}: pid {pid}" for pid in h.processes()]
        if h.holder is not None and h.holder.poll() is None:
            h.holder.kill()
            h.holder.wait(10)

    def teardown(self) -> None:
        for h in self.hosts:
            self.kill_host(h)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        self.stop_etcd()
        for _ in range(100):  # host namespaces die asynchronously: their underlay veths go with them
            links = sh("ip", "-n", self.under, "-o", "link", "show", check=False).stdout
            if not any(f"u-{h.name}@" in links for h in self.hosts):
                break
            time.sleep(0.05)
        for ns in (self.etcd_ns, self.under):
            sh("ip", "netns", "del", ns, check=False)

    def leftovers(self) -> list[str]:
        found = []
        if os.path.isdir("/run/netns"):
            found += [f"/run/netns/{n}" for n in os.listdir("/run/netns") if n.startswith(f"cnc{self.tag}")]
        found += [f"pid {p.pid}" for p in self.procs if p.poll() is None]
        found += self.survivors
        found += [f"{h.name}: holder {h.pid}" for h in self.hosts if h.holder is not None and h.holder.poll() is None]
        return found


# -- what part B's `up` does on a host, by hand ---------------------------------------------------


def agent_config(lab: Lab, h: Host, ttl: int = 10, run_dir: str = "/run/composenet", **extra: Any) -> dict[str, Any]:
    return {"store": lab.store_url, "node": h.name, "advertise": h.addr, "ttl": ttl, "run_dir": run_dir, **extra}


def start_agent(lab: Lab, h: Host, ttl: int = 10, run_dir: str = "/run/composenet", check: bool = True,
                **extra: Any) -> int | str:
    """Start the cluster agent on ``h`` (agentctl.start_agent, run on the host): its pid (or,
    with check=False, the error it raised)."""
    code = ("import json, sys\nfrom composenet.cluster import agentctl\n"
            "from composenet.cluster.errors import StoreError\n"
            "try:\n    print(agentctl.start_agent(sys.argv[2], json.loads(sys.argv[1])))\n"
            "except StoreError as e:\n    print('ERROR', e.message)\n")
    r = h.python("-c", code, json.dumps(agent_config(lab, h, ttl, run_dir, **extra)), run_dir)
    last = r.stdout.strip().splitlines()[-1]
    if last.startswith("ERROR"):
        if check:
            raise AssertionError(f"{h.name}: the agent did not start: {r.stdout}")
        return last
    return int(last)


def agent_log(h: Host) -> str:
    try:
        return Path(h.path("/run/composenet/.cluster/agent.log")).read_text()
    except OSError:
        return ""


def build_overlay(h: Host, project: str, network: str, vni: int, gateway: str, prefix: int) -> None:
    """What part B's kernel steps make for a cluster network on ``h``: a bridge with the gateway
    address, a VXLAN device (learning off, proxy; its bridge port learning off too) labelled
    composenet:<project>/<network>/vxlan on it, and the project's nft table with the VTEP set and the VXLAN guard."""
    br, vx = f"cnb-{network}"[:15], f"cnx-{network}"[:15]
    h.run("sh", "-ec", f"""
ip link add {br} type bridge
ip link set {br} mtu 1450 up
ip addr add {gateway}/{prefix} dev {br}
ip link add {vx} type vxlan id {vni} local {h.addr} dev eth0 dstport 4789 nolearning proxy
ip link set {vx} master {br} mtu 1450 alias composenet:{project}/{network}/vxlan
bridge link set dev {vx} learning off
ip link set {vx} up
""")
    h.run("nft", "-f", "-", input=f"""
table inet composenet_{project} {{
    set cluster_vteps {{ type ipv4_addr; }}
    chain input {{
        type filter hook input priority filter; policy accept;
        udp dport 4789 ip saddr != @cluster_vteps counter drop comment "cn:cluster:vxlan-unknown-vtep"
        udp dport 4789 counter accept comment "cn:cluster:vxlan"
    }}
}}
""")


def add_container(h: Host, ns: str, network: str, ip: str, prefix: int, mac: str, gateway: str) -> None:
    br = f"cnb-{network}"[:15]
    veth = f"v{ns}"[:15]
    h.run("sh", "-ec", f"""
ip netns add {ns}
ip link add {veth} type veth peer name eth0 netns {ns}
ip link set {veth} master {br} mtu 1450 up
ip -n {ns} link set lo up
ip -n {ns} link set eth0 address {mac} mtu 1450 up
ip -n {ns} addr add {ip}/{prefix} dev eth0
ip -n {ns} route add default via {gateway}
""")


def registry_on(lab: Lab, h: Host, fn: Callable[[Any], T]) -> T:
    """``fn(registry)`` for node ``h`` with a client made in ``h``'s network namespace."""
    from composenet.cluster.client import Store
    from composenet.cluster.registry import Registry
    from composenet.cluster.settings import parse_store_url

    def go() -> T:
        store = Store(parse_store_url(lab.store_url, {}))
        try:
            return fn(Registry(store, h.name))
        finally:
            store.close()

    return h.call(go)


def join_and_publish(lab: Lab, h: Host, project: str, network: str,
                     containers: list[tuple[str, str, str, tuple[str, ...]]], subnet: str | None = None,
                     vni: int | None = None) -> tuple[Any, dict[str, str]]:
    """What part B's `up` does in the store for ``containers`` ((name, service, MAC, aliases))
    of ``project`` on ``h``: join ``network`` (created if absent), lease an address per container,
    publish the endpoints, through composenet.cluster.host (store and project file together).
    Returns (the network's record, container -> address). The agent must run (its lease)."""
    from composenet.cluster import host
    from composenet.cluster.records import EndpointRecord

    run_dir = h.path("/run/composenet")

    def go(reg: Any) -> tuple[Any, dict[str, str]]:
        lease = reg.node_lease()
        assert lease, f"{h.name} is not registered (is its agent running?)"
        record = host.join(run_dir, reg, project, lease, h.addr, network, subnet=subnet, vni=vni)
        ips = {}
        for name, service, mac, aliases in containers:
            ips[name] = host.lease(run_dir, reg, project, lease, record, name)
            host.publish(run_dir, reg, project, lease, EndpointRecord(network, name, service, ips[name], mac, h.name,
                                                                       h.addr, aliases=aliases, project=project))
        return record, ips

    return registry_on(lab, h, go)


def reload_agent(h: Host) -> bool:
    """agentctl.reload_agent on ``h`` (SIGHUP, wait for "applied")."""
    r = h.python("-c", "from composenet.cluster import agentctl; print(agentctl.reload_agent('/run/composenet'))")
    return r.stdout.strip() == "True"


def vxlan_counters(h: Host, project: str) -> dict[str, int]:
    """Packets counted by the VXLAN guard rules of the project's table on ``h``, by comment."""
    out = h.run("nft", "-j", "list", "chain", "inet", f"composenet_{project}", "input").stdout
    got = {}
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            counter = next((e["counter"]["packets"] for e in rule["expr"] if "counter" in e), 0)
            got[rule.get("comment", "")] = counter
    return got


def wait_until(cond: Callable[[], T], timeout: float, what: str, poll: float = 0.05) -> T:
    """Poll ``cond`` until it returns something true (bounded in time and count)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / poll) + 2):
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            break
        time.sleep(poll)
    raise AssertionError(f"{what}: not within {timeout} s")


# -- an allocator process (the race tests): python -m tests.integration.cluster_lab alloc ... -----


def _alloc(url: str, node: str, network: str, subnet: str, gateway: str, ip_range: str, count: int, go: str,
           out: str) -> None:
    """Lease ``count`` addresses for ``node`` once the file ``go`` exists; write them to ``out``
    (one per line; "ERROR ..." on failure)."""
    from composenet.cluster.client import Store
    from composenet.cluster.registry import Registry
    from composenet.cluster.settings import parse_store_url

    store = Store(parse_store_url(url, {}))
    lease, _ = store.grant(60)
    reg = Registry(store, node)
    Path(out + ".ready").write_text("ready")
    for _ in range(2000):  # bounded wait for the start signal (all allocators at once)
        if os.path.exists(go):
            break
        time.sleep(0.005)
    got = []
    try:
        for k in range(count):
            got.append(reg.lease_next(network, subnet, gateway, f"{node}-c{k}", lease, ip_range))
    except Exception as e:  # noqa: BLE001 -- reported to the test
        got.append(f"ERROR {e!r}")
    Path(out).write_text("\n".join(got) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 11 and sys.argv[1] == "alloc":
        a = sys.argv[2:]
        _alloc(a[0], a[1], a[2], a[3], a[4], a[5], int(a[6]), a[7], a[8])
    else:
        sys.exit("usage: python -m tests.integration.cluster_lab alloc URL NODE NETWORK SUBNET GATEWAY RANGE "
                 "COUNT GOFILE OUTFILE")
