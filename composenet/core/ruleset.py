"""The project's nftables table, built as text plus the rule identities the diff compares. Pure.
Must not: run nft (composenet.kernel.nft checks and applies the text) or decide which ports
are published (core/desired/ports.py gives the PortMaps).

One ``inet`` table per project, replaced whole in one transaction (declare, delete, re-create,
as moby's reload template does). It never touches other tables or global policy: every chain
has policy accept and only drops what composenet must isolate, so other software's rules keep
working (no FORWARD DROP). (The project's ``bridge`` table, which pins every container port to its
own addresses, is core/antispoof.py's; the host-wide forwarding guard is kernel/guard.py's.)

What the rules do, and why:
- nat_pre / nat_out jump to ``published`` for local destinations: published ports are pure
  DNAT, no userland proxy. From outside the client's address is preserved.
- Ports published on a loopback address (127.0.0.1) are in ``published_lo``, which only nat_out
  (packets the host itself sends) jumps to: never prerouting, so no packet that arrives on an
  interface is DNATed to them, whatever its destination (moby/moby#41872: a LAN neighbour that
  routes 127.0.0.1 to the host). The host's own connection leaves through the bridge with its
  127/8 source masqueraded to the bridge address; that needs route_localnet=1 on the bridge (a
  plan step), which is what raw_pre guards.
- raw_pre (prerouting, raw priority: before conntrack and NAT, so as early as a hook can): no
  packet to 127.0.0.0/8 arriving on one of the project's bridges (route_localnet=1 there would
  let a service reach every host service bound to loopback: Kubernetes CVE-2020-8558), and no
  packet to 127.0.0.0/8 for a port the project publishes on 127.0.0.1 or on every address, from
  any interface but lo (this one holds even when something else set route_localnet on every
  interface). Replies of the host's own connections to a loopback publish need no exception:
  at raw they still carry the bridge address they were masqueraded to; conntrack turns it back
  into 127.0.0.1 only at nat prerouting, after raw. The guard is scoped to composenet's bridges
  and ports on purpose: a host-wide 127/8 drop would break VRFs and anyone who routes loopback on
  purpose. IPv6 needs no guard: the kernel drops ::1 on any interface but lo before any hook
  (RFC 4291), which is also why a port published on [::1] cannot work (the validator refuses it)
  and why every-address IPv6 ports leave [::1] alone (a DNAT from the host's [::1] would be a
  black hole: the container's answer is dropped on its way back).
- nat_post: egress masquerade per non-internal network (Docker's POSTROUTING MASQUERADE); hairpin
  masquerade when a container reaches a published port of its own network (the reply would
  otherwise bypass the host, since both are on one L2 segment), one rule per subnet matched on
  the output bridge and the source subnet, so it holds with or without br_netfilter.
- filter_fwd: DNATed connections are accepted first (published ports are reachable from other
  networks through a host address, like Docker's default proxy); then internal networks get no
  egress and no ingress; a network never forwards to another composenet network (this project's
  or another's: every composenet bridge is named ``cnb-*``); and no new connection enters a
  network from elsewhere unless DNATed (unpublished ports stay closed even when a route exists).
- filter_in: a network's resolver (its gateway, port 53) answers only its own network and the
  host itself: never an open resolver.
- Source allowlists (``x-composenet-allow``, ``com.composenet.publish.allow``): filter_fwd drops
  a DNATed packet to a port with an allowlist from any other source, before the DNAT accept;
  the host's own packets are not forwarded, so the host is never filtered.
- Gateway modes (Docker 28, per family): routed publishes without DNAT (filter_fwd accepts the
  target port at the container's address; no masquerade); nat-unprotected drops no new
  connection into the network; isolated networks are internal here (no address on the bridge:
  desired/networks.py). Trusted host interfaces: packets arriving on them enter directly.

br_netfilter may be loaded or not (``bridge-nf-call-iptables`` is per namespace): every rule must
hold both when bridged frames skip the inet hooks and when they traverse them (then forward
sees iifname = oifname = the bridge, prerouting sees iifname = the bridge, and postrouting sees
no input device).

ICC off (``enable_icc: "false"``) is not a rule: without br_netfilter bridged frames never reach
inet hooks, so the bridge ports are marked ``isolated`` instead (see desired/resources.py), which the
bridge enforces in either mode.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from composenet.core import overlay
from composenet.core.resources import short_hash

COMMENT_MAX = 128  # nftables limit on comment length (NFT_USERDATA_MAXLEN)
LOOPBACK_PORTS = "loopback_guarded"  # the set of ports raw_pre keeps to the host's own 127.0.0.0/8


@dataclass(frozen=True)
class NetRules:
    network: str  # network name (display)
    bridge: str
    subnets: tuple[str, ...]  # CIDRs, v4 and v6
    gateways: tuple[str, ...]  # gateway addresses (resolver listeners)
    internal: bool = False
    masquerade: bool = True
    resolver: bool = True
    mode4: str = "nat"  # gateway mode per family: nat | nat-unprotected | routed | isolated
    mode6: str = "nat"
    trusted: tuple[str, ...] = ()  # host interfaces whose packets may reach the containers directly
    cluster_port: int | None = None  # a cluster network's VXLAN port (core.overlay.vtep_ruleset)

    def mode(self, fam: str) -> str:
        return self.mode6 if fam == "ip6" else self.mode4


@dataclass(frozen=True)
class PortMap:
    """One published port: host side -> one or more container addresses (replicas)."""

    service: str
    host_ip: str | None  # None = every local address
    host_port: int
    protocol: str  # tcp | udp | sctp
    targets: tuple[str, ...]  # container addresses (one family)
    target_port: int
    family: int = 4
    allow: tuple[str, ...] = ()  # the only sources that may reach it (CIDRs, any family); empty: all
    # Gateway mode routed: no DNAT; the target port is opened at the container's own address on
    # ``bridge`` (filter_fwd), and no host port is held.
    routed: bool = False
    bridge: str = ""


@dataclass
class Chain:
    name: str
    base: str = ""  # "nat prerouting -100 accept" for base chains
    rules: list[tuple[str, str]] = field(default_factory=list)  # (nft rule text, comment)

    def add(self, rule: str, comment: str) -> None:
        self.rules.append((rule, _comment(comment)))


def _comment(text: str) -> str:
    text = "cn:" + text.replace('"', "'")
    if len(text.encode()) > COMMENT_MAX:
        h = short_hash(text, n=8)
        text = text.encode()[: COMMENT_MAX - 10].decode(errors="ignore") + " #" + h
    return text


def quote(name: str) -> str:
    return '"' + name + '"'


def _ipfam(addr: str) -> str:
    return "ip6" if ipaddress.ip_address(addr).version == 6 else "ip"


def _fmt_target(addr: str, port: int) -> str:
    a = ipaddress.ip_address(addr)
    return f"[{a}]:{port}" if a.version == 6 else f"{a}:{port}"


def describe_port(p: PortMap) -> str:
    """The DNAT rule identity: ``dnat <service> <hostip|*>:<port>/<proto> -> <addr>:<port>[,...]``."""
    if p.host_ip is None:
        hip = "*" if p.family == 4 else "[*]"
    else:
        hip = f"[{p.host_ip}]" if ":" in p.host_ip else p.host_ip
    tgt = ",".join(_fmt_target(t, p.target_port) for t in p.targets)
    return f"dnat {p.service} {hip}:{p.host_port}/{p.protocol} -> {tgt}"


# The inverse of describe_port, found anywhere in a rule identity ("published: cn:dnat ...").
# A comment cut to nft's length limit (see _comment) keeps its head: the targets that are whole.
_PORT_RULE = re.compile(
    r"\bdnat (?P<service>\S+) (?P<hostip>\*|\[\*\]|[0-9.]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d+)/(?P<proto>tcp|udp|sctp)"
    r" -> (?P<targets>\S*)"
)
_PORT_TARGET = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>\d+)$")


@dataclass(frozen=True)
class PortRule:
    """A published-port rule read back from its identity comment (``describe_port``'s inverse)."""

    service: str
    host_ip: str  # "*" (every IPv4 address), "[*]" (every IPv6 address), an IPv4 address or "[v6]"
    host_port: int
    protocol: str
    targets: tuple[tuple[str, int], ...]  # (container address, port); the whole ones of a cut comment

    @property
    def family(self) -> int:
        return 6 if self.host_ip.startswith("[") else 4


def parse_port(ident: str) -> PortRule | None:
    """The published port a rule identity or comment describes, or None if it is no DNAT rule."""
    m = _PORT_RULE.search(ident)
    if m is None:
        return None
    targets = []
    for t in m["targets"].split(","):
        tm = _PORT_TARGET.match(t)
        if tm:
            targets.append((tm["v6"] or tm["v4"], int(tm["port"])))
    return PortRule(m["service"], m["hostip"], int(m["port"]), m["proto"], tuple(targets))


def build(table: str, nets: list[NetRules], ports: list[PortMap]) -> tuple[str, tuple[str, ...]]:
    """Return (ruleset text, identities). Identities follow nft.identities(): for each chain
    sorted by name ``chain <name>[ <type> <hook> <prio> <policy>]``, then ``<chain>: <comment>``
    for its rules in order; then the named set of loopback-guarded ports and its elements."""
    chains = {
        "raw_pre": Chain("raw_pre", "filter prerouting -300 accept"),
        "published": Chain("published"),
        "published_lo": Chain("published_lo"),
        "nat_pre": Chain("nat_pre", "nat prerouting -100 accept"),
        "nat_out": Chain("nat_out", "nat output -100 accept"),
        "nat_post": Chain("nat_post", "nat postrouting 100 accept"),
        "filter_fwd": Chain("filter_fwd", "filter forward 0 accept"),
        "filter_in": Chain("filter_in", "filter input 0 accept"),
    }
    head, head_idents = _loopback_guard(chains["raw_pre"], nets, ports)
    vtep_head, vtep_idents, vtep_rules = overlay.vtep_ruleset([n.cluster_port for n in nets if n.cluster_port])
    head, head_idents = vtep_head + head, vtep_idents + head_idents  # sets in name order, as nft lists them
    for rule, comment in vtep_rules:
        chains["filter_in"].add(rule, comment)
    _published(chains, ports)
    _masquerade(chains["nat_post"], nets)
    _isolation(chains, nets, ports)
    return text(table, "inet", chains, head, head_idents)


def is_loopback_publish(p: PortMap) -> bool:
    """A port published on a loopback address (127.0.0.1): for the host itself only."""
    return p.host_ip is not None and ipaddress.ip_address(p.host_ip).is_loopback


def _port_order(p: PortMap) -> tuple[int, str, int, str, str]:
    return (p.host_port, p.protocol, p.family, p.host_ip or "", p.service)


def _loopback_guard(raw_pre: Chain, nets: list[NetRules], ports: list[PortMap]) -> tuple[list[str], list[str]]:
    """Loopback stays loopback: no 127.0.0.0/8 destination from the project's bridges (they carry
    route_localnet=1), and none from any interface but lo for a port published on 127.0.0.1 or on
    every IPv4 address (see the module docstring). Returns the declaration and identities of the
    set of those ports (``protocol . port``), empty when there is none."""
    for n in sorted(nets, key=lambda n: n.bridge):
        raw_pre.add(f"iifname {quote(n.bridge)} ip daddr 127.0.0.0/8 counter drop",
                    f"loopback guard {n.network}: no 127.0.0.0/8 destination from {n.bridge}")
    guarded = sorted({(p.protocol, p.host_port) for p in ports
                      if p.family == 4 and not p.routed and (p.host_ip is None or is_loopback_publish(p))}, key=lambda x: (x[1], x[0]))
    if not guarded:
        return [], []
    raw_pre.add(f'iifname != "lo" ip daddr 127.0.0.0/8 meta l4proto . th dport @{LOOPBACK_PORTS} counter drop',
                "loopback guard: the project's ports answer 127.0.0.0/8 only from the host itself")
    elems = [f"{proto} . {port}" for proto, port in guarded]
    decl = f"set {LOOPBACK_PORTS} {{ type inet_proto . inet_service; elements = {{ {', '.join(elems)} }}; }}"
    return [decl], [f"set {LOOPBACK_PORTS} inet_proto . inet_service", *sorted(f"set {LOOPBACK_PORTS}: {e}" for e in elems)]


def _published(chains: dict[str, Chain], ports: list[PortMap]) -> None:
    """The jumps to ``published`` (every path) and ``published_lo`` (the host's own packets
    only), and one DNAT rule per published port."""
    remote = [p for p in ports if not is_loopback_publish(p) and not p.routed]
    local = [p for p in ports if is_loopback_publish(p) and not p.routed]
    if remote:
        chains["nat_pre"].add("fib daddr type local jump published", "published ports, arriving for a local address")
        chains["nat_out"].add("fib daddr type local jump published", "published ports, from the host itself")
    if local:
        chains["nat_out"].add("fib daddr type local jump published_lo",
                              "ports published on loopback, only from the host itself")
    for chain, maps in (("published", remote), ("published_lo", local)):
        for p in sorted(maps, key=_port_order):
            chains[chain].add(_dnat(p), describe_port(p))


def _dnat(p: PortMap) -> str:
    """The DNAT rule of one published port (without its comment)."""
    fam = "ip6" if p.family == 6 else "ip"
    nfproto = "ipv6" if p.family == 6 else "ipv4"
    match = f"meta nfproto {nfproto} "
    if p.host_ip is not None:
        match += f"{fam} daddr {p.host_ip} "
    elif p.family == 6:
        # [::1] never leaves the host: a DNAT of the host's own [::1] would be a black hole.
        match += "ip6 daddr != ::1 "
    match += f"{p.protocol} dport {p.host_port} "
    if len(p.targets) == 1:
        return match + f"dnat {fam} to {_fmt_target(p.targets[0], p.target_port)}"
    # Replicas share one published port: spread new connections round-robin.
    elems = ", ".join(f"{i} : {t} . {p.target_port}" for i, t in enumerate(p.targets))
    return match + f"dnat {fam} to numgen inc mod {len(p.targets)} map {{ {elems} }}"


def _masquerade(nat_post: Chain, nets: list[NetRules]) -> None:
    """Per network: egress, hairpin and loopback (127.0.0.1 published ports) masquerade."""
    for n in sorted(nets, key=lambda n: n.bridge):
        br = quote(n.bridge)
        for cidr in n.subnets:
            fam = _ipfam(cidr.split("/")[0])
            if n.masquerade and not n.internal and n.mode(fam) in ("nat", "nat-unprotected"):
                nat_post.add(f"{fam} saddr {cidr} oifname != {br} masquerade",
                             f"masquerade {n.network} {cidr} egress")
        for cidr in n.subnets:
            # Matched on the source subnet, not on iifname: with br_netfilter loaded a DNATed
            # frame that goes back out of its own bridge is bridged, and br_netfilter runs
            # postrouting with no input device, so an iifname match would never hit.
            fam = _ipfam(cidr.split("/")[0])
            nat_post.add(f"oifname {br} {fam} saddr {cidr} ct status dnat masquerade",
                         f"hairpin {n.network} {cidr}: published port of the same network")
        nat_post.add(f"oifname {br} ip saddr 127.0.0.0/8 masquerade",
                     f"loopback {n.network}: 127.0.0.1 published ports")


def _allowlists(fwd: Chain, ports: list[PortMap]) -> None:
    """Per published port with a source allowlist: after its DNAT, a forwarded packet from any
    other source is dropped (matched on the conntrack original destination port, so two host
    ports of one container port keep their own lists). Sources of the other family than the
    map's have no entry: all of them are dropped. Packets the host itself sends are not
    forwarded: the host is never filtered (nor is a port on 127.0.0.1)."""
    for p in sorted(ports, key=_port_order):
        if not p.allow or is_loopback_publish(p) or p.routed:
            continue
        fam = "ip6" if p.family == 6 else "ip"
        mine = [c for c in p.allow if _ipfam(c.split("/")[0]) == fam]
        dst = ", ".join(sorted(set(p.targets)))
        rule = (f"ct status dnat {fam} daddr {{ {dst} }} meta l4proto {p.protocol} th dport {p.target_port} "
                f"ct original proto-dst {p.host_port}")
        if p.host_ip is not None:
            rule += f" ct original {fam} daddr {p.host_ip}"
        rule += f" {fam} saddr != {{ {', '.join(mine)} }} drop" if mine else " drop"
        fwd.add(rule, f"allow {describe_port(p).split(' -> ')[0][5:]} from {','.join(mine) or 'no source of this family'}")


def _isolation(chains: dict[str, Chain], nets: list[NetRules], ports: list[PortMap] | None = None) -> None:
    """Forwarding between and into networks, and who may ask each network's resolver."""
    fwd = chains["filter_fwd"]
    _allowlists(fwd, ports or [])
    fwd.add("ct status dnat accept", "published ports (DNAT) pass isolation")
    bridges = sorted(n.bridge for n in nets)
    for n in sorted(nets, key=lambda n: n.bridge):
        br = quote(n.bridge)
        if n.internal:
            fwd.add(f"iifname {br} oifname != {br} drop", f"internal {n.network}: no egress")
            fwd.add(f"oifname {br} iifname != {br} drop", f"internal {n.network}: no ingress")
        others = [b for b in bridges if b != n.bridge and not b.startswith("cnb-")]
        if others:
            fwd.add(f"iifname {br} oifname {{ {', '.join(quote(b) for b in others)} }} drop",
                    f"isolate {n.network} from the project's other networks")
        fwd.add(f'iifname {br} oifname "cnb-*" oifname != {br} drop',
                f"isolate {n.network} from other composenet networks")
        _inbound(fwd, n, [p for p in ports or () if p.routed and p.bridge == n.bridge])
        if n.resolver:
            for gw in n.gateways:
                fam = _ipfam(gw)
                chains["filter_in"].add(
                    f'{fam} daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 iifname != {{ {br}, "lo" }} drop',
                    f"resolver {n.network} {gw}: only its own network")


def _inbound(fwd: Chain, n: NetRules, routed: list[PortMap]) -> None:
    """New connections into network ``n`` from outside it: routed ports accepted at the
    container's own address (from their allowlist's sources only, when they have one), then
    none for the families in nat, routed or isolated mode; nat-unprotected lets every one in."""
    br = quote(n.bridge)
    for p in sorted(routed, key=_port_order):
        fam = "ip6" if p.family == 6 else "ip"
        mine = [c for c in p.allow if _ipfam(c.split("/")[0]) == fam]
        if p.allow and not mine:
            continue  # no source of this family may reach it: the drop below does
        src = f" {fam} saddr {{ {', '.join(mine)} }}" if mine else ""
        dst = ", ".join(sorted(set(p.targets)))
        fwd.add(f"oifname {br} iifname != {br}{src} {fam} daddr {{ {dst} }} meta l4proto {p.protocol} "
                f"th dport {p.target_port} ct state new accept",
                f"routed {p.service} {','.join(sorted(set(p.targets)))} {p.target_port}/{p.protocol}: published, no NAT")
    if n.trusted and not n.internal:
        fwd.add(f"oifname {br} iifname {{ {', '.join(quote(i) for i in n.trusted)} }} accept",
                f"{n.network}: trusted host interfaces {':'.join(n.trusted)} reach the containers directly")
    fams = {_ipfam(c.split("/")[0]) for c in n.subnets}
    open4 = n.mode4 == "nat-unprotected" or "ip" not in fams
    open6 = n.mode6 == "nat-unprotected" or "ip6" not in fams
    if open4 and open6 and fams:
        return
    if "ip" not in fams or "ip6" not in fams:
        open4 = open6 = False  # one family only (or none): the plain rule (as before gateway modes)
    only = " meta nfproto ipv6" if open4 else " meta nfproto ipv4" if open6 else ""
    fwd.add(f"oifname {br} iifname != {br}{only} ct state new drop",
            f"{n.network}: no new connections from outside but published ports"
            + (" (ipv6)" if open4 else " (ipv4)" if open6 else ""))


def text(table: str, family: str, chains: dict[str, Chain], head: list[str] | None = None,
         head_idents: list[str] | None = None) -> tuple[str, tuple[str, ...]]:
    """The table declared, deleted and re-created in one file (one atomic ``nft -f``). ``head``
    are declarations (sets, counters) written before the chains, ``head_idents`` their
    identities (which nft.identities() lists after the chains')."""
    lines = [f"table {family} {table}", f"delete table {family} {table}", f"table {family} {table} {{"]
    lines += [f"\t{x}" for x in head or ()]
    idents: list[str] = []
    for name in sorted(chains):
        c = chains[name]
        lines.append(f"\tchain {name} {{")
        if c.base:
            typ, hook, prio, policy = c.base.split()
            lines.append(f"\t\ttype {typ} hook {hook} priority {prio}; policy {policy};")
            idents.append(f"chain {name} {typ} {hook} {prio} {policy}")
        else:
            idents.append(f"chain {name}")
        for rule, comment in c.rules:
            lines.append(f'\t\t{rule} comment "{comment}"')
            idents.append(f"{name}: {comment}")
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n", tuple(idents + list(head_idents or ()))
