"""The project's networks after IPAM: one ``NetPlan`` per network. Pure; no I/O.

Owns: the kind of each network (bridge, macvlan, none, host, external), its bridge name, MTU and
VXLAN port; its subnets and gateways, in this order of preference: the file's ``ipam.config``,
the subnet the kernel already holds (the bridge's address, or, when the bridge was deleted by
hand, the subnet its containers' addresses imply), a fresh allocation that avoids host routes,
host addresses and other projects' networks; the address pools endpoints draw from. Also the
networks this project does not own: ``external: true`` ones and those `composenet network
connect` attached, found in the observed state.

Must not: assign endpoint addresses (containers.py) or make kernel resources (resources.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any

from composenet.core import ipam, overlay
from composenet.core.desired.cluster import ClusterNet, plan_cluster_networks
from composenet.core.desired.common import opt_bool, warn
from composenet.core.model import IpamConfig, Network, Project
from composenet.core.resources import LABEL_PREFIX, Address, Veth, bridge_ifname
from composenet.core.state import ObservedState
from composenet.errors import InputError, Problem


@dataclass
class NetPlan:
    """A managed network after IPAM."""

    net: Network
    kind: str  # bridge | macvlan | ipvlan | none | host | external
    bridge: str = ""
    subnet4: ipaddress.IPv4Network | None = None
    gateway4: str | None = None
    subnet6: ipaddress.IPv6Network | None = None
    gateway6: str | None = None
    pool4: ipam.Pool | None = None
    pool6: ipam.Pool | None = None
    mtu: int = 1500
    vxlan: overlay.VxlanOpts | None = None  # driver overlay with peers: the bridge's VXLAN port
    # Docker 28's gateway modes, per family (com.docker.network.bridge.gateway_mode_ipv4/_ipv6):
    # nat (published ports DNATed, egress masqueraded), nat-unprotected (the same, and every
    # port of the containers reachable directly), routed (no NAT: published ports reachable at
    # the container's own address), isolated (no address on the bridge: containers reach only
    # each other; gateway4/gateway6 are then None, the pool still reserves the gateway).
    mode4: str = "nat"
    mode6: str = "nat"

    def mode(self, family: int) -> str:
        return self.mode4 if family == 4 else self.mode6


GATEWAY_MODES = ("nat", "nat-unprotected", "routed", "isolated")
IPVLAN_MODES = ("l2", "l3", "l3s")
IPVLAN_FLAGS = ("bridge", "private", "vepa")
# Host interfaces whose packets may reach the network's containers directly by address (Docker 28).
TRUSTED_OPT = "com.docker.network.bridge.trusted_host_interfaces"


def trusted_interfaces(n: Network) -> tuple[str, ...]:
    """The network's trusted host interfaces (colon-separated), in the file's order."""
    return tuple(dict.fromkeys(x.strip() for x in (n.opt(TRUSTED_OPT) or "").split(":") if x.strip()))
GATEWAY_MODE_OPTS = {4: "com.docker.network.bridge.gateway_mode_ipv4", 6: "com.docker.network.bridge.gateway_mode_ipv6"}


def plan_networks(project: Project, observed: ObservedState, warnings: list[str]) -> dict[str, NetPlan]:
    """Every network of the file, by key, in key order (so allocation is deterministic)."""
    member_subnets = _observed_member_subnets(observed, project.name)
    taken = _taken_subnets(project, observed, member_subnets)
    avoid = list(observed.host_routes) + list(observed.host_addresses) + list(observed.foreign_subnets)
    nets: dict[str, NetPlan] = {}
    clusters = plan_cluster_networks(project, observed)  # overlay networks a cluster store spans
    for n in sorted(project.networks, key=lambda n: n.key):
        if n.external:
            nets[n.key] = external_network(n, project.name, observed, warnings)
        elif n.driver in ("none", "host"):
            nets[n.key] = NetPlan(n, n.driver)
        else:
            # Docker creates declared networks even when no service uses them; so do we (a bridge
            # and a listener of the resolver, for other projects' containers that attach to it).
            nets[n.key] = _managed_network(n, project.name, observed, member_subnets, taken, avoid, warnings,
                                           clusters.get(n.key))
    return nets


def _taken_subnets(project: Project, observed: ObservedState, member_subnets: dict[str, list[str]]) -> list[str]:
    """Subnets no automatic allocation may take: the file's explicit ones, then those the
    project's existing bridges already hold, so that adding a network never steals the subnet of
    one that exists. A network whose bridge is gone (deleted by hand) keeps the subnet its
    containers' addresses still imply: taken too."""
    taken = [ic.subnet for n in project.networks for ic in n.ipam if ic.subnet and ipam.explicit(ic.subnet)]
    for n in project.networks:
        br = n.opt("com.docker.network.bridge.name") or bridge_ifname(project.name, n.name)
        held = [str(ipaddress.ip_interface(a).network) for a in _observed_bridge_addrs(observed, br)]
        if not held and not n.external and n.driver not in ("none", "host", "macvlan", "ipvlan"):
            held = member_subnets.get(n.name, [])
        taken += held
    return taken


