"""The project's ``bridge`` table: every container port may only send as itself. Pure.
Must not: run nft (composenet.kernel.nft loads and reads back tables) or choose addresses
(core/desired/containers.py did; the ports come from the Veth and Address resources).

Docker lets any container forge its source MAC or IP address on its network (spoof another
container, poison the bridge's FDB, answer ARP or NDP for the gateway, send router
advertisements). composenet pins each veth port, as Calico and libvirt's ``clean-traffic``
filter do: a frame that enters the bridge through a container's port must carry that
container's MAC as its source; IPv4 packets and ARP senders its IPv4 address; IPv6 packets its
IPv6 addresses (global and link-local) and NDP advertisements only its own addresses as their
target. Everything else (other addresses, another MAC, VLAN tags, PPPoE, LLDP, router
advertisements, DHCP server answers) is dropped and counted in the table's named counters
(``nft list counters table bridge composenet_<project>``).

Where and why there:
- The bridge family's prerouting hook (priority filter, -200) sees every frame entering through
  a port, before the bridge decides between forwarding it and passing it up to the host (so it
  covers container-to-container and container-to-host alike), and before FDB learning (a forged
  source MAC never moves an FDB entry). br_netfilter's own hook runs at priority 0, after it, so
  nothing spoofed reaches the inet hooks or conntrack either: the pinning holds with and without
  br_netfilter. ``iifname`` there is the port (the host end of the veth, ``cnv-...``).
- Allowed without a source of its own: ARP probes (sender 0.0.0.0, RFC 5227), duplicate address
  detection (NS from :: whose target is one of the port's addresses) and the MLDv2 reports sent
  during it.
- Link-local: each port's EUI-64 address (from its MAC), which is what the kernel generates in
  a fresh namespace (addr_gen_mode 0: IPv6 settings of a new namespace are the kernel's defaults
  unless net.core.devconf_inherit_init_net says otherwise).
- NDP link-layer options are not pinned: the Ethernet source is, and the NS source and NA
  target are, so a forged option can only point the sender's own address elsewhere.
- nft 1.0.6 has no name for the ND target field: the target is matched as 128 raw bits at
  ``@th,64,128`` against the same addresses written as integers.
- The kernel here has no bridge-family conntrack or ``meta ibrname``; nothing needs them.

Each chain ends in a verdict (never ``return``: that would fall back into ``pre`` and hit its
final drop). Every rule has a ``cn:`` comment (its identity), and the sets' elements are part
of the table's identities, so a changed address is a changed table.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from composenet.core.ruleset import Chain, quote, text

COUNTERS = ("spoof_mac", "spoof_ip4", "spoof_arp", "spoof_ip6", "spoof_nd", "rogue", "other_l2")
SETS = (  # name, declaration (what nft -j lists as its type, joined by " . ")
    ("ports", "type ifname", "ifname"),
    ("port_mac", "type ifname . ether_addr", "ifname . ether_addr"),
    ("port_ip4", "type ifname . ipv4_addr", "ifname . ipv4_addr"),
    ("port_ip6", "type ifname . ipv6_addr", "ifname . ipv6_addr"),
    ("port_nd", "typeof iifname . @th,64,128", "ifname . integer"),
)


@dataclass(frozen=True)
class PortPin:
    """One container port: the host end of its veth, the container's MAC and addresses there."""

    port: str
    mac: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()  # global ones; the link-local one follows from the MAC


def link_local(mac: str) -> str:
    """The EUI-64 link-local address the kernel gives an interface with this MAC (RFC 4291)."""
    return str(_link_local(mac))


def _link_local(mac: str) -> ipaddress.IPv6Address:
    b = bytearray(int(x, 16) for x in mac.split(":"))
    b[0] ^= 0x02
    iid = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + iid)


def _elements(pins: list[PortPin]) -> dict[str, list[str]]:
    """Each set's elements, written as nft -j lists them (identities and ruleset alike)."""
    out: dict[str, list[str]] = {name: [] for name, _decl, _type in SETS}
    for p in sorted(pins, key=lambda p: p.port):
        q = quote(p.port)
        # Each address parsed once (a no-op plan of 300 containers builds this every time).
        v6 = sorted({str(a): a for a in (*map(ipaddress.IPv6Address, p.ipv6), _link_local(p.mac))}.items())
        out["ports"].append(q)
        out["port_mac"].append(f"{q} . {p.mac.lower()}")
        out["port_ip4"] += [f"{q} . {ipaddress.IPv4Address(a)}" for a in sorted(set(p.ipv4))]
        out["port_ip6"] += [f"{q} . {text}" for text, _a in v6]
        out["port_nd"] += [f"{q} . {hex(int(a))}" for _text, a in v6]
    return out


