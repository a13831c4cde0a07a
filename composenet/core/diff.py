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
    Ipvlan,
    Macvlan,
    Netns,
    NftTable,
    Process,
    Resolver,
    Resource,
    Route,
    Sysctl,
    Veth,
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
    # One request replaces a route (same metric) or adds the new one before the old goes: a
    # service never is without its default route while its gateway changes.
    "route": {"gateway", "ifname", "metric"},
    "guard": {"bridges", "families"},
    "supervisor": {"ports"},
}


def is_forwarding(r: Sysctl) -> bool:
    """A forwarding sysctl (``net.ipv4.ip_forward``, ``net.ipv6.conf.all.forwarding``): a host
    setting the project needs, guarded and restored by the forwarding guard."""
    return r.name == "net.ipv4.ip_forward" or r.name.endswith(".forwarding")


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
        elif isinstance(want, Sysctl) and is_forwarding(want):
            reason = Reason.drift if was_applied else Reason.needed
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
    return kernel_effects(changes, desired, observed)


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
        if isinstance(r, Address | Route | Macvlan | Ipvlan) and r.ns and r.ns in gone_ns:
            out.add(c.key)
    return out


# ---- what the kernel does by itself ------------------------------------------------------------
#
# The diff compares resources one by one; the kernel does not treat them so. Names inside a
# namespace are unique (a veth's end cannot take the name eth0 while another link holds it), and
# a route lives only as long as its device and the address that makes its gateway reachable:
# deleting the link or the last IPv4 address of a link drops every route through it. So:
# - a veth whose end in the namespace changes name (networks reordered) is deleted in the first
#   phase and created again in the second, when every name it could collide with is free;
# - an address replaced on a link that stays is added first and the old one deleted after the
#   new one and the routes are in place (make-before-break): the link never has no address;
# - a route whose device is re-created or whose link's addresses change is re-added in the same
#   run, after them (a change with reason ``consequence``), even though the file did not change it.


def _ns_end(r: object) -> tuple[str, str] | None:
    """(namespace, name) a link occupies inside a container namespace."""
    if isinstance(r, Veth):
        return (r.ns, r.peer)
    if isinstance(r, Macvlan):
        return (r.ns, r.ifname)
    return None


def _family(cidr: str) -> int:
    return 6 if ":" in cidr else 4


def kernel_effects(changes: list[Change], desired: DesiredState, observed: ObservedState) -> list[Change]:
    """``changes`` with the kernel's implicit effects modelled (see above). Pure."""
    out: list[Change] = []
    for c in changes:
        b, a = _ns_end(c.before), _ns_end(c.after)
        if c.action == Action.replace and isinstance(c.after, Veth) and b != a and b is not None and a is not None:
            note = f"{b[1]} becomes {a[1]}: deleted first, so that no name in {a[0]} collides"
            out.append(Change(Action.delete, c.key, c.before, None, c.reason, c.fields, note))
            out.append(Change(Action.create, c.key, None, c.after, c.reason, c.fields, note))
        else:
            out.append(c)
    gone_ns = {c.before.name for c in out if c.action != Action.create and isinstance(c.before, Netns)}
    recreated: set[tuple[str, str]] = set()  # links deleted or re-created during the run
    made: dict[tuple[str, str], list[str]] = {}  # keys of the changes that make a link or address
    addr_changes: dict[tuple[str, str, int], list[Change]] = {}
    for c in out:
        b, a = _ns_end(c.before), _ns_end(c.after)
        if b is not None and c.action in (Action.delete, Action.replace):
            recreated.add(b)
        if a is not None and c.action in (Action.create, Action.replace):
            made.setdefault(a, []).append(c.key)
        r = c.resource
        if isinstance(r, Address) and c.action != Action.update:
            addr_changes.setdefault((r.ns, r.ifname, _family(r.cidr)), []).append(c)
            if c.after is not None:
                made.setdefault((r.ns, r.ifname), []).append(c.key)
    by_key = {c.key: i for i, c in enumerate(out) if c.action != Action.delete}
    routes_in: dict[str, list[str]] = {}
    for key, want in sorted(desired.resources.items()):
        have = observed.resources.get(key)
        if not isinstance(want, Route) or not isinstance(have, Route) or have.ns in gone_ns:
            continue
        dev = (have.ns, have.ifname)
        if dev in recreated:
            note = f"re-added: {have.ifname} is re-created"
        elif addr_changes.get((have.ns, have.ifname, _family(have.dst))):
            note = f"re-added: {have.ifname}'s address changes"
        else:
            continue
        after_keys = tuple(made.get((want.ns, want.ifname), ()))
        routes_in.setdefault(want.ns, []).append(key)
        if key in by_key:  # changed anyway: it runs after what it needs
            c = out[by_key[key]]
            out[by_key[key]] = Change(c.action, c.key, c.before, c.after, c.reason, c.fields, c.note or note,
                                      tuple(sorted({*c.after_keys, *after_keys})))
        else:
            out.append(Change(Action.update, key, have, want, Reason.consequence, (), note, after_keys))
    for i, c in enumerate(out):
        old = c.before
        if c.action != Action.delete or not isinstance(old, Address) or (old.ns, old.ifname) in recreated \
                or old.ns in gone_ns:
            continue
        new = [x.key for x in addr_changes.get((old.ns, old.ifname, _family(old.cidr)), []) if x.after is not None]
        if new:  # make-before-break: the new address first, then the routes, then this one
            out[i] = Change(c.action, c.key, c.before, None, c.reason, c.fields,
                            "deleted once the new address is in place", tuple(new + routes_in.get(old.ns, [])), late=True)
    return out
