"""Kernel resources composenet manages: one frozen dataclass per kind, a stable key, compared attributes.

Owns: the vocabulary shared by ``desired`` (what the file wants), ``observe`` (what the kernel
has, read back into the very same classes) and ``apply`` (how to create, update, delete each).
Pure: no I/O. Must not: know how a resource is created or read back (composenet.kernel does).

Conventions
- ``ns`` is a namespace name under /run/netns, or "" for the namespace composenet itself runs
  in (the "host" namespace; in tests a sandbox namespace entered with ``nsenter --net``).
- ``key`` is unique across kinds and stable: it never contains pids, ifindexes or timestamps.
- ``compared()`` lists the attributes the diff compares. Fields not in it are identity (part of
  the key) or carried only for apply (e.g. the full ruleset text, whose rules are compared by
  their identity comments instead).
- Ownership labels: links carry ``ifalias`` = ``label`` (``composenet:<project>/...``); the nft
  table is named after the project and every rule has a ``cn:`` comment; namespaces, files,
  resolver and processes live under the project's runtime directory.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

LABEL_PREFIX = "composenet:"
ROUTE_PROTO = 0x7C  # rtm_protocol of every route composenet adds (124, unused by iproute2's table)


def short_hash(*parts: str, n: int = 8) -> str:
    """Deterministic hex digest of the parts, for derived interface names."""
    h = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return h[:n]


def bridge_ifname(project: str, network: str) -> str:
    """Bridge name: ``cnb-`` + 8 hex of (project, network): 12 bytes, within IFNAMSIZ (15)."""
    return "cnb-" + short_hash(project, network)


def vxlan_ifname(project: str, network: str) -> str:
    """VXLAN link of an overlay network: ``cnx-`` + the same 8 hex as its bridge: 12 bytes."""
    return "cnx-" + short_hash(project, network)


VXLAN_LABEL_SUFFIX = "/vxlan"  # ifalias of a vxlan link: composenet:<project>/<network>/vxlan


def veth_ifname(project: str, container: str, network: str) -> str:
    """Host end of a container's veth: ``cnv-`` + 10 hex: 14 bytes."""
    return "cnv-" + short_hash(project, container, network, n=10)


def nft_table_name(project: str) -> str:
    """One inet table per project. nft identifiers allow [A-Za-z0-9_], so '-' and '.' become '_',
    and a short hash keeps "a-b" and "a_b" apart."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in project)
    if safe != project:
        safe += "_" + short_hash(project, n=4)
    return "composenet_" + safe


@dataclass(frozen=True)
class Resource:
    kind: ClassVar[str] = "resource"
    rank: ClassVar[int] = 50  # creation order between kinds; deletes run in reverse

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def ident(self) -> tuple[str, ...]:
        """Fields that make up the key (not compared: a different value is another resource)."""
        return ()

    def compared(self) -> dict[str, Any]:
        skip = set(self.ident) | set(self.carried())
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def carried(self) -> tuple[str, ...]:
        """Fields apply needs but the diff does not compare."""
        return ()

    def deps(self) -> tuple[str, ...]:
        """Keys of resources that must exist before this one is created."""
        return ()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
        return {"kind": self.kind, **d}


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


@dataclass(frozen=True)
class NftTable(Resource):
    """The project's whole nftables table, replaced in one atomic transaction.

    ``rules`` is what the diff compares: one entry per chain (``chain <name> <hook spec>``) and
    per rule (``<chain>: <comment>``); every rule's comment states what it does completely
    (``cn:dnat web-1 0.0.0.0:8080/tcp -> 172.18.0.2:80``), so a changed target is a changed
    rule. ``ruleset`` is the nft text that creates the table."""

    kind: ClassVar[str] = "nft"
    rank: ClassVar[int] = 60
    family: str
    name: str
    rules: tuple[str, ...] = ()
    ruleset: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return f"nft:{self.family} {self.name}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("family", "name")

    def carried(self) -> tuple[str, ...]:
        return ("ruleset",)


@dataclass(frozen=True)
class NetnsFile(Resource):
    """/etc/netns/<ns>/<name> (resolv.conf, hosts): what `ip netns exec`, `composenet exec` and
    the service's process see as /etc/<name>."""

    kind: ClassVar[str] = "file"
    rank: ClassVar[int] = 70
    ns: str
    name: str
    content: str

    @property
    def key(self) -> str:
        return f"file:{self.ns}/{self.name}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("ns", "name")

    def deps(self) -> tuple[str, ...]:
        return (f"netns:{self.ns}",)


