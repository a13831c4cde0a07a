"""Resources of the network itself: namespaces, links (bridges, VXLAN ports, veths, macvlans),
addresses, routes and sysctls. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from composenet.core.resources.base import Resource


@dataclass(frozen=True)
class Sysctl(Resource):
    """A sysctl composenet needs, e.g. ``net.ipv4.ip_forward`` = 1 in the host namespace, or
    ``net.ipv4.conf.<bridge>.route_localnet`` = 1. Ensured, never reverted: it is not deleted
    by ``down`` (other software may rely on it), which the plan says."""

    kind: ClassVar[str] = "sysctl"
    rank: ClassVar[int] = 40
    ns: str
    name: str
    value: str
    ifname: str | None = None  # the link it belongs to, when per-interface

    @property
    def key(self) -> str:
        return f"sysctl:{self.ns or '-'}:{self.name}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("ns", "name", "ifname")

    def deps(self) -> tuple[str, ...]:
        out = []
        if self.ns:
            out.append(f"netns:{self.ns}")
        if self.ifname:
            out.append(f"link:{self.ns or '-'}:{self.ifname}")
        return tuple(out)


@dataclass(frozen=True)
class Netns(Resource):
    """A network namespace at /run/netns/<name> (the container name), with lo up."""

    kind: ClassVar[str] = "netns"
    rank: ClassVar[int] = 10
    name: str
    project: str = ""
    service: str = ""

    @property
    def key(self) -> str:
        return f"netns:{self.name}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("name",)

    def carried(self) -> tuple[str, ...]:
        return ("project", "service")


@dataclass(frozen=True)
class Bridge(Resource):
    """A Linux bridge for one network, in the host namespace. ``label`` goes to ifalias."""

    kind: ClassVar[str] = "bridge"
    rank: ClassVar[int] = 20
    ifname: str
    label: str  # composenet:<project>/<network name>
    network: str  # network name as users see it (<project>_<key>)
    mtu: int = 1500
    mac: str | None = None

    @property
    def key(self) -> str:
        return f"link:-:{self.ifname}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("ifname",)

    def carried(self) -> tuple[str, ...]:
        return ("network",)


@dataclass(frozen=True)
class Vxlan(Resource):
    """The VXLAN link of an overlay network with static peers, in the host namespace, enslaved to
    ``bridge``: VNI ``vni`` on UDP ``port``, source address ``local`` (None: chosen by route),
    learning on, and one all-zero-MAC flood entry in its FDB per peer (unknown unicast,
    broadcast and multicast go to every peer; learned entries do the rest). ``label`` goes to
    ifalias (``composenet:<project>/<network>/vxlan``)."""

    kind: ClassVar[str] = "vxlan"
    rank: ClassVar[int] = 25  # after the bridge, before the veths
    ifname: str
    label: str
    network: str
    bridge: str
    vni: int
    port: int = 4789
    local: str | None = None
    peers: tuple[str, ...] = ()  # sorted underlay addresses
    mtu: int = 1450
    # A cluster network's device: learning off, ARP proxy on, no peers (composenet.cluster's
    # agent owns its FDB and neighbours); see core.desired.cluster.
    learning: bool = True
    proxy: bool = False

    def describe(self) -> str | None:
        if self.learning:
            return None  # a static-peer device: render.describe's line
        local = f"  local {self.local}" if self.local else ""
        return (f"vxlan    {self.ifname}  vni {self.vni} port {self.port}{local}  bridge {self.bridge}  mtu {self.mtu}"
                f"  cluster (learning off, arp proxy; FDB by the cluster agent)")

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        if self.learning and not self.proxy:  # a static-peer device: as before cluster mode existed
            del d["learning"], d["proxy"]
        return d

    @property
    def key(self) -> str:
        return f"link:-:{self.ifname}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("ifname",)

    def carried(self) -> tuple[str, ...]:
        return ("network",)

    def deps(self) -> tuple[str, ...]:
        return (f"link:-:{self.bridge}",)


@dataclass(frozen=True)
class Veth(Resource):
    """A veth pair: ``ifname`` in the host namespace enslaved to ``bridge``; its peer named
    ``peer`` (eth0, eth1, ...) inside namespace ``ns``, with MAC ``mac``. Bridge port flags:
    hairpin (published-port hairpin) and isolated (ICC off)."""

    kind: ClassVar[str] = "veth"
    rank: ClassVar[int] = 30
    ifname: str
    label: str  # composenet:<project>/<container>/<network name>
    ns: str
    peer: str
    bridge: str
    mtu: int = 1500
    mac: str | None = None
    hairpin: bool = True
    isolated: bool = False

    @property
    def key(self) -> str:
        return f"link:-:{self.ifname}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("ifname",)

    def deps(self) -> tuple[str, ...]:
        return (f"netns:{self.ns}", f"link:-:{self.bridge}")


@dataclass(frozen=True)
class Macvlan(Resource):
    """A macvlan link on ``parent`` (host namespace), moved into ``ns`` as ``ifname``."""

    kind: ClassVar[str] = "macvlan"
    rank: ClassVar[int] = 30
    ns: str
    ifname: str
    label: str
    parent: str
    mode: str = "bridge"
    mtu: int = 1500
    mac: str | None = None

    @property
    def key(self) -> str:
        return f"link:{self.ns}:{self.ifname}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("ns", "ifname")

    def deps(self) -> tuple[str, ...]:
        return (f"netns:{self.ns}",)


@dataclass(frozen=True)
class Ipvlan(Resource):
    """An ipvlan link on ``parent`` (host namespace), moved into ``ns`` as ``ifname``; ``mode``
    l2 | l3 | l3s, ``flag`` bridge | private | vepa. It shares the parent's MAC address."""

    kind: ClassVar[str] = "ipvlan"
    rank: ClassVar[int] = 30
    ns: str
    ifname: str
    label: str
    parent: str
    mode: str = "l2"
    flag: str = "bridge"
    mtu: int = 1500

    @property
    def key(self) -> str:
        return f"link:{self.ns}:{self.ifname}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("ns", "ifname")

    def deps(self) -> tuple[str, ...]:
        return (f"netns:{self.ns}",)


@dataclass(frozen=True)
class Address(Resource):
    """An address (CIDR) on link ``ifname`` in namespace ``ns``. Link-local IPv6 addresses the
    kernel adds are not resources (normalised away by observe)."""

    kind: ClassVar[str] = "address"
    rank: ClassVar[int] = 35
    ns: str
    ifname: str
    cidr: str

    @property
    def key(self) -> str:
        return f"addr:{self.ns or '-'}:{self.ifname}:{self.cidr}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("ns", "ifname", "cidr")

    def deps(self) -> tuple[str, ...]:
        return (f"link:{self.ns or '-'}:{self.ifname}",) + ((f"netns:{self.ns}",) if self.ns else ())


@dataclass(frozen=True)
class Route(Resource):
    """A route in namespace ``ns`` (composenet adds only default routes in containers), with
    protocol ROUTE_PROTO as its ownership mark."""

    kind: ClassVar[str] = "route"
    rank: ClassVar[int] = 38
    ns: str
    dst: str  # a CIDR; default routes are "0.0.0.0/0" and "::/0"
    gateway: str | None
    ifname: str
    metric: int = 0

    @property
    def key(self) -> str:
        return f"route:{self.ns or '-'}:{self.dst}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("ns", "dst")

    def deps(self) -> tuple[str, ...]:
        return (f"link:{self.ns or '-'}:{self.ifname}",)
