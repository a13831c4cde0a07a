"""Containers and their endpoints: one ``Container`` per service replica, the namespace it lives
in, and an ``Endpoint`` (interface name, addresses, MAC) per network it is on. Pure; no I/O.

Owns: container names (Docker's ``<project>-<service>-<n>`` or ``container_name``); namespaces:
a container's own, the one of service X it shares (``network_mode: service:X``, which also
copies X's hostname), a named one (``container:NAME``) or the host's; the endpoints of the file
and those `composenet network connect` added; and address assignment, in three passes so that
a dynamic address never takes one that is asked for or already held: static addresses first
(every container's), then the addresses the kernel already has (kept across edits) or the
cluster store leases to the container, then dynamic ones from the network's pool.

Must not: choose subnets (networks.py) or make kernel resources (resources.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from composenet.core import ipam
from composenet.core.desired.common import warn
from composenet.core.desired.networks import NetPlan, connected_network
from composenet.core.model import Attachment, Project, Service
from composenet.core.resources import Address
from composenet.core.state import ObservedState


@dataclass
class Endpoint:
    network: NetPlan
    ifname: str  # inside the namespace
    ipv4: str | None
    ipv6: str | None
    mac: str
    aliases: tuple[str, ...]
    gw_priority: int
    index: int


@dataclass
class Container:
    name: str
    service: Service
    index: int
    ns: str  # namespace it lives in ("" = host)
    own_ns: bool
    hostname: str
    endpoints: list[Endpoint] = field(default_factory=list)


def container_names(project: Project, svc: Service) -> list[str]:
    if svc.container_name:
        return [svc.container_name]
    return [f"{project.name}-{svc.name}-{i}" for i in range(1, svc.replicas + 1)]


def by_service(containers: list[Container]) -> dict[str, list[Container]]:
    """Containers by service name, each list in replica order."""
    out: dict[str, list[Container]] = {}
    for c in containers:
        out.setdefault(c.service.name, []).append(c)
    return out


def plan_containers(project: Project, warnings: list[str]) -> list[Container]:
    """Every replica of every service, services by name, with the namespace it lives in."""
    containers: list[Container] = []
    for svc in sorted(project.services, key=lambda s: s.name):
        mode = svc.network_mode
        for i, cname in enumerate(container_names(project, svc), start=1):
            hostname = svc.hostname or cname
            if mode == "host":
                c = Container(cname, svc, i, "", False, hostname)
            elif mode and (mode.startswith("service:") or mode.startswith("container:")):
                c = Container(cname, svc, i, "", False, hostname)  # ns resolved below
            else:
                c = Container(cname, svc, i, cname, True, hostname)
            containers.append(c)
    # Once every container that owns a namespace exists, service:X sharers can find X's.
    _join_namespaces(containers, warnings)
    return containers


def _join_namespaces(containers: list[Container], warnings: list[str]) -> None:
    """``network_mode: service:X`` joins X's first replica; ``container:NAME`` the named one."""
    services = by_service(containers)
    for c in containers:
        mode = c.service.network_mode or ""
        if mode.startswith("service:"):
            target = services.get(mode.split(":", 1)[1], [])
            if target:
                c.ns = target[0].ns
                if not c.service.hostname:
                    c.hostname = target[0].hostname  # Docker copies the hostname (DOCKER-BEHAVIOUR (d))
        elif mode.startswith("container:"):
            c.ns = mode.split(":", 1)[1]
            warn(warnings, c.service.pos, f"services.{c.service.name}.network_mode",
                 f"network_mode {mode} joins the namespace /run/netns/{c.ns}, which must exist at up time")


class _Spec(NamedTuple):
    """An endpoint to make: the container's ``eth``-th interface, on ``network``."""

    container: Container
    eth: int
    network: NetPlan
    att: Attachment


def assign_endpoints(containers: list[Container], nets: dict[str, NetPlan], project: Project,
                     observed: ObservedState, warnings: list[str]) -> None:
    """Give every container that owns a namespace its endpoints (``Container.endpoints``).
    Networks `network connect` attached that the file does not name join ``nets``."""
    specs, connected = _endpoint_specs(containers, nets, project, observed, warnings)
    _claim_static(specs, connected)
    kept = _keep_observed(specs, connected, observed)
    for c, eth, np, att in specs:
        a4, a6 = kept[(c.name, eth)]
        if a4 is None and np.pool4 is not None:
            a4 = np.pool4.next()
        if a6 is None and np.pool6 is not None:
            a6 = np.pool6.next()
        mac = att.mac_address or (c.service.mac_address if eth == 0 else None) or ipam.mac_for(a4, c.name + "/" + np.net.name)
        c.endpoints.append(
            Endpoint(np, att.interface_name or f"eth{eth}", a4, a6, mac.lower(), att.aliases, att.gw_priority, eth)
        )


