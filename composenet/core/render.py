"""Plan -> text (for review and golden files) | JSON. Pure.

Stable and boring: everything sorted, no pids, ifindexes, timestamps or random names, so the
same inputs give byte-identical output. The fixed sentences are part of the contract.
Must not: compute anything the plan does not hold, or print (callers write the text).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from composenet.core.plan import Action, Change, Plan, Reason
from composenet.core.resources import (
    Address,
    Bridge,
    DnsRecords,
    ForwardingGuard,
    Ipvlan,
    Macvlan,
    Netns,
    NetnsFile,
    NftTable,
    Process,
    Resolver,
    Resource,
    Route,
    Supervisor,
    Sysctl,
    Veth,
    Vxlan,
)

NO_CHANGES = "No changes. Kernel state matches the compose file."
PLAN_FORMAT_VERSION = 1


def describe(r: Resource) -> str:
    """One line saying what the resource is, for humans."""
    own = r.describe()
    if own is not None:
        return own
    if isinstance(r, Sysctl):
        return f"sysctl   {r.name} = {r.value}" + (f" (in {r.ns})" if r.ns else "")
    if isinstance(r, Netns):
        return f"netns    {r.name}"
    if isinstance(r, Bridge):
        return f"bridge   {r.ifname}  mtu {r.mtu}  mac {r.mac}"
    if isinstance(r, Vxlan):
        peers = ", ".join(r.peers) or "none"
        local = f"  local {r.local}" if r.local else ""
        return f"vxlan    {r.ifname}  vni {r.vni} port {r.port}{local}  bridge {r.bridge}  mtu {r.mtu}  peers {peers}"
    if isinstance(r, Veth):
        flags = ["hairpin"] if r.hairpin else []
        if r.isolated:
            flags.append("isolated")
        return f"veth     {r.ifname} <-> {r.ns} {r.peer}  bridge {r.bridge}  mtu {r.mtu}  mac {r.mac}" + (
            f"  [{', '.join(flags)}]" if flags else "")
    if isinstance(r, Macvlan):
        return f"macvlan  {r.ns} {r.ifname}  parent {r.parent} mode {r.mode}  mtu {r.mtu}  mac {r.mac}"
    if isinstance(r, Ipvlan):
        return f"ipvlan   {r.ns} {r.ifname}  parent {r.parent} mode {r.mode} flag {r.flag}  mtu {r.mtu}"
    if isinstance(r, Address):
        return f"address  {r.cidr} on {(r.ns + ' ') if r.ns else ''}{r.ifname}"
    if isinstance(r, Route):
        dst = "default" if r.dst in ("0.0.0.0/0", "::/0") else r.dst
        fam = " (ipv6)" if ":" in r.dst else ""
        via = f" via {r.gateway}" if r.gateway else ""  # an ipvlan l3 default route is the device itself
        return f"route    {dst}{fam}{via} dev {r.ifname}" + (f" in {r.ns}" if r.ns else "")
    if isinstance(r, NftTable):
        n = sum(1 for x in r.rules if not x.startswith(("chain ", "set ")))
        return f"nft      table {r.family} {r.name} ({n} rules)"
    if isinstance(r, NetnsFile):
        return f"file     /etc/netns/{r.ns}/{r.name}"
    if isinstance(r, Resolver):
        return f"resolver {r.project}: " + ", ".join(r.listeners)
    if isinstance(r, DnsRecords):
        return "dns      names on " + ", ".join(r.networks) + " (served by their owners' resolvers)"
    if isinstance(r, Process):
        where = f"in {r.ns}" if r.ns else "in the host namespace"
        privileges = r.privileges()
        return f"process  {r.container} {where}: {shlex.join(r.argv)}" + (f"  [{privileges}]" if privileges else "")
    return f"{r.kind} {r.key}"


def _group(r: Resource, ns_service: dict[str, str], bridge_net: dict[str, str]) -> tuple[int, str]:
    """(order, title) of the section a change is listed under."""
    if isinstance(r, Sysctl | ForwardingGuard) and not getattr(r, "ifname", None) and not getattr(r, "ns", ""):
        return (0, "host")
    if isinstance(r, Supervisor):
        return (3, "project")
    if isinstance(r, Bridge | Vxlan):
        return (1, f"network {r.network}")
    if isinstance(r, Sysctl | Address) and (r.ifname in bridge_net) and not r.ns:
        return (1, f"network {bridge_net[r.ifname or '']}")
    if isinstance(r, NftTable | Resolver | DnsRecords):
        return (3, "project")
    ns = ""
    if isinstance(r, Netns):
        return (2, f"service {r.service or '?'}")
    if isinstance(r, Process):
        return (2, f"service {r.service}")
    if isinstance(r, Veth | Macvlan | Ipvlan | Address | Route | NetnsFile | Sysctl):
        ns = r.ns
    return (2, f"service {ns_service.get(ns, '?')}")


def _details(c: Change) -> list[str]:
    out = []
    if c.action in (Action.update, Action.replace) and c.before is not None and c.after is not None:
        b, a = c.before.compared(), c.after.compared()
        for f in c.fields:
            if isinstance(c.after, NftTable) and f == "rules":
                missing = [x for x in a.get("rules", ()) if x not in b.get("rules", ())]
                extra = [x for x in b.get("rules", ()) if x not in a.get("rules", ())]
                out += [f"      + {x}" for x in missing] + [f"      - {x}" for x in extra]
            elif f == "content":
                out += _line_changes(str(getattr(c.before, "content", "")), str(getattr(c.after, "content", "")))
            elif f == "digest":
                text = next((n for n in ("config", "records") if hasattr(c.after, n)), "")
                before, after = str(getattr(c.before, text, "")), str(getattr(c.after, text, ""))
                out += [f"      {path}: {b} -> {a}" for path, b, a in _setting_changes(before, after)[:MAX_DETAILS]]
                more = len(_setting_changes(before, after)) - MAX_DETAILS
                out += [f"      ... and {more} more"] if more > 0 else []
                if not _setting_changes(before, after):
                    out.append("      configuration differs")
            else:
                out.append(f"      {f}: {b.get(f)!r} -> {a.get(f)!r}")
    return out


MAX_DETAILS = 8  # lines of a changed file or configuration shown under its change


def _line_changes(before: str, after: str) -> list[str]:
    """The lines of a file added (+) and removed (-), at most MAX_DETAILS."""
    b, a = before.splitlines(), after.splitlines()
    lines = [f"      + {x}" for x in a if x not in b] + [f"      - {x}" for x in b if x not in a]
    if not lines:
        return ["      content differs"]
    extra = len(lines) - MAX_DETAILS
    return lines[:MAX_DETAILS] + ([f"      ... and {extra} more"] if extra > 0 else [])


def _flatten(v: Any, path: str, out: dict[str, str]) -> None:
    """JSON value -> {setting path: value text}; list items named by their name/network."""
    if isinstance(v, dict):
        for k in sorted(v):
            _flatten(v[k], f"{path}.{k}" if path else str(k), out)
    elif isinstance(v, list) and v and all(isinstance(x, dict) and ("name" in x or "network" in x) for x in v):
        names = [x.get("name", x.get("network")) for x in v]
        out[f"{path} (order)"] = json.dumps(names)
        for name, x in zip(names, v, strict=True):
            _flatten(x, f"{path}[{name}]", out)
    else:
        out[path] = json.dumps(v, sort_keys=True)


def _setting_changes(before: str, after: str) -> list[tuple[str, str, str]]:
    """(setting, before, after) of every setting of two JSON texts that differs ("-": absent);
    empty when either is not JSON."""
    try:
        fb: dict[str, str] = {}
        fa: dict[str, str] = {}
        _flatten(json.loads(before), "", fb)
        _flatten(json.loads(after), "", fa)
    except ValueError:
        return []
    return [(k, fb.get(k, "-"), fa.get(k, "-")) for k in sorted({*fb, *fa}) if fb.get(k) != fa.get(k)]


def _fields(c: Change) -> list[str]:
    """The names of what changed: the digest of a configuration stands for its settings."""
    out: list[str] = []
    for f in c.fields:
        if f != "digest":
            out.append(f)
            continue
        text = next((n for n in ("config", "records") if hasattr(c.resource, n)), "")
        top = sorted({p.split(".")[0].split("[")[0].split(" ")[0] for p, _b, _a in _setting_changes(
            str(getattr(c.before, text, "")), str(getattr(c.after, text, "")))})
        out += top or ["configuration"]
    return list(dict.fromkeys(out))


def counts(plan: Plan) -> dict[str, int]:
    n = {"add": 0, "change": 0, "replace": 0, "remove": 0}
    for c in plan.changes:
        n[{"create": "add", "update": "change", "replace": "replace", "delete": "remove"}[c.action.value]] += 1
    return n


def render_text(plan: Plan, show_ruleset: str | None = None) -> str:
    """The plan for review: header, networks, drift, changes by section, exposure, what the plan
    means for the host as a whole (global settings), warnings, what is kept on purpose, then the summary sentence (and the ruleset when asked)."""
    lines = _header(plan) + _networks(plan) + _drift(plan) + _changes(plan) + _cluster(plan) + _exposure(plan)
    lines += _notes("Host:", [f"  {n}" for n in plan.host])
    lines += _notes("Warnings:", [f"  ! {w}" for w in plan.warnings])
    lines += _notes("Kept on purpose:", [f"  {k}" for k in plan.kept])
    if not plan.steps and not plan.cluster:
        lines.append(NO_CHANGES)
    else:
        n = counts(plan)
        store = ""
        if plan.cluster:
            w = sum(1 for r in plan.cluster if r["op"] == "+")
            store = f"; cluster store: {w} to write, {len(plan.cluster) - w} to release"
        lines.append(
            f"Plan: {n['add']} to add, {n['change']} to change, {n['replace']} to replace, {n['remove']} to remove{store}."
        )
    if show_ruleset is not None:
        lines.append("")
        lines.append("Ruleset:")
        lines.append(show_ruleset.rstrip("\n"))
    return "\n".join(lines) + "\n"


def _header(plan: Plan) -> list[str]:
    services = sorted({c["service"] for c in plan.containers})
    return [
        f'composenet plan — project "{plan.project}" (networks: {len(plan.networks)}, '
        f"services: {len(services)}, containers: {len(plan.containers)})",
        "",
    ]


def _networks(plan: Plan) -> list[str]:
    if not plan.networks:
        return []
    lines = ["Networks:"]
    for n in plan.networks:
        desc = f"  {n['name']}  {n['kind']}"
        if n.get("bridge"):
            desc += f" {n['bridge']}"
        if n.get("subnet"):
            desc += f"  {n['subnet']} " + (f"gw {n['gateway']}" if n.get("gateway") else "no gateway")
        if n.get("subnet6"):
            desc += f"  {n['subnet6']} " + (f"gw {n['gateway6']}" if n.get("gateway6") else "no gateway")
        modes = n.get("gateway_modes")
        if modes:
            desc += "  gateway mode " + ", ".join(f"{fam} {mode}" for fam, mode in sorted(modes.items()) if mode != "nat")
        if n.get("internal"):
            desc += "  internal"
        lines.append(desc)
    return lines + [""]


def _drift(plan: Plan) -> list[str]:
    drift = [c for c in plan.changes if c.reason in (Reason.drift, Reason.dead)]
    if not drift:
        return []
    lines = ["Drift (changed outside composenet):"]
    for c in sorted(drift, key=lambda c: (c.resource.rank, describe(c.resource), c.key)):
        what = "deleted" if c.action == Action.create else "modified"
        if c.reason == Reason.dead:
            what = "not running"
        lines.append(f"  {c.action.symbol} {describe(c.resource)}  ({what})")
    return lines + [""]


def _changes(plan: Plan) -> list[str]:
    """Every change, under the section (host, network, service, project) of its resource."""
    if not plan.steps:
        return []
    ns_service, bridge_net = _owners(plan)
    lines = ["Changes:"]
    groups: dict[tuple[int, str], list[Change]] = {}
    for c in plan.changes:
        groups.setdefault(_group(c.resource, ns_service, bridge_net), []).append(c)
    for g in sorted(groups):
        lines.append(f"  {g[1]}:")
        for c in sorted(groups[g], key=lambda c: (c.resource.rank, describe(c.resource), c.key)):
            sym = c.action.symbol.ljust(3)
            reason = c.reason.value
            if c.fields and c.action in (Action.update, Action.replace):
                reason += ": " + ", ".join(_fields(c))
            if c.note:
                reason = c.note if c.reason == Reason.consequence else f"{reason}; {c.note}"
            lines.append(f"    {sym} {describe(c.resource)}  ({reason})")
            lines += _details(c)
    return lines + [""]


def _owners(plan: Plan) -> tuple[dict[str, str], dict[str, str]]:
    """(service of each namespace, network of each bridge): from the changes first (a deleted
    one is only there), then from the plan's container and network rows."""
    ns_service: dict[str, str] = {}
    bridge_net: dict[str, str] = {}
    for c in plan.changes:
        r = c.resource
        if isinstance(r, Netns):
            ns_service[r.name] = r.service
        if isinstance(r, Bridge):
            bridge_net[r.ifname] = r.network
    for cont in plan.containers:
        if cont["ns"]:
            ns_service.setdefault(cont["ns"], cont["service"])
    for n in plan.networks:
        if n.get("bridge"):
            bridge_net.setdefault(n["bridge"], n["name"])
    return ns_service, bridge_net


