"""Names: each container's /etc/resolv.conf and /etc/hosts, the project's resolver config, and
the records of its endpoints on other projects' networks. Pure; no I/O.

Owns: which resolver a container asks (its project's, on the gateway of its first network the
project owns; the owner's on an external network; 127.0.0.11 in its own namespace when it is on
one of the project's macvlan networks; else the upstreams), the search domains and options;
the hosts file (Docker's header, the container's addresses, ``extra_hosts``); the resolver's
listeners and the names it serves (composenet/dns reads this config); the ``dnsrecords`` that
other projects' resolvers merge (composenet/dns/peers.py). Also the host's resolv.conf as read
(``Upstreams``).

Must not: choose addresses (containers.py) or serve names (that is composenet/dns, a process).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from composenet.core.desired.common import json_text
from composenet.core.desired.containers import Container, Endpoint
from composenet.core.desired.networks import NetPlan
from composenet.core.resources import DnsRecords, NetnsFile, Resolver, resolver_listeners
from composenet.core.state import DesiredState
from composenet.paths import ProjectPaths

NETNS_DNS_ADDRESS = "127.0.0.11"  # the resolver inside a macvlan container's namespace (Docker's)
LOCAL_TTL = 5  # seconds; short so that scaling and restarts show quickly (Docker uses 600)

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


@dataclass(frozen=True)
class Upstreams:
    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    text: str = ""  # the host's resolv.conf text, for network_mode none (Docker copies it)


def parse_resolv_conf(text: str) -> Upstreams:
    servers, search, options = [], [], []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            servers.append(parts[1])
        elif parts[0] in ("search", "domain"):
            search = parts[1:]
        elif parts[0] == "options":
            options += parts[1:]
    return Upstreams(tuple(servers), tuple(search), tuple(options), text)


def resolver_networks(bridges: list[NetPlan]) -> list[NetPlan]:
    """The networks the project's resolver listens on: every bridge it owns with an IPv4 gateway,
    for its own containers and those of other projects that attach to it (external: true,
    network connect; dns/peers.py)."""
    return [np for np in bridges if np.gateway4]


def add_dns(d: DesiredState, project: str, containers: list[Container], resolver_nets: list[NetPlan],
            upstreams: Upstreams, run_dir: str) -> None:
    """resolv.conf and hosts of every namespace the project owns, then the resolver (when it has
    a listener), then the records of endpoints on other projects' networks (when there are)."""
    listeners = [
        {"network": np.net.name, "address": np.gateway4, "port": 53, "internal": np.net.internal}
        for np in sorted(resolver_nets, key=lambda n: n.net.name)
    ]
    ns_listeners = _netns_listeners(containers, resolver_nets)
    in_ns = {li["container"] for li in ns_listeners}
    for c in containers:
        if not c.own_ns:
            continue
        d.add(NetnsFile(c.name, "resolv.conf", _resolv_conf(c, resolver_nets, c.name in in_ns, upstreams)))
        d.add(NetnsFile(c.name, "hosts", _hosts(c)))
    if listeners or ns_listeners:
        d.add(_resolver(project, listeners, ns_listeners, containers, upstreams, run_dir))
    records = _peer_records(project, containers, upstreams)
    if records is not None:
        d.add(records)


def _netns_listeners(containers: list[Container], resolver_nets: list[NetPlan]) -> list[dict[str, Any]]:
    """A container on one of the project's macvlan or ipvlan networks cannot reach the bridge
    gateways (such a link never talks to its parent's host), nor can one whose bridges have no IPv4
    gateway (gateway mode isolated, IPv6-only) and that is on no resolver network: the resolver
    listens inside its namespace on 127.0.0.11, as Docker's embedded DNS, and answers it with
    that container's view."""
    out = []
    for c in containers:
        if not c.own_ns or c.service.network_mode == "none":
            continue
        mv = next((ep for ep in c.endpoints if ep.network.kind in ("macvlan", "ipvlan")
                   and not ep.network.net.external), None)
        if mv is None and not any(ep.network in resolver_nets for ep in c.endpoints):
            mv = next((ep for ep in c.endpoints if ep.network.kind == "bridge" and not ep.network.gateway4), None)
        if mv is not None:
            out.append({"netns": c.ns, "container": c.name, "network": mv.network.net.name})
    return out


