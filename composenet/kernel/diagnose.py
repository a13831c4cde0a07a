"""Why a `composenet check` expectation does not hold, as far as the kernel can tell.

For each failure, in this order of evidence:

- a namespace, route, address, link or rule the plan has and the kernel does not (drift, from
  the plan made against the kernel: ``composenet up`` repairs it), or a DNAT rule missing;
- the rule that drops the probe: the failed probes run again under nftables tracing
  (composenet.kernel.trace), and the first drop names composenet's rule by its ``cn:`` comment,
  or another table's table, chain and rule;
- nothing listens on the port in the target (and what does listen there), or the target's
  process exited (its exit code when recorded, its last log lines);
- for a published port, the host process that answered instead of the service.

A UDP probe that got no answer is judged here too: delivered to the target's stack where a
socket listens (it holds), dropped by a rule (it fails), or unknown (a warning).

Must not: change anything but the trace tables (removed before it returns).
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, replace

from composenet.core.checkreport import Result
from composenet.core.checks import Expect
from composenet.core.plan import Change
from composenet.core.render import describe
from composenet.core.resources import (
    Address,
    Bridge,
    Macvlan,
    Netns,
    NetnsFile,
    NftTable,
    Process,
    Resolver,
    Resource,
    Route,
    Veth,
    nft_table_name,
)
from composenet.kernel import probe
from composenet.kernel.checkstate import Kernel, run_probe
from composenet.kernel.trace import Finding, Flow, TraceSession, finding
from composenet.linux import sockdiag
from composenet.linux.fileio import tail_lines

DRIFT_HINT = "`composenet up` repairs it"
LOG_LINES = 5
MAX_LISTED = 6


@dataclass(frozen=True)
class Traced:
    """The trace of one expectation: the first drop, and where its packets were delivered."""

    drop: Finding | None
    delivered: tuple[str, ...]  # namespaces whose local stack got a packet of it
    seen: bool


def diagnose(k: Kernel, results: list[Result], outcomes: dict[Expect, probe.Outcome | None], timeout: float,
             workers: int, explain: bool = False) -> list[Result]:
    """``results`` with a reason for each failure (and each UDP silence judged)."""
    wanted = [r.expect for r in results if _wants_trace(r, outcomes.get(r.expect), explain)]
    traced = trace(k, wanted, timeout, workers) if wanted else {}
    out = []
    for r in results:
        o = outcomes.get(r.expect)
        t = traced.get(r.expect)
        if r.ok and not r.warning and t is not None and t.drop is not None:
            out.append(replace(r, reason=f"{r.expect.why}; {t.drop.rule}" if r.expect.why else t.drop.rule))
        elif r.ok or o is None:
            out.append(r)
        else:
            out.append(reason(k, r, o, t, timeout))
    return out


def _wants_trace(r: Result, o: probe.Outcome | None, explain: bool) -> bool:
    if o is None or r.warning:
        return False
    if r.ok:
        return explain and r.expect.expected in ("blocked", "closed") and o.status == "timeout"
    return o.status in ("timeout", "unreachable") and r.expect.expected not in ("blocked", "closed")


# ---- tracing --------------------------------------------------------------------------------


def flows(e: Expect, k: Kernel) -> dict[str, list[Flow]]:
    """The flow of ``e``'s probe as each namespace it crosses sees it."""
    out: dict[str, list[Flow]] = {}
    if e.kind == "dns":
        server = probe.resolver_of(e.src_ns) if e.src_ns else None
        if server:
            out = {e.src_ns: [Flow("udp", server, 53)], "": [Flow("udp", server, 53)]}
    elif e.kind == "publish" and e.address and e.port and e.dst_port:
        inner = [Flow(e.proto, a, e.dst_port) for a in e.dst_addresses]
        out = {"": [Flow(e.proto, e.address, e.port), *inner], **{ns: inner for ns in e.dst_spaces}}
    elif e.address and e.port:
        f = Flow(e.proto, e.address, e.port)
        out = {e.src_ns: [f], "": [f], **({e.dst_ns: [f]} if e.dst_ns else {})}
    return {ns: fl for ns, fl in out.items() if ns not in k.gone}


