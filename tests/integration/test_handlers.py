"""Integration tests of the non-netlink handlers (nft, file, resolver, process), the runtime
directory and the project lock. Root only.

Every test builds its own namespaces (random tag), runs the handler code with the calling
thread inside a sandbox namespace (``netns.entered``: the nft and conntrack commands the
handlers run inherit it, so the host's firewall is never touched) and checks that nothing is
left afterwards. Traffic goes only to addresses inside the sandbox namespace.

Run as a module (``python -m tests.integration.test_handlers CONFIG``) this file is a TEST
DOUBLE of the resolver daemon: it binds nothing, writes the pidfile named in the config, logs
"reloaded" on SIGHUP and removes the pidfile on SIGTERM. Tests point the handler at it by
patching ``composenet.dns.running.RESOLVER_MODULE``; one test runs the real composenet.dns.server.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dnslib import DNSRecord

from composenet.core.resources import (
    Address,
    Bridge,
    Netns,
    NetnsFile,
    NftTable,
    Process,
    Resolver,
    Supervisor,
    Veth,
    bridge_ifname,
    nft_table_name,
    veth_ifname,
)
from composenet.core.resources.services import held_order
from composenet.core.ruleset import NetRules, PortMap, build
from composenet.core.state import ObservedState
from composenet.dns import running
from composenet.errors import ComposenetError, KernelError
from composenet.kernel import cleanup, files, nft, processes, rundir, status
from composenet.kernel import links as kernel
from composenet.kernel import resolver as kernel_resolver
from composenet.kernel.apply import rollback
from composenet.kernel.context import Context
from composenet.kernel.handlers import default_handlers
from composenet.kernel.observe import observe_project
from composenet.linux import cgroup, fileio, netns
from composenet.linux.proc import alive, stop_group
from composenet.linux.spawn import Credentials, resolve_user
from composenet.paths import list_projects
from composenet.supervisor import client as supervisor_client

REPO = Path(__file__).resolve().parents[2]
STAND_IN = "tests.integration.test_handlers"


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 1):
        if cond():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert cond(), f"timed out waiting for {what}"


def leftovers(tag: str, ctx: Context) -> list[str]:
    found = []
    for d in ("/run/netns", "/etc/netns"):
        if os.path.isdir(d):
            found += [f"{d}/{n}" for n in os.listdir(d) if tag in n]
    if os.path.exists(ctx.project_dir):
        found.append(ctx.project_dir)
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if tag.encode() in cmd:
                found.append(f"process {pid}: {cmd!r}")
    return found


class Env:
    """A sandbox namespace (where handler code runs), a project context and helpers."""

    def __init__(self, tmp: Path):
        self.tag = uuid.uuid4().hex[:6]
        self.sandbox = f"cnh{self.tag}s"
        self.project = f"cnh{self.tag}"
        self.ctx = Context(project=self.project, run_dir=str(tmp / "run"))
        self.namespaces = [self.sandbox]
        self.spawned: list[tuple[int, int | None]] = []

    def setup(self) -> None:
        sh("ip", "netns", "add", self.sandbox)
        sh("ip", "-n", self.sandbox, "link", "set", "lo", "up")

    def add_ns(self, suffix: str) -> str:
        name = f"{self.project}-{suffix}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def run_in(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("nsenter", f"--net=/run/netns/{self.sandbox}", *cmd, check=check)

    def inside(self):  # the handler code runs here
        return netns.entered(self.sandbox)

    def teardown(self) -> list[str]:
        # Kill whatever a failed test left running: the project's cgroup (its supervisor and
        # services, as `down` would), and the resolver its pidfile names.
        with self.inside():
            cleanup.sweep_processes(self.ctx)
        pid = kernel_resolver.resolver_pid(self.ctx)
        if pid is not None:
            stop_group(pid, None, 0.0, "leftover resolver")
        for d in (Path("/etc/netns"),):
            for p in d.glob(f"*{self.tag}*"):
                for f in p.iterdir():
                    f.unlink()
                p.rmdir()
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)
        kept = cleanup.remove_project_dir(self.ctx)
        return kept + leftovers(self.tag, self.ctx)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    e.setup()
    failed = True
    try:
        yield e
        failed = False
    finally:
        left = e.teardown()
        if not failed:
            assert left == [], f"left behind: {left}"


# ---- nft ------------------------------------------------------------------------------------

NET = NetRules("p_front", "cnb-11111111", ("10.99.0.0/24",), ("10.99.0.1",))


def table(project: str, ports: list[PortMap], nets: list[NetRules] | None = None) -> NftTable:
    name = nft_table_name(project)
    text, idents = build(name, nets if nets is not None else [NET], ports)
    return NftTable("inet", name, idents, text)


def observe_nft(e: Env) -> NftTable | None:
    st = ObservedState()
    with e.inside():
        nft.NftHandler().observe(e.ctx, st)
    r = st.resources.get(f"nft:inet {nft_table_name(e.project)}")
    assert r is None or isinstance(r, NftTable)
    return r


def test_nft_load_observe_update_drift_delete(env: Env) -> None:
    h = nft.NftHandler()
    web = PortMap("web", None, 8080, "tcp", ("10.99.0.2",), 80)
    t1 = table(env.project, [web])
    assert observe_nft(env) is None
    with env.inside():
        assert nft.check(t1.ruleset) is None
        assert "syntax error" in (nft.check(t1.ruleset.replace("masquerade", "masquerad")) or "")
        h.create(env.ctx, t1)
    seen = observe_nft(env)
    assert seen is not None and seen.rules == t1.rules
    assert json.loads(seen.ruleset)["nftables"][:2] == [{"add": {"table": {"family": "inet", "name": t1.name}}},
                                                      {"delete": {"table": {"family": "inet", "name": t1.name}}}]
    assert seen == t1  # ruleset is not compared
    assert any(r.startswith("published: cn:dnat web *:8080/tcp -> 10.99.0.2:80") for r in seen.rules)
    # Only in the sandbox: the root namespace has no such table.
    assert sh("nft", "list", "table", "inet", t1.name, check=False).returncode != 0

    # Update: another target and a second port.
    t2 = table(env.project, [PortMap("web", None, 8080, "tcp", ("10.99.0.3",), 80),
                             PortMap("dns", "127.0.0.1", 5353, "udp", ("10.99.0.4",), 53)])
    with env.inside():
        h.update(env.ctx, seen, t2)
    seen2 = observe_nft(env)
    assert seen2 is not None and seen2.rules == t2.rules
    tables = env.run_in("nft", "list", "tables").stdout.split("\n")
    assert [t for t in tables if t.strip()] == [f"table inet {t2.name}"]

    # Drift: a rule deleted by hand disappears from the identities (the 127.0.0.1 port's DNAT is in
    # published_lo: the host's own packets only) ...
    listing = json.loads(env.run_in("nft", "-j", "-a", "list", "chain", "inet", t2.name, "published_lo").stdout)
    rule = next(i["rule"] for i in listing["nftables"] if "rule" in i and "5353" in i["rule"].get("comment", ""))
    env.run_in("nft", "delete", "rule", "inet", t2.name, "published_lo", "handle", str(rule["handle"]))
    drifted = observe_nft(env)
    assert drifted is not None and drifted != t2
    assert set(t2.rules) - set(drifted.rules) == {f"published_lo: {rule['comment']}"}
    # ... and one added by hand (no comment) shows up as "?<expr>", stable across traffic.
    env.run_in("nft", "add", "rule", "inet", t2.name, "published", "tcp", "dport", "9999", "counter", "accept")
    drifted2 = observe_nft(env)
    assert drifted2 is not None
    extra = set(drifted2.rules) - set(drifted.rules)
    assert len(extra) == 1 and next(iter(extra)).startswith('published: ?[{"match"')
    # The planner's update repairs it.
    with env.inside():
        h.update(env.ctx, drifted2, t2)
    assert observe_nft(env) == t2

    with env.inside():
        h.delete(env.ctx, t2)
        h.delete(env.ctx, t2)  # already gone: fine
    assert observe_nft(env) is None
    assert env.run_in("nft", "list", "ruleset").stdout.strip() == ""


def test_nft_rollback_restores_the_observed_table(env: Env) -> None:
    """An observed table carries a ruleset that re-creates it as it was: rolling back its
    delete (or an update) puts the same chains and rules back, in one transaction."""
    h = nft.NftHandler()
    t1 = table(env.project, [PortMap("web", None, 8080, "tcp", ("10.99.0.2",), 80)])
    with env.inside():
        h.create(env.ctx, t1)
    seen = observe_nft(env)
    assert seen is not None
    # Someone adds a rule by hand: the restore must bring that back too (the kernel's table,
    # not the file's).
    env.run_in("nft", "add", "rule", "inet", t1.name, "published", "tcp", "dport", "9999", "accept")
    seen = observe_nft(env)
    assert seen is not None and len(seen.rules) == len(t1.rules) + 1
    listing = env.run_in("nft", "-s", "list", "table", "inet", t1.name).stdout
    with env.inside():
        h.delete(env.ctx, seen)
    assert observe_nft(env) is None
    with env.inside():
        assert rollback(env.ctx, [("create", seen, None)], default_handlers()) == (1, [])
    assert observe_nft(env) == seen
    assert env.run_in("nft", "-s", "list", "table", "inet", t1.name).stdout == listing
    # Rolling back an update loads the observed table over the new one.
    t2 = table(env.project, [PortMap("web", None, 8081, "tcp", ("10.99.0.3",), 80)])
    with env.inside():
        h.update(env.ctx, seen, t2)
        assert observe_nft(env) == t2
        assert rollback(env.ctx, [("update", t2, seen)], default_handlers()) == (1, [])
    assert env.run_in("nft", "-s", "list", "table", "inet", t1.name).stdout == listing
    with env.inside():
        h.delete(env.ctx, seen)
    assert env.run_in("nft", "list", "ruleset").stdout.strip() == ""


def test_nft_without_libnftables_runs_the_nft_command(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where libnftables cannot be loaded, the same calls go through the `nft` command."""
    monkeypatch.setattr(nft, "_lib", False)
    h = nft.NftHandler()
    t1 = table(env.project, [PortMap("web", None, 8080, "tcp", ("10.99.0.2",), 80)])
    with env.inside():
        assert nft.check(t1.ruleset) is None
        assert "syntax error" in (nft.check(t1.ruleset.replace("masquerade", "masquerad")) or "")
        h.create(env.ctx, t1)
    seen = observe_nft(env)
    assert seen == t1
    with env.inside():
        h.delete(env.ctx, seen)
        assert nft.NftHandler().create(env.ctx, seen) is None  # the observed (JSON) ruleset loads too
    assert observe_nft(env) == seen
    with env.inside():
        h.delete(env.ctx, seen)
    assert env.run_in("nft", "list", "ruleset").stdout.strip() == ""


