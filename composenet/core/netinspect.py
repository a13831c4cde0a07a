"""`composenet network inspect` in the shape scripts written for Docker expect (`docker network
inspect`): Name, Id, Created, Scope, Driver, EnableIPv4, EnableIPv6, IPAM{Driver, Options,
Config[{Subnet, Gateway, IPRange, AuxiliaryAddresses}]}, Internal, Attachable, Ingress,
ConfigFrom, ConfigOnly, Containers{ID: {Name, EndpointID, MacAddress, IPv4Address, IPv6Address}},
Options, Labels (a cluster network also: Peers[{Name, IP}], its hosts as Docker's swarm lists them,
and Endpoints[{Name, Service, Node, MacAddress, IPv4Address, Aliases}] on every host); rendered as Docker's indented JSON or through a ``--format`` Go template
(composenet.core.gotemplate). Pure; no I/O.

Built from what composenet.kernel.netinfo.networks() reports of a network (its ``name``,
``driver``, ``project``, ``bridge``, ``subnet``, ``gateway``, ``ip_range``, ``subnet6``,
``gateway6``, ``internal``, ``ipv6``, ``options``, ``containers``; ``created``, ``attachable``,
``labels`` and ``aux_addresses`` when it reports them; ``cluster``: {nodes, endpoints},
added by `network inspect` from the cluster store). Ids are stable hashes: the same network
(or container, or endpoint) has the same id on every run, as long as its name is the same.

Must not: read the kernel, or invent what it does not know: a creation time it was not given is
Go's zero time.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any

from composenet.core.gotemplate import Struct, jsonable, render

ZERO_TIME = "0001-01-01T00:00:00Z"  # what Go prints for an unset time.Time
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


def stable_id(*parts: str) -> str:
    """A Docker-like id (64 hex) that depends only on ``parts``."""
    return hashlib.sha256("\0".join(("composenet", *parts)).encode()).hexdigest()


def _prefix(subnet: str | None) -> int | None:
    try:
        return ipaddress.ip_network(subnet, strict=False).prefixlen if subnet else None
    except ValueError:
        return None


def _with_prefix(address: str | None, prefix: int | None) -> str:
    if not address:
        return ""
    return f"{address}/{prefix}" if prefix is not None else address


def _ipam_config(net: dict[str, Any]) -> list[Struct]:
    out = []
    aux = {k: v for k, v in dict(net.get("aux_addresses") or {}).items()}
    for subnet, gateway, ip_range in ((net.get("subnet"), net.get("gateway"), net.get("ip_range")),
                                      (net.get("subnet6"), net.get("gateway6"), None)):
        if not subnet:
            continue
        items: dict[str, Any] = {"Subnet": subnet}
        if ip_range:
            items["IPRange"] = ip_range
        if gateway:
            items["Gateway"] = gateway
        fam = {k: v for k, v in aux.items() if (":" in str(v)) == (":" in subnet)}
        if fam:
            items["AuxiliaryAddresses"] = dict(sorted(fam.items()))
        out.append(Struct("network.IPAMConfig", items,
                          {"IPRange": "", "Gateway": "", "AuxiliaryAddresses": {}}))
    return out


def _containers(net: dict[str, Any]) -> dict[str, Struct]:
    p4, p6 = _prefix(net.get("subnet")), _prefix(net.get("subnet6"))
    out = {}
    for c in net.get("containers") or ():
        name = str(c.get("name", ""))
        out[stable_id("container", name)] = Struct("network.EndpointResource", {
            "Name": name,
            "EndpointID": stable_id("endpoint", str(net.get("name", "")), name),
            "MacAddress": c.get("mac") or "",
            "IPv4Address": _with_prefix(c.get("ipv4"), p4),
            "IPv6Address": _with_prefix(c.get("ipv6"), p6),
        })
    return dict(sorted(out.items()))


def docker_network(net: dict[str, Any]) -> Struct:
    """One network in Docker's shape."""
    name = str(net.get("name", ""))
    options = {str(k): str(v) for k, v in dict(net.get("options") or {}).items()}
    if net.get("bridge") and BRIDGE_NAME_OPTION not in options:
        options[BRIDGE_NAME_OPTION] = str(net["bridge"])
    labels = {str(k): str(v) for k, v in dict(net.get("labels") or {}).items()}
    if net.get("project") and "com.docker.compose.project" not in labels:
        labels["com.docker.compose.project"] = str(net["project"])
    return Struct("network.Inspect", {
        "Name": name,
        "Id": stable_id("network", name),
        "Created": str(net.get("created") or ZERO_TIME),
        "Scope": str(net.get("scope") or "local"),
        "Driver": str(net.get("driver") or "bridge"),
        "EnableIPv4": bool(net.get("subnet")),
        "EnableIPv6": bool(net.get("ipv6") or net.get("subnet6")),
        "IPAM": Struct("network.IPAM", {"Driver": "default", "Options": {}, "Config": _ipam_config(net)}),
        "Internal": bool(net.get("internal")),
        "Attachable": bool(net.get("attachable")),
        "Ingress": False,
        "ConfigFrom": Struct("network.ConfigReference", {"Network": ""}),
        "ConfigOnly": False,
        "Containers": _containers(net),
        "Options": dict(sorted(options.items())),
        "Labels": dict(sorted(labels.items())),
        **(_cluster(net["cluster"], _prefix(net.get("subnet"))) if net.get("cluster") else {}),
    })


def _cluster(c: dict[str, Any], prefix: int | None) -> dict[str, Any]:
    """A cluster network's hosts as Docker's swarm overlay lists them (Peers: Name, IP), and
    every host's endpoints (RemoteEndpoints is composenet's: Docker lists only local ones)."""
    return {
        "Peers": [Struct("network.PeerInfo", {"Name": str(node), "IP": str(ip)})
                  for node, ip in sorted(dict(c.get("nodes") or {}).items())],
        "Endpoints": [Struct("network.ClusterEndpoint", {
            "Name": str(e["container"]), "Service": str(e.get("service") or ""), "Node": str(e["node"]),
            "MacAddress": str(e.get("mac") or ""), "IPv4Address": _with_prefix(e.get("ipv4"), prefix),
            "Aliases": [str(a) for a in e.get("aliases") or ()]}) for e in c.get("endpoints") or ()],
    }


def render_json(nets: list[dict[str, Any]]) -> str:
    """Docker's default output: a JSON array, indented by four spaces."""
    return json.dumps([jsonable(docker_network(n)) for n in nets], indent=4, ensure_ascii=False) + "\n"


def render_format(nets: list[dict[str, Any]], template: str) -> str:
    """``--format``: ``json`` is the JSON array; anything else a Go template applied to each
    network, one line each (as `docker network inspect -f`). Raises TemplateError."""
    if template.strip() == "json":
        return render_json(nets)
    return "".join(render(template, docker_network(n)) + "\n" for n in nets)
