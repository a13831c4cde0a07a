"""DesiredState and ObservedState: sets of resources keyed by ``Resource.key``, plus the facts
about the host that the planner needs as constraints. Pure data; JSON round-trip for golden
files (tests/golden/<case>/observed.json).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from composenet.resources import Resource, resource_from_json


@dataclass
class ObservedState:
    """What the kernel has. ``resources`` holds only objects composenet owns for this project
    (selected by label); everything else is a constraint.

    - host_routes / host_addresses: CIDRs of foreign routes (every routing table of the host
      namespace, default routes excluded) and addresses, for automatic subnet allocation;
    - foreign_subnets: subnets of other composenet projects' networks;
    - foreign_links: names of links that exist but are not ours (name clashes);
    - ports_in_use: "proto/port" taken on the host by others (listeners, other projects' DNAT);
    - networks: every composenet bridge network in the host namespace, by network name:
      ``{"bridge", "owner" (project; "-NAME" for a standalone network), "cidrs" (the bridge's
      addresses), "used" (addresses of other projects' endpoints on it)}``: external networks
      are found here, and IPAM never hands out an address another project's endpoint holds;
    - connections: endpoints added by `composenet network connect` (the project's record,
      ``{"container", "network" (name), "aliases", "ipv4"}``): part of what the project wants;
    - offline: True when built by ``--offline`` (empty kernel, no host routes).
    """

    resources: dict[str, Resource] = field(default_factory=dict)
    host_routes: tuple[str, ...] = ()
    host_addresses: tuple[str, ...] = ()
    foreign_subnets: tuple[str, ...] = ()
    foreign_links: tuple[str, ...] = ()
    ports_in_use: tuple[str, ...] = ()
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    connections: list[dict[str, Any]] = field(default_factory=list)
    offline: bool = False
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
            "applied": dict(sorted(self.applied.items())),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ObservedState:
        st = cls(
            host_routes=tuple(d.get("host_routes", ())),
            host_addresses=tuple(d.get("host_addresses", ())),
            foreign_subnets=tuple(d.get("foreign_subnets", ())),
            foreign_links=tuple(d.get("foreign_links", ())),
            ports_in_use=tuple(d.get("ports_in_use", ())),
            networks=dict(d.get("networks", {})),
            connections=list(d.get("connections", [])),
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

    def add(self, r: Resource) -> None:
        if r.key in self.resources and self.resources[r.key] != r:
            raise ValueError(f"two different resources with key {r.key}")
        self.resources[r.key] = r
