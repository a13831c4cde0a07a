"""Resources of what runs and what it reads: /etc/netns files, the resolver, the records of names
on other projects' networks, and service processes. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from composenet.core.resources.base import Resource


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

    def privileges(self) -> str:
        """What the process runs with beyond its command, for `plan` and `ps` ("" = nothing to say)."""
        return ""

    def deps(self) -> tuple[str, ...]:
        own = (f"netns:{self.ns}",) if self.ns else ()
        return own + tuple(f"process:{c}" for c in self.after)
