"""The kernel resources (``core.resources``) of the planned networks and containers. Pure.

Owns: turning NetPlans and Containers into resources: the project's membership in the host's
forwarding guard (instead of setting ``ip_forward`` for good) and what it means for the host
(``DesiredState.host``), each bridge with its VXLAN port, gateway addresses and per-bridge
sysctls; each container's namespace, veths or macvlans, addresses and default routes; and the
project's two nftables tables: ``inet`` (isolation of its bridges, its published ports, the
loopback guard: core/ruleset.py) and ``bridge`` (every container port pinned to its own
addresses: core/antispoof.py).

Must not: decide names, subnets, addresses or host ports (networks.py, containers.py and
ports.py did): everything here follows from its inputs.
"""

from __future__ import annotations

import ipaddress

from composenet.core import ipam
from composenet.core.antispoof import PortPin, build_bridge
from composenet.core.desired.common import ENDPOINT_SYSCTLS, endpoint_sysctls, opt_bool
from composenet.core.desired.containers import Container, Endpoint
from composenet.core.desired.networks import NetPlan, trusted_interfaces
from composenet.core.resources import (
    LABEL_PREFIX,
    VXLAN_LABEL_SUFFIX,
    Address,
    Bridge,
    ForwardingGuard,
    Ipvlan,
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
from composenet.core.state import DesiredState, ObservedState

FORWARDING = {"ipv4": "net.ipv4.ip_forward", "ipv6": "net.ipv6.conf.all.forwarding"}


def add_network_resources(d: DesiredState, project: str, bridges: list[NetPlan],
                          observed: ObservedState | None = None) -> None:
    """The forwarding guard membership (when a network routes), then each bridge and what goes
    with it. ``observed`` (the host's forwarding now) only chooses the words of ``d.host``."""
    add_forwarding(d, project, bridges, observed)
    for np in bridges:
        mac = ipam.mac_for(np.gateway4, np.net.name)
        d.add(Bridge(np.bridge, f"{LABEL_PREFIX}{project}/{np.net.name}", np.net.name, np.mtu, mac))
        if np.vxlan is not None:
            vx = np.vxlan
            d.add(Vxlan(vxlan_ifname(project, np.net.name), f"{LABEL_PREFIX}{project}/{np.net.name}{VXLAN_LABEL_SUFFIX}",
                        np.net.name, np.bridge, vx.vni, vx.port, vx.local, vx.peers, np.mtu,
                        learning=not vx.cluster, proxy=vx.cluster))
        if np.subnet4 is not None and np.gateway4:
            d.add(Address("", np.bridge, f"{np.gateway4}/{np.subnet4.prefixlen}"))
        if np.subnet6 is not None and np.gateway6:
            d.add(Address("", np.bridge, f"{np.gateway6}/{np.subnet6.prefixlen}"))
            d.add(Sysctl("", f"net.ipv6.conf.{np.bridge}.accept_ra", "0", np.bridge))
            d.add(Sysctl("", f"net.ipv6.conf.{np.bridge}.accept_dad", "0", np.bridge))
        # 127.0.0.1:PORT published ports are DNATed to a container behind this bridge.
        d.add(Sysctl("", f"net.ipv4.conf.{np.bridge}.route_localnet", "1", np.bridge))


def add_forwarding(d: DesiredState, project: str, bridges: list[NetPlan], observed: ObservedState | None) -> None:
    """The project's membership in the forwarding guard: every bridge of the project (internal
    ones too: under br_netfilter their bridged frames cross the forward hook, where the guard
    must let them pass), and the forwarding families its routed networks need (internal ones
    neither leave nor are entered). What needing them means for the host goes to ``d.host`` (a
    global setting composenet may change), unless the membership is already in place."""
    if not bridges:
        return
    routed = [np for np in bridges if not np.net.internal]
    families = tuple(f for f, has in (("ipv4", any(np.subnet4 for np in routed)),
                                      ("ipv6", any(np.subnet6 for np in routed))) if has)
    guard = ForwardingGuard(project, tuple(sorted({np.bridge for np in bridges})), families)
    d.add(guard)
    have = observed.resources.get(guard.key) if observed is not None else None
    if have is not None and have.compared() == guard.compared():
        return
    for fam in families:
        names = ", ".join(sorted(np.net.name for np in routed if (np.subnet4 if fam == "ipv4" else np.subnet6)))
        now = None
        if observed is not None and not observed.offline:
            sysctl = observed.resources.get(f"sysctl:-:{FORWARDING[fam]}")
            now = sysctl.value if isinstance(sysctl, Sysctl) else None
        d.host.append(forwarding_sentence(fam, names, now))


def forwarding_sentence(family: str, networks: str, now: str | None) -> str:
    """What needing ``family`` forwarding (for ``networks``) means for the host, given its
    value now (None: not known, e.g. ``plan --offline``)."""
    what = f"{family.replace('ip', 'IP')} forwarding ({FORWARDING[family]}), needed by {networks},"
    guard = ("`up` records the host's value, turns it on and guards it: table inet composenet-guard drops "
             "forwarded packets that touch no composenet bridge, so nothing the host did not route before "
             "becomes routable; the last composenet project's `down` restores the recorded value and removes "
             "the guard")
    if now == "0":
        return f"{what} is off on this host: {guard}."
    if now == "1":
        return (f"{what} is already on: composenet leaves it as it is. If composenet turned it on itself (for "
                "another project), this project joins that guard, and the last project's `down` restores the value "
                "recorded then; otherwise the host routes on purpose, and composenet adds no guard and restores "
                "nothing.")
    return (f"{what} is turned on if it is off: {guard}. If it is already on, composenet leaves it as it is and "
            "adds no guard (the host routes on purpose).")


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
    elif np.kind == "ipvlan":
        mode, flag = ipvlan_mode(np)
        d.add(Ipvlan(c.name, ep.ifname, label, np.net.opt("parent") or "eth0", mode, flag, np.mtu))
    else:
        parent = np.net.opt("parent") or "eth0"
        mode = np.net.opt("macvlan_mode") or "bridge"
        d.add(Macvlan(c.name, ep.ifname, label, parent, mode, np.mtu, ep.mac))
    if ep.ipv4 and np.subnet4 is not None:
        d.add(Address(c.name, ep.ifname, f"{ep.ipv4}/{np.subnet4.prefixlen}"))
    if ep.ipv6 and np.subnet6 is not None:
        d.add(Address(c.name, ep.ifname, f"{ep.ipv6}/{np.subnet6.prefixlen}"))
    att = next((a for a in c.service.networks if a.network == np.net.key), None)
    opts = dict(att.driver_opts) if att is not None else {}
    for name, value in endpoint_sysctls(opts.get(ENDPOINT_SYSCTLS), ep.ifname):
        d.add(Sysctl(c.name, name, value, ep.ifname))  # in the namespace, on the endpoint's link


def _add_default_routes(d: DesiredState, c: Container) -> None:
    """Default route: highest gw_priority; ties go to a non-internal network, then eth order."""
    # An isolated network (gateway mode) has no gateway: the route goes through another one.
    # An ipvlan network in mode l3/l3s routes through the device itself (no gateway, Docker 29).
    v4eps = [e for e in c.endpoints if e.ipv4 and (e.network.gateway4 or _device_routed(e.network))]
    if v4eps:
        gw = sorted(v4eps, key=lambda e: (-e.gw_priority, e.network.net.internal, e.index))[0]
        d.add(Route(c.name, "0.0.0.0/0", None if _device_routed(gw.network) else gw.network.gateway4, gw.ifname))
    v6eps = [e for e in c.endpoints if e.ipv6 and (e.network.gateway6 or _device_routed(e.network))]
    if v6eps:
        gw6 = sorted(v6eps, key=lambda e: (-e.gw_priority, e.network.net.internal, e.index))[0]
        # The kernel gives IPv6 routes metric 1024 when none is set; say so, so a re-read matches.
        d.add(Route(c.name, "::/0", None if _device_routed(gw6.network) else gw6.network.gateway6, gw6.ifname, 1024))


def ipvlan_mode(np: NetPlan) -> tuple[str, str]:
    """(mode, flag) of an ipvlan network: ``ipvlan_mode`` l2 (default) | l3 | l3s, ``ipvlan_flag``
    bridge (default) | private | vepa (the validator refused other values)."""
    return ((np.net.opt("ipvlan_mode") or "l2").strip().lower(), (np.net.opt("ipvlan_flag") or "bridge").strip().lower())


def _device_routed(np: NetPlan) -> bool:
    """An ipvlan network in l3 or l3s: the default route is the device, without a gateway."""
    return np.kind == "ipvlan" and ipvlan_mode(np)[0] in ("l3", "l3s")




def add_ruleset(d: DesiredState, project: str, bridges: list[NetPlan], resolver_nets: list[NetPlan],
                port_maps: list[PortMap]) -> None:
    """The project's nft table, when it has a bridge or a published port."""
    net_rules = []
    for np in bridges:
        subnets = tuple(str(s) for s in (np.subnet4, np.subnet6) if s is not None)
        masq = opt_bool(np.net.opt("com.docker.network.bridge.enable_ip_masquerade"), True)
        # Every family isolated (gateway mode): nothing enters or leaves, as on an internal network.
        isolated = all(np.mode(v) == "isolated" for v, sub in ((4, np.subnet4), (6, np.subnet6)) if sub is not None)
        net_rules.append(NetRules(np.net.name, np.bridge, subnets, tuple(x for x in (np.gateway4,) if x),
                                  np.net.internal or isolated, masq, np in resolver_nets, np.mode4, np.mode6,
                                  trusted_interfaces(np.net),
                                  np.vxlan.port if np.vxlan is not None and np.vxlan.cluster else None))
    if net_rules or port_maps:
        text, idents = build(nft_table_name(project), net_rules, port_maps)
        d.add(NftTable("inet", nft_table_name(project), idents, text))
    pins = port_pins(d)
    if pins:
        text, idents = build_bridge(nft_table_name(project), pins)
        d.add(NftTable("bridge", nft_table_name(project), idents, text))


def port_pins(d: DesiredState) -> list[PortPin]:
    """Every container port of the project (the host end of each veth) with the MAC and the
    addresses its container has there, from the resources already desired."""
    addrs: dict[tuple[str, str], list[str]] = {}
    for r in d.resources.values():
        if isinstance(r, Address) and r.ns:
            addrs.setdefault((r.ns, r.ifname), []).append(r.cidr.split("/")[0])
    pins = []
    for r in d.resources.values():
        if isinstance(r, Veth) and r.mac:
            mine = addrs.get((r.ns, r.peer), [])
            v4 = tuple(sorted(a for a in mine if ipaddress.ip_address(a).version == 4))
            v6 = tuple(sorted(a for a in mine if ipaddress.ip_address(a).version == 6))
            pins.append(PortPin(r.ifname, r.mac, v4, v6))
    return sorted(pins, key=lambda p: p.port)
