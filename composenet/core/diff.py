"""(DesiredState, ObservedState) -> list[Change]. Pure.

Each differing resource becomes one Change with the attributes that differ and a reason:
- missing: not in the kernel (and composenet never applied it as it is now);
- changed in the file: the kernel holds what an earlier file asked for;
- drifted outside composenet: composenet applied exactly this, and the kernel now differs
  (deleted or modified by hand); told apart from "changed" by the digest of what the last
  successful apply wrote (``ObservedState.applied``), which is used for this label only;
- orphan: owned by the project in the kernel, no longer wanted;
- not running: a resolver or service process that should run and does not.

Sysctls are never deleted: they are host settings other software may rely on.

Must not: order the changes (plan.py does) or look at anything but the two states.
"""

from __future__ import annotations

import hashlib
import json

from composenet.core.plan import Action, Change, Reason
from composenet.core.resources import (
    Address,
    Macvlan,
    Netns,
    NftTable,
    Process,
    Resolver,
    Resource,
    Route,
    Sysctl,
)
from composenet.core.state import DesiredState, ObservedState

# Fields that can change in place; any other differing field means delete and re-create.
IN_PLACE: dict[str, set[str]] = {
    "bridge": {"mtu", "mac", "label"},
    "veth": {"mtu", "mac", "hairpin", "isolated", "label", "bridge"},  # bridge: re-enslaved in place
    "macvlan": {"mtu", "mac", "label"},
    "vxlan": {"mtu", "label", "peers", "bridge"},
    "sysctl": {"value"},
    "nft": {"rules"},
    "file": {"content"},
    "resolver": {"listeners", "digest"},
    "dnsrecords": {"networks", "digest"},
}


def digest(r: Resource) -> str:
    """Digest of a resource's compared attributes (what ``applied`` records)."""
    text = json.dumps({"kind": r.kind, **r.compared()}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def diff(desired: DesiredState, observed: ObservedState) -> list[Change]:
    changes: list[Change] = []
    applied = observed.applied
    for key in sorted(desired.resources):
        want = desired.resources[key]
        have = observed.resources.get(key)
        was_applied = applied.get(key) == digest(want)
        if have is None:
            if isinstance(want, Process | Resolver) and key in applied:
                reason = Reason.dead
            else:
                reason = Reason.drift if was_applied else Reason.missing
            changes.append(Change(Action.create, key, None, want, reason))
            continue
        if type(have) is not type(want):
            changes.append(Change(Action.replace, key, have, want, Reason.changed, ("kind",)))
            continue
        w, h = want.compared(), have.compared()
        fields = tuple(sorted(k for k in w if w[k] != h.get(k)))
        if not fields:
            continue
        if isinstance(want, NftTable) and isinstance(have, NftTable):
            reason = _nft_reason(want, have, was_applied, applied.get(key) == digest(have))
        else:
            reason = Reason.drift if was_applied else Reason.changed
        action = Action.update if set(fields) <= IN_PLACE.get(want.kind, set()) else Action.replace
        changes.append(Change(action, key, have, want, reason, fields))
    for key in sorted(observed.resources):
        if key in desired.resources:
            continue
        have = observed.resources[key]
        if isinstance(have, Sysctl):
            continue
        changes.append(Change(Action.delete, key, have, None, Reason.orphan))
    return changes


def _nft_reason(want: NftTable, have: NftTable, was_applied: bool, kernel_as_applied: bool = False) -> Reason:
    if was_applied:
        return Reason.drift
    if kernel_as_applied:  # the kernel holds what the last apply wrote: the file changed
        return Reason.changed
    missing = set(want.rules) - set(have.rules)
    extra = set(have.rules) - set(want.rules)
    # Only rules gone, or rules added by hand (no composenet comment): someone edited the table.
    if not extra or all(": ?" in e for e in extra):
        return Reason.drift if missing or extra else Reason.changed
    return Reason.changed


def implied_deletes(changes: list[Change]) -> set[str]:
    """Keys whose delete the kernel does by itself once another delete in the plan runs:
    what lives inside a namespace that is deleted (addresses, routes, macvlans). Apply skips
    them; the plan still shows them. (Veths are not among them: their host ends would outlive a
    namespace someone else holds open; the kernel handler deletes them in one batch instead.)"""
    gone_ns = {c.before.name for c in changes if c.action == Action.delete and isinstance(c.before, Netns)}
    out = set()
    for c in changes:
        if c.action != Action.delete:
            continue
        r = c.before
        if isinstance(r, Address | Route | Macvlan) and r.ns and r.ns in gone_ns:
            out.add(c.key)
    return out
