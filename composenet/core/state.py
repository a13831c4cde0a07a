"""DesiredState and ObservedState: sets of resources keyed by ``Resource.key``, plus the facts
about the host that the planner needs as constraints. Pure data; JSON round-trip for golden
files (tests/golden/<case>/observed.json), checked against schemas/observed.schema.json.
Must not: read the kernel (composenet.kernel.observe fills an ObservedState) or plan.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from composenet.core.resources import Resource, resource_from_json
from composenet.paths import schema_text


@dataclass
class ObservedState:
    """What the kernel has. ``resources`` holds only objects composenet owns for this project
    (selected by label); everything else is a constraint.

    - host_routes / host_addresses: CIDRs of foreign routes (every routing table of the host
      namespace, default routes excluded) and addresses, for automatic subnet allocation;
    - foreign_subnets: subnets of other composenet projects' networks;
    - foreign_links: names of links that exist but are not ours (name clashes);
    - ports_in_use: host ports other composenet projects publish (their DNAT rules): "proto/port"
      (every host address) or "proto/port@hostip";
    - networks: every composenet bridge network in the host namespace, by network name:
      ``{"bridge", "owner" (project; "-NAME" for a standalone network), "cidrs" (the bridge's
      addresses), "used" (addresses of other projects' endpoints on it)}``: external networks
      are found here, and IPAM never hands out an address another project's endpoint holds;
    - connections: endpoints added by `composenet network connect` (the project's record,
      ``{"container", "network" (name), "aliases", "ipv4"}``): part of what the project wants;
    - host_ports: the bound TCP and UDP sockets of the host namespace (composenet's own daemons'
      excepted): ``{"proto", "address", "port", "v6only", "pid", "process"}`` (pid and process
      name None when no process could be found): a published port they hold is refused;
    - processes: the state of each service process, by container, as its supervisor reports it
      (``{"state", "pid", "exit_code", "restarts", "error", ...}``): for `ps` and messages;
    - host_firewall: the host firewall found (ufw, firewalld, or an input chain with policy drop),
      as a short description, "" when none: published ports bypass its input rules (DNAT
      happens before input), and the exposure table says so (kernel/firewall.py);
    - ipvlan_missing: why this kernel cannot make ipvlan links (kernel/ipvlan.py), "" when it can
      or nobody looked (offline): a plan with an ipvlan network is then refused at its driver;
    - offline: True when built by ``--offline`` (empty kernel, no host routes);
    - cluster: with a cluster store, what it holds that the plan needs (composenet.kernel.cluster
      fills it, core.desired.cluster reads it): ``{"node", "vtep", "networks" {name: record},
      "proposals" {name: record}, "members" {name: {node: vtep}}, "leases" {name: {ip: {node,
      container}}}, "routes"}``, or ``{"error", "hint"}`` when the store did not answer.
    """

    resources: dict[str, Resource] = field(default_factory=dict)
    host_routes: tuple[str, ...] = ()
    host_addresses: tuple[str, ...] = ()
    foreign_subnets: tuple[str, ...] = ()
    foreign_links: tuple[str, ...] = ()
    ports_in_use: tuple[str, ...] = ()
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    connections: list[dict[str, Any]] = field(default_factory=list)
    host_ports: list[dict[str, Any]] = field(default_factory=list)
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_firewall: str = ""
    ipvlan_missing: str = ""
    offline: bool = False
    cluster: dict[str, Any] = field(default_factory=dict)
    # key -> digest of what the last successful apply wrote (diff.digest); labels drift only.
    applied: dict[str, str] = field(default_factory=dict)

    def add(self, r: Resource) -> None:
        self.resources[r.key] = r

    def to_json(self) -> dict[str, Any]:
        return {
            "resources": [self.resources[k].to_json() for k in sorted(self.resources)],
            "host_routes": list(self.host_routes),
            "host_addresses": list(self.host_addresses),
            "foreign_subnets": list(self.foreign_subnets),
            "foreign_links": list(self.foreign_links),
            "ports_in_use": list(self.ports_in_use),
            **({"networks": dict(sorted(self.networks.items()))} if self.networks else {}),
            **({"connections": list(self.connections)} if self.connections else {}),
            **({"host_ports": list(self.host_ports)} if self.host_ports else {}),
            **({"processes": dict(sorted(self.processes.items()))} if self.processes else {}),
            **({"cluster": self.cluster} if self.cluster else {}),
            **({"host_firewall": self.host_firewall} if self.host_firewall else {}),
            **({"ipvlan_missing": self.ipvlan_missing} if self.ipvlan_missing else {}),
            "applied": dict(sorted(self.applied.items())),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ObservedState:
        """The state ``to_json`` wrote (or a hand-written one). A damaged recording raises
        ObservedStateError naming every problem by its JSON path, before anything reads it."""
        problems = check_json(d)
        if problems:
            raise ObservedStateError(problems)
        st = cls(
            host_routes=tuple(d.get("host_routes", ())),
            host_addresses=tuple(d.get("host_addresses", ())),
            foreign_subnets=tuple(d.get("foreign_subnets", ())),
            foreign_links=tuple(d.get("foreign_links", ())),
            ports_in_use=tuple(d.get("ports_in_use", ())),
            networks=dict(d.get("networks", {})),
            connections=list(d.get("connections", [])),
            host_ports=list(d.get("host_ports", [])),
            processes=dict(d.get("processes", {})),
            cluster=dict(d.get("cluster", {})),
            host_firewall=str(d.get("host_firewall", "")),
            ipvlan_missing=str(d.get("ipvlan_missing", "")),
            applied=dict(d.get("applied", {})),
        )
        for rd in d.get("resources", ()):
            st.add(resource_from_json(rd))
        return st

    def digest(self) -> str:
        """Digest of the owned resources (not host facts): a saved plan applies only if the
        kernel still matches what it was made against."""
        text = json.dumps([self.resources[k].to_json() for k in sorted(self.resources)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


OBSERVED_SCHEMA = "observed.schema.json"
MAX_PROBLEMS = 20  # a recording damaged throughout: the first ones say enough


class ObservedStateError(ValueError):
    """A recorded observed state that is not one: ``problems`` are ``$.json.path: message``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_json(d: Any) -> list[str]:
    """Every problem of a recorded observed state, sorted by JSON path (``$.host_routes[0]: 5 is
    not of type 'string'``); [] when it is valid. Shapes and types are schemas/observed.schema.json's;
    then the addresses the planner parses (host facts, other networks, ``address`` resources)."""
    import jsonschema  # deferred: ~70 ms to import, and only a recorded observed state needs it

    validator = jsonschema.Draft202012Validator(json.loads(schema_text(OBSERVED_SCHEMA)))
    found = {(e.json_path, _short(e.message)) for e in validator.iter_errors(d)}
    if not found:
        found = set(_check_addresses(d))
    problems = [f"{path}: {message}" for path, message in sorted(found)]
    if len(problems) > MAX_PROBLEMS:
        problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more"]
    return problems


def _check_addresses(d: dict[str, Any]) -> list[tuple[str, str]]:
    """Values the schema can only call strings but the planner parses as addresses (after the
    schema passed, so the shapes are right)."""
    out: list[tuple[str, str]] = []

    def check(path: str, value: Any, parse: Any, what: str) -> None:
        if value is None:
            return
        try:
            parse(value)
        except ValueError:
            out.append((path, _short(f"{value!r} is not {what}")))

    def net(v: str) -> Any:
        return ipaddress.ip_network(v, strict=False)

    for key in ("host_routes", "host_addresses", "foreign_subnets"):
        for i, v in enumerate(d.get(key, ())):
            check(f"$.{key}[{i}]", v, net, "an IP network (CIDR)")
    for name, n in d.get("networks", {}).items():
        where = f"$.networks.{name}"  # as jsonschema writes JSON paths
        for i, v in enumerate(n.get("cidrs", ())):
            check(f"{where}.cidrs[{i}]", v, ipaddress.ip_interface, "an interface address (ADDRESS/PREFIX)")
        for i, v in enumerate(n.get("used", ())):
            check(f"{where}.used[{i}]", v, ipaddress.ip_address, "an IP address")
    for i, h in enumerate(d.get("host_ports", ())):
        check(f"$.host_ports[{i}].address", h.get("address"), ipaddress.ip_address, "an IP address")
    for i, c in enumerate(d.get("connections", ())):
        check(f"$.connections[{i}].ipv4", c.get("ipv4"), ipaddress.IPv4Address, "an IPv4 address")
    for i, r in enumerate(d.get("resources", ())):
        if r["kind"] == "address":
            check(f"$.resources[{i}].cidr", r["cidr"], ipaddress.ip_interface, "an interface address (ADDRESS/PREFIX)")
    return out


@dataclass
class DesiredState:
    """What the compose file wants, as resources, plus what the renderer shows."""

    project: str
    resources: dict[str, Resource] = field(default_factory=dict)
    # For the plan's header and exposure table: plain data computed by desire().
    networks: list[dict[str, Any]] = field(default_factory=list)  # name, subnet, gateway, bridge, ...
    containers: list[dict[str, Any]] = field(default_factory=list)  # name, service, ns, addresses
    exposure: list[dict[str, Any]] = field(default_factory=list)  # host_ip, port, proto, target, scope
    warnings: list[str] = field(default_factory=list)
    host: list[str] = field(default_factory=list)  # Plan.host: what the plan means for the host as a whole
    cluster: list[dict[str, str]] = field(default_factory=list)  # Plan.cluster: the cluster store's steps

    def add(self, r: Resource) -> None:
        if r.key in self.resources and self.resources[r.key] != r:
            raise ValueError(f"two different resources with key {r.key}")
        self.resources[r.key] = r
