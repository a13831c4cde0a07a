"""The cluster agent: ``python -m composenet.cluster.agent CONFIG``, one per host.

It keeps this node registered (its record on a lease, renewed every TTL/3), follows the store
(``watch.Follower``: list, watch, re-list after a compaction or a reconnect, with backoff) and
applies what it sees, from one thread, in this order, after each batch of changes:

1. the FDB and neighbour entries of every cluster network's VXLAN device on this host
   (``dataplane.sync_device`` with ``mirror.device_want``);
2. the VTEP sets of composenet's nft tables (the underlay addresses of the other members of the
   cluster networks this host has);
3. the names files of those networks for the resolvers (``composenet/dns/remote.py``), then a
   SIGHUP to the resolvers concerned (no wait).

It also makes the store hold this host's own records (``registry.reconcile``: what the
projects' ``cluster.json`` files list, under the host's cluster lock): after it registered, after
each re-list, and on SIGHUP (`up` and `down` send one after they changed the files). A network
left without members is removed (any agent may do it; the store's transaction decides). The
kernel is re-checked every ``resync`` seconds and whenever a link changes (netlink), so a device
created by `up` after the agent started is programmed at once.

Store down: nothing is removed; the data plane and the names stay as last applied; the follower
and the keep-alive retry with backoff, and everything is re-listed and re-applied when the store
answers again (leases survive an etcd restart: etcd renews them to their full TTL).

Life cycle: the pidfile (``files.agent_pidfile``) is written once the node is registered and the
first listing applied: it is the readiness signal. A node name held by another host, or a config
that does not load, exits 1 before that with one line on stderr. SIGTERM/SIGINT: revoke the
node's lease (this host's records vanish from the cluster at once), remove the pidfile, exit 0.
Logs go to stderr (the starter points it to ``files.agent_log``): "reloading" when a SIGHUP is
taken, "applied revision N" after each apply.

Config (JSON, written by ``agentctl.py``)::

    {"store": "etcd://10.99.0.1:2379", "ca": null, "cert": null, "key": null,
     "node": "h1", "advertise": "10.99.0.11", "ttl": 10, "run_dir": "/run/composenet",
     "idle": 5.0, "resync": 30.0}
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from composenet.cluster import files
from composenet.cluster.agentctl import AGENT_MODULE, agent_pid, foreign_agent, shared_run_dir_error
from composenet.cluster.client import KV, Store
from composenet.cluster.dataplane import (
    Device,
    SyncError,
    host_routes,
    sync_device,
    sync_vtep_sets,
    vxlan_devices,
)
from composenet.cluster.errors import ClusterConflict, StoreError
from composenet.cluster.keys import ROOT, parse_key
from composenet.cluster.mirror import Mirror, device_want, name_records
from composenet.cluster.records import NodeRecord
from composenet.cluster.registry import Registry
from composenet.cluster.settings import (
    ENV_CA,
    ENV_CERT,
    ENV_KEY,
    parse_advertise,
    parse_node,
    parse_store_url,
)
from composenet.cluster.watch import IDLE, Event, Follower
from composenet.dns import peers, remote
from composenet.errors import ComposenetError
from composenet.linux import proc
from composenet.linux.fileio import atomic_write, read_json

RESYNC = 30.0  # seconds between re-checks of the kernel (drift, a table re-made by `up`)
LOOP = 0.1  # the main loop wakes at least this often (signals set flags)
RETRY = 1.0  # after a failed store operation or apply
RTMGRP_LINK = 0x1


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} composenet-cluster[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class AgentConfig:
    store: str
    node: str
    advertise: str
    ttl: int
    run_dir: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    idle: float = IDLE
    resync: float = RESYNC

    def tls_env(self) -> dict[str, str]:
        """The TLS files as the settings' environment variables (what parse_store_url reads)."""
        return {k: v for k, v in ((ENV_CA, self.ca), (ENV_CERT, self.cert), (ENV_KEY, self.key)) if v}