def _resolv_conf(c: Container, resolver_nets: list[NetPlan], in_ns: bool, upstreams: Upstreams) -> str:
    svc = c.service
    if svc.network_mode == "none" or not c.endpoints:
        return upstreams.text if upstreams.text else "".join(f"nameserver {s}\n" for s in upstreams.servers)
    # The project's own resolver first; else the resolver of the first external network
    # (its owner's, which answers for every project's containers on it).
    first = next((ep for ep in c.endpoints if ep.network in resolver_nets), None) or next(
        (ep for ep in c.endpoints if ep.network.kind == "external" and ep.network.bridge
         and ep.network.gateway4 and ep.ipv4), None)
    lines = []
    if in_ns:
        lines.append(f"nameserver {NETNS_DNS_ADDRESS}")
    elif first is not None:
        lines.append(f"nameserver {first.network.gateway4}")
    else:
        lines += [f"nameserver {s}" for s in (svc.dns or upstreams.servers)]
    domains = svc.dns_search or upstreams.search
    if domains:
        lines.append("search " + " ".join(domains))
    opts = ["ndots:0"] + [o for o in svc.dns_opt if not o.startswith("ndots:")]
    if any(o.startswith("ndots:") for o in svc.dns_opt):
        opts = list(svc.dns_opt)
    lines.append("options " + " ".join(opts))
    return "\n".join(lines) + "\n"


def _hosts(c: Container) -> str:
    svc = c.service
    hosts = HOSTS_HEADER
    host_names = c.hostname if not svc.domainname else f"{c.hostname}.{svc.domainname}\t{c.hostname}"
    for ep in c.endpoints:
        for addr in (ep.ipv4, ep.ipv6):
            if addr:
                hosts += f"{addr}\t{host_names}\n"
    for host, ip in svc.extra_hosts:
        hosts += f"{ip}\t{host}\n"
    return hosts


def _container_record(c: Container, endpoints: list[Endpoint], register: bool,
                      upstreams: Upstreams) -> dict[str, Any]:
    """What a resolver knows of one container: its names (``register``: under its own name and
    hostname too), where it forwards other names, its links and its endpoints' addresses."""
    return {
        "name": c.name,
        "service": c.service.name,
        "hostname": c.service.hostname,
        "register": register,
        "upstreams": list(c.service.dns) or list(upstreams.servers),
        "links": [[alias, target] for target, alias in c.service.links],
        "endpoints": [
            {"network": ep.network.net.name, "ipv4": ep.ipv4, "ipv6": ep.ipv6,
             "aliases": list(ep.aliases), "internal": ep.network.net.internal}
            for ep in endpoints
        ],
    }


def _resolver(project: str, listeners: list[dict[str, Any]], ns_listeners: list[dict[str, Any]],
              containers: list[Container], upstreams: Upstreams, run_dir: str) -> Resolver:
    """The project's resolver: its config text (what composenet/dns reads) and the digest of it."""
    cfg: dict[str, Any] = {
        "project": project,
        "ttl": LOCAL_TTL,
        "pidfile": ProjectPaths(run_dir, project).dns_pid,
        "upstreams": list(upstreams.servers),
        "listeners": listeners,
        "containers": [_container_record(c, c.endpoints, c.own_ns, upstreams) for c in containers if c.endpoints],
    }
    if ns_listeners:
        cfg["namespaces"] = ns_listeners
    text = json_text(cfg) + "\n"
    return Resolver(project, resolver_listeners(cfg), text, hashlib.sha256(text.encode()).hexdigest())


def _peer_records(project: str, containers: list[Container], upstreams: Upstreams) -> DnsRecords | None:
    """Endpoints on networks other projects own, published for the owner's resolver (and those
    of the other projects attached): composenet/dns/peers.py. None when there are none."""
    foreign = [(c, [ep for ep in c.endpoints if ep.network.kind == "external" and ep.network.bridge])
               for c in containers if c.own_ns]
    foreign = [(c, eps) for c, eps in foreign if eps]
    if not foreign:
        return None
    records = {
        "project": project,
        "containers": [_container_record(c, eps, True, upstreams) for c, eps in foreign],
    }
    text = json_text(records) + "\n"
    networks = tuple(sorted({ep.network.net.name for _c, eps in foreign for ep in eps}))
    return DnsRecords(project, networks, text, hashlib.sha256(text.encode()).hexdigest(),
                      tuple(c.name for c, _eps in foreign))
