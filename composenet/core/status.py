"""What runs, where, and how to reach it: the status of a project's containers. Pure.

Owns: functions from an ObservedState (plus the process records, which say whether a stopped
service had a command) to per-container status (`ps`), the published mappings of a container
(`port`), and their text/JSON rendering. The I/O of those commands (observe, exec, logs) is
``composenet.kernel.status``'s. Must not: read or change anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from composenet.core.resources import (
    LABEL_PREFIX,
    Address,
    Ipvlan,
    Macvlan,
    Netns,
    NetnsFile,
    NftTable,
    Process,
    Veth,
    resource_from_json,
)
from composenet.core.ruleset import parse_port
from composenet.core.state import ObservedState
from composenet.errors import ComposenetError


@dataclass(frozen=True)
class Mapping:
    """One published port as the kernel has it."""

    service: str
    host_ip: str  # as `docker port` prints it: 0.0.0.0, [::], 127.0.0.1, [::1]
    host_port: int
    protocol: str
    targets: tuple[tuple[str, int], ...]  # (container address, container port)

    def render(self, target_port: int) -> str:
        return f"{self.host_ip}:{self.host_port}->{target_port}/{self.protocol}"


@dataclass
class ContainerStatus:
    container: str
    service: str
    index: int | None
    namespace: str  # "" = the host's (network_mode: host)
    networks: dict[str, list[str]] = field(default_factory=dict)  # network -> CIDRs
    ports: list[str] = field(default_factory=list)  # 0.0.0.0:8080->80/tcp
    state: str = "no command"  # running | restarting | exited | failed | stopping | no command | ...
    pid: int | None = None
    hostname: str | None = None
    exit_code: int | None = None  # of its last run (exited, restarting)
    restarts: int = 0  # how often its restart policy started it again
    error: str = ""  # why it could not start (failed)
    privileges: str | None = None  # what its command runs with (Process.privileges)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_mappings(rules: tuple[str, ...] | list[str]) -> list[Mapping]:
    out = []
    for r in rules:
        rule = parse_port(r)
        if rule is None:
            continue
        hostip = {"*": "0.0.0.0", "[*]": "[::]"}.get(rule.host_ip, rule.host_ip)
        out.append(Mapping(rule.service, hostip, rule.host_port, rule.protocol, rule.targets))
    return out


def container_index(container: str) -> int | None:
    m = re.search(r"-(\d+)$", container)
    return int(m.group(1)) if m else None


def _hostname_from_hosts(content: str) -> str | None:
    """The container's hostname: the last name of the first line that is not a localhost line
    (desired/dns.py writes ``<address>\\t[<fqdn>\\t]<hostname>`` after the standard header)."""
    for line in content.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) < 2 or parts[1] in ("localhost", "ip6-localhost") or parts[0] in ("127.0.0.1", "::1"):
            continue
        if parts[1].startswith("ip6-"):
            continue
        return parts[-1]
    return None


def containers(observed: ObservedState, project: str, records: dict[str, dict[str, Any]] | None = None
               ) -> list[ContainerStatus]:
    """Every container of the project the kernel (or a process record) knows, sorted by service
    and index. ``records`` (procs.read_records) tells an exited command from no command."""
    records = records or {}
    res = list(observed.resources.values())
    by_name: dict[str, ContainerStatus] = {}

    def get(name: str, service: str, ns: str) -> ContainerStatus:
        c = by_name.get(name)
        if c is None:
            c = by_name[name] = ContainerStatus(name, service, container_index(name), ns)
        elif service and not c.service:
            c.service = service
        return c

    for r in res:
        if isinstance(r, Netns):
            get(r.name, r.service, r.name)
    procs = {r.container: r for r in res if isinstance(r, Process)}
    for name, rec in records.items():
        c = get(name, str(rec.get("service", "")), str(rec.get("ns", "")))
        c.state = "exited"
        c.privileges = _privileges(rec)
    for p in procs.values():
        c = get(p.container, p.service, p.ns)
        c.state, c.namespace, c.hostname = "running", p.ns, p.hostname
        c.privileges = p.privileges()
    for name, st in observed.processes.items():
        if name in by_name or name in records:
            _apply_state(get(name, "", ""), st)
    for name, c in by_name.items():
        known = records.get(name)
        if c.state == "running" and c.pid is None and known is not None and isinstance(known.get("pid"), int):
            c.pid = known["pid"]
        if c.hostname is None and c.namespace:
            f = observed.resources.get(f"file:{c.namespace}/hosts")
            if isinstance(f, NetnsFile):
                c.hostname = _hostname_from_hosts(f.content)

    # Addresses per network: the container end of each labelled link, and its addresses.
    prefix = f"{LABEL_PREFIX}{project}/"
    addrs: dict[tuple[str, str], list[str]] = {}
    for r in res:
        if isinstance(r, Address):
            addrs.setdefault((r.ns, r.ifname), []).append(r.cidr)
    owner: dict[str, str] = {}  # bare address -> container
    for r in res:
        if isinstance(r, (Veth, Macvlan, Ipvlan)) and r.label.startswith(prefix):
            parts = r.label[len(prefix):].split("/")
            if len(parts) != 2:
                continue
            cname, network = parts
            ifname = r.peer if isinstance(r, Veth) else r.ifname
            c = get(cname, "", r.ns)
            cidrs = sorted(addrs.get((r.ns, ifname), []), key=lambda a: (":" in a, a))
            c.networks.setdefault(network, []).extend(cidrs)
            for a in cidrs:
                owner[a.split("/")[0]] = cname

    for t in res:
        if not isinstance(t, NftTable):
            continue
        for m in parse_mappings(t.rules):
            for addr, port in m.targets:
                target = owner.get(addr)
                if target:
                    by_name[target].ports.append(m.render(port))
    for c in by_name.values():
        c.ports = sorted(set(c.ports), key=_port_sort)
    return sorted(by_name.values(), key=lambda c: (c.service, c.index if c.index is not None else 0, c.container))


def _apply_state(c: ContainerStatus, st: dict[str, Any]) -> None:
    """The supervisor's view of the container's process (ObservedState.processes)."""
    state = str(st.get("state") or c.state)
    c.state = "not running" if state == "not started" else state
    c.pid = st.get("pid") if isinstance(st.get("pid"), int) else None
    c.exit_code = st.get("exit_code") if isinstance(st.get("exit_code"), int) else None
    c.restarts = int(st.get("restarts") or 0)
    c.error = str(st.get("error") or "")


def _privileges(rec: dict[str, Any]) -> str | None:
    """What the recorded process runs with (a damaged record: None)."""
    try:
        r = resource_from_json(rec)
    except (KeyError, TypeError, ValueError):
        return None
    return r.privileges() if isinstance(r, Process) else None


def _port_sort(p: str) -> tuple[int, str, int, str]:
    """By container port, protocol, host port (numerically), host address."""
    m = re.match(r"^(.*):(\d+)->(\d+)/(\w+)$", p)
    return (int(m.group(3)), m.group(4), int(m.group(2)), m.group(1)) if m else (0, "", 0, p)


def pick(cs: list[ContainerStatus], service: str, index: int | None = None) -> ContainerStatus:
    """The container ``index`` (default: the first) of ``service``; ComposenetError otherwise."""
    mine = [c for c in cs if c.service == service]
    if not mine:
        known = sorted({c.service for c in cs if c.service})
        raise ComposenetError(f"no container of service {service!r} in the kernel",
                              hint=("services: " + ", ".join(known)) if known else "is the project up? (`composenet up`)")
    if index is None:
        return mine[0]
    for c in mine:
        if c.index == index:
            return c
    raise ComposenetError(f"service {service!r} has no container with index {index}",
                          hint="containers: " + ", ".join(c.container for c in mine))


def port(cs: list[ContainerStatus], observed: ObservedState, service: str, private_port: int | None,
         protocol: str = "tcp", index: int | None = None) -> list[str]:
    """`docker port`: the host address:port lines that reach ``private_port/protocol`` of the
    container; without ``private_port``, every mapping as ``80/tcp -> 0.0.0.0:8080``.
    ComposenetError when none is published (naming the protocols the port is published with)."""
    c = pick(cs, service, index)
    bare = {a.split("/")[0] for cidrs in c.networks.values() for a in cidrs}
    every: set[tuple[int, str, bool, str, int]] = set()  # (port, protocol, v6?, host ip, host port)
    for t in observed.resources.values():
        if not isinstance(t, NftTable):
            continue
        for m in parse_mappings(t.rules):
            for a, p in m.targets:
                if a in bare:
                    every.add((p, m.protocol, m.host_ip.startswith("["), m.host_ip, m.host_port))
    if private_port is None:
        if not every:
            raise ComposenetError(f"no port of {c.container} is published",
                                  hint="`ports:` in the compose file publishes them")
        return [f"{p}/{proto} -> {ip}:{hp}" for p, proto, _, ip, hp in sorted(every, key=lambda x: (x[1], x[0], x[2:]))]
    out = sorted({(v6, ip, hp) for p, proto, v6, ip, hp in every if p == private_port and proto == protocol})
    if not out:
        other = sorted({proto for p, proto, *_ in every if p == private_port})
        hint = (f"{private_port} is published as {' and '.join(other)} only: "
                f"`composenet port {service} {private_port}/{other[0]}`") if other else (
                    "`composenet port " + service + "` lists every published port" if every else None)
        raise ComposenetError(f"no public port '{private_port}/{protocol}' published for {c.container}", hint=hint)
    return [f"{ip}:{p}" for _, ip, p in out]


# ---- rendering ------------------------------------------------------------------------------


def state_text(c: ContainerStatus) -> str:
    """``running (pid 12)``, ``exited (code 0)``, ``restarting (code 1, restarted 3 times)``,
    ``failed to start: <why>``, ``no command``, ..."""
    again = f"restarted {c.restarts} time{'s' if c.restarts != 1 else ''}" if c.restarts else ""
    if c.state == "running" and c.pid is not None:
        return f"running (pid {c.pid}{', ' + again if again else ''})"
    if c.state == "exited" and c.exit_code is not None:
        return f"exited (code {c.exit_code}{', ' + again if again else ''})"
    if c.state == "restarting":
        return f"restarting (code {c.exit_code}{', ' + again if again else ''})"
    if c.state == "failed":
        return f"failed to start: {c.error}" if c.error else "failed to start"
    return c.state


def render_ps(cs: list[ContainerStatus], fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps([c.to_json() for c in cs], indent=2, sort_keys=True) + "\n"
    header = ("NAME", "SERVICE", "STATE", "RUNS AS", "NAMESPACE", "ADDRESSES", "PORTS")
    rows = []
    for c in cs:
        addresses = ", ".join(f"{n}={a}" for n in sorted(c.networks) for a in c.networks[n]) or "-"
        rows.append((c.container, c.service or "-", state_text(c), c.privileges or "-", c.namespace or "(host)",
                     addresses, ", ".join(c.ports) or "-"))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for r in [header, *rows]:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    return "\n".join(ln.rstrip() for ln in lines) + "\n"