def trace(k: Kernel, expects: list[Expect], timeout: float, workers: int) -> dict[Expect, Traced]:
    """Run ``expects``' probes again under tracing; what the trace says of each."""
    per_ns: dict[str, list[Flow]] = {}
    plan = {e: flows(e, k) for e in expects}
    for fl in plan.values():
        for ns, f in fl.items():
            per_ns.setdefault(ns, []).extend(f)
    own = nft_table_name(k.project.name)
    with TraceSession(per_ns) as session:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(expects)))) as pool:
            list(pool.map(lambda e: run_probe(e, timeout), expects))
        events = session.events()
        name = session.name
    out = {}
    for e, fl in plan.items():
        order = [ns for ns in [e.src_ns, "", *sorted(fl)] if ns in fl]
        found: list[Finding] = []
        for ns in dict.fromkeys(order):
            found += [finding(ns, events.get(ns, []), f, own, name) for f in fl[ns]]
        drop = next((f for f in found if f.drop is not None), None)
        out[e] = Traced(drop, tuple(sorted({f.ns for f in found if f.delivered})), any(f.seen for f in found))
    return out


# ---- evidence -------------------------------------------------------------------------------


def _ns_of(r: Resource) -> str | None:
    if isinstance(r, Netns):
        return r.name
    if isinstance(r, Address | Route | Macvlan | NetnsFile | Veth | Process):
        return r.ns
    return None


def drift(k: Kernel, spaces: set[str], bridges: set[str], rule_words: tuple[str, ...] | None = None) -> list[str]:
    """What the kernel lacks (or holds besides) of the plan for these namespaces and bridges, and
    the project's rules that contain every one of ``rule_words`` (None: no rules)."""
    notes = []
    for c in k.planned.plan.changes:
        r = c.resource
        if isinstance(r, NftTable):
            if rule_words is not None:
                notes += _rule_drift(c, rule_words)
            continue
        ns = _ns_of(r)
        related = (ns is not None and ns in spaces and ns != "") or (
            isinstance(r, Bridge) and r.ifname in bridges) or (
            isinstance(r, Address) and not r.ns and r.ifname in bridges) or (
            isinstance(r, Veth) and r.bridge in bridges and r.ns in spaces)
        if related and not isinstance(r, NetnsFile | Process):
            verb = {"create": "missing", "delete": "not in the file", "update": "differs",
                    "replace": "differs"}[c.action.value]
            notes.append(f"{' '.join(describe(r).split())} is {verb} ({c.reason.value})")
    return notes


def _rule_drift(c: Change, words: tuple[str, ...]) -> list[str]:
    want = set(c.after.rules) if isinstance(c.after, NftTable) else set()
    have = set(c.before.rules) if isinstance(c.before, NftTable) else set()
    if not have and isinstance(c.after, NftTable):
        return [f"the project's table inet {c.after.name} is missing"]
    out = []
    for rule in sorted(want - have):
        if all(w in rule for w in words):
            out.append(f'rule "{rule.split(": ", 1)[-1]}" is missing from the project\'s table')
    for rule in sorted(have - want):
        if all(w in rule for w in words):
            out.append(f'rule "{rule.split(": ", 1)[-1]}" is in the project\'s table but not in the file')
    return out


def drift_text(notes: list[str]) -> str:
    return "the kernel differs from the file: " + "; ".join(notes) + f" ({DRIFT_HINT})" if notes else ""


def label_of(k: Kernel, ns: str) -> str:
    row = next((c for c in k.desired.containers if c["name"] == ns), None)
    return row["service"] if row else ns


