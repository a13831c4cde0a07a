"""nftables tracing for `composenet check`: which rule drops a probe, in which table.

A ``TraceSession`` puts a short-lived table of its own (``inet cncheck_<pid>``) in each namespace
a probe crosses: its prerouting and output chains (priority -350, before every other) set
``meta nftrace`` on the probe's flows only, and an input chain of the highest priority marks a
packet that reached the local stack. A netlink listener per namespace (joined before the table
exists) reads the trace events (composenet.linux.nftrace). The tables are removed when the session
ends, on error and on Ctrl-C too; a table left by a killed check (its pid is gone) is removed by
the next session in that namespace.

Owns: the trace table's text, reading events and naming the rule that dropped a flow (by its
``cn:`` comment for composenet's table; table, chain and rule text for anyone else's). Must not:
touch any other table, or trace anything but the flows it was given.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from composenet.kernel import nft
from composenet.linux import netns
from composenet.linux.nftrace import TRACE_POLICY, TraceEvent, TraceListener

TABLE_PREFIX = "cncheck_"
FIRST, LAST = -350, 2147483647  # before raw/conntrack/nat/filter; after everything at input
NFT_TIMEOUT = 10.0
PROTOS = {"tcp": 6, "udp": 17}
QUIET = 0.2  # seconds without a new event after which a listener has them all


@dataclass(frozen=True)
class Flow:
    """Packets of one probe as a namespace sees them: protocol, destination (after any DNAT
    done before that namespace) and, when known, source."""

    proto: str
    dst: str
    dport: int
    src: str | None = None

    def match(self) -> str:
        fam = "ip6" if ":" in self.dst else "ip"
        src = f"{fam} saddr {self.src} " if self.src else ""
        return f"{src}{fam} daddr {self.dst} meta l4proto {self.proto} th dport {self.dport}"

    def owns(self, ev: TraceEvent) -> bool:
        return ev.dst == self.dst and ev.dport == self.dport and ev.proto == PROTOS.get(self.proto)


@dataclass(frozen=True)
class Finding:
    """What the trace says about a flow in one namespace."""

    ns: str
    seen: bool  # a traced packet of the flow was seen at all
    delivered: bool  # it reached this namespace's input hook (its local stack)
    drop: TraceEvent | None = None
    rule: str = ""  # the dropping rule: its cn: comment, or its text


def table_name(pid: int | None = None) -> str:
    return f"{TABLE_PREFIX}{os.getpid() if pid is None else pid}"


def ruleset(name: str, flows: list[Flow]) -> str:
    """The trace table: declared, deleted and re-created in one transaction."""
    rules = "".join(f'\t\t{f.match()} meta nftrace set 1 comment "composenet check: trace"\n'
                    for f in sorted(set(flows), key=lambda f: (f.dst, f.dport, f.proto, f.src or "")))
    return (f"table inet {name}\ndelete table inet {name}\ntable inet {name} {{\n"
            f"\tchain pre {{\n\t\ttype filter hook prerouting priority {FIRST}; policy accept;\n{rules}\t}}\n"
            f"\tchain out {{\n\t\ttype filter hook output priority {FIRST}; policy accept;\n{rules}\t}}\n"
            f"\tchain in {{\n\t\ttype filter hook input priority {LAST}; policy accept;\n\t}}\n}}\n")


def _run_nft(*args: str) -> subprocess.CompletedProcess:
    """`nft` in the calling thread's namespace (a forked child inherits the thread's)."""
    try:
        return subprocess.run(["nft", *args], capture_output=True, text=True, timeout=NFT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(["nft", *args], 1, "", str(e))


def _stale_tables() -> list[str]:
    """Trace tables of checks whose process is gone, in this thread's namespace."""
    r = _run_nft("-j", "list", "tables")
    try:
        items = json.loads(r.stdout).get("nftables", []) if r.returncode == 0 else []
    except ValueError:
        return []
    out = []
    for item in items:
        t = item.get("table") if isinstance(item, dict) else None
        m = re.fullmatch(re.escape(TABLE_PREFIX) + r"(\d+)", str((t or {}).get("name", "")))
        if t and t.get("family") == "inet" and m and not os.path.exists(f"/proc/{m.group(1)}"):
            out.append(t["name"])
    return out


