"""The cluster store in `plan`, `up` and `down` (overlay networks across hosts, issue 12).

With a store set (``--store`` / COMPOSENET_STORE: composenet.cluster.settings), a ``driver:
overlay`` network without static peers is a cluster network:

* :func:`observe_cluster` (every observe): one listing of the store into
  ``ObservedState.cluster`` (core.desired.cluster plans from it: the network's record or the
  one this host would create, addresses leased elsewhere). A store that does not answer is
  recorded as ``{"error", "hint"}``: `plan`/`up` of a project with a cluster network fail on it
  before any kernel step; `down` and the read-only commands do not need it. Another project's
  cluster network attached here as ``external`` also avoids the addresses other nodes leased.
* :func:`early_agent` (`up`, before it observes): the host's agent started without waiting,
  when none runs (its start-up overlaps observe and plan).
* :func:`prepare` / :func:`before_apply` (`up`, after the plan, before any kernel step): this
  host's agent runs (awaited, started or restarted with this config), the network records exist
  and this node is a member, and every planned address is leased to its container. A record or
  an address another host took since the plan is a retryable PlanError: the pipeline plans
  again (bounded). A failed `up` (here, or in a kernel step: :meth:`ClusterRun.undo`) restores
  the project's records as they were before it.
* :func:`after_apply` (`up`, once the kernel holds the plan): every endpoint published (names,
  MAC, VTEP), those the plan dropped withdrawn, old addresses released, networks the file
  dropped left, the agent reloaded (FDB, VTEP set, names in place when `up` returns) or stopped
  when the host has no records left. :func:`pending`: an `up` with nothing to do in the kernel
  still completes what a failed publishing left.
* :func:`at_down` (`down`, before the kernel steps): the project's records withdrawn (a store
  that does not answer is a warning: the records stay until the agent reconnects or the node's
  lease expires), its cluster.json removed whatever happened, and the agent stopped when no
  project of the host has cluster records left.

Must not: touch links, addresses or rules (the handlers and the agent do).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from composenet.cluster.errors import ClusterConflict, StoreError
from composenet.cluster.settings import ClusterSettings, advertise_address, settings_from
from composenet.core.model import Project
from composenet.core.state import ObservedState
from composenet.errors import ComposenetError, PlanError
from composenet.kernel.context import Context
from composenet.paths import ProjectPaths

if TYPE_CHECKING:
    from composenet.cluster import agentctl
    from composenet.cluster.records import HostRecords
    from composenet.cluster.registry import Registry
    from composenet.core.planner import Planned

Echo = Callable[[str], None]


def settings() -> ClusterSettings | None:
    """This host's cluster settings from the environment (the CLI puts its options there)."""
    return settings_from()


def _registry(s: ClusterSettings) -> Registry:
    from composenet.cluster.client import Store  # deferred: etcd3gw and requests, only with a store
    from composenet.cluster.registry import Registry  # deferred: with the client

    return Registry(Store(s.store), s.node)


def observe_cluster(ctx: Context, observed: ObservedState) -> None:
    """``observed.cluster`` from one listing of the store (see the module doc); nothing without
    a store."""
    try:
        s = settings()
    except StoreError as e:
        observed.cluster = {"error": e.message, "hint": e.hint}
        return
    if s is None:
        return
    try:
        vtep = advertise_address(s)
        view = _registry(s).view()
    except StoreError as e:
        observed.cluster = {"node": s.node, "error": e.message, "hint": e.hint}
        return
    observed.cluster = {
        "node": s.node,
        "vtep": vtep,
        "networks": {name: asdict(rec) for name, rec in sorted(view.networks.items())},
        "members": {net: {node: m.vtep for node, m in sorted(ms.items())} for net, ms in sorted(view.members.items())},
        "leases": {net: {ip: {"node": a.node, "container": a.container} for ip, a in sorted(ls.items())}
                   for net, ls in sorted(view.addresses.items())},
        "routes": sorted({r for node, rec in view.nodes.items() if node != s.node for r in rec.routes}),
    }
    for name, net in observed.networks.items():  # another project's cluster network, external here
        if name in view.addresses and net.get("owner") != ctx.project:
            held = [ip for ip, a in view.addresses[name].items() if a.node != s.node]
            net["used"] = sorted(set(net.get("used", [])) | set(held))