def listen_note(k: Kernel, ns: str, proto: str, port: int, address: str) -> str | None:
    """What listens (or not) on ``port`` in ``ns``; None when a socket takes ``address``."""
    socks = [s for s in k.socks.get(ns, []) if s.proto == proto]
    on_port = [s for s in socks if s.lport == port]
    if any(s.accepts(address) for s in on_port):
        return None
    who = label_of(k, ns)
    if on_port:
        only = ", ".join(sorted({s.endpoint() for s in on_port}))
        return f"nothing listens on {address}:{port}/{proto} in {who}: {port}/{proto} is bound to {only} only"
    listed = sorted({f"{s.endpoint()}/{s.proto}" for s in k.socks.get(ns, [])})
    what = ", ".join(listed[:MAX_LISTED]) + (", ..." if len(listed) > MAX_LISTED else "") if listed else "nothing"
    return f"nothing listens on {port}/{proto} in {who} (it listens on {what})"


def process_note(k: Kernel, ns: str) -> str | None:
    """The service process of namespace ``ns`` that should run and does not: its exit code (when
    its record has one) and its last log lines."""
    for r in sorted(k.desired.resources.values(), key=lambda r: r.key):
        if not isinstance(r, Process) or r.ns != ns:
            continue
        rec = k.records.get(r.container)
        if r.key in k.observed.resources and (rec or {}).get("state") == "running":
            continue
        code = rec.get("exit_code", rec.get("returncode")) if rec else None
        status = ("it was never started" if rec is None
                  else f"exit code {code}" if code is not None else "its exit code was not recorded")
        text = f"the process of {r.service} ({r.container}) is not running ({status})"
        tail = log_tail(k.ctx.paths.log(r.container))
        if tail:
            text += "; last log lines: " + " | ".join(tail)
        return text + f" (`composenet logs {r.service}`)"
    return None


def log_tail(path: str, n: int = LOG_LINES) -> list[str]:
    return [ln.strip() for ln in tail_lines(path, 4096, window=4096) if ln.strip()][-n:]


def resolver_note(k: Kernel, e: Expect, server: str | None) -> list[str]:
    """The resolver the asker's resolv.conf names (against the plan's), and whether it runs."""
    notes = []
    f = k.desired.resources.get(f"file:{e.src_ns}/resolv.conf")
    planned = probe.first_nameserver(f.content) if isinstance(f, NetnsFile) else None
    if planned and server and planned != server:
        notes.append(f"{e.src_label}'s resolv.conf names {server}, the plan says {planned} (drift; {DRIFT_HINT})")
    key = f"resolver:{k.project.name}"
    if isinstance(k.desired.resources.get(key), Resolver) and key not in k.observed.resources:
        notes.append(f"the project's resolver is not running (`composenet up` starts it; "
                     f"`composenet logs` cannot show it: see {k.ctx.paths.log('dns')})")
    elif any(c.key == key for c in k.planned.plan.changes):
        notes.append(f"the project's resolver runs an older configuration (drift; {DRIFT_HINT})")
    return notes


# ---- the reasons ----------------------------------------------------------------------------


def reason(k: Kernel, r: Result, o: probe.Outcome, t: Traced | None, timeout: float) -> Result:
    e = r.expect
    if e.kind == "dns":
        return replace(r, reason=dns_reason(k, e, r, o, t))
    if e.expected in ("blocked", "closed"):
        return replace(r, reason=reached_reason(k, e, o))
    return open_reason(k, r, o, t, timeout)


def _spaces(e: Expect) -> list[str]:
    return list(e.dst_spaces) if e.kind == "publish" else ([e.dst_ns] if e.dst_ns else [])


def _bridges(k: Kernel, network: str | None) -> set[str]:
    return {n["bridge"] for n in k.desired.networks if n["name"] == network and n.get("bridge")}


