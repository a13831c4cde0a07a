"""The cluster's operations on the store, for one node: what `up`, `down`, `plan` and the agent
do with records (see ``keys.py`` and ``records.py`` for what is stored where).

* :meth:`Registry.register`: the node's record on a lease (a new one, or the lease of this same
  host's record when it is still alive); another host holding the name is a conflict.
* :meth:`Registry.ensure_network`: the network's record, created if absent in a transaction
  that also checks that no other network was created or changed since the read (so two hosts
  creating two networks at once never pick the same subnet or VNI), else the existing record,
  checked against what the file says (``ipam.network_mismatch``).
* :meth:`Registry.lease_address` / :meth:`Registry.lease_next`: create-if-absent address leases
  on the node's lease; :meth:`Registry.release_address` only deletes a lease that is ours.
* :meth:`Registry.join`, :meth:`Registry.publish_endpoint`, :meth:`Registry.withdraw_endpoint`,
  :meth:`Registry.leave` (and :meth:`Registry.collect_network`: the record goes with the last
  member, atomically: a host joining at that moment either keeps it or creates it again).
* :meth:`Registry.reconcile`: make this node's records in the store what the host's files say
  (the agent, after its lease was lost or on a signal).

Every transaction is bounded in retries; each failure names the record. Must not: touch the
kernel or the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from composenet.cluster import keys
from composenet.cluster.client import (
    KV,
    Store,
    cmp_absent,
    cmp_empty,
    cmp_exists,
    cmp_mod,
    cmp_unchanged_since,
    cmp_value,
    op_delete,
    op_put,
    op_range,
)
from composenet.cluster.errors import ClusterConflict, StoreError
from composenet.cluster.ipam import free_addresses, lease_conflict, network_mismatch, propose_network
from composenet.cluster.mirror import ClusterView
from composenet.cluster.records import (
    AddressLease,
    EndpointRecord,
    HostRecords,
    MemberRecord,
    NetworkRecord,
    NodeRecord,
    RecordError,
    decode,
    encode,
)

ATTEMPTS = 8  # transactions retried on contention before giving up
MAX_TXN_OPS = 100  # etcd's default --max-txn-ops is 128


@dataclass(frozen=True)
class NetworkState:
    """One network's records, read at one revision (``plan`` and `network inspect`)."""

    revision: int
    record: NetworkRecord | None
    record_revision: int
    members: dict[str, MemberRecord] = field(default_factory=dict)
    leases: dict[str, AddressLease] = field(default_factory=dict)
    endpoints: list[EndpointRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NodeStatus:
    """A row of `composenet node ls`."""

    node: str
    address: str
    last_seen: int | None  # seconds ago
    networks: tuple[str, ...]
    containers: int
    started: float  # Unix time its agent registered

    def to_json(self) -> dict:
        return {"node": self.node, "address": self.address, "last_seen": self.last_seen,
                "networks": list(self.networks), "containers": self.containers, "started": self.started}


@dataclass
class Reconciled:
    """What :meth:`Registry.reconcile` did."""

    put: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def _record_where(key: str, rec: NetworkRecord) -> str:
    by = f", created by node {rec.created_by}" if rec.created_by else ""
    return f"the cluster's record {key} ({rec.describe()}{by})"


class Registry:
    def __init__(self, store: Store, node: str, clock: Callable[[], float] = time.time):
        self.store = store
        self.node = node
        self.clock = clock

    # -- reading ----------------------------------------------------------------------------

    def view(self) -> ClusterView:
        """Every record of the cluster at one revision."""
        revision, kvs = self.store.range(keys.ROOT)
        return ClusterView.of_kvs(revision, kvs)

    def network_state(self, name: str) -> NetworkState:
        """The record, members, leases and endpoints of network ``name``, in one round trip."""
        key = keys.network_key(name)
        r = self.store.txn([], [op_range(key), op_range(keys.members_prefix(name), prefix=True),
                                op_range(keys.addresses_prefix(name), prefix=True),
                                op_range(keys.endpoints_prefix(name), prefix=True)])
        kvs = [kv for i in range(4) for kv in r.kvs(i)]
        view = ClusterView.of_kvs(r.revision, kvs)
        own = r.kvs(0)
        return NetworkState(r.revision, view.networks.get(name), own[0].mod_revision if own else 0,
                            view.members.get(name, {}), view.addresses.get(name, {}), view.endpoints.get(name, []),
                            view.problems)

    def nodes(self) -> list[NodeStatus]:
        """Every node the store knows (`composenet node ls`), by name. ``last_seen``: seconds since
        its agent last renewed its lease (TTL granted minus TTL left), None if unknown."""
        view = self.view()
        out = []
        for name, rec in sorted(view.nodes.items()):
            lease = view.leases.get(keys.node_key(name), 0)
            left, granted = self.store.time_to_live(lease) if lease else (-1, 0)
            containers = sorted({e.container for eps in view.endpoints.values() for e in eps if e.node == name})
            out.append(NodeStatus(name, rec.address, max(0, granted - left) if left >= 0 and granted else None,
                                  tuple(view.node_networks(name)), len(containers), rec.started))
        return out

    def node_lease(self) -> int | None:
        """The lease of this node's record (its agent keeps it alive); None when not registered."""
        kv = self.store.get(keys.node_key(self.node))
        return kv.lease if kv is not None and kv.lease else None

    # -- nodes ------------------------------------------------------------------------------

    def register(self, record: NodeRecord, ttl: int) -> int:
        """Put this node's record on a live lease and return the lease (see the module doc)."""
        key = keys.node_key(self.node)
        for _ in range(ATTEMPTS):
            kv = self.store.get(key)
            if kv is not None:
                try:
                    holder = decode(NodeRecord, key, kv.value)
                except RecordError:
                    holder = None
                if holder is not None and holder.host_id != record.host_id:
                    left = self.store.time_to_live(kv.lease)[0] if kv.lease else -1
                    raise ClusterConflict(
                        f"node name {self.node!r} is registered by another host (underlay {holder.address}"
                        + (f", its lease ends within {left} s unless renewed)" if left > 0 else ")"),
                        hint="give every host its own --node / COMPOSENET_NODE")
                if kv.lease and self.store.keepalive(kv.lease) > 0:
                    r = self.store.txn([cmp_mod(key, kv.mod_revision)], [op_put(key, encode(record), kv.lease)])
                    if r.succeeded:
                        return kv.lease
                    continue
            lease, _ = self.store.grant(ttl)
            r = self.store.txn([cmp_mod(key, kv.mod_revision if kv else 0)], [op_put(key, encode(record), lease)])
            if r.succeeded:
                return lease
            self.store.revoke(lease)
        raise StoreError(f"could not register node {self.node!r}: its record kept changing")

    def deregister(self, lease: int) -> None:
        """Revoke the node's lease: its record and everything on the lease go at once."""
        self.store.revoke(lease)

    # -- networks ---------------------------------------------------------------------------

    def ensure_network(self, name: str, subnet: str | None = None, gateway: str | None = None,
                       vni: int | None = None, port: int = 4789, routes: tuple[str, ...] = ()) -> NetworkRecord:
        """The record of network ``name``: the existing one when it agrees with what the file says
        (``subnet``, ``gateway``, ``vni``: None = not said), else a new one (see the module doc
        and ipam.py). ``routes``: this host's routes (its node record may be older). Raises
        ClusterConflict naming the record."""
        key = keys.network_key(name)
        for _ in range(ATTEMPTS):
            r = self.store.txn([], [op_range(keys.NETWORKS, prefix=True), op_range(keys.NODES, prefix=True),
                                    op_range(keys.members_prefix(name), prefix=True)])
            view = ClusterView.of_kvs(r.revision, r.kvs(0) + r.kvs(1))
            existing = view.networks.get(name)
            own_kv = next((kv for kv in r.kvs(0) if kv.key == key), None)
            compare = [cmp_unchanged_since(keys.NETWORKS, r.revision)]
            if existing is None and own_kv is not None:
                bad = next((p for p in view.problems if p.startswith(key + ":")), f"{key}: unreadable")
                raise ClusterConflict(f"network {name}: the cluster's record does not parse ({bad})",
                                      hint="remove the key with etcdctl once no host uses the network")
            if existing is not None and own_kv is not None:
                problems = network_mismatch(existing, subnet, gateway, vni)
                if not problems:
                    return existing
                if r.kvs(2):
                    raise ClusterConflict(
                        f"network {name}: the file says " + "; ".join(problems) + f", but {_record_where(key, existing)} "
                        f"is in use by node(s) {', '.join(sorted(kv.key.rsplit('/', 1)[1] for kv in r.kvs(2)))}",
                        hint="use the cluster's values (or leave them out), or bring the network down on every host first")
                compare += [cmp_mod(key, own_kv.mod_revision), cmp_empty(keys.members_prefix(name))]
            else:
                compare.append(cmp_absent(key))
            others = {n: rec for n, rec in view.networks.items() if n != name}
            record = self._new_network(name, others, view, subnet, gateway, vni, port, routes)
            done = self.store.txn(compare, [op_put(key, encode(record))])
            if done.succeeded:
                return record
        raise StoreError(f"could not create the cluster record of network {name}: the networks kept changing",
                         retryable=True)

    def _new_network(self, name: str, others: dict[str, NetworkRecord], view: ClusterView, subnet: str | None,
                     gateway: str | None, vni: int | None, port: int, routes: tuple[str, ...]) -> NetworkRecord:
        node_routes = [r for rec in view.nodes.values() for r in rec.routes]
        return propose_network(name, others, [*node_routes, *routes], subnet, gateway, vni, port, self.node,
                               round(self.clock(), 3))

    def join(self, network: str, vtep: str, project: str, lease: int) -> None:
        """Make this node a member of ``network`` (whose record must exist)."""
        r = self.store.txn([cmp_exists(keys.network_key(network))],
                           [op_put(keys.member_key(network, self.node), encode(MemberRecord(self.node, vtep, project)),
                                   lease)])
        if not r.succeeded:
            raise ClusterConflict(f"network {network}: its cluster record was removed while joining",
                                  hint="run `up` again", )

    def collect_network(self, network: str) -> bool:
        """Remove ``network``'s record (and any leftover lease or endpoint) if it has no member."""
        r = self.store.txn([cmp_empty(keys.members_prefix(network)), cmp_exists(keys.network_key(network))],
                           [op_delete(keys.network_key(network)),
                            op_delete(keys.addresses_prefix(network), prefix=True),
                            op_delete(keys.endpoints_prefix(network), prefix=True)])
        return r.succeeded

    def leave(self, network: str) -> bool:
        """Withdraw this node from ``network`` (its member record, endpoints and address leases),
        then remove the network's record if no member is left. True if the record is gone."""
        state = self.network_state(network)
        ours = [ip for ip, lease in state.leases.items() if lease.node == self.node]
        ops = [op_delete(keys.member_key(network, self.node)),
               op_delete(keys.node_endpoints_prefix(network, self.node), prefix=True)]
        ops += [op_delete(keys.address_key(network, ip)) for ip in ours]
        for i in range(0, len(ops), MAX_TXN_OPS):
            self.store.txn([], ops[i:i + MAX_TXN_OPS])
        # Another host's agent may have collected it first (it saw the last member go).
        return self.collect_network(network) or self.store.get(keys.network_key(network)) is None

    # -- addresses --------------------------------------------------------------------------

    def lease_address(self, network: str, ip: str, container: str, lease: int) -> None:
        """Lease ``ip`` of ``network`` to ``container`` of this node (kept if already ours).
        Raises ClusterConflict naming the holder."""
        key = keys.address_key(network, ip)
        value = encode(AddressLease(self.node, container))
        ok, held = self.store.create(key, value, lease)
        if ok or held is None:
            return
        try:
            holder = decode(AddressLease, key, held.value)
        except RecordError as e:
            raise ClusterConflict(f"network {network}: address {ip} is held by a record that does not parse ({e})"
                                  ) from None
        why = lease_conflict(holder, self.node, container)
        if why is not None:
            raise ClusterConflict(f"network {network}: address {ip} is {why} ({key})",
                                  hint="choose another ipv4_address, or leave it out")
        if held.lease != lease:  # ours, on an older lease of this node: move it to the live one
            self.store.txn([cmp_value(key, held.value)], [op_put(key, value, lease)])

    def lease_next(self, network: str, subnet: str, gateway: str, container: str, lease: int,
                   ip_range: str | None = None, avoid: tuple[str, ...] = ()) -> str:
        """Lease the lowest free address of ``network`` to ``container``; returns it. ``avoid``:
        addresses this host uses (or is about to) that the store may not show yet."""
        for _ in range(ATTEMPTS):
            leases = self.network_state(network).leases
            mine = next((ip for ip, a in sorted(leases.items()) if a.node == self.node and a.container == container),
                        None)
            if mine is not None and mine not in avoid:
                return mine
            for ip in free_addresses(subnet, gateway, [*leases, *avoid], ip_range):
                ok, _held = self.store.create(keys.address_key(network, ip),
                                              encode(AddressLease(self.node, container)), lease)
                if ok:
                    return ip
            else:
                raise ClusterConflict(f"network {network}: no free address left in {ip_range or subnet}")
        raise StoreError(f"network {network}: could not lease an address (contention)", retryable=True)

    def release_address(self, network: str, ip: str, container: str) -> bool:
        """Delete the lease of ``ip`` if it is ``container``'s on this node."""
        key = keys.address_key(network, ip)
        r = self.store.txn([cmp_value(key, encode(AddressLease(self.node, container)))], [op_delete(key)])
        return r.succeeded

    # -- endpoints --------------------------------------------------------------------------

    def publish_endpoint(self, record: EndpointRecord, lease: int) -> None:
        if record.node != self.node:
            raise ValueError(f"endpoint {record.container} is on node {record.node}, not {self.node}")
        self.store.put(keys.endpoint_key(record.network, self.node, record.container), encode(record), lease)

    def withdraw_endpoint(self, network: str, container: str) -> None:
        self.store.delete(keys.endpoint_key(network, self.node, container))

    # -- the host's records as a whole --------------------------------------------------------

    def wanted_items(self, records: HostRecords) -> dict[str, bytes]:
        """The member and endpoint keys of ``records`` with their values (this node's only)."""
        out = {}
        for net, m in records.members:
            if m.node == self.node:
                out[keys.member_key(net, self.node)] = encode(m)
        for ep in records.endpoints:
            if ep.node == self.node:
                out[keys.endpoint_key(ep.network, self.node, ep.container)] = encode(ep)
        return out

    def reconcile(self, records: HostRecords, lease: int) -> Reconciled:
        """Make this node's records in the store those of ``records`` (the union of the host's
        projects' files), all on ``lease``: networks re-created if absent, addresses leased again
        (a lease another node took meanwhile is a conflict, reported), members and endpoints put,
        and this node's records that no file lists deleted (then the networks they left are
        collected)."""
        done = Reconciled()
        revision, kvs = self.store.range(keys.ROOT)
        present = {kv.key: kv for kv in kvs}
        for net in records.networks:
            key = keys.network_key(net.name)
            if key not in present:
                ok, _ = self.store.create(key, encode(replace(net, created_by=net.created_by or self.node)))
                if ok:
                    done.put.append(key)
        wanted = self.wanted_items(records)
        wanted_addresses = {keys.address_key(net, ip): a for net, ip, a in records.addresses if a.node == self.node}
        for key, a in sorted(wanted_addresses.items()):
            k = keys.parse_key(key)
            assert k is not None
            try:
                self.lease_address(k.network, k.name, a.container, lease)
            except ClusterConflict as e:
                done.conflicts.append(e.message)
                continue
            if present.get(key) is None or present[key].lease != lease:
                done.put.append(key)
        for key, value in sorted(wanted.items()):
            kv = present.get(key)
            if kv is None or kv.value != value or kv.lease != lease:
                self.store.put(key, value, lease)
                done.put.append(key)
        left: set[str] = set()
        for key, kv in sorted(present.items()):
            if key in wanted or key in wanted_addresses or not self._is_ours(key, kv):
                continue
            r = self.store.txn([cmp_mod(key, kv.mod_revision)], [op_delete(key)])
            if r.succeeded:
                done.deleted.append(key)
                k = keys.parse_key(key)
                if k is not None and k.kind == "member":
                    left.add(k.network)
        for name in sorted(left):
            if self.collect_network(name):
                done.deleted.append(keys.network_key(name))
        return done

    def _is_ours(self, key: str, kv: KV) -> bool:
        """A member, endpoint or address record of this node (not its node record)."""
        k = keys.parse_key(key)
        if k is None:
            return False
        if k.kind in ("member", "endpoint"):
            return k.node == self.node
        if k.kind == "address":
            try:
                return decode(AddressLease, key, kv.value).node == self.node
            except RecordError:
                return False
        return False