def offline_cluster() -> dict[str, Any]:
    """``ObservedState.cluster`` for `plan --offline` on a host with a store: an empty cluster
    (nothing read: the store is not asked), so that a cluster network is planned as the record
    the first host would create (``cluster.ipam.propose_network``), not as a local bridge. The
    VTEP is --advertise-addr's when set (no route is looked up offline). {} without a store."""
    try:
        s = settings()
    except StoreError as e:
        return {"error": e.message, "hint": e.hint}
    if s is None:
        return {}
    return {"node": s.node, "vtep": s.advertise, "networks": {}, "members": {}, "leases": {}, "routes": []}


def cluster_rows(planned: Planned) -> list[dict[str, Any]]:
    """The plan's cluster networks: ``DesiredState.networks`` rows marked ``vxlan.cluster``, and
    ``external`` rows of a cluster network another project of this host brought up (its
    endpoints are leased and published as the owner's are), as rows with ``vxlan`` (vni, port)."""
    records = planned.observed.cluster.get("networks", {})
    out = []
    for row in planned.desired.networks:
        if row.get("vxlan", {}).get("cluster"):
            out.append(row)
        elif row.get("kind") == "external" and row.get("bridge") and row["name"] in records:
            rec = records[row["name"]]
            out.append({**row, "subnet": rec["subnet"], "gateway": rec["gateway"],
                        "vxlan": {"vni": rec["vni"], "port": rec.get("port", 4789), "cluster": True}})
    return out