def conntrack_count(env: Env, port: int) -> int:
    out = env.run_in("conntrack", "-L", "-p", "udp", "--orig-port-dst", str(port), check=False).stdout
    return len([ln for ln in out.splitlines() if f"dport={port}" in ln])


def test_nft_update_and_delete_flush_stale_conntrack(env: Env) -> None:
    # A veth pair inside the sandbox: its subnet routes the DNATed packets (nobody answers).
    env.run_in("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    env.run_in("ip", "addr", "add", "10.99.0.1/24", "dev", "v0")
    env.run_in("ip", "link", "set", "v0", "up")
    env.run_in("ip", "link", "set", "v1", "up")
    h = nft.NftHandler()
    a = PortMap("a", None, 5555, "udp", ("10.99.0.2",), 53)
    b = PortMap("b", None, 5556, "udp", ("10.99.0.3",), 53)
    t1 = table(env.project, [a, b])
    with env.inside():
        h.create(env.ctx, t1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # created in the sandbox
    with s:
        for port in (5555, 5556):
            s.sendto(b"x", ("10.99.0.1", port))
    wait_for(lambda: conntrack_count(env, 5555) == 1 and conntrack_count(env, 5556) == 1, what="conntrack entries")
    # 5555 gets a new target: its flows are flushed; 5556 is unchanged and keeps them.
    t2 = table(env.project, [PortMap("a", None, 5555, "udp", ("10.99.0.4",), 53), b])
    assert nft.stale_ports(t1.rules, t2.rules) == [("ipv4", 5555, "udp")]
    with env.inside():
        h.update(env.ctx, t1, t2)
    assert conntrack_count(env, 5555) == 0
    assert conntrack_count(env, 5556) == 1
    # No entry to flush is fine ("0 flow entries").
    with env.inside():
        nft.flush_conntrack("ipv4", 5555, "udp")
        nft.flush_conntrack("ipv6", 5555, "udp")
        h.delete(env.ctx, t2)
    assert conntrack_count(env, 5556) == 0


# ---- files ----------------------------------------------------------------------------------


def test_files_write_observe_delete(env: Env) -> None:
    h = files.FilesHandler()
    ns = f"{env.project}-web-1"  # files do not need the namespace itself
    resolv = NetnsFile(ns, "resolv.conf", "nameserver 10.99.0.1\noptions ndots:0\n")
    hosts = NetnsFile(ns, "hosts", "127.0.0.1\tlocalhost\n10.99.0.2\tweb\n")
    h.create(env.ctx, resolv)
    h.create(env.ctx, hosts)
    path = Path("/etc/netns") / ns / "resolv.conf"
    assert path.read_text() == resolv.content
    assert path.stat().st_mode & 0o777 == 0o644
    st = ObservedState()
    h.observe(env.ctx, st)  # found through our own record: no namespace record exists
    assert st.resources == {resolv.key: resolv, hosts.key: hosts}
    new = NetnsFile(ns, "resolv.conf", "nameserver 10.99.0.9\n")
    h.update(env.ctx, resolv, new)
    assert path.read_text() == new.content
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    h.delete(env.ctx, new)
    assert path.parent.is_dir()  # hosts is still there
    h.delete(env.ctx, hosts)
    assert not path.parent.exists()
    st = ObservedState()
    h.observe(env.ctx, st)
    assert st.resources == {}
    assert cleanup.remove_project_dir(env.ctx) == []


def test_files_observed_for_namespace_records(env: Env) -> None:
    # A namespace record (composenet.kernel's) makes observe look at /etc/netns/<ns> even
    # when our own record is missing, e.g. files written by hand or a record lost in a crash.
    ns = f"{env.project}-db-1"
    os.makedirs(f"/etc/netns/{ns}")
    Path(f"/etc/netns/{ns}/hosts").write_text("x\n")
    fileio.atomic_write(os.path.join(env.ctx.project_dir, "netns", ns), json.dumps({"service": "db"}))
    st = ObservedState()
    files.FilesHandler().observe(env.ctx, st)
    assert st.resources == {f"file:{ns}/hosts": NetnsFile(ns, "hosts", "x\n")}
    files.FilesHandler().delete(env.ctx, NetnsFile(ns, "hosts", "x\n"))
    assert not os.path.exists(f"/etc/netns/{ns}")
    os.unlink(os.path.join(env.ctx.project_dir, "netns", ns))


# ---- resolver -------------------------------------------------------------------------------


def resolver(e: Env, **extra: object) -> Resolver:
    cfg = {"project": e.project, "pidfile": os.path.join(e.ctx.project_dir, "dns.pid"),
           "upstreams": [], "containers": [],
           "listeners": [{"network": f"{e.project}_front", "address": "127.0.0.1", "port": 53, "internal": False}],
           **extra}
    text = json.dumps(cfg, indent=1, sort_keys=True) + "\n"
    return Resolver(e.project, (f"{e.project}_front=127.0.0.1",), text, hashlib.sha256(text.encode()).hexdigest())


def observe_resolver(e: Env) -> Resolver | None:
    st = ObservedState()
    kernel_resolver.ResolverHandler().observe(e.ctx, st)
    r = st.resources.get(f"resolver:{e.project}")
    assert r is None or isinstance(r, Resolver)
    return r


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(running, "RESOLVER_MODULE", STAND_IN)


def test_resolver_start_reload_stop_with_stand_in(env: Env, stand_in: None) -> None:
    h = kernel_resolver.ResolverHandler()
    r1 = resolver(env)
    with env.inside():
        h.create(env.ctx, r1)
    pid = kernel_resolver.resolver_pid(env.ctx)
    assert pid is not None
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{env.sandbox}").st_ino
    assert os.getsid(pid) == pid  # detached: its own session
    assert observe_resolver(env) == r1
    r2 = resolver(env, ttl=7)
    assert r2 != r1
    h.update(env.ctx, r1, r2)
    assert kernel_resolver.resolver_pid(env.ctx) == pid  # reloaded in place
    assert observe_resolver(env) == r2
    log = Path(env.ctx.project_dir, "logs", "dns.log").read_text()
    assert "stand-in reloaded ttl=7" in log
    h.delete(env.ctx, r2)
    assert not alive(pid)
    assert observe_resolver(env) is None
    assert not os.path.exists(os.path.join(env.ctx.project_dir, "dns.json"))
    assert not os.path.exists(os.path.join(env.ctx.project_dir, "dns.pid"))


def test_resolver_that_dies_or_never_gets_ready(env: Env, stand_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    h = kernel_resolver.ResolverHandler()
    with pytest.raises(KernelError, match=r"exited with status 3(.|\n)*stand-in refuses to start"):
        h.create(env.ctx, resolver(env, stand_in="fail"))
    assert observe_resolver(env) is None
    assert not os.path.exists(os.path.join(env.ctx.project_dir, "dns.json"))
    monkeypatch.setattr(kernel_resolver, "RESOLVER_START_TIMEOUT", 0.5)
    with pytest.raises(KernelError, match="did not become ready"):
        h.create(env.ctx, resolver(env, stand_in="hang"))
    assert observe_resolver(env) is None
    # The hung stand-in was killed.
    assert not [p for p in os.listdir("/proc") if p.isdigit() and STAND_IN.encode() in _cmdline(int(p))
                and env.project.encode() in _cmdline(int(p))]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_resolver_real_daemon_answers_and_reloads(env: Env) -> None:
    h = kernel_resolver.ResolverHandler()

    def config(addr: str) -> Resolver:
        return resolver(env, containers=[{
            "name": f"{env.project}-web-1", "service": "web", "hostname": None, "register": True,
            "upstreams": [], "links": [],
            "endpoints": [{"network": f"{env.project}_front", "ipv4": addr, "ipv6": None, "aliases": [],
                           "internal": False}]}])

    def ask(name: str) -> list[str]:
        with env.inside():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.settimeout(3)
            s.sendto(DNSRecord.question(name).pack(), ("127.0.0.1", 53))
            reply = DNSRecord.parse(s.recv(4096))
        return [str(rr.rdata) for rr in reply.rr]

    r1 = config("10.99.0.2")
    with env.inside():
        h.create(env.ctx, r1)
    assert observe_resolver(env) == r1
    assert ask("web") == ["10.99.0.2"]
    r2 = config("10.99.0.3")
    h.update(env.ctx, r1, r2)
    assert ask("web") == ["10.99.0.3"]
    assert observe_resolver(env) == r2
    h.delete(env.ctx, r2)
    assert observe_resolver(env) is None


# ---- processes ------------------------------------------------------------------------------
#
# The handlers run inside the sandbox (env.inside()): the supervisor they start lives there, and
# the project's cgroup is named after that namespace (composenet.linux.cgroup).


def observe_procs(e: Env) -> dict[str, Process]:
    st = ObservedState()
    with e.inside():
        processes.ProcessHandler().observe(e.ctx, st)
    return {r.container: r for r in st.resources.values() if isinstance(r, Process)}


def start_supervisor(e: Env, ports: tuple[str, ...] = ()) -> processes.SupervisorHandler:
    h = processes.SupervisorHandler()
    with e.inside():
        h.create(e.ctx, Supervisor(e.project, ports))
    return h


def state(e: Env, container: str) -> dict:
    return supervisor_client.states(e.ctx.project_dir).get(container, {})


def log_of(e: Env, container: str) -> str:
    try:
        return Path(e.ctx.project_dir, "logs", f"{container}.log").read_text()
    except FileNotFoundError:
        return ""


def test_process_runs_in_its_namespace_with_files_hostname_env_cwd_user_cgroup(env: Env) -> None:
    ns = env.add_ns("app-1")
    files.FilesHandler().create(env.ctx, NetnsFile(ns, "resolv.conf", f"nameserver 10.99.0.1\n# {env.tag}\n"))
    script = ("echo host=$(hostname); echo uid=$(id -u); echo pwd=$(pwd); echo foo=$FOO; "
              "echo path=$PATH; echo home=${HOME:-none}; echo net=$(readlink /proc/self/ns/net); "
              "echo links=$(ls /sys/class/net); cat /etc/resolv.conf; echo done; exec sleep 300")
    p = Process(f"{env.project}-app-1", "app", ns, ("sh", "-c", script), (("FOO", "bar baz"),), "/usr/share",
                "nobody", "apphost", 5.0)
    my_host = socket.gethostname()
    start_supervisor(env)
    with env.inside():
        processes.ProcessHandler().create(env.ctx, p)
    wait_for(lambda: "done" in log_of(env, p.container), what="the process's output")
    out = log_of(env, p.container)
    assert "host=apphost\n" in out
    assert f"uid={pwd.getpwnam('nobody').pw_uid}\n" in out
    assert "pwd=/usr/share\n" in out
    assert "foo=bar baz\n" in out
    assert f"path={processes.DEFAULT_PATH}\n" in out
    assert "home=none\n" in out  # environment exactly as given
    assert f"net=net:[{os.stat(f'/run/netns/{ns}').st_ino}]\n" in out
    assert "links=lo\n" in out  # /sys of its namespace
    assert f"nameserver 10.99.0.1\n# {env.tag}\n" in out
    assert socket.gethostname() == my_host  # own UTS namespace
    assert observe_procs(env) == {p.container: p}
    pid = state(env, p.container)["pid"]
    assert os.getsid(pid) == pid
    group = Path(f"/proc/{pid}/cgroup").read_text().strip().split("::", 1)[1]
    with env.inside():
        want = cgroup.leaf(env.project, p.container)
    assert want is not None and want.endswith(group), (group, want)  # in its own cgroup, joined before exec
    with env.inside():
        processes.ProcessHandler().delete(env.ctx, p)
    assert not alive(pid)
    assert observe_procs(env) == {}
    assert processes.read_records(env.ctx) == {}
    files.FilesHandler().delete(env.ctx, NetnsFile(ns, "resolv.conf", ""))


def test_process_host_network_mode(env: Env) -> None:
    # ns "" = stay in the caller's network namespace (here: the sandbox).
    p = Process(f"{env.project}-h-1", "h", "", ("sh", "-c", "readlink /proc/self/ns/net; hostname; echo done; exec sleep 300"),
                hostname=None)
    start_supervisor(env)
    with env.inside():
        processes.ProcessHandler().create(env.ctx, p)
    wait_for(lambda: "done" in log_of(env, p.container))
    out = log_of(env, p.container)
    assert f"net:[{os.stat(f'/run/netns/{env.sandbox}').st_ino}]" in out
    assert socket.gethostname() in out.splitlines()
    assert observe_procs(env) == {p.container: p}
    with env.inside():
        processes.ProcessHandler().delete(env.ctx, p)
    assert observe_procs(env) == {}


def test_process_stop_grace_then_sigkill(env: Env) -> None:
    ns = env.add_ns("stop-1")
    h = processes.ProcessHandler()
    polite = Process(f"{env.project}-polite-1", "polite", ns,
                     ("sh", "-c", "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done"),
                     hostname="p", stop_grace_period=30.0)
    stubborn = Process(f"{env.project}-stubborn-1", "stubborn", ns,
                       ("sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"),
                       hostname="s", stop_grace_period=0.3)
    start_supervisor(env)
    with env.inside():
        h.create(env.ctx, polite)
        h.create(env.ctx, stubborn)
    wait_for(lambda: "ready" in log_of(env, polite.container) and "ready" in log_of(env, stubborn.container))
    sp, sst = state(env, stubborn.container)["pid"], state(env, stubborn.container)["starttime"]
    os.killpg(sp, signal.SIGTERM)  # it ignores SIGTERM ...
    time.sleep(0.2)
    assert alive(sp, sst)
    with env.inside():
        h.delete(env.ctx, stubborn)  # ... so delete ends with SIGKILL after the grace period
    assert not alive(sp, sst)
    with env.inside():
        h.delete(env.ctx, polite)
    assert "got-term" in log_of(env, polite.container)  # stopped by SIGTERM, within the grace
    assert observe_procs(env) == {}
    assert processes.read_records(env.ctx) == {}


def test_exited_process_is_observed_and_a_stale_state_is_not(env: Env) -> None:
    ns = env.add_ns("done-1")
    h = processes.ProcessHandler()
    p = Process(f"{env.project}-done-1", "done", ns, ("sh", "-c", "echo bye; exit 6"), hostname="d")
    start_supervisor(env)
    with env.inside():
        h.create(env.ctx, p)
    wait_for(lambda: state(env, p.container).get("state") == "exited", what="the process to exit")
    assert state(env, p.container)["exit_code"] == 6
    assert observe_procs(env) == {p.container: p}  # exited is not missing: a one-shot is not drift
    # The record changed (another command) but the state is the old one's: not observed.
    other = Process(p.container, "done", ns, ("sh", "-c", "echo other"), hostname="d")
    fileio.atomic_write(os.path.join(env.ctx.project_dir, "proc", f"{p.container}.json"),
                        json.dumps(other.to_json(), sort_keys=True) + "\n")
    assert observe_procs(env) == {}
    # Without a live supervisor nothing is observed (the next `up` starts it anew).
    live = supervisor_client.live(env.ctx.project_dir)
    assert live is not None
    os.kill(live["pid"], signal.SIGKILL)
    wait_for(lambda: supervisor_client.live(env.ctx.project_dir) is None, what="the supervisor to die")
    fileio.atomic_write(os.path.join(env.ctx.project_dir, "proc", f"{p.container}.json"),
                        json.dumps(p.to_json(), sort_keys=True) + "\n")
    assert observe_procs(env) == {}
    with env.inside():
        h.delete(env.ctx, p)
    assert processes.read_records(env.ctx) == {}


def test_process_that_cannot_start_is_a_state_not_a_rollback(env: Env) -> None:
    ns = env.add_ns("bad-1")
    h = processes.ProcessHandler()
    c = f"{env.project}-bad-1"
    start_supervisor(env)
    cases = [
        (Process(c, "bad", ns, (f"/nonexistent-{env.tag}",), hostname="b"), "cannot execute .*No such file"),
        (Process(c, "bad", ns, ("true",), cwd=f"/nonexistent-{env.tag}"), f"working directory /nonexistent-{env.tag}"),
        (Process(c, "bad", ns, ("true",), user="nosuchuser"), "user 'nosuchuser' .*does not exist"),
        (Process(c, "bad", f"{env.project}-missing", ("true",)), "cannot open network namespace"),
    ]
    for p, why in cases:
        with env.inside():
            h.create(env.ctx, p)  # no exception: the plan goes on, the state says why
        st = state(env, c)
        assert st["state"] == "failed" and re.search(why, st["error"]), st
        assert observe_procs(env) == {}  # not there: the next `up` tries again
        with env.inside():
            h.delete(env.ctx, p)
    assert processes.read_records(env.ctx) == {}


def test_supervisor_holds_ports_and_lets_them_go(env: Env) -> None:
    def bind(proto: str, addr: str, port: int) -> bool:
        """Whether a program of the sandbox can bind the port (a socket belongs to the namespace
        it is made in)."""
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with env.inside():
            s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        try:
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    held = ("tcp/0.0.0.0/18081", "udp/0.0.0.0/18081", "tcp/::/18082")
    assert bind("tcp", "0.0.0.0", 18081) and bind("tcp", "::", 18082)
    sup = start_supervisor(env, held)
    assert not bind("tcp", "0.0.0.0", 18081) and not bind("udp", "0.0.0.0", 18081)
    assert not bind("tcp", "127.0.0.1", 18081)  # the wildcard covers every address
    assert not bind("tcp", "::", 18082) and bind("tcp", "0.0.0.0", 18082)  # [::] is held IPv6-only
    st = ObservedState()
    with env.inside():
        sup.observe(env.ctx, st)
    assert st.resources[f"supervisor:{env.project}"] == Supervisor(env.project, held_order(held))
    with env.inside():
        sup.update(env.ctx, Supervisor(env.project, held), Supervisor(env.project, ("tcp/127.0.0.1/18083",)))
    assert bind("tcp", "0.0.0.0", 18081) and not bind("tcp", "127.0.0.1", 18083)
    # A port a program holds cannot be held: an error that names the program.
    with env.inside():
        squat = socket.socket()
    with squat:
        squat.bind(("0.0.0.0", 18084))
        with pytest.raises(KernelError, match=rf"cannot hold tcp 0.0.0.0:18084: address already in use \(held by pid {os.getpid()}"):
            with env.inside():
                sup.update(env.ctx, Supervisor(env.project, ()), Supervisor(env.project, ("tcp/0.0.0.0/18084",)))
    with env.inside():
        sup.delete(env.ctx, Supervisor(env.project, ()))
    assert supervisor_client.live(env.ctx.project_dir) is None
    assert bind("tcp", "127.0.0.1", 18083)


def test_resolve_user_forms() -> None:
    nobody = pwd.getpwnam("nobody")
    assert resolve_user("nobody").uid == nobody.pw_uid
    assert resolve_user("nobody").gid == nobody.pw_gid
    assert resolve_user(str(nobody.pw_uid)).gid == nobody.pw_gid
    assert resolve_user("12345:23456") == Credentials(12345, 23456, (23456,))
    assert resolve_user("4242").gid == 0  # no passwd entry: gid 0, like Docker
    root_group = grp.getgrgid(0).gr_name
    assert resolve_user(f"nobody:{root_group}").gid == 0


# ---- runtime: lock and directory --------------------------------------------------------------

LOCKER = """
import sys, time
from pathlib import Path
from composenet.kernel.context import Context
from composenet.kernel.handlers import default_handlers
from composenet.kernel.rundir import project_lock
run_dir, project, name, log, release = sys.argv[1:]
ctx = Context(project=project, run_dir=run_dir)
with project_lock(ctx, message_after=0.1):
    with open(log, "a") as f:
        f.write(name + " got\\n")
    for _ in range(3000):  # bounded: 60 s at most
        if release == "-" or Path(release).exists():
            break
        time.sleep(0.02)
    with open(log, "a") as f:
        f.write(name + " released\\n")
"""


def test_lock_serialises_two_processes(env: Env, tmp_path: Path) -> None:
    log, release = tmp_path / "order.log", tmp_path / "release"
    log.touch()
    args = [env.ctx.run_dir, env.project]
    a = subprocess.Popen([sys.executable, "-c", LOCKER, *args, "A", str(log), str(release)],
                         stderr=subprocess.PIPE, text=True, cwd=REPO)
    b = None
    try:
        wait_for(lambda: "A got" in log.read_text(), what="A to take the lock")
        b = subprocess.Popen([sys.executable, "-c", LOCKER, *args, "B", str(log), "-"],
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
        assert b.stderr is not None
        line = b.stderr.readline()  # blocks until B says it waits (bounded by A's own limit)
        assert line.strip().startswith(f"waiting for another composenet run on project {env.project}")
        assert "B got" not in log.read_text()
        release.touch()
        assert a.wait(timeout=30) == 0 and b.wait(timeout=30) == 0
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    assert log.read_text().split("\n") == ["A got", "A released", "B got", "B released", ""]
    assert list_projects(env.ctx.run_dir) == [env.project]


def test_lock_survives_removal_of_the_project_dir(env: Env) -> None:
    # `down` removes the directory (and the lock file) while holding the lock.
    with rundir.project_lock(env.ctx):
        assert cleanup.remove_project_dir(env.ctx) == []
        assert not os.path.exists(env.ctx.project_dir)
    with rundir.project_lock(env.ctx, timeout=5):
        assert os.path.exists(os.path.join(env.ctx.project_dir, "lock"))
    cleanup.remove_project_dir(env.ctx)


def test_remove_project_dir_kills_what_is_left_and_keeps_records_of_live_namespaces(env: Env) -> None:
    ns = env.add_ns("keep-1")
    p = Process(f"{env.project}-keep-1", "keep", ns, ("sh", "-c", "setsid sleep 300 & exec sleep 300"), hostname="k")
    start_supervisor(env)
    with env.inside():
        processes.ProcessHandler().create(env.ctx, p)
    wait_for(lambda: len(_pids_in(ns)) == 2, what="the service and its escaped child")
    pids = _pids_in(ns)
    fileio.atomic_write(os.path.join(env.ctx.project_dir, "netns", ns), "{}")
    Path(env.ctx.project_dir, "applied.json").write_text("{}")
    with env.inside():
        kept = cleanup.remove_project_dir(env.ctx)
    assert [pid for pid in pids if alive(pid)] == []  # the cgroup had them all, recorded or not
    assert kept == [os.path.join(env.ctx.project_dir, "netns", ns)]  # the namespace is still mounted
    netns.delete(ns)
    env.namespaces.remove(ns)
    assert cleanup.remove_project_dir(env.ctx) == []
    assert not os.path.exists(env.ctx.project_dir)


def _pids_in(ns: str) -> list[int]:
    ino = os.stat(f"/run/netns/{ns}").st_ino
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino == ino:
                    out.append(int(d))
            except OSError:
                continue
    return out


# ---- ps / port / exec / logs over a real observed state ---------------------------------------


def test_status_commands_over_the_kernel(env: Env, capfd: pytest.CaptureFixture[str]) -> None:
    c = f"{env.project}-web-1"
    env.namespaces.append(c)
    net = f"{env.project}_front"
    br = bridge_ifname(env.project, net)
    kh = kernel.KernelHandler()
    made = [
        Netns(c, env.project, "web"),
        Bridge(br, f"composenet:{env.project}/{net}", net),
        Address("", br, "10.99.0.1/24"),
        Veth(veth_ifname(env.project, c, net), f"composenet:{env.project}/{c}/{net}", c, "eth0", br),
        Address(c, "eth0", "10.99.0.2/24"),
    ]
    nft_t = table(env.project, [PortMap("web", None, 8080, "tcp", ("10.99.0.2",), 80),
                                PortMap("web", None, 32768, "tcp", ("10.99.0.2",), 81)],
                  [NetRules(net, br, ("10.99.0.0/24",), ("10.99.0.1",))])
    fs = [NetnsFile(c, "hosts", "127.0.0.1\tlocalhost\n10.99.0.2\tweb-host\n"),
          NetnsFile(c, "resolv.conf", "nameserver 10.99.0.1\n")]
    proc = Process(c, "web", c, ("sh", "-c", "echo hello from $(hostname); echo second; exec sleep 300"),
                   hostname="web-host")
    try:
        with env.inside():
            for r in made:
                kh.create(env.ctx, r)
            nft.NftHandler().create(env.ctx, nft_t)
            for f in fs:
                files.FilesHandler().create(env.ctx, f)
            processes.SupervisorHandler().create(env.ctx, Supervisor(env.project, ()))
            processes.ProcessHandler().create(env.ctx, proc)
            wait_for(lambda: "second" in log_of(env, c), what="the service's output")

            (web,) = status.status(env.ctx)
            assert (web.container, web.service, web.index, web.namespace, web.state) == (c, "web", 1, c, "running")
            assert web.networks == {net: ["10.99.0.2/24"]}
            assert web.ports == ["0.0.0.0:8080->80/tcp", "0.0.0.0:32768->81/tcp"]
            assert json.loads(status.ps(env.ctx, "json"))[0]["pid"] == state(env, c)["pid"]
            assert status.port_lines(env.ctx, "web", 80) == ["0.0.0.0:8080"]
            assert status.port_lines(env.ctx, "web", 81) == ["0.0.0.0:32768"]

            capfd.readouterr()
            rc = status.exec_in(env.ctx, "web", ["sh", "-c", "hostname; cat /etc/hosts; ls /sys/class/net; exit 7"])
            out = capfd.readouterr().out
            assert rc == 7
            assert out.splitlines() == ["web-host", "127.0.0.1\tlocalhost", "10.99.0.2\tweb-host", "eth0", "lo"]

            lines: list[str] = []
            status.logs(env.ctx, "web", write=lines.append)
            assert lines == ["hello from web-host\n", "second\n"]
            lines.clear()
            status.logs(env.ctx, "web", follow=True, write=lines.append, poll=0.01, max_polls=3)
            assert lines == ["hello from web-host\n", "second\n"]
            with pytest.raises(ComposenetError, match="no logs for service 'nope'"):
                status.logs(env.ctx, "nope")

            processes.ProcessHandler().delete(env.ctx, proc)
            processes.SupervisorHandler().delete(env.ctx, Supervisor(env.project, ()))
            for f in fs:
                files.FilesHandler().delete(env.ctx, f)
            nft.NftHandler().delete(env.ctx, nft_t)
            for r in reversed(made):
                kh.delete(env.ctx, r)
            left = observe_project(env.ctx).resources
            assert [k for k in left if not k.startswith("sysctl:-:")] == []  # host sysctls are read, not owned
    finally:
        env.ctx.close()


# ---- the test double of the resolver daemon ---------------------------------------------------


def _stand_in(config_path: str) -> int:
    """TEST DOUBLE, not the resolver: binds nothing; writes the pidfile, logs reloads."""
    cfg = json.loads(Path(config_path).read_text())
    mode = cfg.get("stand_in")
    if mode == "fail":
        print("stand-in refuses to start", file=sys.stderr, flush=True)
        return 3
    if mode == "hang":
        time.sleep(60)
        return 0
    state = {"run": True, "hup": False}
    signal.signal(signal.SIGTERM, lambda *_: state.update(run=False))
    signal.signal(signal.SIGHUP, lambda *_: state.update(hup=True))
    pidfile = Path(cfg["pidfile"])
    pidfile.write_text(f"{os.getpid()}\n")
    for _ in range(60 * 50):  # bounded: a minute at most
        if not state["run"]:
            break
        if state["hup"]:
            state["hup"] = False
            cfg = json.loads(Path(config_path).read_text())
            print(f"stand-in reloaded ttl={cfg.get('ttl')}", flush=True)
        time.sleep(0.02)
    pidfile.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(_stand_in(sys.argv[1]))