def _endpoint_specs(containers: list[Container], nets: dict[str, NetPlan], project: Project,
                    observed: ObservedState, warnings: list[str]) -> tuple[list[_Spec], set[tuple[str, int]]]:
    """(every endpoint to make, in container then interface order; the (container, eth) of those
    `network connect` added). A container's interfaces are its service's networks in the file's
    order, then the connected ones; networks without endpoints (none, host, an external network
    an offline plan cannot see) are skipped."""
    specs: list[_Spec] = []
    connected: set[tuple[str, int]] = set()
    for c in containers:
        if not c.own_ns:
            continue
        eth = 0
        for att in c.service.networks:
            target_net = nets.get(att.network)
            if target_net is None or target_net.kind in ("none", "host") or (
                    target_net.kind == "external" and not target_net.bridge):
                continue
            specs.append(_Spec(c, eth, target_net, att))
            eth += 1
        # Endpoints `composenet network connect` added to this container, after the file's.
        for conn in observed.connections:
            if conn.get("container") != c.name:
                continue
            target_net = connected_network(str(conn.get("network", "")), project, nets, observed, warnings)
            if target_net is None or any(x is c and np_ is target_net for x, _e, np_, _a in specs):
                continue
            att = Attachment(network=target_net.net.key, aliases=tuple(str(a) for a in conn.get("aliases", ())),
                             ipv4_address=conn.get("ipv4") or None)
            connected.add((c.name, eth))
            specs.append(_Spec(c, eth, target_net, att))
            eth += 1
    return specs, connected


def _claim_static(specs: list[_Spec], connected: set[tuple[str, int]]) -> None:
    """Reserve the static addresses in their pools before any other is chosen: a first replica's,
    and a connected endpoint's (the validator refuses a static address on a scaled service)."""
    for c, eth, np, att in specs:
        if c.service.replicas == 1 or c.index == 1 or (c.name, eth) in connected:
            if att.ipv4_address and np.pool4 is not None:
                np.pool4.claim(att.ipv4_address)
            if att.ipv6_address and np.pool6 is not None:
                np.pool6.claim(att.ipv6_address)


def _keep_observed(specs: list[_Spec], connected: set[tuple[str, int]],
                   observed: ObservedState) -> dict[tuple[str, int], tuple[str | None, str | None]]:
    """(IPv4, IPv6) by (container, eth): the static address; else an address the container already
    has that its pool can still give (claimed here), the interface's own first, then any other of
    its namespace (an edit that reorders or renames interfaces keeps each network's address: the
    pools of two networks never overlap); else None (a dynamic one, later)."""
    resolved: dict[tuple[str, int], tuple[str | None, str | None]] = {}
    observed_addrs = _observed_endpoint_addrs(observed)
    leased = _own_leases(observed)
    for c, eth, np, att in specs:
        ifname = att.interface_name or f"eth{eth}"
        prev = (observed_addrs.get((c.ns, ifname), []) + observed_addrs.get((c.ns, ""), [])
                + leased.get((np.net.name, c.name), []))
        a4 = a6 = None
        if (c.index == 1 or (c.name, eth) in connected) and att.ipv4_address:
            a4 = att.ipv4_address
        elif np.pool4 is not None:
            a4 = _claim_first(np.pool4, prev, 4)
        if c.index == 1 and att.ipv6_address:
            a6 = att.ipv6_address
        elif np.pool6 is not None:
            a6 = _claim_first(np.pool6, prev, 6)
        resolved[(c.name, eth)] = (a4, a6)
    return resolved


def _claim_first(pool: ipam.Pool, addrs: list[str], version: int) -> str | None:
    """The first of ``addrs`` of this IP version that ``pool`` lets us claim (and claims it)."""
    for a in addrs:
        if ipaddress.ip_address(a).version == version and pool.claim(a):
            return a
    return None


def _observed_endpoint_addrs(observed: ObservedState) -> dict[tuple[str, str], list[str]]:
    """Addresses the kernel has on each container interface, by (namespace, ifname), and on every
    interface of a namespace, by (namespace, ""), sorted: one pass over the observed state (not one
    per endpoint, which is quadratic)."""
    out: dict[tuple[str, str], list[str]] = {}
    for r in observed.resources.values():
        if isinstance(r, Address) and r.ns:
            addr = r.cidr.split("/")[0]
            out.setdefault((r.ns, r.ifname), []).append(addr)
            out.setdefault((r.ns, ""), []).append(addr)
    for addrs in out.values():
        addrs.sort()
    return out


def _own_leases(observed: ObservedState) -> dict[tuple[str, str], list[str]]:
    """Addresses the cluster store leases to a container of this node, by (network, container):
    kept like the kernel's (after them), so that an address `up` leased before it had to plan
    again (another host took one of its planned addresses meanwhile) stays its container's."""
    c = observed.cluster
    node = c.get("node")
    out: dict[tuple[str, str], list[str]] = {}
    for net, leases in c.get("leases", {}).items():
        for ip, lease in sorted(leases.items()):
            if lease.get("node") == node and node:
                out.setdefault((net, str(lease.get("container"))), []).append(ip)
    return out


def container_rows(containers: list[Container]) -> list[dict[str, Any]]:
    """The plan's container rows (``DesiredState.containers``), in container order."""
    return [{
        "name": c.name, "service": c.service.name, "index": c.index, "ns": c.ns,
        "network_mode": c.service.network_mode,
        "endpoints": [{"network": ep.network.net.name, "ifname": ep.ifname, "ipv4": ep.ipv4, "ipv6": ep.ipv6,
                       "mac": ep.mac} for ep in c.endpoints],
    } for c in containers]