def _endpoints(project: Project, planned: Planned, nets: set[str]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(container row, endpoint row) of every planned IPv4 endpoint on a cluster network."""
    return [(c, ep) for c in planned.desired.containers for ep in c["endpoints"]
            if ep["network"] in nets and ep.get("ipv4")]


def _retry(message: str) -> PlanError:
    return PlanError(message, hint="another host's `up` took it meanwhile; run `composenet up` again", retryable=True)


class ClusterRun:
    """One `up`'s cluster steps: what :func:`before_apply` set up, for :func:`after_apply`; and
    the project's records before them (``before``), which :meth:`undo` restores."""

    def __init__(self, s: ClusterSettings, registry: Registry, vtep: str, lease: int, before: HostRecords):
        self.settings, self.registry, self.vtep, self.lease = s, registry, vtep, lease
        self.before = before

    def undo(self, ctx: Context, agent: bool = True) -> None:
        """A failed `up`: the store and the project's cluster.json back to what they held before
        it (``host.restore``; the agent reconciles what a store error left); with ``agent``, the
        agent stopped when no project of the host has records left (not between two attempts of
        :func:`prepare`: the next one needs it)."""
        # deferred: the cluster package, only with a store
        from composenet.cluster import host
        try:
            host.restore(ctx.run_dir, self.registry, ctx.project, self.lease, self.before)
        except StoreError:
            pass  # the file is restored; the agent withdraws the rest when the store answers
        if agent:
            _agent_after(ctx, self.settings.node)


RETRIES = 4  # plans of one `up` when another host takes a record or an address meanwhile


def early_agent(ctx: Context, project: Project) -> agentctl.EarlyStart | None:
    """At the start of `up`, before it observes and plans: start this host's agent without
    waiting for it (its ~0.3 s of start-up then overlaps them), when no agent runs, a store is
    set and the file has a network that will be a cluster network (overlay, no static peers);
    None otherwise, or when the settings are wrong (the plan reports them). The pipeline calls
    ``settle()`` when the `up` ends: the agent is stopped unless :func:`before_apply` waited
    for it (a failed or empty `up` leaves the host as it was, without an agent)."""
    # deferred: the cluster package, only with a store
    from composenet.cluster import agentctl
    from composenet.core import overlay  # deferred: only `up` with a store gets here

    if not any(n.driver == "overlay" and not n.external and n.opt(overlay.PEERS) is None for n in project.networks):
        return None
    try:
        s = settings()
        if s is None or agentctl.agent_pid(ctx.run_dir) is not None:
            return None
        early = agentctl.EarlyStart(ctx.run_dir, agentctl.agent_config(s, advertise_address(s), ctx.run_dir))
    except StoreError:
        return None
    return early if early.p is not None else None


def prepare(ctx: Context, project: Project, planned: Planned, replan: Callable[[], Planned],
            early: agentctl.EarlyStart | None = None) -> tuple[Planned, ClusterRun | None]:
    """:func:`before_apply`, planning again (``replan``: re-observe and plan) when another host
    took a network record or an address since the plan; the plan the cluster now holds. What an
    attempt leased stays its container's for the next (parallel `up`s on several hosts that gave
    back everything at each conflict could keep taking the same addresses from each other); when
    the last attempt fails, the project's records are restored as they were before the first."""
    # deferred: the cluster package, only with a store
    from composenet.cluster import host
    try:
        s = settings()
    except StoreError:
        s = None
    before = host.project_records(ctx.run_dir, project.name, s.node) if s is not None else None
    for attempt in range(RETRIES):
        try:
            return planned, before_apply(ctx, project, planned, early, before)
        except ComposenetError as e:
            if not (e.retryable and isinstance(e, PlanError)) or attempt == RETRIES - 1:
                if s is not None and before is not None:
                    _give_back(ctx, s, before)
                raise
            planned = replan()
    raise AssertionError("unreachable")


def _give_back(ctx: Context, s: ClusterSettings, before: HostRecords) -> None:
    """A failed :func:`prepare`: the project's records as ``before`` (``host.restore``; without
    the store or the node's lease, the file only: the agent makes the store agree), and the agent
    stopped if this `up` was to be the host's first."""
    # deferred: the cluster package, only with a store
    from composenet.cluster import agentctl, files, host
    try:
        reg = _registry(s)
        lease = reg.node_lease()
        if lease is None:
            raise StoreError(f"node {s.node} is not registered")
        host.restore(ctx.run_dir, reg, ctx.project, lease, before)
    except StoreError:
        files.write_host_records(ctx.run_dir, ctx.project, before)
    try:
        if agentctl.agent_pid(ctx.run_dir) is not None:
            _agent_after(ctx, s.node)
    except StoreError:
        pass  # the error being raised says more


def before_apply(ctx: Context, project: Project, planned: Planned, early: agentctl.EarlyStart | None = None,
                 before: HostRecords | None = None) -> ClusterRun | None:
    """The agent, the network records and this node's memberships, the address leases (see the
    module doc). None when the project has no cluster network and had none (a project whose
    file dropped its last one gets a run, for :func:`after_apply` to leave them; without a store
    answering, it leaves them at its `down`). ``before``: the project's records before the
    `up` (default: now), which :meth:`ClusterRun.undo` restores. Leaves what it did when it
    raises (:func:`prepare` restores)."""
    rows = cluster_rows(planned)
    if not rows:
        if not os.path.exists(ProjectPaths(ctx.run_dir, ctx.project).cluster_records):
            return None
        try:
            return _start(ctx, project, planned, rows, early, before)
        except StoreError:
            return None
    return _start(ctx, project, planned, rows, early, before)


def _start(ctx: Context, project: Project, planned: Planned, rows: list[dict[str, Any]],
           early: agentctl.EarlyStart | None, before: HostRecords | None) -> ClusterRun:
    # deferred: the cluster package, only with a store
    from composenet.cluster import agentctl, files, host
    s = settings()
    if s is None:
        raise StoreError("no cluster store is set (--store / COMPOSENET_STORE)")
    vtep = advertise_address(s)
    current = host.project_records(ctx.run_dir, project.name, s.node)
    config = agentctl.agent_config(s, vtep, ctx.run_dir)
    if early is not None and early.config == config:
        early.wait()  # started before the plan (see early_agent)
    else:
        if early is not None:
            early.settle()
        agentctl.ensure_agent(ctx.run_dir, config)
    reg = _registry(s)
    lease = reg.node_lease()
    if lease is None:
        raise StoreError(f"node {s.node} is not registered in the cluster store (its agent lost its lease)",
                         hint=f"see {files.agent_log(ctx.run_dir)}", retryable=True)
    run = ClusterRun(s, reg, vtep, lease, current if before is None else before)
    records = {}
    for row in rows:
        vx = row["vxlan"]
        rec = host.join(ctx.run_dir, reg, project.name, lease, vtep, row["name"], row["subnet"], row["gateway"],
                        vx["vni"], vx["port"], tuple(planned.observed.host_routes))
        if (ipaddress.IPv4Network(rec.subnet), rec.gateway, rec.vni) != (
                ipaddress.IPv4Network(row["subnet"]), row["gateway"], vx["vni"]):
            raise _retry(f"network {row['name']}: the cluster's record is now {rec.describe()}")
        records[row["name"]] = rec
    planned_ips = {(ep["network"], ep["ipv4"]): c["name"] for c, ep in _endpoints(project, planned, set(records))}
    for net, ip, a in current.addresses:  # an address the plan moves to another container of the project
        if planned_ips.get((net, ip), a.container) != a.container:
            host.release(ctx.run_dir, reg, project.name, net, ip, a.container)
    moved = []
    for c, ep in _endpoints(project, planned, set(records)):
        net = ep["network"]
        try:
            host.lease(ctx.run_dir, reg, project.name, lease, records[net], c["name"], ip=ep["ipv4"])
        except ClusterConflict as e:
            static, ip_range = _attachment_ipv4(project, c["service"], net)
            if static == ep["ipv4"]:
                raise _retry(f"address {ep['ipv4']} on {net} for {c['name']}: {e.message}") from None
            # A dynamic address another host took since the plan: the store leases this container
            # a free one (atomically); the next plan keeps it (core.desired.containers._own_leases),
            # so the next attempt does not race for the same addresses again.
            avoid = tuple(ip for (n, ip) in planned_ips if n == net)
            got = host.lease(ctx.run_dir, reg, project.name, lease, records[net], c["name"], ip_range=ip_range,
                             avoid=avoid)
            moved.append(f"{c['name']} on {net}: {ep['ipv4']} was taken, {got} leased instead")
    if moved:
        raise _retry("; ".join(moved))
    return run


def _attachment_ipv4(project: Project, service: str, network: str) -> tuple[str | None, str | None]:
    """(the static ipv4_address, the network's IPv4 ip_range) of ``service`` on ``network``."""
    net = next((n for n in project.networks if n.name == network), None)
    svc = next((s for s in project.services if s.name == service), None)
    static = None
    if svc is not None and net is not None:
        static = next((att.ipv4_address for att in svc.networks if att.network == net.key), None)
    ic = next((ic for ic in net.ipam if ic.subnet and ":" not in ic.subnet), None) if net is not None else None
    return static, ic.ip_range if ic else None


def pending(ctx: Context, project: Project, planned: Planned) -> bool:
    """Whether the project's records differ from what its plan wants although the kernel holds
    it (an `up` that failed while publishing, after its kernel steps): its next `up`, with an
    empty plan, completes the cluster steps."""
    # deferred: the cluster package, only with a store
    from composenet.cluster import host
    rows = cluster_rows(planned)
    try:
        s = settings()
    except StoreError:
        return False
    if s is None or not (rows or os.path.exists(ProjectPaths(ctx.run_dir, ctx.project).cluster_records)):
        return False
    recs = host.project_records(ctx.run_dir, project.name, s.node)
    nets = {row["name"] for row in rows}
    wanted = {(ep["network"], c["name"], ep["ipv4"]) for c, ep in _endpoints(project, planned, nets)}
    return (wanted != {(e.network, e.container, e.ipv4) for e in recs.endpoints}
            or nets != {net for net, _m in recs.members})


def _aliases(project: Project, service: str, network: str) -> tuple[str, ...]:
    svc = next((s for s in project.services if s.name == service), None)
    key = next((n.key for n in project.networks if n.name == network), None)
    if svc is None:
        return ()
    return next((att.aliases for att in svc.networks if att.network == key), ())


def after_apply(ctx: Context, project: Project, planned: Planned, run: ClusterRun) -> None:
    """Publish every endpoint, withdraw the ones the plan dropped, reload the agent."""
    # deferred: the cluster package, only with a store
    from composenet.cluster import host
    from composenet.cluster.records import EndpointRecord  # deferred: with it
    nets = {row["name"] for row in cluster_rows(planned)}
    wanted = set()
    for c, ep in _endpoints(project, planned, nets):
        rec = EndpointRecord(ep["network"], c["name"], c["service"], ep["ipv4"], ep["mac"], run.settings.node,
                             run.vtep, None, _aliases(project, c["service"], ep["network"]), project.name)
        wanted.add((ep["network"], c["name"]))
        host.publish(ctx.run_dir, run.registry, project.name, run.lease, rec)
    recs = host.project_records(ctx.run_dir, project.name, run.settings.node)
    stale = {(e.network, e.container) for e in recs.endpoints} | {(n, a.container) for n, _ip, a in recs.addresses}
    for network, container in sorted(stale - wanted):
        host.unpublish(ctx.run_dir, run.registry, project.name, network, container)
    held = {(ep["network"], ep["ipv4"], c["name"]) for c, ep in _endpoints(project, planned, nets)}
    for network, ip, a in host.project_records(ctx.run_dir, project.name, run.settings.node).addresses:
        if (network, ip, a.container) not in held:  # the container's old address: the kernel let it go
            host.release(ctx.run_dir, run.registry, project.name, network, ip, a.container)
    for network in sorted({net for net, _m in recs.members} - nets):  # dropped from the file
        host.leave_network(ctx.run_dir, run.registry, project.name, network)
    _agent_after(ctx, run.settings.node)


def _agent_after(ctx: Context, node: str) -> None:
    """Reload the agent (FDB, VTEP set and names in place when the command returns), or stop it
    when no project of the host has cluster records left (the node leaves the cluster)."""
    # deferred: the cluster package, only with a store
    from composenet.cluster import agentctl, files
    left, _ = files.read_host_records(ctx.run_dir, node)
    if not (left.networks or left.members or left.addresses or left.endpoints):
        agentctl.stop_agent(ctx.run_dir)
    else:
        agentctl.reload_agent(ctx.run_dir)


def at_down(ctx: Context, echo: Echo) -> None:
    """Withdraw the project's records (see the module doc); nothing when it has none."""
    # deferred: the cluster package, only with a store
    from composenet.cluster import files, host
    path = ProjectPaths(ctx.run_dir, ctx.project).cluster_records
    if not os.path.exists(path):
        return
    warning = ("this host's records stay in the cluster store until its agent reconnects or its lease "
               "expires")
    try:
        s = settings()
        if s is None:
            raise StoreError("no cluster store is set (--store / COMPOSENET_STORE)")
        host.withdraw(ctx.run_dir, _registry(s), ctx.project)
        node = s.node
    except StoreError as e:
        echo(f"warning: cluster store: {e.message}; {warning}")
        node = ""
    files.remove_host_records(ctx.run_dir, ctx.project)
    if node:
        _agent_after(ctx, node)