def _delete(name: str) -> None:
    with contextlib.suppress(Exception):
        nft.load(f"table inet {name}\ndelete table inet {name}\n", f"the deletion of trace table {name}")


class TraceSession:
    """Trace tables and listeners in every namespace of ``flows`` (namespace -> its flows)."""

    def __init__(self, flows: dict[str, list[Flow]]):
        self.flows = {ns: fl for ns, fl in flows.items() if fl}
        self.name = table_name()
        self.listeners: dict[str, TraceListener] = {}
        self.installed: list[str] = []

    def __enter__(self) -> TraceSession:
        try:
            for ns in sorted(self.flows):
                with netns.entered(ns):
                    for stale in _stale_tables():
                        _delete(stale)
                    self.listeners[ns] = TraceListener()
                    self.installed.append(ns)  # before the load: a half-done load is removed too
                    nft.load(ruleset(self.name, self.flows[ns]), f"trace table {self.name}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every trace table and close the listeners (idempotent)."""
        for ns in self.installed:
            with contextlib.suppress(OSError), netns.entered(ns):
                _delete(self.name)
        self.installed = []
        for listener in self.listeners.values():
            listener.close()
        self.listeners = {}

    def events(self, limit: float = 2.0) -> dict[str, list[TraceEvent]]:
        """Every event each namespace's listener has received: the first listener waits until
        events stop coming (``QUIET``); by then the others hold theirs already."""
        out = {}
        for n, (ns, listener) in enumerate(sorted(self.listeners.items())):
            out[ns] = listener.read(quiet=QUIET if n == 0 else QUIET / 10, limit=limit)
        return out


def packets(events: list[TraceEvent], flow: Flow) -> Iterator[list[TraceEvent]]:
    """The events of each traced packet of ``flow``: grouped by trace id, an id belonging to the
    flow when its first event with headers (our own rule's) shows the flow's destination."""
    by_id: dict[int, list[TraceEvent]] = {}
    for ev in events:
        by_id.setdefault(ev.id, []).append(ev)
    for evs in by_id.values():
        head = next((e for e in evs if e.dst is not None), None)
        if head is not None and flow.owns(head):
            yield evs


def finding(ns: str, events: list[TraceEvent], flow: Flow, own_table: str, trace_table: str) -> Finding:
    """The first drop of a packet of ``flow`` (rule or policy), else whether one was delivered.
    ``own_table`` is the project's (its rules are named by comment), ``trace_table`` ours."""
    seen = delivered = False
    for evs in packets(events, flow):
        seen = True
        for ev in evs:
            if ev.table == trace_table and ev.chain == "in" and ev.type == TRACE_POLICY:
                delivered = True
            if ev.drops:
                return Finding(ns, True, False, ev, describe_drop(ns, ev, own_table))
    return Finding(ns, seen, delivered)


def rule_text(ns: str, family: str, table: str, chain: str, handle: int) -> str:
    """The text of rule ``handle`` as `nft -a list table` prints it (without the handle)."""
    with netns.entered(ns):
        r = _run_nft("-a", "list", "table", family, table)
    current = ""
    for line in r.stdout.splitlines():
        s = line.strip()
        m = re.match(r"chain (\S+) \{", s)
        if m:
            current = m.group(1)
            continue
        if current == chain and s.endswith(f"# handle {handle}"):
            return s[: -len(f"# handle {handle}")].strip()
    return f"rule handle {handle}"


def comment_of(text: str) -> str | None:
    m = re.search(r'comment "([^"]*)"', text)
    return m.group(1) if m else None


def describe_drop(ns: str, ev: TraceEvent, own_table: str) -> str:
    """``composenet rule "cn:..." (table inet composenet_p, chain filter_fwd)`` or, for a table
    composenet does not own, its table, chain and rule text (or its policy)."""
    where = f"table {ev.family} {ev.table}, chain {ev.chain}" + (f", in {ns}" if ns else "")
    if ev.type == TRACE_POLICY or ev.handle is None:
        owner = "composenet's" if ev.table == own_table else "not composenet's"
        return f"the policy of {where} ({owner}) drops it"
    text = rule_text(ns, ev.family, ev.table, ev.chain, ev.handle)
    if ev.table == own_table:
        return f'composenet rule "{comment_of(text) or text}" ({where}) drops it'
    return f"{where} (not composenet's) drops it: `{text}`"
