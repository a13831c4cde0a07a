"""``driver: overlay`` across hosts: the VXLAN options of a network, read from its driver_opts.

Owns: the option names, their defaults (the VNI derived from the network's full name, UDP port
4789, MTU 1450) and the reading of their values. Pure. ``validate`` reports bad values with
their file and line; ``desired`` reads them here, leniently, once they have validated.
Must not: report problems (validate does) or build the VXLAN link (desired and the kernel do).

    com.composenet.vxlan.peers   comma-separated IPv4 underlay addresses of the other hosts
                                 (its presence turns VXLAN on)
    com.composenet.vxlan.id      VNI, 1..16777215 (default: derived from the network's name)
    com.composenet.vxlan.port    UDP port, 1..65535 (default 4789)
    com.composenet.vxlan.local   local underlay IPv4 address (default: chosen by route)
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from composenet.core.model import Network

PEERS = "com.composenet.vxlan.peers"
VNI = "com.composenet.vxlan.id"
PORT = "com.composenet.vxlan.port"
LOCAL = "com.composenet.vxlan.local"
OPTIONS = (PEERS, VNI, PORT, LOCAL)

VNI_MAX = 16777215
DEFAULT_PORT = 4789
DEFAULT_MTU = 1450  # 1500 minus the VXLAN encapsulation over IPv4 (50 bytes)


@dataclass(frozen=True)
class VxlanOpts:
    vni: int
    port: int
    local: str | None
    peers: tuple[str, ...]  # sorted, de-duplicated, without the local address
    # A cluster network (a store is set, no peers option): learning off and ARP proxy on, no
    # static peers; the cluster agent programs its FDB and neighbours (composenet.cluster).
    cluster: bool = False


# The project table's set of the cluster's VTEP addresses (the cluster agent fills it: its
# elements are never compared, see kernel.nft.identities) and the rule that drops VXLAN from any
# other source. composenet.cluster.dataplane.VTEP_SET names the same set.
VTEP_SET = "cluster_vteps"


def vtep_ruleset(ports: list[int]) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """For a project with cluster networks on VXLAN ``ports``: (set declarations, their
    identities, input rules as (rule, comment)); all empty without ports."""
    if not ports:
        return [], [], []
    rules = [(f"udp dport {p} ip saddr != @{VTEP_SET} counter drop", f"cluster: vxlan from an unknown vtep to port {p}")
             for p in sorted(set(ports))]
    return [f"set {VTEP_SET} {{ type ipv4_addr; }}"], [f"set {VTEP_SET} ipv4_addr"], rules


def default_vni(network_name: str) -> int:
    """A VNI from the network's full name: the same on every host that uses the same name."""
    h = int(hashlib.sha256(network_name.encode()).hexdigest()[:8], 16)
    return h % VNI_MAX + 1


def split_peers(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def int_in(value: str, lo: int, hi: int) -> bool:
    v = value.strip()
    return v.isascii() and v.isdigit() and lo <= int(v) <= hi


def vxlan_opts(net: Network, own_addresses: tuple[str, ...] = ()) -> VxlanOpts | None:
    """The network's VXLAN settings, or None when it has no peers option (a local bridge).
    Peers equal to ``local`` or to one of ``own_addresses`` (this host's addresses, CIDRs) are
    left out, so that one file listing every host works on each of them."""
    if net.driver != "overlay" or net.opt(PEERS) is None:
        return None
    local = (net.opt(LOCAL) or "").strip() or None
    own = {str(ipaddress.ip_interface(a).ip) for a in own_addresses}
    if local:
        own.add(local)
    peers = sorted({str(ipaddress.IPv4Address(p)) for p in split_peers(net.opt(PEERS) or "") if is_ipv4(p)} - own,
                   key=lambda a: ipaddress.IPv4Address(a))
    vni_text = net.opt(VNI)
    vni = int(vni_text) if vni_text and int_in(vni_text, 1, VNI_MAX) else default_vni(net.name)
    port_text = net.opt(PORT)
    port = int(port_text) if port_text and int_in(port_text, 1, 65535) else DEFAULT_PORT
    return VxlanOpts(vni, port, local, tuple(peers))
