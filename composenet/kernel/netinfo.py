"""Every composenet network of this host, as `composenet network ls/inspect` show them: labelled
bridges of every project (with the containers attached), merged with the specs standalone
networks keep in their run directory (``network.json``; a macvlan network has no kernel object
until a container attaches, so its spec is all there is).

Owns: reading those specs (``standalone_specs``, which observe also uses for standalone macvlan
networks) and the merged view. Must not: change anything.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from composenet.core.resources import Resource
from composenet.core.state import ObservedState
from composenet.dns.peers import host_netns
from composenet.kernel import links
from composenet.kernel.context import Context
from composenet.paths import ProjectPaths, list_projects, standalone_project


def read_spec(run_dir: str, project: str) -> dict[str, Any] | None:
    try:
        with open(ProjectPaths(run_dir, project).network_spec) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def standalone_specs(run_dir: str) -> dict[str, dict[str, Any]]:
    """Standalone networks' specs, by network name: those made in this network namespace (the
    runtime directory is shared by every namespace of the machine; a network is not)."""
    out = {}
    here = host_netns()
    for p in list_projects(run_dir):
        if p.startswith("-"):
            spec = read_spec(run_dir, p)
            if spec is not None and spec.get("name") == p[1:] and spec.get("host_netns", here) == here:
                out[p[1:]] = spec
    return out


def networks(run_dir: str) -> dict[str, dict[str, Any]]:
    """Every composenet network: labelled bridges (any project, with their endpoints) merged
    with the standalone specs. Each: name, driver, project (None: standalone), bridge, subnet,
    gateway, subnet6, gateway6, ip_range, internal, ipv6, options, containers."""
    links.check_mount_namespace()
    ctx = Context(project="-", run_dir=run_dir)  # owns nothing: every network is "another project's"
    try:
        seen = links.composenet_networks(ctx)
    finally:
        ctx.close()
    specs = standalone_specs(run_dir)
    ctx = Context(project="-", run_dir=run_dir)
    try:
        seen.update(links.macvlan_networks(ctx, {k: v for k, v in specs.items() if v.get("driver") == "macvlan"
                                                 and k not in seen}))
    finally:
        ctx.close()
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(seen) | set(specs)):
        net = seen.get(name, {})
        spec = specs.get(name, {})
        if not net and spec.get("driver", "bridge") == "bridge":
            continue  # a spec whose bridge is not in this namespace: not a network here
        out[name] = _describe(name, net, spec)
    return out


def _describe(name: str, net: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    owner = str(net.get("owner", standalone_project(name)))
    v4 = [ipaddress.ip_interface(c) for c in net.get("cidrs", ()) if ":" not in c]
    v6 = [ipaddress.ip_interface(c) for c in net.get("cidrs", ()) if ":" in c]
    ipam = {c.get("subnet"): c for c in spec.get("ipam", ())}
    sub4 = str(v4[0].network) if v4 else next((s for s in ipam if s and ":" not in s), None)
    sub6 = str(v6[0].network) if v6 else next((s for s in ipam if s and ":" in s), None)
    return {
        "name": name,
        "driver": spec.get("driver", "bridge"),
        "scope": "local",
        "project": None if owner.startswith("-") else owner,
        "bridge": net.get("bridge"),
        "subnet": sub4,
        "gateway": str(v4[0].ip) if v4 else (ipam.get(sub4) or {}).get("gateway"),
        "ip_range": (ipam.get(sub4) or {}).get("ip_range"),
        "subnet6": sub6,
        "gateway6": str(v6[0].ip) if v6 else (ipam.get(sub6) or {}).get("gateway"),
        "internal": spec.get("internal") if spec else None,
        "ipv6": bool(sub6),
        "options": dict(spec.get("options", {})),
        "containers": [dict(e) for e in net.get("endpoints", ())],
    }



class HostFacts:
    """An observe-only handler: the host facts IPAM and external networks need (routes,
    addresses, other composenet networks, standalone macvlan networks): see ObservedState."""

    kinds: tuple[str, ...] = ()

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        links.host_facts(ctx, observed)
        macvlans = {k: v for k, v in standalone_specs(ctx.run_dir).items()
                    if v.get("driver") == "macvlan" and k not in observed.networks}
        observed.networks.update(links.macvlan_networks(ctx, macvlans))

    def create(self, ctx: Context, r: Resource) -> None:
        raise NotImplementedError("host facts are only observed")

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        raise NotImplementedError("host facts are only observed")

    def delete(self, ctx: Context, r: Resource) -> None:
        raise NotImplementedError("host facts are only observed")

    def flush(self, ctx: Context) -> None:
        pass