def open_reason(k: Kernel, r: Result, o: probe.Outcome, t: Traced | None, timeout: float) -> Result:
    """Why something expected to answer did not."""
    e = r.expect
    spaces = _spaces(e)
    gone = [ns for ns in [e.src_ns, *spaces] if ns in k.gone]
    if gone:
        return replace(r, reason=f"namespace {', '.join(gone)} does not exist (drift; {DRIFT_HINT})")
    words = (f"dnat {e.dst_service} ", f":{e.port}/{e.proto}") if e.kind == "publish" else None
    notes = drift(k, {e.src_ns, *spaces}, _bridges(k, e.network), words)
    port = e.dst_port if e.kind == "publish" else e.port
    assert port is not None
    targets = list(zip(spaces, e.dst_addresses, strict=False)) if e.kind == "publish" else [(e.dst_ns, e.address)]
    listen = [n for ns, a in targets if a for n in [listen_note(k, ns, e.proto, port, a)] if n]
    procs = [n for ns, _a in targets for n in [process_note(k, ns)] if n]
    if e.kind == "publish" and o.status == "open" and o.landed == "":
        holders = _host_holders(k, e)
        text = f"it reached {holders or 'something on the host'}, not {e.dst_label}"
        return replace(r, reason="; ".join([text, *([drift_text(notes)] if notes else [])]))
    if t is not None and t.drop is not None:
        return replace(r, reason="; ".join([t.drop.rule, *([drift_text(notes)] if notes else [])]))
    if e.proto == "udp" and o.status == "timeout" and not notes:
        delivered = t is not None and any(ns in t.delivered for ns in spaces)
        if delivered and not listen:
            return replace(r, observed="delivered, no answer", ok=True,
                           reason="the datagram reached a listening socket; the service did not answer it")
        if not listen and not procs:
            return replace(r, ok=True, warning=True, reason=f"no answer within {timeout:g} s, and no rule was seen "
                           "dropping it (UDP: a silent service and a lost datagram look alike)")
    parts = procs + listen + ([drift_text(notes)] if notes else [])
    if not parts:
        parts = [o.detail or o.status]
        if t is not None and spaces and any(ns in t.delivered for ns in spaces):
            parts.append(f"it reached {e.dst_label}'s namespace, and nothing answered")
        elif t is not None:
            parts.append("no rule was seen dropping it" if t.seen else "tracing saw none of its packets")
    return replace(r, reason="; ".join(parts))


def _host_holders(k: Kernel, e: Expect) -> str:
    socks = [s for s in k.socks.get("", []) if s.proto == e.proto and s.lport == e.port]
    if not socks:
        return ""
    owners = sockdiag.owners({s.inode for s in socks})
    return ", ".join(f"pid {o.pid} ({o.comm}) on {s.endpoint()}" if (o := owners.get(s.inode)) else
                     f"a host process on {s.endpoint()}" for s in socks)


def reached_reason(k: Kernel, e: Expect, o: probe.Outcome) -> str:
    """Why something expected to be blocked (isolation, ICC off, internal, not published) was not."""
    what = "answered" if o.status == "open" else f"{o.status}: the packet got there"
    if e.kind == "egress":
        words: tuple[str, ...] = ("internal ", "no egress")
    elif e.kind == "publish":
        words = (f":{e.port}/{e.proto}",)
    else:
        words = ("filter_fwd",)
    notes = drift(k, set(), set(), words)
    text = f"{e.dst_label} {what}, although {e.why or 'the file says it must not'}"
    if notes:
        return f"{text}; {drift_text(notes)}"
    return f"{text}; no rule of composenet's table dropped it"


def dns_reason(k: Kernel, e: Expect, r: Result, o: probe.Outcome, t: Traced | None) -> str:
    notes = resolver_note(k, e, o.server)
    if o.status in ("timeout", "refused", "error") and e.expected != "REFUSED" or (
            e.expected == "REFUSED" and o.status in ("timeout", "error")):
        parts = [f"{o.server or 'the resolver'}: {o.detail or o.status}", *notes]
        if t is not None and t.drop is not None:
            parts.append(t.drop.rule)
        return "; ".join(parts)
    if e.expected == "NXDOMAIN":
        return f"{e.name} resolves for {e.src_label} although it must not: {e.why}"
    if e.expected == "REFUSED":
        return f"outside names are not refused for {e.src_label} ({e.why}): the resolver answered {r.observed}"
    if o.status == "NXDOMAIN":
        text = f"the resolver at {o.server} does not know {e.name} for {e.src_label}"
    else:
        text = f"the resolver at {o.server} answered {r.observed}; the plan says {e.expected}"
    notes += [drift_text(n) for n in [drift(k, {e.src_ns, e.dst_ns}, _bridges(k, e.network))] if n]
    return "; ".join([text, *notes])
