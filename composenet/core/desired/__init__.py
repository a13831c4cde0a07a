"""Project -> DesiredState: every kernel resource the compose file asks for. Pure; no I/O.

The observed state is an input only for stability and constraints: existing networks keep their
subnets, existing endpoints keep their addresses, ephemeral host ports keep their numbers, and
automatic subnets avoid host routes, host addresses and other projects' networks.

Names follow Docker: network ``<project>_<key>`` (or ``name:``), container and namespace
``<project>-<service>-<n>`` (or ``container_name``); container interfaces eth0, eth1, ... in the
service's network order (or ``interface_name``).

``desire`` runs the stages in order, each in its own module:

- networks.py    the networks after IPAM (NetPlan): kinds, subnets, gateways, address pools;
                 external networks and those `network connect` attached;
- containers.py  the containers, the namespaces they live in, their endpoints and addresses;
- resources.py   the kernel resources of both (bridges, links, addresses, routes, sysctls)
                 and the nftables table;
- processes.py   the service processes;
- dns.py         resolv.conf and hosts files, the resolver's config, records for other
                 projects' resolvers;
- ports.py       host ports of published ports, and the exposure table.

Must not: read the kernel or files (the observed state is given), nor depend on the clock or
randomness: the same inputs give the same DesiredState, byte for byte.
"""

from __future__ import annotations

from composenet.core.desired.cluster import cluster_steps
from composenet.core.desired.containers import (
    Container,
    Endpoint,
    assign_endpoints,
    container_names,
    container_rows,
    plan_containers,
)
from composenet.core.desired.dns import (
    HOSTS_HEADER,
    LOCAL_TTL,
    NETNS_DNS_ADDRESS,
    Upstreams,
    add_dns,
    parse_resolv_conf,
    resolver_networks,
)
from composenet.core.desired.networks import NetPlan, network_rows, plan_networks
from composenet.core.desired.ports import EPHEMERAL_FIRST, EPHEMERAL_LAST, publish_ports
from composenet.core.desired.processes import add_processes
from composenet.core.desired.resources import (
    add_container_resources,
    add_network_resources,
    add_ruleset,
)
from composenet.core.model import Project
from composenet.core.state import DesiredState, ObservedState
from composenet.paths import RUN_DIR

__all__ = [
    "EPHEMERAL_FIRST", "EPHEMERAL_LAST", "HOSTS_HEADER", "LOCAL_TTL", "NETNS_DNS_ADDRESS",
    "Container", "Endpoint", "NetPlan", "Upstreams", "container_names", "desire", "parse_resolv_conf",
]


def desire(project: Project, observed: ObservedState, upstreams: Upstreams, run_dir: str = RUN_DIR) -> DesiredState:
    """Build the desired state of ``project`` given what is observed."""
    d = DesiredState(project=project.name)
    d.warnings.extend(project.warnings)
    nets = plan_networks(project, observed, d.warnings)
    containers = plan_containers(project, d.warnings)
    # After this, ``nets`` also holds the networks `network connect` attached (under "@NAME").
    assign_endpoints(containers, nets, project, observed, d.warnings)

    bridges = [np for np in nets.values() if np.kind == "bridge"]
    add_network_resources(d, project.name, bridges, observed)
    add_container_resources(d, project.name, containers)
    resolver_nets = resolver_networks(bridges)
    add_dns(d, project.name, containers, resolver_nets, upstreams, run_dir)
    port_maps, exposure = publish_ports(project, nets, containers, observed, d.warnings)
    add_processes(d, containers, port_maps)  # the supervisor holds every published host port
    add_ruleset(d, project.name, bridges, resolver_nets, port_maps)

    d.cluster = cluster_steps(nets, containers, observed)  # the cluster store's part, if any
    d.networks = network_rows(nets)
    d.containers = container_rows(containers)
    d.exposure = exposure
    return d
