"""Names from other hosts of the cluster: the files the cluster agent writes for the resolvers,
and how a resolver merges them.

The cluster agent (composenet/cluster/agent.py) follows the store and writes, for each cluster
network that exists on this host, the endpoints of the OTHER hosts on it::

    <run dir>/.cluster/names/<network>.json
    {"network": "fabric", "node": "h1", "host_netns": 4026532000, "revision": 42,
     "containers": [ ... as in dns.json, plus the "node" each runs on ... ]}

(The directory is composenet.paths.CLUSTER_NAMES.) It rewrites a file only
when its content changes (atomically), then signals (SIGHUP) the resolvers that concern the
network, without waiting: ``peers.notify``'s rule, the agent being no project.

A resolver merges, at start, on every reload and on its periodic re-scan, the containers of the
files of the networks it concerns (those it listens on and those its own containers are on;
``peers.relevant_networks``), written in this host network namespace (the run directory may be
shared by several). Scoping is that of local networks: a remote container is on that network
only, so it is answered only to askers on it, and a service name answers with its replicas on
every host. Names: a remote container keeps its name unless another container (of this host or
another) has the same one; then the remote one is known as ``<name>.<node>`` (it still answers
to its service name and aliases). Each endpoint takes the listener's ``internal``. Bad records
are skipped one container at a time; the names stay as last written when the agent or the store
is gone (last known state).
"""

from __future__ import annotations

import json
import os
from typing import Any

from composenet.dns.peers import relevant_networks, run_dir_of, valid_record
from composenet.linux.fileio import atomic_write, read_json
from composenet.linux.proc import host_netns
from composenet.paths import CLUSTER_NAMES

NAMES_DIR = CLUSTER_NAMES
SUFFIX = ".json"


def names_dir(run_dir: str) -> str:
    return os.path.join(run_dir, NAMES_DIR)


def names_path(run_dir: str, network: str) -> str:
    if not network or "/" in network or network.startswith("."):
        raise ValueError(f"network name {network!r} cannot name a file")
    return os.path.join(names_dir(run_dir), network + SUFFIX)


def names_text(network: str, node: str, revision: int, containers: list[dict[str, Any]]) -> str:
    return json.dumps({"network": network, "node": node, "revision": revision, "host_netns": host_netns(),
                       "containers": containers}, indent=1, sort_keys=True) + "\n"


def write_names(run_dir: str, network: str, node: str, revision: int, containers: list[dict[str, Any]]) -> bool:
    """Write the names file of ``network`` unless it already holds ``containers``; True if it
    was written. (``revision``: the store's, for people reading the file; not compared.)"""
    path = names_path(run_dir, network)
    old = read_json(path)
    if old is not None and old.get("containers") == containers and old.get("node") == node \
            and old.get("host_netns") == host_netns():
        return False
    atomic_write(path, names_text(network, node, revision, containers))
    return True


def remove_names(run_dir: str, network: str) -> bool:
    try:
        os.unlink(names_path(run_dir, network))
    except FileNotFoundError:
        return False
    return True


def written_networks(run_dir: str) -> set[str]:
    """The networks that have a names file."""
    try:
        names = os.listdir(names_dir(run_dir))
    except OSError:
        return set()
    return {n[: -len(SUFFIX)] for n in names if n.endswith(SUFFIX) and not n.startswith(".")}


def read_names(run_dir: str, network: str) -> list[dict[str, Any]]:
    """The valid remote containers of ``network``'s file, if it was written in this host network
    namespace; each with its endpoints on ``network`` only."""
    rec = read_json(names_path(run_dir, network))
    if rec is None or rec.get("host_netns") != host_netns() or not isinstance(rec.get("containers"), list):
        return []
    out = []
    for c in rec["containers"]:
        if not isinstance(c, dict) or not isinstance(c.get("endpoints"), list):
            continue
        eps = [ep for ep in c["endpoints"] if isinstance(ep, dict) and ep.get("network") == network]
        item = {**c, "endpoints": eps}
        if eps and isinstance(c.get("node"), str) and c["node"] and valid_record(item):
            out.append(item)
    return out


def gather(cfg: dict[str, Any], config_path: str) -> list[dict[str, Any]]:
    """The remote containers on the networks ``cfg`` concerns, by network then file order."""
    run_dir = run_dir_of(config_path, str(cfg.get("project", "")))
    if run_dir is None:
        return []
    wanted = relevant_networks(cfg) & written_networks(run_dir)
    return [c for net in sorted(wanted) for c in read_names(run_dir, net)]


def merge(cfg: dict[str, Any], remote: list[dict[str, Any]]) -> dict[str, Any]:
    """``cfg`` (local containers, other projects' merged in) with the ``remote`` containers added
    (see the module doc for names and ``internal``)."""
    if not remote:
        return cfg
    containers = [c for c in cfg.get("containers", []) if isinstance(c, dict)]
    internal = {str(li.get("network")): bool(li.get("internal")) for li in cfg.get("listeners", [])
                if isinstance(li, dict)}
    count: dict[str, int] = {}
    for c in [*containers, *remote]:
        count[str(c.get("name"))] = count.get(str(c.get("name")), 0) + 1
    added = []
    for c in remote:
        name = str(c["name"])
        eps = [{**ep, "internal": internal.get(str(ep.get("network")), bool(ep.get("internal")))}
               for ep in c["endpoints"]]
        added.append({**c, "name": name if count[name] == 1 else f"{name}.{c['node']}", "endpoints": eps})
    return {**cfg, "containers": [*containers, *added]}
