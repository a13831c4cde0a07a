"""What `up` prints: by default a line per network and per service that changed (the steps are
grouped by what they belong to), a progress line on a terminal while a large stack is applied,
every step with -v, and the time of each phase with --timings. Built on the pipeline's Report
(the apply's progress callbacks); light: imports only the standard library at import time."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from composenet.core.plan import Change, Plan
    from composenet.pipeline import Report

PROGRESS_FROM = 30  # steps: a smaller stack is applied before a progress line would help
Echo = Callable[[str], None]


@dataclass
class UpView:
    echo: Echo  # to stderr
    verbose: bool = False
    quiet: bool = False
    tty: bool = field(default_factory=lambda: sys.stderr.isatty())
    report: Report | None = None
    _shown: bool = False  # a progress line is on the terminal

    def make_report(self) -> Report:
        from composenet.pipeline import Report  # deferred: the pipeline

        self.report = Report(step=self.step)
        return self.report

    def step(self, i: int, total: int, change: Change, text: str) -> None:
        if self.quiet:
            return
        if self.verbose:
            self.echo(f"[{i}/{total}] {text}")
        elif self.tty and total >= PROGRESS_FROM:
            width = shutil.get_terminal_size((80, 24)).columns - 1
            sys.stderr.write("\r\x1b[K" + f"[{i}/{total}] {text}"[:width])
            sys.stderr.flush()
            self._shown = True

    def clear(self) -> None:
        """Remove the progress line (before a summary or an error)."""
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False

    def summary(self, plan: Plan) -> None:
        self.clear()
        if self.quiet or self.verbose:
            return
        for line in summary_lines(plan):
            self.echo(line)

    def timings(self, load: float) -> list[str]:
        t = dict(self.report.timings) if self.report is not None else {}
        applies = sorted(((k.split(" ", 1)[1], v) for k, v in t.items() if k.startswith("apply ")),
                         key=lambda kv: -kv[1])
        rows = [("load", load), ("observe", t.get("observe", 0.0)), ("plan", t.get("plan", 0.0))]
        if "cluster" in t:  # leases and network records in the cluster store, before any kernel step
            rows.append(("cluster", t["cluster"]))
        out = ["Timings:"] + [f"  {name:<15} {secs:8.3f} s" for name, secs in rows]
        if applies:
            out.append(f"  {'apply':<15} {sum(v for _, v in applies):8.3f} s")
        out += [f"    {kind:<13} {secs:8.3f} s" for kind, secs in applies]
        for name in ("cluster publish", "verify"):
            if name in t:
                out.append(f"  {name:<15} {t[name]:8.3f} s")
        return out


def _owner(change: Change, ns_service: dict[str, str], bridge_net: dict[str, str]) -> tuple[str, str] | None:
    """("network" | "service", name) of what a change belongs to; None: the project as a whole."""
    r = change.resource
    kind = r.kind
    if kind in ("bridge", "vxlan"):
        return ("network", str(getattr(r, "network", "")))
    ns = str(getattr(r, "ns", "") or "")
    ifname = getattr(r, "ifname", None)
    if not ns and ifname in bridge_net and kind in ("address", "sysctl"):
        return ("network", bridge_net[str(ifname)])
    if kind in ("netns", "process"):
        return ("service", str(getattr(r, "service", "")))
    if ns and ns in ns_service:
        return ("service", ns_service[ns])
    return None


def summary_lines(plan: Plan) -> list[str]:
    """A line per network and per service the plan changes: created, removed, or updated (with
    the kinds of what changed), e.g. ``network shop_front  created  172.20.0.0/16``."""
    ns_service: dict[str, str] = {c["ns"]: c["service"] for c in plan.containers if c.get("ns")}
    bridge_net: dict[str, str] = {n["bridge"]: n["name"] for n in plan.networks if n.get("bridge")}
    for c in plan.changes:
        r = c.resource
        if r.kind == "netns":
            ns_service.setdefault(str(getattr(r, "name", "")), str(getattr(r, "service", "")))
        if r.kind == "bridge":
            bridge_net.setdefault(str(getattr(r, "ifname", "")), str(getattr(r, "network", "")))
    groups: dict[tuple[str, str], list[Change]] = {}
    rest: list[Change] = []
    for c in plan.changes:
        owner = _owner(c, ns_service, bridge_net)
        if owner is None:
            rest.append(c)
        else:
            groups.setdefault(owner, []).append(c)
    subnets = {n["name"]: ", ".join(s for s in (n.get("subnet"), n.get("subnet6")) if s) for n in plan.networks}
    per_service: dict[str, int] = {}
    for cont in plan.containers:
        per_service[cont["service"]] = per_service.get(cont["service"], 0) + 1
    rows: list[tuple[str, str, str]] = []
    for (what, name), changes in sorted(groups.items(), key=lambda kv: (kv[0][0] != "network", kv[0][1])):
        verb = _verb(changes)
        extra = ""
        if what == "network" and verb != "removed":
            extra = subnets.get(name, "")
        elif what == "service" and verb == "created":
            n = per_service.get(name, 0)
            extra = f"{n} container{'s' if n != 1 else ''}" if n else ""
        rows.append((f"{what} {name}", verb, extra))
    if rest and not rows:
        rows.append(("project", _verb(rest), ", ".join(sorted({c.kind for c in rest}))))
    width = max((len(r[0]) for r in rows), default=0)
    return [f"  {a.ljust(width)}  {b}{'  ' + c if c else ''}" for a, b, c in rows]


def _verb(changes: list[Change]) -> str:
    actions = {c.action.value for c in changes}
    if actions == {"create"}:
        return "created"
    if actions == {"delete"}:
        return "removed"
    kinds = ", ".join(sorted({c.kind for c in changes}))
    return f"updated ({kinds})"


def ignored_note(ignored: Any) -> str | None:
    """One line naming the keys the file has that composenet keeps but does not act on
    (``Project.ignored`` key paths), grouped by key: ``image (db, web), volumes (web), ...``."""
    by_key: dict[str, list[str]] = {}
    for path in ignored:
        parts = str(path).split(".")
        if parts[0] == "services" and len(parts) >= 3:
            by_key.setdefault(".".join(parts[2:]), []).append(parts[1])
        else:
            by_key.setdefault(f"top-level {'.'.join(parts)}", [])
    if not by_key:
        return None
    items = [f"{k} ({', '.join(sorted(set(v)))})" if v else k for k, v in sorted(by_key.items())]
    return ("note: kept but not acted on (composenet builds networks, it does not run images, build, "
            "mount volumes or run health checks): " + ", ".join(items))
