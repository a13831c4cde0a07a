"""What `composenet check` reads and measures: the project observed and planned against the
kernel, every namespace's listening sockets (``read_kernel`` -> ``Kernel``), one probe per
expectation (``run_probe``, ``probe_all``: a bounded pool of threads, each entering the namespace
it probes from) and the judgement of an outcome against its expectation (``judge``).

Must not: change the kernel, or say why a probe failed (composenet.kernel.diagnose does).
"""

from __future__ import annotations

import concurrent.futures
import os
from dataclasses import dataclass, field
from typing import Any

from composenet.core.checkreport import Result
from composenet.core.checks import Expect, Facts
from composenet.core.desired import Upstreams
from composenet.core.model import Project
from composenet.core.planner import Planned, make_plan
from composenet.core.resources import Bridge, Netns, NftTable
from composenet.core.state import DesiredState, ObservedState
from composenet.dns import running
from composenet.errors import ComposenetError
from composenet.kernel import probe
from composenet.kernel.context import Context
from composenet.kernel.observe import observe_project
from composenet.kernel.processes import read_records
from composenet.linux import netns, sockdiag
from composenet.paths import netns_path
from composenet.supervisor import client

DEFAULT_TIMEOUT = 2.0
DEFAULT_WORKERS = 32


@dataclass
class Kernel:
    """What check read from the kernel before probing, for the judgement and the diagnosis."""

    ctx: Context
    project: Project
    observed: ObservedState
    planned: Planned
    socks: dict[str, list[sockdiag.Sock]] = field(default_factory=dict)  # listening, by namespace ("" = host)
    gone: set[str] = field(default_factory=set)  # namespaces the plan has and the kernel does not
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # process records, by container
    host_addresses: list[str] = field(default_factory=list)
    own_pids: set[int] = field(default_factory=set)  # the project's resolver and processes

    @property
    def desired(self) -> DesiredState:
        return self.planned.desired


def is_up(observed: ObservedState) -> bool:
    """Whether the kernel holds the project (a namespace, a bridge or its nft table)."""
    return any(isinstance(r, Netns | Bridge | NftTable) for r in observed.resources.values())


def read_kernel(ctx: Context, project: Project, upstreams: Upstreams, workers: int) -> Kernel:
    """Observe and plan the project; read every namespace's listening sockets (in parallel)."""
    if os.geteuid() != 0:
        raise ComposenetError("check probes from inside the project's namespaces and reads its nftables table: "
                              "it needs root", hint="run it as root (e.g. with sudo)")
    netns.check_mount_namespace()
    observed = observe_project(ctx)
    if not is_up(observed):
        raise ComposenetError(f"project {project.name!r} is not up in this kernel: there is nothing to check",
                              hint="run `composenet up` first (`composenet plan` shows what it builds)")
    planned = make_plan(project, project.name, observed, upstreams, ctx.run_dir)
    k = Kernel(ctx, project, observed, planned, records=read_records(ctx))
    spaces = sorted({row["ns"] for row in planned.desired.containers if row["ns"]})
    k.gone = {ns for ns in spaces if not netns.is_netns(netns_path(ns))}
    here = [ns for ns in spaces if ns not in k.gone]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(here) + 1))) as pool:
        futures = {ns: pool.submit(probe.listening, ns) for ns in ["", *here]}
        for ns, fut in futures.items():
            try:
                k.socks[ns] = fut.result()
            except OSError:
                k.gone.add(ns)
    k.host_addresses = probe.host_addresses(ctx)
    pid = running.resolver_pid(ctx.run_dir, project.name)
    supervisor = client.live(ctx.project_dir) or {}  # it holds the published ports: not a squatter
    k.own_pids = {p for p in [pid, _int(supervisor.get("pid")), *(_int(r.get("pid")) for r in k.records.values())]
                  if p}
    return k


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def facts(k: Kernel, upstreams: Upstreams) -> Facts:
    listening = {ns: tuple(sorted((s.proto, s.lport, s.local) for s in socks)) for ns, socks in k.socks.items() if ns}
    return Facts(listening, k.host_addresses[0] if k.host_addresses else None, tuple(upstreams.servers),
                 tuple(k.host_addresses))