def _managed_network(n: Network, project: str, observed: ObservedState, member_subnets: dict[str, list[str]],
                     taken: list[str], avoid: list[str], warnings: list[str], cl: ClusterNet | None = None) -> NetPlan:
    """A bridge (or macvlan, ipvlan) network this project creates; its IPv4 subnet joins ``taken``.
    ``cl``: a cluster network's record (core.desired.cluster): its subnet, gateway and VNI."""
    kind = n.driver if n.driver in ("macvlan", "ipvlan") else "bridge"
    if kind == "ipvlan" and observed.ipvlan_missing:
        pos = n.driver_pos or n.pos
        raise InputError([Problem(
            f"driver ipvlan: {observed.ipvlan_missing}",
            file=pos.file if pos else None, line=pos.line if pos else None, col=pos.col if pos else None,
            path=f"networks.{n.key}.driver",
            hint="use a kernel built with CONFIG_IPVLAN (or with the ipvlan module), or driver: macvlan, "
                 "which gives each container its own MAC address on the same parent")])
    vx = cl.vxlan if cl is not None else overlay.vxlan_opts(n, observed.host_addresses)
    if n.driver == "overlay" and vx is None:
        warn(warnings, n.pos, f"networks.{n.key}.driver", "driver overlay is built as a local bridge (single host)")
    br = n.opt("com.docker.network.bridge.name") or bridge_ifname(project, n.name)
    np = NetPlan(n, kind, bridge=br if kind == "bridge" else "", vxlan=vx)
    np.mtu = _mtu(n, vx, warnings)
    v4, v6 = _explicit(n, 4), _explicit(n, 6)
    prev = _previous_gateways(observed, br, n.name, member_subnets) if kind == "bridge" else []
    prev4 = [a for a in prev if ipaddress.ip_interface(a).version == 4]
    prev6 = [a for a in prev if ipaddress.ip_interface(a).version == 6]
    if kind == "bridge":
        for ic in n.ipam:
            if ipam.explicit(ic.subnet):
                _refuse_overlap(n, ic, project, observed)
    if n.enable_ipv4:
        np.subnet4, np.gateway4, np.pool4 = cl.ipv4(n) if cl is not None else _ipv4(v4, prev4, taken, avoid)
        taken.append(str(np.subnet4))
    if n.enable_ipv6 or opt_bool(n.opt("com.docker.network.enable_ipv6"), False) or v6 is not None:
        np.subnet6, np.gateway6, np.pool6 = _ipv6(v6, project, n.name, prev6)
    for used in observed.networks.get(n.name, {}).get("used", ()) if kind == "bridge" else ():
        for pool in (np.pool4, np.pool6):
            if pool is not None:
                pool.claim(used)  # an endpoint of another project (external user) holds it
    if kind == "ipvlan" and (n.opt("ipvlan_mode") or "l2").strip().lower() in ("l3", "l3s"):
        np.gateway4 = np.gateway6 = None  # l3: the default route is the device itself (Docker 29)
    if kind == "bridge":
        np.mode4, np.mode6 = (_gateway_mode(n, fam) for fam in (4, 6))
        if np.mode4 == "isolated":
            np.gateway4 = None  # no address on the bridge, no default route, no resolver listener
        if np.mode6 == "isolated":
            np.gateway6 = None
    return np


def _gateway_mode(n: Network, family: int) -> str:
    """The network's gateway mode for ``family`` (the validator refused unknown values)."""
    v = (n.opt(GATEWAY_MODE_OPTS[family]) or "nat").strip().lower()
    return v if v in GATEWAY_MODES else "nat"


