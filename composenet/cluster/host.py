"""This host's part of the cluster, as `up` and `down` change it: each change goes to the store
AND to the project's ``cluster.json`` (``files.py``) in one step, under the host's cluster lock,
so that the agent, which re-publishes what the files list and withdraws what they do not
(``Registry.reconcile``), never sees one without the other.

* :func:`join`: the network's record (created if absent, checked against the file otherwise:
  ``Registry.ensure_network``) and this node's membership;
* :func:`lease`: an endpoint's address, static (checked cluster-wide) or the lowest free one;
* :func:`publish`: an endpoint's record (container, service, aliases, address, MAC, VTEP);
* :func:`unpublish`: an endpoint's record and address lease;
* :func:`withdraw`: everything of a project (its `down`): endpoints, leases, and the
  memberships no other project of this host still needs, then the networks left without members;
* :func:`leave_network`: the same for one network the project no longer lists (`up` of an edited
  file);
* :func:`restore`: the project's records back to a snapshot (a failed `up`): what the `up` added
  is withdrawn, what it replaced or removed is put back.

Every function takes the node's lease (``Registry.node_lease()``: the agent holds it) and raises
StoreError / ClusterConflict (naming the record) before anything of the project's file changes.
Must not: touch the kernel.
"""

from __future__ import annotations

from dataclasses import replace

from composenet.cluster import files
from composenet.cluster.errors import ClusterConflict, StoreError
from composenet.cluster.records import (
    AddressLease,
    EndpointRecord,
    HostRecords,
    MemberRecord,
    NetworkRecord,
    RecordError,
)
from composenet.cluster.registry import Registry
from composenet.linux.fileio import read_json

JOIN_ATTEMPTS = 3


def project_records(run_dir: str, project: str, node: str) -> HostRecords:
    """The project's records as its file holds them (empty when it has none)."""
    path = files.records_path(run_dir, project)
    obj = read_json(path)
    if obj is None:
        return HostRecords(node)
    try:
        recs = HostRecords.from_json(obj, path)
    except RecordError as e:
        raise StoreError(f"{path}: {e}", hint="`down` the project, or remove the file") from None
    return recs if recs.node == node else HostRecords(node)


def _save(run_dir: str, project: str, recs: HostRecords) -> None:
    files.write_host_records(run_dir, project, recs)


def join(run_dir: str, registry: Registry, project: str, lease: int, vtep: str, name: str,
         subnet: str | None = None, gateway: str | None = None, vni: int | None = None, port: int = 4789,
         routes: tuple[str, ...] = ()) -> NetworkRecord:
    """Make this node a member of cluster network ``name`` (see the module doc); its record."""
    with files.cluster_lock(run_dir):
        for attempt in range(JOIN_ATTEMPTS):
            record = registry.ensure_network(name, subnet, gateway, vni, port, routes)
            try:
                registry.join(name, vtep, project, lease)
                break
            except ClusterConflict:  # its last member left between the two: create it again
                if attempt == JOIN_ATTEMPTS - 1:
                    raise
        recs = project_records(run_dir, project, registry.node)
        member = MemberRecord(registry.node, vtep, project)
        _save(run_dir, project, replace(
            recs, networks=(*[n for n in recs.networks if n.name != name], record),
            members=(*[m for m in recs.members if m[0] != name], (name, member))))
        return record


def lease(run_dir: str, registry: Registry, project: str, node_lease: int, network: NetworkRecord, container: str,
          ip: str | None = None, ip_range: str | None = None, avoid: tuple[str, ...] = ()) -> str:
    """Lease ``ip`` (static) or the lowest free address of ``network`` to ``container``."""
    with files.cluster_lock(run_dir):
        if ip is not None:
            registry.lease_address(network.name, ip, container, node_lease)
            got = ip
        else:
            got = registry.lease_next(network.name, network.subnet, network.gateway, container, node_lease,
                                      ip_range, avoid)
        recs = project_records(run_dir, project, registry.node)
        entry = (network.name, got, AddressLease(registry.node, container))
        # The container's previous address (if it moves) stays leased until the kernel no longer
        # holds it: `up` releases it once applied (:func:`release`), a failed `up` keeps it.
        kept = tuple(a for a in recs.addresses if a[:2] != entry[:2])
        _save(run_dir, project, replace(recs, addresses=(*kept, entry)))
        return got


def release(run_dir: str, registry: Registry, project: str, network: str, ip: str, container: str) -> None:
    """Release one address lease of the project (an address its container no longer holds)."""
    with files.cluster_lock(run_dir):
        registry.release_address(network, ip, container)
        recs = project_records(run_dir, project, registry.node)
        _save(run_dir, project, replace(recs, addresses=tuple(
            a for a in recs.addresses if (a[0], a[1], a[2].container) != (network, ip, container))))