# ---- probing and judging --------------------------------------------------------------------


def run_probe(e: Expect, timeout: float) -> probe.Outcome | None:
    """Probe one expectation (None for those that are not probed: host ports, findings)."""
    if e.warning or e.kind in ("hostport", "scope"):
        return None
    if e.src_ns and not netns.is_netns(netns_path(e.src_ns)):
        return probe.Outcome("error", f"namespace {e.src_ns} does not exist")
    try:
        if e.kind == "dns":
            server = probe.resolver_of(e.src_ns) if e.src_ns else None
            if server is None:
                return probe.Outcome("error", f"/etc/netns/{e.src_ns}/resolv.conf names no nameserver")
            return probe.in_ns(e.src_ns, probe.dns, server, e.name or "", e.qtype, timeout)
        assert e.address is not None and e.port is not None
        if e.proto == "udp":
            return probe.in_ns(e.src_ns, probe.udp, e.address, e.port, timeout)
        landing = e.dst_spaces if e.kind == "publish" else ()
        return probe.in_ns(e.src_ns, probe.tcp, e.address, e.port, timeout, landing)
    except OSError as e2:
        return probe.Outcome("error", e2.strerror or str(e2))


def probe_all(expects: list[Expect], timeout: float, workers: int) -> dict[Expect, probe.Outcome | None]:
    """Every probe, ``workers`` at a time; results by expectation."""
    if not expects:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(expects)))) as pool:
        futures = {e: pool.submit(run_probe, e, timeout) for e in expects}
        return {e: f.result() for e, f in futures.items()}


def dns_observed(e: Expect, o: probe.Outcome) -> tuple[str, bool]:
    if o.status != "NOERROR":
        return o.status, o.status == e.expected
    six = e.qtype == "AAAA"
    got = tuple(a for a in o.addresses if (":" in a) == six)
    text = ", ".join(got) or "no address"
    return text, e.expected not in ("NXDOMAIN", "REFUSED") and set(got) == set(e.want)


def judge(e: Expect, o: probe.Outcome | None, k: Kernel) -> Result:
    """The result of one expectation from its probe's outcome (no reason yet for a failure)."""
    if e.warning or e.kind == "scope":
        return Result(e, "not probed" if e.kind != "scope" else "no shared network", True, e.why, True)
    if e.kind == "hostport":
        holders = port_holders(k, e)
        if holders:
            return Result(e, "held by " + "; ".join(holders), False,
                          f"host port {e.port}/{e.proto} is also held by another process: it never sees this traffic "
                          "(the DNAT comes first); stop it or publish another port")
        return Result(e, "free", True)
    assert o is not None
    if o.status == "error":
        return Result(e, "error", False, o.detail)
    if e.kind == "dns":
        observed, ok = dns_observed(e, o)
        return Result(e, observed, ok)
    elsewhere = e.kind == "publish" and o.status == "open" and o.landed == ""
    observed = "open (not the service)" if elsewhere else o.status
    if e.expected == "open":
        return Result(e, observed, o.status == "open" and not elsewhere)
    if e.expected == "closed":
        return Result(e, observed, o.status != "open" or elsewhere)
    return Result(e, observed, o.status in ("timeout", "unreachable"))


def port_holders(k: Kernel, e: Expect) -> list[str]:
    """Other host processes listening on a published host port (``pid N (comm) on ADDR:PORT``)."""
    socks = [s for s in k.socks.get("", []) if s.proto == e.proto and s.lport == e.port
             and (e.address is None or s.wildcard or s.local == e.address)]
    if not socks:
        return []
    owners = sockdiag.owners({s.inode for s in socks})
    out = []
    for s in sorted(socks, key=lambda s: s.endpoint()):
        o = owners.get(s.inode)
        if o is not None and o.pid in k.own_pids:
            continue
        who = f"pid {o.pid} ({o.comm})" if o is not None else "a process composenet cannot see"
        out.append(f"{who} on {s.endpoint()}")
    return out