def _refuse_overlap(n: Network, ic: IpamConfig, project: str, observed: ObservedState) -> None:
    """An explicit subnet of a bridge network must not overlap another composenet network (a
    project's or a standalone one), an address of the host or a route of the host (any routing
    table; its default routes aside): the bridge would take the gateway address or the route,
    and cut the host off that network. Docker: "Pool overlaps with other one on this address
    space". InputError at the subnet. (A macvlan network's subnet is its parent's LAN: it is
    meant to overlap the host's route there.)"""
    assert ic.subnet is not None
    sub = ipaddress.ip_network(ic.subnet)
    found: str | None = None
    for name, other in sorted(observed.networks.items()):
        if other.get("owner") == project:
            continue
        for cidr in other.get("cidrs", ()):
            o = ipaddress.ip_interface(cidr).network
            if o.version == sub.version and o.overlaps(sub):
                owner = str(other.get("owner", ""))
                whose = f"standalone network {name!r}" if owner.startswith("-") else f"network {name!r} of project {owner!r}"
                found = f"overlaps {o}, the subnet of composenet {whose}"
                break
        if found:
            break
    for what, items in (("an address", observed.host_addresses), ("a route", observed.host_routes)):
        if found:
            break
        for cidr in items:
            net = ipaddress.ip_interface(cidr).network
            if net.version == sub.version and net.overlaps(sub):
                found = f"overlaps {cidr}, {what} of this host"
                break
    if found is None:
        return
    i = n.ipam.index(ic)
    pos = ic.pos or n.pos
    raise InputError([Problem(
        f"subnet {sub} {found} (Docker: Pool overlaps with other one on this address space)",
        file=pos.file if pos else None, line=pos.line if pos else None, col=pos.col if pos else None,
        path=f"networks.{n.key}.ipam.config[{i}].subnet",
        hint="choose a subnet no composenet network, host address or host route covers "
             "(`ip -all route show table all`, `composenet network ls`), or leave it out to get a free one")])


def _mtu(n: Network, vx: overlay.VxlanOpts | None, warnings: list[str]) -> int:
    """The driver option's MTU; else a VXLAN port's (room for its header); else Ethernet's."""
    mtu = overlay.DEFAULT_MTU if vx is not None else 1500
    text = n.opt("com.docker.network.driver.mtu") or n.opt("driver_mtu") or n.opt("mtu")
    if text:
        try:
            mtu = int(text)
        except ValueError:
            warn(warnings, n.pos, f"networks.{n.key}.driver_opts", f"ignoring invalid mtu {text!r}")
    return mtu


def _explicit(n: Network, version: int) -> IpamConfig | None:
    """The network's first ``ipam.config`` block with a subnet of this IP version."""
    return next((ic for ic in n.ipam
                 if ic.subnet and ipaddress.ip_network(ic.subnet, strict=False).version == version), None)


def _previous_gateways(observed: ObservedState, bridge: str, name: str,
                       member_subnets: dict[str, list[str]]) -> list[str]:
    """The gateway addresses (``ADDRESS/PREFIX``) the network had: its bridge's; with no bridge
    address (the bridge was deleted by hand), the subnets its containers' addresses imply, with
    their first hosts as the gateways (the automatic default)."""
    prev = _observed_bridge_addrs(observed, bridge)
    if not prev:
        prev = [f"{ipam.first_host(net)}/{net.prefixlen}"
                for net in map(ipaddress.ip_network, member_subnets.get(name, []))]
    return prev


