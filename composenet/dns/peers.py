"""Names across projects: the records each project publishes for networks it shares with others,
how a resolver merges them, and how a project tells the resolvers concerned that they changed.

A network is served by one resolver listener, its owner's (a project's network: the project's
resolver; a standalone network from `composenet network create`: the resolver of its pseudo-
project ``-NAME``). Containers of other projects attach to it with ``external: true`` or
`composenet network connect`; every container on a network must resolve every other one on it,
whatever its project (Docker's behaviour, e.g. a shared ``proxy`` network). So:

* a project publishes its endpoints on networks it does not own in ``<run dir>/<project>/`` +
  ``dns-peers.json`` (the ``dnsrecords`` resource, written by :class:`PeersHandler`)::

      {"project": "b", "host_netns": 4026532000,
       "containers": [ ... as in dns.json, endpoints on foreign networks only ... ]}

* a resolver (project P, config ``<run dir>/P/dns.json``) merges, at start, on every reload and
  when a periodic re-scan finds them changed, the endpoints of other projects' containers on
  the networks that concern it: those it listens on and those its own containers are attached
  to. They come from the other projects' ``dns-peers.json`` (containers whose namespace still
  exists) and from their ``dns.json`` for the networks they own (only while their resolver is
  alive). Both are taken only from projects of the same host network namespace (the runtime
  directory is shared by every namespace of the machine). Scoping is unchanged: a name is
  answered only to askers that share a network with it, with its address there.
* a change of a project's records (``up``, ``down``, ``network connect``) signals (SIGHUP) the
  live resolvers of the other projects concerned, and waits (bounded) until each has reloaded.

Bad records of another project are skipped one container at a time: they never stop a resolver.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from composenet.dns.config import ConfigError, parse_config
from composenet.dns.running import resolver_pid
from composenet.linux.fileio import read_json
from composenet.linux.proc import host_netns, pid_netns
from composenet.paths import DNS_CONFIG, DNS_LOG, NETNS_DIR, ProjectPaths, list_projects

__all__ = ["gather", "host_netns", "listener_networks", "merge", "notify", "published_text", "read_from",
           "read_json", "read_published", "relevant_networks", "resolver_pid", "run_dir_of", "valid_record"]

NOTIFY_TIMEOUT = 2.0  # seconds to wait for one notified resolver to reload
POLL = 0.02




def read_from(path: str, offset: int) -> str | None:
    """What file ``path`` (a resolver's log) holds from byte ``offset`` on; None if unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return None


def _containers(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    cs = cfg.get("containers")
    return [c for c in cs if isinstance(c, dict)] if isinstance(cs, list) else []


def _endpoint_networks(c: dict[str, Any]) -> set[str]:
    eps = c.get("endpoints")
    if not isinstance(eps, list):
        return set()
    return {str(ep.get("network")) for ep in eps if isinstance(ep, dict) and ep.get("network")}


def listener_networks(cfg: dict[str, Any]) -> set[str]:
    ls = cfg.get("listeners")
    if not isinstance(ls, list):
        return set()
    return {str(li.get("network")) for li in ls if isinstance(li, dict) and li.get("network")}


def relevant_networks(cfg: dict[str, Any]) -> set[str]:
    """The networks whose endpoints a resolver with config ``cfg`` needs: those it listens on and
    those its own containers are attached to."""
    out = listener_networks(cfg)
    for c in _containers(cfg):
        out |= _endpoint_networks(c)
    return out


def run_dir_of(config_path: str, project: str) -> str | None:
    """The runtime directory of a config at ``<run dir>/<project>/dns.json``; None for a config
    anywhere else (a resolver started by hand or by a test: no peers)."""
    p = Path(config_path).absolute()
    if p.name != DNS_CONFIG or p.parent.name != project:
        return None
    return str(p.parent.parent)


def read_published(path: str) -> dict[str, Any] | None:
    """A project's records for other projects' resolvers (its ``dns-peers.json`` at ``path``)
    if they were written in this host network namespace (the runtime directory is shared by
    every namespace of the machine), without that namespace's identity; None otherwise."""
    rec = read_json(path)
    if rec is None or rec.get("host_netns") != host_netns():
        return None
    rec.pop("host_netns")
    return rec


def published_text(records: dict[str, Any]) -> str:
    """The text of a ``dns-peers.json`` holding ``records``, stamped with this host network
    namespace's identity (what :func:`read_published` checks)."""
    return json.dumps({**records, "host_netns": host_netns()}, indent=1, sort_keys=True) + "\n"


def valid_record(container: dict[str, Any]) -> bool:
    """Whether one container record passes the resolver's own config checks (also used for the
    cluster's records, remote.py)."""
    try:
        parse_config({"project": "-", "pidfile": "-", "listeners": [], "containers": [container]}, "peer record")
    except (ConfigError, TypeError, ValueError, AttributeError):
        return False
    return True


def gather(cfg: dict[str, Any], config_path: str) -> list[dict[str, Any]]:
    """Other projects' containers with their endpoints on the networks ``cfg`` concerns (see the
    module doc), in a stable order. Never raises on what other projects wrote."""
    project = str(cfg.get("project", ""))
    run_dir = run_dir_of(config_path, project)
    if run_dir is None:
        return []
    wanted = relevant_networks(cfg)
    if not wanted:
        return []
    here = host_netns()
    own_names = {str(c.get("name")) for c in _containers(cfg)}
    out: list[dict[str, Any]] = []
    for q in list_projects(run_dir):
        if q == project:
            continue
        found: list[tuple[dict[str, Any], set[str]]] = []
        peers = read_published(ProjectPaths(run_dir, q).dns_peers)
        if peers is not None:
            for c in _containers(peers):
                if os.path.exists(os.path.join(NETNS_DIR, str(c.get("name", "")))):  # not stale
                    found.append((c, wanted))
        pid = resolver_pid(run_dir, q)
        if pid is not None and pid_netns(pid) == here:
            theirs = read_json(ProjectPaths(run_dir, q).dns_config) or {}
            owned = listener_networks(theirs) & wanted
            if owned:
                found += [(c, owned) for c in _containers(theirs)]
        for c, nets in found:
            eps = [ep for ep in c.get("endpoints", []) if isinstance(ep, dict) and ep.get("network") in nets]
            if not eps or str(c.get("name")) in own_names:
                continue
            rec = {**c, "endpoints": eps}
            if valid_record(rec):
                out.append(rec)
    return out


def merge(cfg: dict[str, Any], peers: list[dict[str, Any]]) -> dict[str, Any]:
    """``cfg`` with ``peers`` (from :func:`gather`) added to its containers. An endpoint on one of
    the listeners' networks takes the listener's ``internal``: the network's owner knows it."""
    if not peers:
        return cfg
    internal = {str(li.get("network")): bool(li.get("internal")) for li in cfg.get("listeners", [])
                if isinstance(li, dict)}
    merged = []
    seen = {str(c.get("name")) for c in _containers(cfg)}
    for c in peers:
        if str(c.get("name")) in seen:
            continue  # one record per container (a project's own wins)
        seen.add(str(c.get("name")))
        eps = [{**ep, "internal": internal.get(str(ep.get("network")), bool(ep.get("internal")))}
               for ep in c["endpoints"]]
        merged.append({**c, "endpoints": eps})
    return {**cfg, "containers": [*_containers(cfg), *merged]}


# ---- telling the resolvers concerned -----------------------------------------------------------


def notify(run_dir: str, project: str, networks: set[str], timeout: float = NOTIFY_TIMEOUT) -> list[str]:
    """SIGHUP the live resolvers of other projects (same host namespace) that concern any of
    ``networks``, and wait (at most ``timeout`` seconds in all) until each logged its reload.
    Returns the projects signalled. Best effort: a resolver that does not answer is not an
    error of the caller (its periodic re-scan picks the change up)."""
    if not networks:
        return []
    here = host_netns()
    waiting: list[tuple[int, str, int]] = []
    for q in list_projects(run_dir):
        if q == project:
            continue
        cfg = read_json(ProjectPaths(run_dir, q).dns_config)
        if cfg is None or not relevant_networks(cfg) & networks:
            continue
        pid = resolver_pid(run_dir, q)
        if pid is None or pid_netns(pid) != here:
            continue
        log = ProjectPaths(run_dir, q).log(DNS_LOG)
        try:
            offset = os.path.getsize(log)
        except OSError:
            offset = 0
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            continue
        waiting.append((pid, log, offset))
    deadline = time.monotonic() + timeout
    signalled = [w[1] for w in waiting]
    while waiting and time.monotonic() < deadline:
        waiting = [w for w in waiting if not _reloaded(*w)]
        if waiting:
            time.sleep(POLL)
    return [os.path.basename(os.path.dirname(os.path.dirname(s))) for s in signalled]


def _reloaded(pid: int, log: str, offset: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return True  # gone: nothing to wait for
    text = read_from(log, offset)
    if text is None:
        return False
    # A reload already running when we signalled may have read the old records: only one that
    # started after the signal ("reloading" logged after ``offset``) counts.
    started = False
    for line in text.splitlines():
        if "reloading" in line:
            started = True
        elif started and ("reloaded" in line or "reload failed" in line):
            return True
    return False
