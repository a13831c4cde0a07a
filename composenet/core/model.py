"""The normalised Compose project: frozen dataclasses for the subset composenet interprets.

Owns: the data shape between the loader (``compose.project.load_project``) and the
planner (``core.desired``). Pure: no I/O, no kernel access. Must not: parse raw values or
decide anything (the loader builds it, the planner reads it).

Everything here is already validated and normalised: short and long syntaxes are folded
into one form, port ranges are expanded one entry per port, defaults are filled in. The
planner never looks at raw YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pos:
    """Where a key or value was written: FILE:LINE:COL (1-based), and its key path."""

    file: str
    line: int
    col: int
    path: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class IpamConfig:
    """One ``ipam.config`` block (CS-NET-17). Values are canonical text (``ipaddress`` str)."""

    subnet: str | None = None
    ip_range: str | None = None
    gateway: str | None = None
    aux_addresses: tuple[tuple[str, str], ...] = ()  # (hostname, ip), sorted by hostname
    pos: Pos | None = field(default=None, compare=False)  # where the subnet is written


@dataclass(frozen=True)
class Network:
    """A top-level network (after the implicit ``default`` was added where used, CS-NET-06)."""

    key: str  # compose key, e.g. "frontend", "default"
    name: str  # platform name: `name:` or "<project>_<key>" (CS-NAME-07/08)
    driver: str = "bridge"  # bridge | host | none | macvlan | ipvlan | overlay
    driver_opts: tuple[tuple[str, str], ...] = ()  # sorted; values as strings
    internal: bool = False
    attachable: bool = False
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    external: bool = False
    ipam_driver: str | None = None
    ipam: tuple[IpamConfig, ...] = ()
    ipam_options: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # sorted
    pos: Pos | None = None
    driver_pos: Pos | None = field(default=None, compare=False)  # where `driver:` is written

    def opt(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.driver_opts:
            if k == name:
                return v
        return default


@dataclass(frozen=True)
class Attachment:
    """A service's attachment to one network (service-level ``networks``, CS-SNET-*)."""

    network: str  # compose key of the network
    aliases: tuple[str, ...] = ()  # de-duplicated, in file order
    ipv4_address: str | None = None
    ipv6_address: str | None = None
    link_local_ips: tuple[str, ...] = ()
    mac_address: str | None = None
    priority: int = 0
    gw_priority: int = 0
    interface_name: str | None = None
    driver_opts: tuple[tuple[str, str], ...] = ()
    pos: Pos | None = None


@dataclass(frozen=True)
class Port:
    """One published port. Short-syntax ranges are expanded: one Port per container port.

    ``published`` is None for an ephemeral host port, "8080" for one port, or "8000-9000" when
    a host range maps to a single container port (CS-PORT-05: one free port of the range).
    """

    target: int
    published: str | None = None
    host_ip: str | None = None  # None = all addresses (CS-PORT-02); canonical, no brackets
    protocol: str = "tcp"  # tcp | udp | sctp
    mode: str = "ingress"
    app_protocol: str | None = None
    name: str | None = None
    pos: Pos | None = None
    # ``x-composenet-allow``: the only sources (canonical CIDRs) that may reach this port; None
    # when the port does not say (then the service's, then the network's list applies).
    allow: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Service:
    name: str
    # Attachments in the order the interfaces are created: eth0 first. That is the order
    # written in the file, stably sorted by `priority`, highest first (CS-SNET-12).
    networks: tuple[Attachment, ...] = ()
    network_mode: str | None = None  # None | "none" | "host" | "service:NAME" | "container:NAME"
    ports: tuple[Port, ...] = ()
    expose: tuple[str, ...] = ()  # "80", "8000-8010/udp", as written
    links: tuple[tuple[str, str], ...] = ()  # (service, alias); alias = service when not given
    external_links: tuple[tuple[str, str], ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_opt: tuple[str, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (hostname, ip) in file order; one per ip
    hostname: str | None = None
    domainname: str | None = None
    mac_address: str | None = None
    container_name: str | None = None
    replicas: int = 1  # deploy.replicas / scale (CS-REP-01)
    # Process. `command`/`entrypoint` strings are split shell-style (as Compose does).
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: tuple[tuple[str, str], ...] = ()  # env_file values, then `environment`; unset vars dropped
    working_dir: str | None = None
    user: str | None = None
    stop_grace_period: float = 10.0  # seconds
    restart: str = "no"  # "no" | always | on-failure[:N] | unless-stopped (CS-RESTART-01)
    cap_add: tuple[str, ...] = ()  # canonical capability names (NET_ADMIN) or ALL, sorted
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    depends_on: tuple[str, ...] = ()  # services, including implicit ones (links, service:X)
    pos: Pos | None = None
    publish_allow: tuple[str, ...] | None = None  # the service's ``x-composenet-allow`` (all its ports)

    @property
    def argv(self) -> tuple[str, ...] | None:
        """The process to run: entrypoint + command, or None when the service has neither."""
        if self.entrypoint:
            return self.entrypoint + (self.command or ())
        return self.command or None


@dataclass(frozen=True)
class Project:
    name: str
    working_dir: str
    files: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()  # sorted by key
    services: tuple[Service, ...] = ()  # sorted by name; only those enabled by profiles
    ignored: tuple[str, ...] = ()  # key paths composenet accepts but does not interpret
    warnings: tuple[str, ...] = ()  # non-fatal findings, "FILE:LINE:COL: path: message"
    # The normalised document (what `composenet config` prints), JSON-compatible.
    document: dict = field(default_factory=dict, compare=False, hash=False)
    # `up --publish-localhost-only` / COMPOSENET_PUBLISH_LOCALHOST_ONLY=1: every port without an
    # explicit host_ip is published on 127.0.0.1 only.
    publish_localhost_only: bool = False

    def network(self, key: str) -> Network:
        for n in self.networks:
            if n.key == key:
                return n
        raise KeyError(key)

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)
