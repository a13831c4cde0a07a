"""Cluster networks in the desired state (pure): a ``driver: overlay`` network without static
peers, on a host with a cluster store (``ObservedState.cluster`` set), takes its subnet, gateway
and VNI from the cluster's record, or from the record this host would create, and its endpoint
addresses avoid every address the cluster leased to another container.

Owns the cluster's subnet and VNI choices (composenet.cluster.ipam, which creates the records,
uses these same functions, so that what `plan` shows is what `up` creates):

* Subnet: the file's; else the first /24 of 10.0.0.0/8 (Swarm's default address pool) that
  overlaps no other cluster network and no route of any node (default routes do not count).
  Gateway: the file's, else the subnet's first address.
* VNI: the file's (``com.composenet.vxlan.id``), which must be free in the cluster; else one
  derived from the network's name in 4096..16777215, the next free one when taken.
* A file that disagrees with an existing record that has members (another subnet, gateway or
  VNI): a located error naming the record and the node that created it. Without members, the
  file's values replace the record (``Registry.ensure_network``).
* A static ``ipv4_address`` leased to another container (on any node, or to another project's
  container on this node): a located error. Addresses this node leased to another project's
  containers on the same network are held like other nodes' (two projects of one host share a
  cluster network by name).

Must not: read the store (composenet.kernel.cluster does, into ``ObservedState.cluster``).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from composenet.core import ipam, overlay
from composenet.core.model import Network, Project
from composenet.core.state import ObservedState
from composenet.errors import InputError, PlanError, Problem

VNI_MIN = 4096
VNI_MAX = 16777215
DEFAULT_POOL = "10.0.0.0/8"
DEFAULT_PREFIX = 24

Net = ipaddress.IPv4Network


def _nets(texts: Iterable[str]) -> list[Net]:
    out = []
    for t in texts:
        try:
            n = ipaddress.IPv4Network(t, strict=False)
        except ValueError:
            continue
        if n.prefixlen > 0:  # a default route overlaps everything: it says nothing
            out.append(n)
    return sorted(out, key=lambda n: (int(n.network_address), n.prefixlen))


def choose_subnet(taken: Iterable[str], routes: Iterable[str], pool: str = DEFAULT_POOL,
                  prefixlen: int = DEFAULT_PREFIX) -> str | None:
    """The first ``/prefixlen`` of ``pool`` overlapping none of ``taken`` (cluster networks) and
    ``routes`` (the nodes' routes); None when the pool is full."""
    space = ipaddress.IPv4Network(pool)
    if prefixlen < space.prefixlen:
        return None
    blockers = [n for n in _nets([*taken, *routes]) if n.overlaps(space)]
    size = 1 << (32 - prefixlen)
    candidate = int(space.network_address)
    end = int(space.broadcast_address)
    while candidate + size - 1 <= end:
        cand = ipaddress.IPv4Network((candidate, prefixlen))
        hit = next((b for b in blockers if b.overlaps(cand)), None)
        if hit is None:
            return str(cand)
        # Jump past the blocker (aligned to the candidate size), never backwards.
        after = int(hit.broadcast_address) + 1
        candidate = max(candidate + size, (after + size - 1) // size * size)
    return None


def default_gateway(subnet: str) -> str:
    return str(next(ipaddress.IPv4Network(subnet).hosts()))


def derived_vni(name: str) -> int:
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return VNI_MIN + h % (VNI_MAX - VNI_MIN + 1)


def choose_vni(name: str, taken: Iterable[int], wanted: int | None = None) -> int | None:
    """``wanted`` if free (None when it is taken), else the VNI derived from ``name`` or the next
    free one after it (wrapping within VNI_MIN..VNI_MAX)."""
    used = set(taken)
    if wanted is not None:
        return None if wanted in used else wanted
    span = VNI_MAX - VNI_MIN + 1
    start = derived_vni(name) - VNI_MIN
    for i in range(min(span, len(used) + 1)):  # one of the first len(used)+1 candidates is free
        vni = VNI_MIN + (start + i) % span
        if vni not in used:
            return vni
    return None


@dataclass(frozen=True)
class ClusterNet:
    """A cluster network as this plan builds it: ``record`` is the cluster's record (``exists``)
    or the one this host creates; ``held``: addresses leased to other containers."""

    name: str
    record: dict[str, Any]  # name, subnet, gateway, vni, port, created_by
    exists: bool
    vxlan: overlay.VxlanOpts
    held: tuple[str, ...]

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.record["subnet"])

    def ipv4(self, n: Network) -> tuple[ipaddress.IPv4Network, str, ipam.Pool]:
        """(subnet, gateway, pool) of the network; the pool skips every address held elsewhere."""
        ic = next((ic for ic in n.ipam if ic.subnet and ":" not in ic.subnet), None)
        pool = ipam.Pool(self.subnet, str(self.record["gateway"]), ic.ip_range if ic else None,
                         [ip for _, ip in ic.aux_addresses] if ic else ())
        for ip in self.held:
            pool.claim(ip)
        return self.subnet, str(self.record["gateway"]), pool


def is_cluster_network(n: Network, observed: ObservedState) -> bool:
    """A network the cluster store spans: overlay, no static peers, a store configured."""
    return bool(observed.cluster) and n.driver == "overlay" and not n.external and n.opt(overlay.PEERS) is None


def _problem(n: Network, path: str, message: str, hint: str) -> InputError:
    pos = n.pos
    return InputError([Problem(message, file=pos.file if pos else None, line=pos.line if pos else None,
                               col=pos.col if pos else None, path=path, hint=hint)])


def _file_values(n: Network) -> tuple[str | None, str | None, int | None, int]:
    """(subnet, gateway, VNI, port) as the file states them (None: not stated)."""
    ic = next((ic for ic in n.ipam if ic.subnet and ":" not in ic.subnet), None)
    subnet = str(ipaddress.IPv4Network(ic.subnet, strict=False)) if ic and ic.subnet else None
    vni_text, port_text = n.opt(overlay.VNI), n.opt(overlay.PORT)
    vni = int(vni_text) if vni_text and overlay.int_in(vni_text, 1, overlay.VNI_MAX) else None
    port = int(port_text) if port_text and overlay.int_in(port_text, 1, 65535) else overlay.DEFAULT_PORT
    return subnet, ic.gateway if ic else None, vni, port


def _mismatch(rec: dict[str, Any], subnet: str | None, gateway: str | None, vni: int | None) -> list[str]:
    out = []
    if subnet is not None and ipaddress.IPv4Network(subnet) != ipaddress.IPv4Network(rec["subnet"]):
        out.append(f"subnet {subnet} (the cluster's is {rec['subnet']})")
    if gateway is not None and gateway != rec["gateway"]:
        out.append(f"gateway {gateway} (the cluster's is {rec['gateway']})")
    if vni is not None and vni != rec["vni"]:
        out.append(f"VNI {vni} (the cluster's is {rec['vni']})")
    return out


def plan_cluster_networks(project: Project, observed: ObservedState) -> dict[str, ClusterNet]:
    """The project's cluster networks, by key (in key order: two new ones never get one subnet).
    Raises PlanError when the store did not answer, InputError for a file the cluster refuses."""
    nets = [n for n in sorted(project.networks, key=lambda n: n.key) if is_cluster_network(n, observed)]
    if not nets:
        return {}
    mine = _containers(project)
    c = observed.cluster
    if c.get("error"):
        raise PlanError(str(c["error"]), hint=c.get("hint") or "is etcd running and reachable from this host?")
    records: dict[str, dict[str, Any]] = dict(c.get("networks", {}))
    routes = [*c.get("routes", ()), *observed.host_routes]
    out = {}
    for n in nets:
        owner = observed.networks.get(n.name, {}).get("owner")
        if owner is not None and owner != project.name:
            raise _problem(n, f"networks.{n.key}", f"network {n.name} is project {owner}'s on this host (a host has "
                           "one VXLAN device per cluster network)",
                           f"declare it `external: true` in this file to attach to project {owner}'s")
        subnet, gateway, vni, port = _file_values(n)
        rec = records.get(n.name)
        members = c.get("members", {}).get(n.name, {})
        exists = rec is not None
        if rec is not None:
            bad = _mismatch(rec, subnet, gateway, vni)
            if bad and members:
                who = f", created by node {rec.get('created_by')}" if rec.get("created_by") else ""
                raise _problem(n, f"networks.{n.key}",
                               f"network {n.name}: the file says {'; '.join(bad)}, but the cluster's record "
                               f"(subnet {rec['subnet']}, gateway {rec['gateway']}, VNI {rec['vni']}{who}) is in use "
                               f"by node(s) {', '.join(sorted(members))}",
                               "use the cluster's values (or leave them out), or bring the network down on every host first")
            if bad:
                rec, exists = None, False  # no member left: the file's values replace it
        if rec is None:
            rec = _propose(n, {k: v for k, v in records.items() if k != n.name}, routes, subnet, gateway, vni, port,
                           str(c.get("node", "")))
        records[n.name] = rec
        held = sorted(ip for ip, lease in c.get("leases", {}).get(n.name, {}).items()
                      if not _ours(lease, c, mine))
        vx = overlay.VxlanOpts(int(rec["vni"]), int(rec.get("port", overlay.DEFAULT_PORT)), c.get("vtep"), (), True)
        out[n.key] = ClusterNet(n.name, rec, exists, vx, tuple(held))
        _check_statics(project, n, c, mine)
    return out


def _containers(project: Project) -> set[str]:
    """The names of the project's containers, as core.desired.containers.container_names makes
    them (not imported: containers imports networks, which imports this module)."""
    return {name for svc in project.services
            for name in ([svc.container_name] if svc.container_name
                         else [f"{project.name}-{svc.name}-{i}" for i in range(1, svc.replicas + 1)])}


def _ours(lease: dict[str, Any], c: dict[str, Any], mine: set[str]) -> bool:
    """A lease this plan may keep: this node's, for a container of this project. Any other is
    held: another node's, or this node's for another project's container on the same network."""
    return lease.get("node") == c.get("node") and lease.get("container") in mine


def _propose(n: Network, others: dict[str, dict[str, Any]], routes: list[str], subnet: str | None,
             gateway: str | None, vni: int | None, port: int, node: str) -> dict[str, Any]:
    """The record a new cluster network gets (as composenet.cluster.ipam.propose_network)."""
    if subnet is not None:
        mine = ipaddress.IPv4Network(subnet)
        clash = next((k for k, r in sorted(others.items()) if mine.overlaps(ipaddress.IPv4Network(r["subnet"]))), None)
        if clash is not None:
            raise _problem(n, f"networks.{n.key}.ipam.config",
                           f"network {n.name}: subnet {subnet} overlaps cluster network {clash} ({others[clash]['subnet']})",
                           "choose another subnet, or leave it out")
        chosen = str(mine)
    else:
        found = choose_subnet([r["subnet"] for r in others.values()], routes)
        if found is None:
            raise _problem(n, f"networks.{n.key}", f"network {n.name}: no free /24 left in the cluster's "
                           f"address pool {DEFAULT_POOL}", "remove unused cluster networks")
        chosen = found
    vni_chosen = choose_vni(n.name, [int(r["vni"]) for r in others.values()], vni)
    if vni_chosen is None:
        holder = next(k for k, r in sorted(others.items()) if r["vni"] == vni)
        raise _problem(n, f"networks.{n.key}.driver_opts", f"network {n.name}: VNI {vni} is used by cluster "
                       f"network {holder}", f"choose another {overlay.VNI}, or leave it out")
    return {"name": n.name, "subnet": chosen, "gateway": gateway or default_gateway(chosen), "vni": vni_chosen,
            "port": port, "created_by": node}


def _check_statics(project: Project, n: Network, c: dict[str, Any], mine: set[str]) -> None:
    """A static ``ipv4_address`` leased to another container (on any node, or another project's
    on this node) is an error."""
    leases = c.get("leases", {}).get(n.name, {})
    for s in project.services:
        for att in s.networks:
            if att.network != n.key or not att.ipv4_address:
                continue
            lease = leases.get(att.ipv4_address)
            if lease is None or _ours(lease, c, mine):
                continue
            pos = s.pos
            raise InputError([Problem(
                f"ipv4_address {att.ipv4_address} on cluster network {n.name} is leased to container "
                f"{lease.get('container')} on node {lease.get('node')}",
                file=pos.file if pos else None, line=pos.line if pos else None, col=pos.col if pos else None,
                path=f"services.{s.name}.networks.{n.key}.ipv4_address",
                hint="choose a free address, or leave it out to get one the cluster has not leased")])


def cluster_steps(nets: dict[str, Any], containers: list[Any], observed: ObservedState) -> list[dict[str, str]]:
    """What `up` writes to the cluster store (kernel/cluster.py), as the plan's cluster steps
    (``nets``: NetPlans by key; ``containers``: core.desired.containers.Container): only what the
    store does not hold yet. Rows {"op": "+" or "-", "kind", "network", "what"}: the network's
    record to create, this node's membership, each address to lease and the endpoint published
    with it, and each address of the project's containers on this node the plan moves away from
    (released once the kernel no longer holds it)."""
    c = observed.cluster
    node = str(c.get("node", ""))
    out: list[dict[str, str]] = []

    def step(op: str, kind: str, network: str, what: str) -> None:
        out.append({"op": op, "kind": kind, "network": network, "what": what})

    for np in (nets[k] for k in sorted(nets)):
        if np.vxlan is None or not np.vxlan.cluster:
            continue
        name = np.net.name
        rec = c.get("networks", {}).get(name)
        if rec is None or rec.get("subnet") != str(np.subnet4):
            step("+", "record", name, f"network {name}  subnet {np.subnet4}  gw {np.gateway4}  vni {np.vxlan.vni}")
        if node not in c.get("members", {}).get(name, {}):
            of = f"  (record of node {rec.get('created_by')})" if rec and rec.get("created_by") else ""
            step("+", "member", name, f"{name}  node {node}  vtep {np.vxlan.local or '-'}{of}")
        leases = c.get("leases", {}).get(name, {})
        planned = {}
        for k in containers:
            for ep in k.endpoints:
                if ep.network is np and ep.ipv4:
                    planned[k.name] = ep.ipv4
                    if leases.get(ep.ipv4) != {"node": node, "container": k.name}:
                        step("+", "lease", name, f"{ep.ipv4} on {name} to {k.name}")
                        step("+", "endpoint", name, f"{k.name} on {name}  {ep.ipv4}  mac {ep.mac}  node {node}")
        for ip, lease in sorted(leases.items()):
            who = lease.get("container")
            if lease.get("node") == node and who in planned and planned[who] != ip:
                step("-", "lease", name, f"{ip} on {name} to {who}  (moves to {planned[who]})")
    return out
