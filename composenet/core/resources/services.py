"""Resources of what runs and what it reads: /etc/netns files, the resolver, the records of names
on other projects' networks, the project's supervisor and service processes. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from composenet.core.resources.base import Resource
from composenet.linux import capnames


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
class Supervisor(Resource):
    """The project's supervisor (composenet.supervisor): the process that runs the service
    commands (restart policies, exit codes) and holds the project's published host ports, as
    bound sockets, for the project's lifetime. ``ports``: ``proto/address/port`` of each socket
    it holds (in ``held_order``)."""

    kind: ClassVar[str] = "supervisor"
    rank: ClassVar[int] = 85  # after the nft table (a port is DNATed before it is held), before processes
    project: str
    ports: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"supervisor:{self.project}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("project",)

    def describe(self) -> str:
        held = [_port_text(p) for p in self.ports]
        return f"supervisor of project {self.project}" + (f": holds {', '.join(held)}" if held else "")


def held_order(specs: Iterable[str]) -> tuple[str, ...]:
    """``proto/address/port`` specs in the order a Supervisor keeps them: by port, protocol,
    then address (IPv4 first)."""
    def key(spec: str) -> tuple[int, str, bool, str]:
        proto, _, rest = spec.partition("/")
        addr, _, port = rest.rpartition("/")
        return (int(port) if port.isdigit() else -1, proto, ":" in addr, addr)
    return tuple(sorted(set(specs), key=key))


def _port_text(spec: str) -> str:
    """``tcp/::/8080`` -> ``[::]:8080/tcp``."""
    proto, _, rest = spec.partition("/")
    addr, _, port = rest.rpartition("/")
    return f"{f'[{addr}]' if ':' in addr else addr}:{port}/{proto}"


@dataclass(frozen=True)
class Process(Resource):
    """A service's command, run as a host process inside namespace ``ns`` (own UTS namespace
    with ``hostname``; /etc/netns/<ns> files bind-mounted over /etc) by the project's supervisor,
    logs under the runtime directory. ``after`` lists the containers it starts after (depends_on,
    links, service:). ``restart``: its restart policy (composenet.supervisor.policy);
    ``user``, ``cap_add``, ``cap_drop``, ``privileged``: what it runs with (composenet.linux.caps);
    ``where``: the service's place in the compose file, for messages."""

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
    restart: str = "no"
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    project: str = ""
    where: str = ""

    @property
    def key(self) -> str:
        return f"process:{self.container}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("container",)

    def carried(self) -> tuple[str, ...]:
        return ("service", "after", "project", "where")

    def privileges(self) -> str:
        """What the process runs with beyond its command, for `plan` and `ps`: its user and
        capabilities (composenet.linux.caps), and its restart policy when it has one."""
        text = capnames.describe(self.user, self.cap_add, self.cap_drop, self.privileged)
        return text + (f"; restart {self.restart}" if self.restart != "no" else "")

    def deps(self) -> tuple[str, ...]:
        own = (f"netns:{self.ns}",) if self.ns else ()
        sup = (f"supervisor:{self.project}",) if self.project else ()
        return own + sup + tuple(f"process:{c}" for c in self.after)