def _exposure(plan: Plan) -> list[str]:
    if not plan.exposure:
        return []
    lines = ["Exposure:"]
    for e in sorted(plan.exposure, key=lambda e: (e["host_port"], e["protocol"], e["host_ip"], e["service"])):
        tg = ", ".join((f"[{t}]" if ":" in t else t) + f":{e['target_port']}" for t in e["targets"])
        lines.append(
            f"  {e['service']}  {e['host_ip']}:{e['host_port']}/{e['protocol']} -> {tg} "
            f"on {e['network']}  ({e['scope']})"
        )
    return lines + [""]


def _cluster(plan: Plan) -> list[str]:
    """The cluster store's steps, after the kernel's: what `up` writes before its kernel steps
    (records, memberships, leases) and after them (endpoints), and the leases it releases."""
    if not plan.cluster:
        return []
    return ["Cluster store:"] + [f"  {r['op']}   {r['kind']:<8} {r['what']}  (missing)" if r["op"] == "+"
                                 else f"  {r['op']}   {r['kind']:<8} {r['what']}" for r in plan.cluster] + [""]


def _notes(title: str, items: list[str]) -> list[str]:
    return [title, *items, ""] if items else []


def plan_to_json(plan: Plan, ruleset: str | None) -> dict[str, Any]:
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "project": plan.project,
        "summary": counts(plan),
        "observed_digest": plan.observed_digest,
        "networks": plan.networks,
        "containers": plan.containers,
        "exposure": sorted(plan.exposure, key=lambda e: (e["host_port"], e["protocol"], e["host_ip"], e["service"])),
        "warnings": plan.warnings,
        "kept": plan.kept,
        **({"host": plan.host} if plan.host else {}),
        **({"cluster": plan.cluster} if plan.cluster else {}),
        "steps": [{"index": s.index, "deps": list(s.deps), **s.change.to_json()} for s in plan.steps],
        "ruleset": ruleset,
    }


def render_json(plan: Plan, ruleset: str | None) -> str:
    return json.dumps(plan_to_json(plan, ruleset), indent=2, sort_keys=True) + "\n"