def publish(run_dir: str, registry: Registry, project: str, node_lease: int, record: EndpointRecord) -> None:
    with files.cluster_lock(run_dir):
        registry.publish_endpoint(record, node_lease)
        recs = project_records(run_dir, project, registry.node)
        kept = tuple(e for e in recs.endpoints if (e.network, e.container) != (record.network, record.container))
        _save(run_dir, project, replace(recs, endpoints=(*kept, record)))


def unpublish(run_dir: str, registry: Registry, project: str, network: str, container: str) -> None:
    with files.cluster_lock(run_dir):
        recs = project_records(run_dir, project, registry.node)
        registry.withdraw_endpoint(network, container)
        for net, ip, a in recs.addresses:
            if net == network and a.container == container:
                registry.release_address(net, ip, container)
        _save(run_dir, project, replace(
            recs, endpoints=tuple(e for e in recs.endpoints if (e.network, e.container) != (network, container)),
            addresses=tuple(a for a in recs.addresses if not (a[0] == network and a[2].container == container))))


def withdraw(run_dir: str, registry: Registry, project: str) -> list[str]:
    """Remove every record of ``project`` (its `down`); the networks whose record went with it."""
    with files.cluster_lock(run_dir):
        recs = project_records(run_dir, project, registry.node)
        for ep in recs.endpoints:
            registry.withdraw_endpoint(ep.network, ep.container)
        for net, ip, a in recs.addresses:
            registry.release_address(net, ip, a.container)
        files.remove_host_records(run_dir, project)
        gone = _leave_unneeded(run_dir, registry, {net for net, _m in recs.members})
    return gone


def _leave_unneeded(run_dir: str, registry: Registry, networks: set[str]) -> list[str]:
    """Leave each of ``networks`` that no project of this host lists any more (the project's
    file already written); the networks whose record went with this node."""
    still, _ = files.read_host_records(run_dir, registry.node)
    needed = {net for net, _m in still.members}
    return [net for net in sorted(networks - needed) if registry.leave(net)]


def leave_network(run_dir: str, registry: Registry, project: str, network: str) -> bool:
    """The project no longer lists ``network``: its endpoints and leases there go, and this node
    leaves the network when no other project of the host is on it (the record goes with its last
    member). True if the network's record is gone."""
    with files.cluster_lock(run_dir):
        recs = project_records(run_dir, project, registry.node)
        for ep in recs.endpoints:
            if ep.network == network:
                registry.withdraw_endpoint(ep.network, ep.container)
        for net, ip, a in recs.addresses:
            if net == network:
                registry.release_address(net, ip, a.container)
        _save(run_dir, project, replace(
            recs, networks=tuple(n for n in recs.networks if n.name != network),
            members=tuple(m for m in recs.members if m[0] != network),
            addresses=tuple(a for a in recs.addresses if a[0] != network),
            endpoints=tuple(e for e in recs.endpoints if e.network != network)))
        return bool(_leave_unneeded(run_dir, registry, {network}))


def restore(run_dir: str, registry: Registry, project: str, node_lease: int, before: HostRecords) -> None:
    """Put the project's records back as ``before`` (taken when a failed `up` started): endpoints
    and leases it added are withdrawn, those it replaced or removed published or leased again (an
    address another host took meanwhile is dropped: the kernel's rollback left it to the
    container, the next `up` moves it), memberships it added left. The project's file is
    ``before`` even when the store fails midway: the agent then makes the store agree
    (``Registry.reconcile``) when it reconnects."""
    with files.cluster_lock(run_dir):
        now = project_records(run_dir, project, registry.node)
        lost: set[tuple[str, str, AddressLease]] = set()
        try:
            kept_eps = {(e.network, e.container) for e in before.endpoints}
            for ep in now.endpoints:
                if (ep.network, ep.container) not in kept_eps:
                    registry.withdraw_endpoint(ep.network, ep.container)
            for net, ip, a in now.addresses:
                if (net, ip, a) not in before.addresses:
                    registry.release_address(net, ip, a.container)
            for net, ip, a in before.addresses:
                if (net, ip, a) not in now.addresses:
                    try:
                        registry.lease_address(net, ip, a.container, node_lease)
                    except ClusterConflict:
                        lost.add((net, ip, a))
            for ep in before.endpoints:
                if ep not in now.endpoints:
                    registry.publish_endpoint(ep, node_lease)
        finally:
            _save(run_dir, project, replace(before, addresses=tuple(x for x in before.addresses if x not in lost)))
        added = {net for net, _m in now.members} - {net for net, _m in before.members}
        _leave_unneeded(run_dir, registry, added)
