"""The project's topology as a graph, for `composenet graph`: networks, services with their
replicas, which service sits on which network (with its address when the project is up),
published ports (host address:port -> service:port), internal networks and ``network_mode``
shares; rendered as Mermaid or Graphviz DOT text. Pure; no I/O.

``build`` takes the project, its desired state and, when the project is up, a ``Live`` view of
the kernel (each container's and network's state: a stopped or drifted object is shown as such).
Without one it shows the file's intent: no addresses, subnets only where the file gives them,
published ports as the file writes them.

Must not: read the kernel (composenet.kernel.topology makes the Live view) or run Graphviz.
Same inputs, same bytes: everything is sorted, ids are derived from names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from composenet.core import ipam
from composenet.core.desired import container_names
from composenet.core.model import Project
from composenet.core.state import DesiredState

FINE = ("up", "running", "no command", "external")  # states drawn as normal


@dataclass(frozen=True)
class Live:
    """States from the kernel: containers (running, exited, no command, missing, drifted) and
    networks (up, missing, drifted, external) by name, and the published ports whose DNAT rule
    the kernel lacks."""

    containers: dict[str, str] = field(default_factory=dict)
    networks: dict[str, str] = field(default_factory=dict)
    missing_ports: tuple[tuple[str, int, str], ...] = ()  # (service, host port, protocol) without a DNAT rule


@dataclass(frozen=True)
class GNetwork:
    key: str
    name: str
    driver: str
    internal: bool = False
    external: bool = False
    subnet: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class GReplica:
    name: str
    state: str | None = None


@dataclass(frozen=True)
class GService:
    name: str
    replicas: tuple[GReplica, ...]
    mode: str | None = None  # network_mode


@dataclass(frozen=True)
class GEdge:
    service: str
    network: str  # key
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class GPort:
    host: str  # ADDRESS:PORT/PROTO as published ("*" for an ephemeral host port of the file)
    service: str
    target: str  # PORT/PROTO
    state: str | None = None  # live: "missing" when the kernel has no DNAT rule for it


@dataclass(frozen=True)
class Graph:
    project: str
    live: bool
    networks: tuple[GNetwork, ...]
    services: tuple[GService, ...]
    edges: tuple[GEdge, ...]
    ports: tuple[GPort, ...]
    why_intent: str = "the project is not up"  # without a live view: why


def build(project: Project, desired: DesiredState, live: Live | None = None,
          why_intent: str = "the project is not up") -> Graph:
    """The graph of ``project``: its live state when ``live`` is given, else the file's intent
    (``why_intent`` says why, in the header)."""
    rows = {r["name"]: r for r in desired.networks}
    nets = []
    for n in sorted(project.networks, key=lambda n: n.key):
        row = rows.get(n.name, {})
        subnet = row.get("subnet") if live is not None else next((ic.subnet for ic in n.ipam if ic.subnet), None)
        size = ipam.size_request(subnet) if live is None else None
        if size is not None:  # 0.0.0.0/24 asks for any free /24: `up` chooses it
            subnet = f"a free /{size}"
        state = (live.networks.get(n.name, "external" if n.external else "missing") if live is not None else None)
        nets.append(GNetwork(n.key, n.name, n.driver, n.internal, n.external, subnet, state))
    containers = {c["name"]: c for c in desired.containers}
    key_of = {n.name: n.key for n in project.networks}
    services, edges = [], []
    for svc in sorted(project.services, key=lambda s: s.name):
        names = container_names(project, svc)
        services.append(GService(svc.name, tuple(GReplica(c, live.containers.get(c, "missing") if live else None)
                                                 for c in names), svc.network_mode))
        for att in svc.networks:
            addrs: list[str] = []
            if live is not None:
                net_name = next((n.name for n in project.networks if n.key == att.network), att.network)
                addrs = [e["ipv4"] or e["ipv6"] for c in names for e in containers.get(c, {}).get("endpoints", ())
                         if key_of.get(e["network"]) == att.network or e["network"] == net_name]
            edges.append(GEdge(svc.name, att.network, tuple(a for a in addrs if a)))
    return Graph(project.name, live is not None, tuple(nets), tuple(services), tuple(sorted(set(edges),
                 key=lambda e: (e.service, e.network))), _ports(project, desired, live), why_intent)


def _ports(project: Project, desired: DesiredState, live: Live | None) -> tuple[GPort, ...]:
    out = set()
    if live is not None:
        for row in desired.exposure:
            host = "0.0.0.0" if row["host_ip"] == "*" else row["host_ip"]
            host = f"[{host}]" if ":" in host else host
            gone = (row["service"], row["host_port"], row["protocol"]) in live.missing_ports
            out.add(GPort(f"{host}:{row['host_port']}/{row['protocol']}", row["service"],
                          f"{row['target_port']}/{row['protocol']}", "missing" if gone else "up"))
    else:
        for svc in project.services:
            for p in svc.ports:
                host = p.host_ip or "0.0.0.0"
                host = f"[{host}]" if ":" in host else host
                out.add(GPort(f"{host}:{p.published or '*'}/{p.protocol}", svc.name, f"{p.target}/{p.protocol}"))
    return tuple(sorted(out, key=lambda p: (p.service, p.target, p.host)))


# ---- rendering ------------------------------------------------------------------------------


def _ids(prefix: str, names: list[str]) -> dict[str, str]:
    """Node ids from names: letters, digits and _ only; a clash gets a number."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(names):
        base = prefix + re.sub(r"[^A-Za-z0-9_]", "_", name)
        ident, n = base, 2
        while ident in used:
            ident, n = f"{base}_{n}", n + 1
        used.add(ident)
        out[name] = ident
    return out


