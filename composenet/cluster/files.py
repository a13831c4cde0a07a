"""The cluster's files in the run directory: the agent's (host-wide) and each project's records.

    <run_dir>/.cluster/agent.json        the agent's config (written by whoever starts it)
    <run_dir>/.cluster/agent.pid         the agent's pidfile: written once it is registered
    <run_dir>/.cluster/agent.log         its log (appended)
    <run_dir>/.cluster/lock              flock'ed while a host's records change: by `up`/`down`
                                         (lease, publish, write the project's file) and by the
                                         agent (reconcile), so neither sees the other half-done
    <run_dir>/.cluster/agent.lock        flock'ed while the agent is started or stopped
    <run_dir>/.cluster/names/<net>.json  remote endpoints' names (composenet/dns/remote.py)
    <run_dir>/<project>/cluster.json     the project's records (``HostRecords``), stamped with
                                         the host network namespace like dns-peers.json

The directory and per-project names are composenet.paths' (CLUSTER_DIR, CLUSTER_NAMES,
ProjectPaths.cluster_records); the agent's own files inside the directory are named here.

Must not: talk to the store or the kernel.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from composenet.cluster.errors import StoreError
from composenet.cluster.records import HostRecords, RecordError
from composenet.linux.fileio import atomic_write, read_json
from composenet.linux.proc import host_netns
from composenet.paths import CLUSTER_DIR, ProjectPaths, list_projects

AGENT_CONFIG = "agent.json"
AGENT_PID = "agent.pid"
AGENT_LOG = "agent.log"
CLUSTER_LOCK = "lock"
AGENT_LOCK = "agent.lock"
LOCK_TIMEOUT = 30.0
LOCK_POLL = 0.02


def cluster_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CLUSTER_DIR)


def agent_config_path(run_dir: str) -> str:
    return os.path.join(cluster_dir(run_dir), AGENT_CONFIG)


def agent_pidfile(run_dir: str) -> str:
    return os.path.join(cluster_dir(run_dir), AGENT_PID)


def agent_log(run_dir: str) -> str:
    return os.path.join(cluster_dir(run_dir), AGENT_LOG)


def records_path(run_dir: str, project: str) -> str:
    return ProjectPaths(run_dir, project).cluster_records


def cluster_lock(run_dir: str, timeout: float = LOCK_TIMEOUT) -> AbstractContextManager[None]:
    """Hold the host's cluster lock (see the module doc); StoreError after ``timeout`` s."""
    return _flock(os.path.join(cluster_dir(run_dir), CLUSTER_LOCK), timeout)


def agent_lock(run_dir: str, timeout: float = LOCK_TIMEOUT) -> AbstractContextManager[None]:
    """Held while the agent is started or stopped (two `up`s never start two agents)."""
    return _flock(os.path.join(cluster_dir(run_dir), AGENT_LOCK), timeout)


@contextmanager
def _flock(path: str, timeout: float) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() > deadline:
                raise StoreError(f"the lock {path} is still held after {timeout:g} s")
            time.sleep(LOCK_POLL)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_host_records(run_dir: str, project: str, records: HostRecords) -> None:
    """Write (or, when it holds nothing, remove) the project's records."""
    path = records_path(run_dir, project)
    if not (records.networks or records.members or records.addresses or records.endpoints):
        remove_host_records(run_dir, project)
        return
    atomic_write(path, json.dumps({**records.to_json(), "host_netns": host_netns()}, indent=1, sort_keys=True) + "\n")


def remove_host_records(run_dir: str, project: str) -> None:
    try:
        os.unlink(records_path(run_dir, project))
    except FileNotFoundError:
        pass


def read_host_records(run_dir: str, node: str) -> tuple[HostRecords, list[str]]:
    """The union of the records of every project of this host network namespace, for ``node``;
    and the problems met (a file that does not parse, records of another node name)."""
    out = HostRecords(node)
    problems = []
    here = host_netns()
    for project in list_projects(run_dir):
        path = records_path(run_dir, project)
        obj = read_json(path)
        if obj is None or obj.get("host_netns") != here:
            continue
        try:
            recs = HostRecords.from_json(obj, path)
        except RecordError as e:
            problems.append(str(e))
            continue
        if recs.node != node:
            problems.append(f"{path}: records of node {recs.node!r}, this host is {node!r}; ignored")
            continue
        out = out.merged(recs)
    return out, problems


def cluster_networks(run_dir: str) -> set[str]:
    """The cluster networks some project of this host network namespace is a member of (its
    cluster.json lists the membership): `network ls` shows them with SCOPE swarm."""
    here = host_netns()
    out: set[str] = set()
    for project in list_projects(run_dir):
        obj = read_json(records_path(run_dir, project))
        if not isinstance(obj, dict) or obj.get("host_netns") != here:
            continue
        out.update(str(m.get("network")) for m in obj.get("members", ()) if isinstance(m, dict))
    return out
