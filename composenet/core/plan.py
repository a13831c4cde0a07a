"""Plan: the ordered steps ``up`` (or ``down``) will run. Pure data and a toposort.

A Change says what differs for one resource key; a Step is a Change placed in order with the
steps it depends on. Creates and updates run in dependency order (namespaces and bridges before
veths, addresses before routes, links before nft, networks before resolvers, everything before
processes); deletes run first, in reverse dependency order.

Must not: decide what changes (diff.py does) or run anything (the kernel layer applies a Plan).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from composenet.core.resources import Resource
from composenet.errors import PlanError


class Action(Enum):
    create = "create"
    update = "update"
    replace = "replace"
    delete = "delete"

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}[self.value]


class Reason(str, Enum):
    missing = "missing"
    changed = "changed in the file"
    drift = "drifted outside composenet"
    orphan = "orphan"
    dead = "not running"
    needed = "needed by the project"  # a host setting (forwarding) the project needs, whatever the file said before
    consequence = "consequence"  # the kernel undoes it by itself when another change runs (see ``note``)


@dataclass(frozen=True)
class Change:
    action: Action
    key: str
    before: Resource | None
    after: Resource | None
    reason: Reason
    fields: tuple[str, ...] = ()  # attributes that differ (update / replace)
    # Why the change is there or ordered so, for a change the kernel's own effects call for (a
    # route re-added because its device or address changes; a veth re-created under a name that
    # another one frees first): shown instead of the reason.
    note: str = ""
    # Keys of other changes of the plan this one must run after (beyond Resource.deps()).
    after_keys: tuple[str, ...] = ()
    # A delete that runs among the creates, after ``after_keys`` (make-before-break: an old
    # address goes once the new one is on the link).
    late: bool = False

    @property
    def resource(self) -> Resource:
        r = self.after if self.after is not None else self.before
        assert r is not None
        return r

    @property
    def kind(self) -> str:
        return self.resource.kind

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "key": self.key,
            "kind": self.kind,
            "reason": self.reason.value,
            "fields": list(self.fields),
            **({"note": self.note} if self.note else {}),
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json() if self.after else None,
        }


@dataclass(frozen=True)
class Step:
    index: int
    change: Change
    deps: tuple[int, ...] = ()


@dataclass
class Plan:
    project: str
    steps: list[Step] = field(default_factory=list)
    # Presentation data from the desired state (header, exposure table); see render.py.
    networks: list[dict[str, Any]] = field(default_factory=list)
    containers: list[dict[str, Any]] = field(default_factory=list)
    exposure: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # resources down leaves on purpose (host sysctls)
    # What the plan means for the host as a whole, in sentences (e.g. a global setting it turns on
    # and how it is guarded and restored): shown under "Host:"; empty for most plans.
    host: list[str] = field(default_factory=list)
    # What `up` writes to the cluster store (core.desired.cluster.cluster_steps): rows {"op",
    # "kind", "network", "what"}, shown after the kernel's changes; empty without a store.
    cluster: list[dict[str, str]] = field(default_factory=list)
    observed_digest: str = ""  # digest of the observed owned state the plan was made against

    @property
    def changes(self) -> list[Change]:
        return [s.change for s in self.steps]

    @property
    def empty(self) -> bool:
        return not self.steps


def order(changes: list[Change], desired_keys: set[str]) -> list[Step]:
    """Order changes into steps.

    Deletes (and the delete half of replaces) come first in reverse dependency order, then
    creates/updates (and ``late`` deletes) in dependency order. Dependencies come from
    ``Resource.deps()`` and ``Change.after_keys`` (only those that are themselves part of the
    plan matter) plus kind rank. A key may appear twice (a veth deleted first and created again
    later, see diff.kernel_effects): once in each phase. A cycle raises PlanError naming the
    resources in it.
    """
    forward = [c for c in changes if c.action != Action.delete or c.late]
    backward = [c for c in changes if c.action == Action.delete and not c.late]

    def graph(cs: list[Change], reverse: bool) -> dict[str, set[str]]:
        keys = {c.key for c in cs}
        g: dict[str, set[str]] = {c.key: set() for c in cs}
        for c in cs:
            for d in (*c.resource.deps(), *c.after_keys):
                if d in keys and d != c.key:
                    if reverse:
                        g[d].add(c.key)  # delete dependents before what they depend on
                    else:
                        g[c.key].add(d)
        return g

    def toposort(cs: list[Change], reverse: bool) -> list[tuple[str, set[str]]]:
        g = graph(cs, reverse)
        rank = {c.key: (-c.resource.rank if reverse else c.resource.rank) for c in cs}
        indeg = {k: len(v) for k, v in g.items()}
        users: dict[str, list[str]] = {k: [] for k in g}
        for k, ds in g.items():
            for d in ds:
                users[d].append(k)
        ready = [(rank[k], k) for k, n in indeg.items() if n == 0]
        heapq.heapify(ready)
        out: list[tuple[str, set[str]]] = []
        while ready:
            _, k = heapq.heappop(ready)
            out.append((k, g[k]))
            for u in users[k]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    heapq.heappush(ready, (rank[u], u))
        if len(out) != len(g):
            stuck = sorted(k for k, n in indeg.items() if n > 0)
            raise PlanError("dependency cycle between: " + ", ".join(stuck))
        return out

    steps: list[Step] = []
    index_of: dict[str, int] = {}
    back_key = {c.key: c for c in backward}
    for k, ds in toposort(backward, reverse=True):
        i = len(steps)
        steps.append(Step(i, back_key[k], tuple(sorted(index_of[d] for d in ds if d in index_of))))
        index_of[k] = i
    last_delete = len(steps) - 1
    fwd_key = {c.key: c for c in forward}
    fwd_index: dict[str, int] = {}
    for k, ds in toposort(forward, reverse=False):
        i = len(steps)
        deps = sorted(fwd_index[d] for d in ds if d in fwd_index)
        if last_delete >= 0 and not deps:
            deps = [last_delete]
        steps.append(Step(i, fwd_key[k], tuple(deps)))
        fwd_index[k] = i
    return steps


def saved_plan_problem(saved: Any) -> str | None:
    """Why ``saved`` (a parsed JSON file) is not a plan written by `plan --out`; None if it is one."""
    if not isinstance(saved, dict) or not {"project", "observed_digest", "steps"} <= set(saved):
        return "it is not a plan saved by `composenet plan --out`"
    steps = saved["steps"]
    if not isinstance(steps, list) or not all(
            isinstance(s, dict) and isinstance(s.get("action"), str) and isinstance(s.get("key"), str) for s in steps):
        return "its steps are damaged (each needs an action and a key)"
    return None


def saved_plan_difference(saved: dict[str, Any], plan: Plan, limit: int = 10) -> list[str]:
    """How the steps of a saved plan differ from the plan made now (empty: they are the same).
    Lines name the action and resource key, sorted, at most ``limit`` of each side."""
    want = [(str(s["action"]), str(s["key"])) for s in saved["steps"]]
    have = [(s.change.action.value, s.change.key) for s in plan.steps]
    if want == have:
        return []
    lines: list[str] = []
    for label, only in (("in the saved plan, no longer needed", set(want) - set(have)),
                        ("needed now, not in the saved plan", set(have) - set(want))):
        for action, key in sorted(only)[:limit]:
            lines.append(f"{label}: {action} {key}")
        if len(only) > limit:
            lines.append(f"{label}: ... and {len(only) - limit} more")
    return lines or ["the same steps, in another order"]