def network_lines(n: GNetwork) -> list[str]:
    head = n.key + (" (internal)" if n.internal else "") + (" (external)" if n.external else "")
    lines = [head, n.name if n.driver == "bridge" else f"{n.name} · {n.driver}"]
    if n.subnet:
        lines.append(n.subnet)
    if n.state and n.state not in ("up", "external"):
        lines.append(n.state.upper())
    return lines


def service_lines(s: GService) -> list[str]:
    head = s.name + (f" ×{len(s.replicas)}" if len(s.replicas) > 1 else "")
    lines = [head]
    if s.mode:
        lines.append(f"network_mode: {s.mode}")
    for r in s.replicas:
        if r.state is not None:
            lines.append(f"{r.name}: {r.state}")
        elif len(s.replicas) > 1:
            lines.append(r.name)
    return lines


def _port_label(p: GPort) -> str:
    return p.host + (f" ({p.state.upper()})" if p.state is not None and _problem(p.state) else "")


def _problem(state: str | None) -> bool:
    return state is not None and state not in FINE


def _header(g: Graph) -> str:
    return f'project "{g.project}": ' + ("live state" if g.live else f"the file's intent ({g.why_intent})")


def _mq(text: str) -> str:
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def render_mermaid(g: Graph) -> str:
    """A Mermaid flowchart (left to right)."""
    nid = _ids("net_", [n.key for n in g.networks])
    sid = _ids("svc_", [s.name for s in g.services])
    pid = _ids("port_", [p.host for p in g.ports])
    out = [f"%% composenet graph: {_header(g)}", "flowchart LR"]
    for n in g.networks:
        out.append(f'  {nid[n.key]}{{{{"{"<br/>".join(_mq(x) for x in network_lines(n))}"}}}}')
    for s in g.services:
        out.append(f'  {sid[s.name]}["{"<br/>".join(_mq(x) for x in service_lines(s))}"]')
    for e in g.edges:
        if e.network in nid:
            label = f'|"{_mq(", ".join(e.addresses))}"|' if e.addresses else ""
            out.append(f"  {sid[e.service]} ---{label} {nid[e.network]}")
    for s in g.services:
        target = (s.mode or "").removeprefix("service:")
        if s.mode and s.mode.startswith("service:") and target in sid:
            out.append(f'  {sid[s.name]} -.->|"shares its namespace"| {sid[target]}')
    for p in g.ports:
        out.append(f'  {pid[p.host]}(["{_mq(_port_label(p))}"]) -->|"{_mq(p.target)}"| {sid[p.service]}')
    out += ["  classDef internal stroke-dasharray: 5 5", "  classDef problem fill:#fdd,stroke:#c00",
            "  classDef host fill:#eef"]
    internal = [nid[n.key] for n in g.networks if n.internal]
    problems = [nid[n.key] for n in g.networks if _problem(n.state)] + [
        sid[s.name] for s in g.services if any(_problem(r.state) for r in s.replicas)] + [
        pid[p.host] for p in g.ports if _problem(p.state)]
    if internal:
        out.append(f"  class {','.join(internal)} internal")
    if problems:
        out.append(f"  class {','.join(problems)} problem")
    fine = [pid[p.host] for p in g.ports if not _problem(p.state)]
    if fine:
        out.append(f"  class {','.join(fine)} host")
    return "\n".join(out) + "\n"


def _dq(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_label(lines: list[str]) -> str:
    return "\\n".join(_dq(x) for x in lines)


def render_dot(g: Graph) -> str:
    """A Graphviz digraph (left to right); `dot -Tsvg` draws it."""
    out = [f'digraph "{_dq("composenet " + g.project)}" {{',
           f'  graph [rankdir=LR, labelloc=t, fontname="Helvetica", label="{_dq("composenet graph: " + _header(g))}"];',
           '  node [fontname="Helvetica"];', '  edge [fontname="Helvetica", fontsize=10];']
    for n in g.networks:
        attrs = ["shape=hexagon", f'label="{_dot_label(network_lines(n))}"']
        if n.internal:
            attrs.append("style=dashed")
        if _problem(n.state):
            attrs.append("color=red, fontcolor=red")
        out.append(f'  "net:{_dq(n.key)}" [{", ".join(attrs)}];')
    for s in g.services:
        attrs = ["shape=box", "style=rounded", f'label="{_dot_label(service_lines(s))}"']
        if any(_problem(r.state) for r in s.replicas):
            attrs.append("color=red, fontcolor=red")
        out.append(f'  "svc:{_dq(s.name)}" [{", ".join(attrs)}];')
    keys = {n.key for n in g.networks}
    for e in g.edges:
        if e.network in keys:
            label = f', label="{_dq(", ".join(e.addresses))}"' if e.addresses else ""
            out.append(f'  "svc:{_dq(e.service)}" -> "net:{_dq(e.network)}" [dir=none{label}];')
    names = {s.name for s in g.services}
    for s in g.services:
        target = (s.mode or "").removeprefix("service:")
        if s.mode and s.mode.startswith("service:") and target in names:
            out.append(f'  "svc:{_dq(s.name)}" -> "svc:{_dq(target)}" [style=dotted, label="shares its namespace"];')
    for p in g.ports:
        color = ", color=red, fontcolor=red" if _problem(p.state) else ""
        out.append(f'  "port:{_dq(p.host)}" [shape=cds, style=filled, fillcolor="#eeeeff"{color}, '
                   f'label="{_dq(_port_label(p))}"];')
        out.append(f'  "port:{_dq(p.host)}" -> "svc:{_dq(p.service)}" [label="{_dq(p.target)}"];')
    out.append("}")
    return "\n".join(out) + "\n"
