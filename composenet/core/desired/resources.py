"""The kernel resources (``core.resources``) of the planned networks and containers. Pure.

Owns: turning NetPlans and Containers into resources: the host sysctls, each bridge with its
VXLAN port, gateway addresses and per-bridge sysctls; each container's namespace, veths or
macvlans, addresses and default routes; and the project's nftables
table (isolation of its bridges and its published ports, core/ruleset.py).

Must not: decide names, subnets, addresses or host ports (networks.py, containers.py and
ports.py did): everything here follows from its inputs.
"""

from __future__ import annotations

from composenet.core import ipam
from composenet.core.desired.common import opt_bool
from composenet.core.desired.containers import Container, Endpoint
from composenet.core.desired.networks import NetPlan
from composenet.core.resources import (
    LABEL_PREFIX,
    VXLAN_LABEL_SUFFIX,
    Address,
    Bridge,
    Macvlan,
    Netns,
    NftTable,
    Route,
    Sysctl,
    Veth,
    Vxlan,
    nft_table_name,
    veth_ifname,
    vxlan_ifname,
)
from composenet.core.ruleset import NetRules, PortMap, build
from composenet.core.state import DesiredState


def add_network_resources(d: DesiredState, project: str, bridges: list[NetPlan]) -> None:
    """Forwarding (when there is any bridge), then each bridge and what goes with it."""
    if bridges:
        d.add(Sysctl("", "net.ipv4.ip_forward", "1"))
        if any(np.subnet6 for np in bridges):
            d.add(Sysctl("", "net.ipv6.conf.all.forwarding", "1"))
    for np in bridges:
        mac = ipam.mac_for(np.gateway4, np.net.name)
        d.add(Bridge(np.bridge, f"{LABEL_PREFIX}{project}/{np.net.name}", np.net.name, np.mtu, mac))
        if np.vxlan is not None:
            vx = np.vxlan
            d.add(Vxlan(vxlan_ifname(project, np.net.name), f"{LABEL_PREFIX}{project}/{np.net.name}{VXLAN_LABEL_SUFFIX}",
                        np.net.name, np.bridge, vx.vni, vx.port, vx.local, vx.peers, np.mtu))
        if np.subnet4 is not None and np.gateway4:
            d.add(Address("", np.bridge, f"{np.gateway4}/{np.subnet4.prefixlen}"))
        if np.subnet6 is not None and np.gateway6:
            d.add(Address("", np.bridge, f"{np.gateway6}/{np.subnet6.prefixlen}"))
            d.add(Sysctl("", f"net.ipv6.conf.{np.bridge}.accept_ra", "0", np.bridge))
            d.add(Sysctl("", f"net.ipv6.conf.{np.bridge}.accept_dad", "0", np.bridge))
        # 127.0.0.1:PORT published ports are DNATed to a container behind this bridge.
        d.add(Sysctl("", f"net.ipv4.conf.{np.bridge}.route_localnet", "1", np.bridge))


def add_container_resources(d: DesiredState, project: str, containers: list[Container]) -> None:
    """Each container that owns a namespace: the namespace, a link and addresses per endpoint,
    then its default routes."""
    for c in containers:
        if not c.own_ns:
            continue
        d.add(Netns(c.name, project, c.service.name))
        for ep in c.endpoints:
            _add_endpoint(d, project, c, ep)
        if c.endpoints:
            _add_default_routes(d, c)


def _add_endpoint(d: DesiredState, project: str, c: Container, ep: Endpoint) -> None:
    """A veth to the bridge (or a macvlan on the parent) and the endpoint's addresses."""
    np = ep.network
    label = f"{LABEL_PREFIX}{project}/{c.name}/{np.net.name}"
    if np.kind in ("bridge", "external"):
        icc = opt_bool(np.net.opt("com.docker.network.bridge.enable_icc"), True)
        d.add(Veth(veth_ifname(project, c.name, np.net.name), label, c.name, ep.ifname, np.bridge, np.mtu, ep.mac,
                   hairpin=True, isolated=not icc))
    else:
        parent = np.net.opt("parent") or "eth0"
        mode = np.net.opt("macvlan_mode") or "bridge"
        d.add(Macvlan(c.name, ep.ifname, label, parent, mode, np.mtu, ep.mac))
    if ep.ipv4 and np.subnet4 is not None:
        d.add(Address(c.name, ep.ifname, f"{ep.ipv4}/{np.subnet4.prefixlen}"))
    if ep.ipv6 and np.subnet6 is not None:
        d.add(Address(c.name, ep.ifname, f"{ep.ipv6}/{np.subnet6.prefixlen}"))


def _add_default_routes(d: DesiredState, c: Container) -> None:
    """Default route: highest gw_priority; ties go to a non-internal network, then eth order."""
    gw = sorted(c.endpoints, key=lambda e: (-e.gw_priority, e.network.net.internal, e.index))[0]
    if gw.network.gateway4 and gw.ipv4:
        d.add(Route(c.name, "0.0.0.0/0", gw.network.gateway4, gw.ifname))
    v6eps = [e for e in c.endpoints if e.ipv6 and e.network.gateway6]
    if v6eps:
        gw6 = sorted(v6eps, key=lambda e: (-e.gw_priority, e.network.net.internal, e.index))[0]
        # The kernel gives IPv6 routes metric 1024 when none is set; say so, so a re-read matches.
        d.add(Route(c.name, "::/0", gw6.network.gateway6, gw6.ifname, 1024))




def add_ruleset(d: DesiredState, project: str, bridges: list[NetPlan], resolver_nets: list[NetPlan],
                port_maps: list[PortMap]) -> None:
    """The project's nft table, when it has a bridge or a published port."""
    net_rules = []
    for np in bridges:
        subnets = tuple(str(s) for s in (np.subnet4, np.subnet6) if s is not None)
        masq = opt_bool(np.net.opt("com.docker.network.bridge.enable_ip_masquerade"), True)
        net_rules.append(NetRules(np.net.name, np.bridge, subnets, tuple(x for x in (np.gateway4,) if x),
                                  np.net.internal, masq, np in resolver_nets))
    if net_rules or port_maps:
        text, idents = build(nft_table_name(project), net_rules, port_maps)
        d.add(NftTable("inet", nft_table_name(project), idents, text))