def build_bridge(table: str, pins: list[PortPin]) -> tuple[str, tuple[str, ...]]:
    """Return (ruleset text, identities) of the project's bridge table pinning ``pins``."""
    elements = _elements(pins)
    head, idents = [], []
    for name, decl, typ in sorted(SETS):  # identities list sets by name, as nft.identities() does
        elems = elements[name]
        body = f"{decl}; " + (f"elements = {{ {', '.join(elems)} }}; " if elems else "")
        head.append(f"set {name} {{ {body}}}")
        idents.append(f"set {name} {typ}")
        idents += sorted(f"set {name}: {e.replace(chr(34), '')}" for e in elems)
    head += [f"counter {c} {{ }}" for c in COUNTERS]
    chains = {"pre": Chain("pre", "filter prerouting -200 accept"), "v4": Chain("v4"), "arp4": Chain("arp4"),
              "v6": Chain("v6")}
    _pre(chains["pre"])
    _v4(chains["v4"])
    _arp4(chains["arp4"])
    _v6(chains["v6"])
    return text(table, "bridge", chains, head, idents)


def _pre(c: Chain) -> None:
    c.add("iifname != @ports accept", "frames not from a container port of the project")
    c.add("iifname . ether saddr != @port_mac counter name spoof_mac drop", "source MAC: the port's own")
    # Three jumps, not one `ether type vmap { ... }`: when the table is replaced whole (a rule
    # changed, a rollback), the kernel makes the new rules live before it fills an anonymous
    # map, and a frame in between would fall to the final drop (measured: 11 frames lost in 400
    # reloads with the map, none with the jumps).
    c.add("ether type ip jump v4", "IPv4: its own checks")
    c.add("ether type arp jump arp4", "ARP: its own checks")
    c.add("ether type ip6 jump v6", "IPv6: its own checks")
    c.add("counter name other_l2 drop", "nothing else leaves a container (VLAN tags, PPPoE, LLDP, ...)")


def _v4(c: Chain) -> None:
    c.add("udp sport 67 udp dport 68 counter name rogue drop", "no DHCP server in a container")
    c.add("iifname . ip saddr @port_ip4 accept", "IPv4 source: the port's own address")
    c.add("counter name spoof_ip4 drop", "any other IPv4 source")


def _arp4(c: Chain) -> None:
    c.add("arp htype != 1 counter name spoof_arp drop", "ARP for Ethernet only")
    c.add("arp ptype != ip counter name spoof_arp drop", "ARP for IPv4 only")
    c.add("arp hlen != 6 counter name spoof_arp drop", "ARP hardware address length 6")
    c.add("arp plen != 4 counter name spoof_arp drop", "ARP protocol address length 4")
    c.add("iifname . arp saddr ether != @port_mac counter name spoof_arp drop", "ARP sender MAC: the port's own")
    c.add("arp saddr ip 0.0.0.0 accept", "ARP probe (RFC 5227)")
    c.add("iifname . arp saddr ip != @port_ip4 counter name spoof_arp drop", "ARP sender address: the port's own")
    c.add("accept", "ARP as itself")


def _v6(c: Chain) -> None:
    c.add("icmpv6 type { nd-router-advert, nd-redirect } counter name rogue drop", "no router in a container")
    c.add("udp sport 547 counter name rogue drop", "no DHCPv6 server in a container")
    c.add("ip6 saddr :: icmpv6 type nd-neighbor-solicit iifname . @th,64,128 @port_nd accept",
          "duplicate address detection of its own address")
    c.add("ip6 saddr :: icmpv6 type mld2-listener-report accept", "MLD report sent during address detection")
    c.add("iifname . ip6 saddr != @port_ip6 counter name spoof_ip6 drop", "IPv6 source: the port's own addresses")
    c.add("icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @port_nd counter name spoof_nd drop",
          "neighbour advertisements only for its own addresses")
    c.add("accept", "IPv6 as itself")