def load_agent_config(path: str) -> AgentConfig:
    """The agent's config; ComposenetError naming the file and the key."""
    obj = read_json(path)
    if obj is None:
        raise ComposenetError(f"{path}: cannot read the cluster agent's config (a JSON object)")

    def get(name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        v = obj.get(name, default)
        if v is ... or (v is not None and not isinstance(v, kind)) or isinstance(v, bool):
            raise ComposenetError(f"{path}: {name}: expected {getattr(kind, '__name__', kind)}, got {v!r}")
        return v

    tls = {n: get(n, str, None) for n in ("ca", "cert", "key")}
    cfg = AgentConfig(store=get("store", str), node=parse_node(get("node", str)),
                      advertise=parse_advertise(get("advertise", str)), ttl=get("ttl", int),
                      run_dir=get("run_dir", str), idle=float(get("idle", (int, float), IDLE)),
                      resync=float(get("resync", (int, float), RESYNC)), **tls)
    parse_store_url(cfg.store, cfg.tls_env())  # checks the URL and the TLS files now
    return cfg


def host_id() -> str:
    """This host among the cluster's: boot id and network namespace (simulated hosts share the
    boot id of their machine)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = socket.gethostname()
    return f"{boot}/{proc.host_netns()}"


class Agent:
    """See the module doc. ``start`` registers (raising ClusterConflict for a name held by
    another host), ``run`` serves until SIGTERM, ``shutdown`` leaves."""

    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.url = parse_store_url(cfg.store, cfg.tls_env())
        self.registry = Registry(Store(self.url), cfg.node)
        self.mirror = Mirror()
        # SimpleQueue: its put is reentrant, so the signal handlers may wake the loop at once.
        self.inbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self.stop = threading.Event()
        self.host_id = host_id()
        self.lease = 0
        self.synced = False  # a first listing arrived: never apply an empty copy before it
        self.dirty = True
        self.need_register = True
        self.need_reconcile = True
        self.hup = False
        self.reloading = False  # a SIGHUP is being answered: say "applied" even if nothing changed
        self.term = False
        self.next_resync = 0.0
        self.next_retry = 0.0
        self.said: set[str] = set()  # problems logged once
        self.ipr = IPRoute()
        self.pidfile = files.agent_pidfile(cfg.run_dir)

    # -- what the follower reports (its thread) -------------------------------------------

    def snapshot(self, revision: int, kvs: list[KV]) -> None:
        self.inbox.put(("snapshot", revision, kvs))

    def events(self, revision: int, events: list[Event]) -> None:
        self.inbox.put(("events", revision, events))

    def connection(self, up: bool, why: str) -> None:
        self.inbox.put(("connection", up, why))

    # -- start and stop ---------------------------------------------------------------------

    def start(self) -> None:
        other = agent_pid(self.cfg.run_dir)
        if other is not None and other != os.getpid():
            raise ComposenetError(f"another cluster agent of this host runs (pid {other})")
        foreign = foreign_agent(self.cfg.run_dir)
        if foreign is not None:
            raise shared_run_dir_error(self.cfg.run_dir, foreign)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        delay = 0.1
        while not self.term:
            try:
                self._register(fatal=True)
                break
            except StoreError as e:
                if isinstance(e, ClusterConflict):
                    raise
                log(f"store not ready: {e.message}; retrying in {delay:.1f} s")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        follower = Follower(Store(self.url), ROOT, self, idle=self.cfg.idle)
        for target, name in ((follower.run, "follow"), (self._keepalive_loop, "keepalive"),
                             (self._link_loop, "links")):
            threading.Thread(target=target, args=(self.stop,) if target == follower.run else (), name=name,
                             daemon=True).start()
        while not self.synced and not self.term:  # the starter bounds this wait
            self._step()
        if self.term:
            return
        self._step()  # the first listing applied
        atomic_write(self.pidfile, f"{os.getpid()}\n")
        log(f"ready: node {self.cfg.node} ({self.cfg.advertise}), store {self.url}")

    def _on_hup(self, signum: int, frame: object) -> None:
        self.hup = True
        self.inbox.put(("wake",))  # answered now, not at the loop's next tick (`up` waits for it)

    def _on_term(self, signum: int, frame: object) -> None:
        self.term = True
        self.inbox.put(("wake",))

    def shutdown(self) -> None:
        self.stop.set()
        if self.lease:
            try:
                self.registry.deregister(self.lease)
                log(f"left the cluster (lease {self.lease:x} revoked)")
            except StoreError as e:
                log(f"could not revoke the lease ({e.message}); it expires within {self.cfg.ttl} s")
        try:
            with open(self.pidfile) as f:
                mine = f.read().strip() == str(os.getpid())
            if mine:
                os.unlink(self.pidfile)
        except OSError:
            pass
        self.ipr.close()
        log("stopped")

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        while not self.term:
            self._step()
        self.shutdown()

    def _step(self) -> None:
        """One turn: take what arrived, then register / reconcile / apply as needed."""
        try:
            items = [self.inbox.get(timeout=LOOP)]
        except queue.Empty:
            items = []
        while True:
            try:
                items.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        left: set[str] = set()
        for item in items:
            left |= self._take(item)
        if self.hup:
            self.hup = False
            log("reloading")
            self.need_reconcile = self.dirty = self.reloading = True
        now = time.monotonic()
        if now >= self.next_retry:
            try:
                if self.need_register:
                    self._register(fatal=False)
                if self.need_reconcile and self.lease and self.synced:
                    self._reconcile()
                for net in sorted(left):
                    if self.registry.collect_network(net):
                        log(f"network {net}: no member left, its record removed")
            except StoreError as e:
                self._say(f"store: {e.message}")
                self.next_retry = now + RETRY
        if now >= self.next_resync:
            self.dirty = True
        if self.dirty and self.synced:
            self._apply()

    def _take(self, item: tuple) -> set[str]:
        """Apply one report to the copy; the networks whose last member just left."""
        kind = item[0]
        if kind == "snapshot":
            self.mirror.reset(item[1], item[2])
            self.synced = self.dirty = self.need_reconcile = True
        elif kind == "events":
            changed = self.mirror.apply(item[1], item[2])
            if changed:
                self.dirty = True
                nets = {k.network for k in map(parse_key, changed) if k is not None and k.kind == "member"}
                view = self.mirror.view() if nets else None
                if view is not None:
                    return {n for n in nets if not view.members.get(n) and n in view.networks}
        elif kind == "connection":
            log(("store reachable: " if item[1] else "store lost: ") + item[2])
            if item[1]:
                self.said.clear()
        elif kind == "lease-lost":
            if self.lease == item[1]:
                log(f"lease {self.lease:x} expired: registering again")
                self.lease = 0
                self.need_register = True
        elif kind == "link":
            self.dirty = True
        return set()

    def _say(self, problem: str) -> None:
        if problem not in self.said:
            self.said.add(problem)
            log(problem)

    # -- store side ------------------------------------------------------------------------

    def _register(self, fatal: bool) -> None:
        view = self.mirror.view()
        routes = _routes(self.ipr, [n.subnet for n in view.networks.values()])
        record = NodeRecord(self.cfg.node, self.cfg.advertise, self.host_id, tuple(routes), round(time.time(), 3))
        try:
            self.lease = self.registry.register(record, self.cfg.ttl)
        except ClusterConflict as e:
            if fatal:
                raise
            self._say(e.message)
            raise
        self.need_register = False
        self.need_reconcile = True
        log(f"registered node {self.cfg.node} ({self.cfg.advertise}) on lease {self.lease:x}")

    def _reconcile(self) -> None:
        with files.cluster_lock(self.cfg.run_dir, timeout=5.0):
            records, problems = files.read_host_records(self.cfg.run_dir, self.cfg.node)
            done = self.registry.reconcile(records, self.lease)
        self.need_reconcile = False
        for p in problems + done.conflicts:
            self._say(p)
        if done.put or done.deleted:
            log(f"published {len(done.put)} record(s), withdrew {len(done.deleted)}")

    def _keepalive_loop(self) -> None:
        store = Store(self.url)
        interval = max(0.5, self.cfg.ttl / 3)
        delay = interval
        while not self.stop.wait(delay):
            lease = self.lease
            if not lease:
                delay = 0.2
                continue
            try:
                left = store.keepalive(lease)
            except StoreError:
                delay = min(1.0, interval)  # the store is away: try often, the lease is short
                continue
            if left <= 0:
                self.inbox.put(("lease-lost", lease))
                delay = 0.2
            else:
                delay = interval

    def _link_loop(self) -> None:
        """Any link change in this namespace wakes an apply (a device created after the start)."""
        try:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
            s.bind((0, RTMGRP_LINK))
            s.settimeout(1.0)
        except OSError as e:
            log(f"cannot follow link changes ({e}); relying on the periodic re-check")
            return
        with s:
            while not self.stop.is_set():
                try:
                    if s.recv(65536):
                        self.inbox.put(("link",))
                except TimeoutError:
                    continue
                except OSError:
                    time.sleep(RETRY)

    # -- kernel and names -------------------------------------------------------------------

    def _apply(self) -> None:
        self.dirty = False
        self.next_resync = time.monotonic() + self.cfg.resync
        view = self.mirror.view()
        me = self.cfg.node
        for p in view.problems:
            self._say(f"skipped: {p}")
        devices: dict[str, Device] = {}
        acted = listed = failed = False
        try:
            devices = {n: d for n, d in vxlan_devices(self.ipr).items() if not d.learning}
            listed = True
            for net, dev in sorted(devices.items()):
                record = view.networks.get(net)
                if record is not None and record.vni != dev.vni:
                    self._say(f"network {net}: device {dev.ifname} has VNI {dev.vni}, the cluster's is {record.vni}")
                want, problems = device_want(view, net, me)
                for p in problems:
                    self._say(p)
                try:
                    lines = sync_device(self.ipr, dev, want)
                except SyncError as e:
                    self._say(f"cannot apply: {e}")
                    failed = True
                    continue
                for line in lines:
                    log(f"{dev.ifname} ({net}): {line}")
                    acted = True
            vteps: set[str] = set()
            for net in devices:
                vteps |= view.remote_vteps(net, me)
            for line in sync_vtep_sets(vteps):
                log(f"vtep set: {line}")
                acted = True
        except Exception as e:  # noqa: BLE001 -- netlink and nft errors: logged, tried again
            self._say(f"cannot apply: {e!r}")
            failed = True
        if failed:  # tried again soon (the periodic re-check, sooner)
            self.next_resync = time.monotonic() + RETRY
        changed = set()
        for net in devices:
            try:
                if remote.write_names(self.cfg.run_dir, net, me, view.revision, name_records(view, net, me)):
                    changed.add(net)
            except (OSError, ValueError) as e:
                self._say(f"cannot write the names of {net}: {e}")
        if listed:  # a device gone: its names go (never on a failed listing)
            for net in remote.written_networks(self.cfg.run_dir) - set(devices):
                if remote.remove_names(self.cfg.run_dir, net):
                    changed.add(net)
        if changed:
            peers.notify(self.cfg.run_dir, "", changed, timeout=0)
        if acted or changed or self.reloading:
            log(f"applied revision {view.revision}" + (f"; names of {', '.join(sorted(changed))}" if changed else ""))
        self.reloading = False


def _routes(ipr: IPRoute, exclude: list[str]) -> list[str]:
    try:
        return host_routes(ipr, exclude)
    except Exception as e:  # noqa: BLE001 -- the routes only help subnet choice
        log(f"cannot read the routes: {e!r}")
        return []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write(f"usage: python -m {AGENT_MODULE} CONFIG\n")
        return 2
    try:
        agent = Agent(load_agent_config(args[0]))
        agent.start()
    except ComposenetError as e:
        sys.stderr.write(f"composenet-cluster: {e}\n")
        return 1
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
