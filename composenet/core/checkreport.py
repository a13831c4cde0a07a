"""The results of `composenet check` and their three renderings: text (a line per action and a
summary), JSON (one object per action) and JUnit XML (for CI). Pure; no I/O.

A ``Result`` is an expectation (``core.checks.Expect``) with what the probe observed, whether it
holds, and why not (the kernel layer's diagnosis). A warning is a finding that does not fail the
check: a UDP service that stays silent where no rule drops the datagram, a ``depends_on`` across
networks. Exit code: 0 when every expectation holds, 1 otherwise (``exit_code``).

Must not: probe or diagnose (composenet.kernel.check does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from composenet.core.checks import Expect

OK, FAIL, WARN = "✔", "✘", "⚠"
REACH, NO_REACH, ASK = "→", "↛", "⇢"
NEGATIVE = ("blocked", "closed", "NXDOMAIN", "REFUSED")


@dataclass(frozen=True)
class Result:
    expect: Expect
    observed: str
    ok: bool
    reason: str = ""
    warning: bool = False

    def to_json(self) -> dict[str, Any]:
        e = self.expect
        return {
            "from": e.src_label or e.src, "to": e.dst_label or e.dst, "network": e.network, "kind": e.kind,
            "target": e.target, "expected": e.expected, "observed": self.observed, "ok": self.ok,
            "reason": self.reason or None, "warning": self.warning,
            "from_container": e.src, "to_container": e.dst,
        }


def summary(results: list[Result]) -> str:
    failed = sum(1 for r in results if not r.ok)
    warnings = sum(1 for r in results if r.warning)
    return (f"{len(results)} check{'s' if len(results) != 1 else ''}, {failed} failed, "
            f"{warnings} warning{'s' if warnings != 1 else ''}")


def exit_code(results: list[Result]) -> int:
    return 0 if all(r.ok for r in results) else 1


def action(e: Expect) -> str:
    """The action a line names: ``web → db:5432 tcp (net)``, ``fe ↛ db  dns db: NXDOMAIN``."""
    arrow = NO_REACH if e.expected in NEGATIVE else REACH
    net = f" ({e.network})" if e.network else ""
    if e.kind == "dns":
        what = f"dns {e.name}" + (" AAAA" if e.qtype == "AAAA" else "")
        wanted = f": {e.expected}" if e.expected in NEGATIVE else f" = {e.expected}"
        return f"{e.src_label} {arrow} {e.dst_label}  {what}{wanted}{net}"
    if e.kind in ("tcp", "udp"):
        return f"{e.src_label} {arrow} {e.dst_label}:{e.port} {e.proto}{net}" + (
            "  blocked" if e.expected == "blocked" else "")
    if e.kind == "egress":
        return f"{e.src_label} {arrow} outside {e.target} tcp  blocked"
    if e.kind == "publish":
        return f"host {arrow} {e.dst_label}:{e.dst_port} via {e.target} {e.proto}" + (
            "  closed" if e.expected == "closed" else "")
    if e.kind == "hostport":
        return f"host port {e.target} ({e.dst_label}:{e.dst_port}) held by no other process"
    return f"{e.src_label} {ASK} {e.dst_label}  depends_on: {e.expected}"


def line(r: Result, explain: bool = False) -> str:
    mark = WARN if r.warning else (OK if r.ok else FAIL)
    text = f"{mark} {action(r.expect)}"
    if not r.ok:
        return f"{text}  {r.observed}: {r.reason}" if r.reason else f"{text}  {r.observed}"
    if r.warning:
        return f"{text}  {r.reason}"
    if explain and (r.reason or r.expect.why):
        return f"{text}  ({r.reason or r.expect.why})"
    return text


def render_text(project: str, results: list[Result], explain: bool = False) -> str:
    """A header, a line per action, the summary line. ``explain``: say why on passing lines too
    (for a pair or a service named on the command line)."""
    lines = [f'composenet check — project "{project}"']
    lines += [line(r, explain) for r in results]
    lines.append(summary(results))
    return "\n".join(lines) + "\n"


def render_json(results: list[Result]) -> str:
    return json.dumps([r.to_json() for r in results], indent=1, ensure_ascii=False) + "\n"


def render_junit(project: str, results: list[Result]) -> str:
    """JUnit XML: one test suite, one test case per action (a warning is a passing case with
    the finding in its system-out)."""
    failed = sum(1 for r in results if not r.ok)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuites name="composenet check" tests="{len(results)}" failures="{failed}">',
           f'  <testsuite name={quoteattr("composenet check " + project)} tests="{len(results)}" '
           f'failures="{failed}" errors="0" skipped="0">']
    for r in results:
        e = r.expect
        head = f'    <testcase classname={quoteattr(f"{project}.{e.kind}")} name={quoteattr(action(e))}'
        if r.ok and not r.warning:
            out.append(head + "/>")
            continue
        out.append(head + ">")
        if not r.ok:
            message = f"{r.observed}: {r.reason}" if r.reason else r.observed
            out.append(f'      <failure type="check" message={quoteattr(message)}>'
                       f"expected {escape(e.expected)}, observed {escape(r.observed)}</failure>")
        else:
            out.append(f"      <system-out>warning: {escape(r.reason)}</system-out>")
        out.append("    </testcase>")
    out += ["  </testsuite>", "</testsuites>"]
    return "\n".join(out) + "\n"


def render(fmt: str, project: str, results: list[Result], explain: bool = False) -> str:
    if fmt == "json":
        return render_json(results)
    if fmt == "junit":
        return render_junit(project, results)
    return render_text(project, results, explain)