def _ipv4(ic: IpamConfig | None, prev4: list[str], taken: list[str],
          avoid: list[str]) -> tuple[ipaddress.IPv4Network, str, ipam.Pool]:
    """(subnet, gateway, pool): the file's (``ic``), else the previous one, else a free default
    pool. A size request (``0.0.0.0/24``) keeps a previous subnet of that size, else takes the
    first free /N of the default pools; its ip_range/gateway were refused by validation."""
    size = ipam.size_request(ic.subnet) if ic is not None else None
    if size is not None:
        prev = [p for p in prev4 if ipaddress.IPv4Interface(p).network.prefixlen == size]
        if prev:
            iface = ipaddress.IPv4Interface(prev[0])
            return iface.network, str(iface.ip), ipam.Pool(iface.network, str(iface.ip))
        subnet = ipam.allocate_subnet(taken, avoid, size)
        return subnet, ipam.first_host(subnet), ipam.Pool(subnet, ipam.first_host(subnet))
    if ic is not None:
        subnet = ipaddress.IPv4Network(ic.subnet, strict=False)
        gateway = ic.gateway or ipam.first_host(subnet)
        return subnet, gateway, ipam.Pool(subnet, gateway, ic.ip_range, [ip for _, ip in ic.aux_addresses])
    if prev4:
        iface = ipaddress.IPv4Interface(prev4[0])
        subnet, gateway = iface.network, str(iface.ip)
    else:
        subnet = ipam.allocate_subnet(taken, avoid)
        gateway = ipam.first_host(subnet)
    return subnet, gateway, ipam.Pool(subnet, gateway)


def _ipv6(ic: IpamConfig | None, project: str, name: str,
          prev6: list[str]) -> tuple[ipaddress.IPv6Network, str, ipam.Pool]:
    """(subnet, gateway, pool): the file's (``ic``), else the previous one, else the network's own
    unique-local /64 (a size request ``::/N``: the first /N of the network's unique-local /48)."""
    size = ipam.size_request(ic.subnet) if ic is not None else None
    if size is not None:
        prev = [p for p in prev6 if ipaddress.IPv6Interface(p).network.prefixlen == size]
        iface = ipaddress.IPv6Interface(prev[0]) if prev else None
        subnet = iface.network if iface else ipam.ula_subnet(project, name, size)
        gateway = str(iface.ip) if iface else ipam.first_host(subnet)
        return subnet, gateway, ipam.Pool(subnet, gateway)
    if ic is not None:
        subnet = ipaddress.IPv6Network(ic.subnet, strict=False)
        gateway = ic.gateway or ipam.first_host(subnet)
        return subnet, gateway, ipam.Pool(subnet, gateway, ic.ip_range, [ip for _, ip in ic.aux_addresses])
    if prev6:
        iface = ipaddress.IPv6Interface(prev6[0])
        subnet, gateway = iface.network, str(iface.ip)
    else:
        subnet = ipam.ula_subnet(project, name)
        gateway = ipam.first_host(subnet)
    return subnet, gateway, ipam.Pool(subnet, gateway)


def external_network(n: Network, project: str, observed: ObservedState, warnings: list[str]) -> NetPlan:
    """An ``external: true`` network: another project's network or a standalone one (``composenet
    network create``), found by its label (ObservedState.networks). Its bridge, addresses and
    rules belong to its owner: this project only attaches endpoints, with addresses from its
    subnet that no other endpoint holds. Missing: an error at the network's key (CS-NET-12)."""
    found = observed.networks.get(n.name)
    if found is None or found.get("owner") == project:
        if observed.offline:
            warn(warnings, n.pos, f"networks.{n.key}.external", f"external network {n.name!r} is assumed to exist "
                 "(offline plan); services are not attached to it in this plan")
            return NetPlan(n, "external")
        pos = n.pos
        raise InputError([Problem(
            f"external network {n.name!r} does not exist" + (" (it is this project's own network)" if found else ""),
            file=pos.file if pos else None, line=pos.line if pos else None, col=pos.col if pos else None,
            path=f"networks.{n.key}.external",
            hint=f"create it first: `composenet network create {n.name}`, or bring up the project that defines it",
            rule="CS-NET-12")])
    if found.get("driver") == "macvlan":
        # A standalone macvlan network: each endpoint is a macvlan link on its parent, as for a
        # macvlan network of the file (no bridge, no resolver, no NAT).
        opts = (("macvlan_mode", str(found.get("mode") or "bridge")), ("parent", str(found.get("parent", ""))))
        np = NetPlan(replace(n, driver="macvlan", driver_opts=opts), "macvlan")
        text = (f"external network {n.name!r} (it is a standalone network) is not served by this project's "
                "resolver; its containers resolve names on their other networks")
        if n.key.startswith("@"):  # "@NAME": attached by `network connect`, not in the file
            warnings.append(f"network {n.name}: {text}")
        else:
            warn(warnings, n.pos, f"networks.{n.key}", text)
    else:
        np = NetPlan(n, "external", bridge=str(found["bridge"]))
    # Names on it are served by its owner's resolver (a standalone network's: its pseudo-project's),
    # which merges this project's records of its endpoints there (the dnsrecords resource).
    used = [str(a) for a in found.get("used", ())]
    for cidr in found.get("cidrs", ()):
        iface = ipaddress.ip_interface(cidr)
        if iface.version == 4 and np.subnet4 is None:
            np.subnet4, np.gateway4 = ipaddress.IPv4Network(iface.network), str(iface.ip)
            np.pool4 = ipam.Pool(np.subnet4, np.gateway4, reserved=[a for a in used if ":" not in a])
        elif iface.version == 6 and np.subnet6 is None:
            np.subnet6, np.gateway6 = ipaddress.IPv6Network(iface.network), str(iface.ip)
            np.pool6 = ipam.Pool(np.subnet6, np.gateway6, reserved=[a for a in used if ":" in a])
    return np