@dataclass(frozen=True)
class Resolver(Resource):
    """The project's DNS daemon (one process, one listener per network). ``config`` is the JSON
    text it reads (composenet.dns.server); a changed config is reloaded in place (SIGHUP)."""

    kind: ClassVar[str] = "resolver"
    rank: ClassVar[int] = 80
    project: str
    listeners: tuple[str, ...]  # "network=address" for display
    config: str = field(default="", compare=False)
    digest: str = ""  # sha256 of config: what the diff compares

    @property
    def key(self) -> str:
        return f"resolver:{self.project}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("project",)

    def carried(self) -> tuple[str, ...]:
        return ("config",)


def resolver_listeners(cfg: dict) -> tuple[str, ...]:
    """The listeners of a resolver config (dns.json) as the Resolver resource shows them:
    ``network=address`` for one on a bridge gateway, ``network=address@namespace`` for one inside
    a container's namespace (a container on a macvlan network). Raises KeyError/TypeError on a
    damaged config."""
    out = [f"{li['network']}={li['address']}" for li in cfg.get("listeners", ())]
    out += [f"{li['network']}={li.get('address', '127.0.0.11')}@{li['netns']}" for li in cfg.get("namespaces", ())]
    return tuple(out)


@dataclass(frozen=True)
class DnsRecords(Resource):
    """The project's endpoints on networks it does not own (``external: true``, `network
    connect`), published for the resolvers that serve those networks (composenet.dns.peers):
    ``<project dir>/dns-peers.json``. ``records`` is its JSON text without the host namespace
    identity, which the handler adds."""

    kind: ClassVar[str] = "dnsrecords"
    rank: ClassVar[int] = 80
    project: str
    networks: tuple[str, ...]  # for display
    records: str = field(default="", compare=False)
    digest: str = ""  # sha256 of records: what the diff compares
    namespaces: tuple[str, ...] = field(default=(), compare=False)  # of the containers recorded

    @property
    def key(self) -> str:
        return f"dnsrecords:{self.project}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("project",)

    def carried(self) -> tuple[str, ...]:
        return ("records", "namespaces")

    def deps(self) -> tuple[str, ...]:
        return tuple(f"netns:{ns}" for ns in self.namespaces)


@dataclass(frozen=True)
class Process(Resource):
    """A service's command, run as a host process inside namespace ``ns`` (own UTS namespace
    with ``hostname``; /etc/netns/<ns> files bind-mounted over /etc), logs under the runtime
    directory. ``after`` lists the containers it starts after (depends_on, links, service:)."""

    kind: ClassVar[str] = "process"
    rank: ClassVar[int] = 90
    container: str
    service: str
    ns: str  # namespace to join; "" = the host namespace (network_mode: host)
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    user: str | None = None
    hostname: str | None = None
    stop_grace_period: float = 10.0
    after: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"process:{self.container}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("container",)

    def carried(self) -> tuple[str, ...]:
        return ("service", "after")

    def deps(self) -> tuple[str, ...]:
        own = (f"netns:{self.ns}",) if self.ns else ()
        return own + tuple(f"process:{c}" for c in self.after)


KINDS: dict[str, type[Resource]] = {
    c.kind: c for c in (Sysctl, Netns, Bridge, Vxlan, Veth, Macvlan, Address, Route, NftTable, NetnsFile, Resolver, DnsRecords,
                         Process)
}


def resource_from_json(d: dict[str, Any]) -> Resource:
    cls = KINDS[d["kind"]]
    kwargs = {}
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            if isinstance(v, list):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kwargs[f.name] = v
    return cls(**kwargs)