def connected_network(name: str, project: Project, nets: dict[str, NetPlan], observed: ObservedState,
                      warnings: list[str]) -> NetPlan | None:
    """The network a `network connect` record names: one of the project's (by name), else another
    composenet network, planned as external (kept in ``nets`` under ``@NAME``). Gone: a warning."""
    for np in nets.values():
        if np.net.name == name and (np.kind in ("bridge", "macvlan", "ipvlan") or (np.kind == "external" and np.bridge)):
            return np
    key = "@" + name
    if key not in nets:
        if name not in observed.networks or observed.networks[name].get("owner") == project.name:
            warnings.append(f"network {name!r} (connected with `composenet network connect`) does not exist any "
                            "more; its endpoints are left out")
            return None
        nets[key] = external_network(Network(key=key, name=name, external=True), project.name, observed, warnings)
    return nets[key]


def network_rows(nets: dict[str, NetPlan]) -> list[dict[str, Any]]:
    """The plan's header rows (``DesiredState.networks``), by key."""
    rows = []
    for key in sorted(nets):
        np = nets[key]
        rows.append({
            "key": key, "name": np.net.name, "driver": np.net.driver, "kind": np.kind, "bridge": np.bridge,
            "subnet": str(np.subnet4) if np.subnet4 else None, "gateway": np.gateway4,
            "subnet6": str(np.subnet6) if np.subnet6 else None, "gateway6": np.gateway6,
            "internal": np.net.internal, "mtu": np.mtu,
            **({"gateway_modes": {"ipv4": np.mode4, "ipv6": np.mode6}} if (np.mode4, np.mode6) != ("nat", "nat") else {}),
            **({"vxlan": {"vni": np.vxlan.vni, "port": np.vxlan.port, "local": np.vxlan.local,
                          "peers": list(np.vxlan.peers), **({"cluster": True} if np.vxlan.cluster else {})}}
               if np.vxlan is not None else {}),
        })
    return rows


def _observed_bridge_addrs(observed: ObservedState, bridge: str) -> list[str]:
    return sorted(r.cidr for r in observed.resources.values() if isinstance(r, Address) and r.ns == "" and r.ifname == bridge)


def _observed_member_subnets(observed: ObservedState, project: str) -> dict[str, list[str]]:
    """Subnets the project's containers still hold on each network, by network name, sorted:
    the CIDR prefix of every observed address on a container's end of one of the network's
    veths (label ``composenet:<project>/<container>/<network>``). They stand in for the subnet of
    a network whose bridge is gone (deleted by hand), so that it keeps its subnet and the
    containers their addresses."""
    by_if: dict[tuple[str, str], str] = {}
    prefix = f"{LABEL_PREFIX}{project}/"
    for r in observed.resources.values():
        if isinstance(r, Veth) and r.label.startswith(prefix + r.ns + "/"):
            by_if[(r.ns, r.peer)] = r.label[len(prefix + r.ns + "/"):]
    out: dict[str, set[str]] = {}
    for r in observed.resources.values():
        if isinstance(r, Address) and r.ns and (r.ns, r.ifname) in by_if:
            try:
                net = ipaddress.ip_interface(r.cidr).network
            except ValueError:
                continue
            if net.prefixlen < net.max_prefixlen and not net.is_link_local:
                out.setdefault(by_if[(r.ns, r.ifname)], set()).add(str(net))
    return {name: sorted(nets, key=lambda c: (ipaddress.ip_network(c).version, ipaddress.ip_network(c)))
            for name, nets in out.items()}
