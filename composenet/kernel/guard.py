"""Handler for the ``guard`` resource: the host-wide forwarding guard every composenet project
shares, and each project's membership in it (core.resources.ForwardingGuard).

Forwarding stays the host's decision. A project whose networks route needs the host to forward
IPv4 (and IPv6), and ``net.ipv4.ip_forward`` is one switch for every interface: turned on, the
host routes for interfaces composenet does not own too (a LAN neighbour reaches a private
segment behind another interface). Docker answers with the iptables FORWARD policy DROP, which
breaks libvirt and LXD (moby/moby#39439). composenet instead keeps one table of its own in the
namespace it runs in::

    table inet composenet-guard {
        set bridges { type ifname; elements = { "cnb-..." comment "composenet:<project> ipv4", ... } }
        chain forward {
            type filter hook forward priority filter; policy accept;
            meta nfproto ipv4 iifname != @bridges oifname != @bridges counter drop comment "cn:..."
        }
    }

- The set holds every member project's bridges, each labelled with its project and the families
  it needs (observe finds a project's membership by that label). Bridged frames seen by the
  forward hook under br_netfilter have the bridge as both devices, DNATed published ports have
  it as output: both pass. An element without a composenet label (an administrator's
  ``nft add element inet composenet-guard bridges { "lxdbr0" }``, for an engine started after
  composenet) is kept across every rewrite.
- A family gets its drop rule only when composenet itself turned its forwarding on. When the
  host forwarded already, composenet adds no drop rule (the host's owner routes on purpose) and
  leaves the setting as it found it.
- The host's own values (the global switch, and ``default`` and every interface whose own value
  differed, since writing the global switch resets them all) are recorded before anything
  changes, the first time a member needs the family, in ``<run dir>/.forwarding.json`` under
  this network namespace's identity (the run directory is shared by every namespace of the
  machine; a namespace's forwarding is its own). /run is a tmpfs: the record lives as long as
  the settings it restores, and survives an ``nft flush ruleset`` that loses the table.
- The last member to need a family restores it (forwarding off first, while the drop rule
  still holds); the last member to leave removes the table and its record.

Every change is one transaction on the table, made under ``<run dir>/.guard.lock`` (host-wide,
held for a few milliseconds: the only lock taken inside another, never the other way round), and
in this order: record, restore what no member needs any more, load the table, turn on what
members need, drop the restored families from the record. Killed at any point, the record
holds the host's values and the next run of any project converges; a project killed without
`down` stays a member (its bridges stay guarded) until its `down`.

Must not: touch any other table or sysctl, or run for anything but its own network namespace.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from composenet.core.plan import Action, Plan
from composenet.core.resources import GUARD_TABLE, LABEL_PREFIX, ForwardingGuard, Resource, short_hash
from composenet.core.ruleset import quote
from composenet.core.state import ObservedState
from composenet.errors import KernelError, LockError
from composenet.kernel import nft
from composenet.kernel.context import Context, HandlerBase
from composenet.linux.fileio import atomic_write
from composenet.paths import FORWARDING_RECORD, GUARD_LOCK

FAMILIES = ("ipv4", "ipv6")
SYSCTL = {"ipv4": "net.ipv4.ip_forward", "ipv6": "net.ipv6.conf.all.forwarding"}
PROC_SYS = "/proc/sys"  # follows the namespace of the thread that opens it
LOCK_TIMEOUT = 30.0
LOCK_POLL = 0.01
COMMENT_MAX = 128  # nft's limit on a set element's comment
SO_NETNS_COOKIE = 71  # Linux >= 5.14: a 64-bit identity of a network namespace, never reused before reboot


def _proc(name: str) -> str:
    return f"{PROC_SYS}/" + name.replace(".", "/")


def _conf_dir(family: str) -> str:
    """The per-interface settings of ``family`` (``<dir>/<interface>/forwarding``)."""
    return f"{PROC_SYS}/net/{family}/conf"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _write(path: str, value: str, what: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise KernelError(f"cannot set {what} = {value}: {e.strerror}") from e


def forwarding(family: str) -> str | None:
    """The host's forwarding switch of ``family`` now ("0" / "1"), None without IPv6."""
    return _read(_proc(SYSCTL[family]))


def snapshot(family: str) -> dict[str, Any]:
    """What writing the family's switch would change: its value, and every interface (and
    ``default``) whose own forwarding differs from it."""
    value = forwarding(family) or "0"
    conf: dict[str, str] = {}
    try:
        names = sorted(os.listdir(_conf_dir(family)))
    except OSError:
        names = []
    for dev in names:
        if dev == "all":
            continue
        own = _read(os.path.join(_conf_dir(family), dev, "forwarding"))
        if own is not None and own != value:
            conf[dev] = own
    return {"value": value, "conf": conf}


def restore(family: str, saved: dict[str, Any]) -> None:
    """Put back what ``snapshot`` recorded: the switch, then the interfaces that differed (those
    that still exist)."""
    _write(_proc(SYSCTL[family]), str(saved.get("value", "0")), SYSCTL[family])
    for dev, value in sorted(dict(saved.get("conf", {})).items()):
        path = os.path.join(_conf_dir(family), dev, "forwarding")
        if os.path.exists(path):
            _write(path, str(value), f"{_conf_dir(family)}/{dev}/forwarding")


def netns_id() -> str:
    """This thread's network namespace, as the key of its record: its cookie (never reused before
    a reboot), or its inode where the kernel has no cookie."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            return "cookie:" + str(int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little"))
    except OSError:
        return "inode:" + str(os.stat("/proc/thread-self/ns/net").st_ino)


# ---- the table ------------------------------------------------------------------------------


def label(project: str, families: tuple[str, ...]) -> str:
    """An element's comment: ``composenet:<project> <families>`` (a hash stands for a project
    name too long for nft's 128 characters)."""
    text = f"{LABEL_PREFIX}{project} {' '.join(families)}".rstrip()
    if len(text) > COMMENT_MAX:
        text = f"{LABEL_PREFIX}#{short_hash(project, n=16)} {' '.join(families)}".rstrip()
    return text


def _owner(comment: str | None) -> tuple[str, tuple[str, ...]] | None:
    """(project or ``#hash``, families) of a composenet element comment; None for another one."""
    if not comment or not comment.startswith(LABEL_PREFIX):
        return None
    who, *fams = comment[len(LABEL_PREFIX):].split()
    return who, tuple(f for f in fams if f in FAMILIES)


def _is(owner: str, project: str) -> bool:
    return owner in (project, f"#{short_hash(project, n=16)}")


@dataclass
class Guard:
    """The guard table as read back: its elements (bridge -> (owner, families); owner "" for an
    element composenet did not label) and the families it drops for."""

    members: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    drops: set[str] = field(default_factory=set)
    exists: bool = False

    def of(self, project: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(bridges, families) of ``project``'s membership."""
        mine = {b: f for b, (o, f) in self.members.items() if o and _is(o, project)}
        return tuple(sorted(mine)), tuple(sorted({x for f in mine.values() for x in f}, key=FAMILIES.index))


def read_guard() -> Guard:
    data = nft.list_table("inet", GUARD_TABLE)
    g = Guard()
    if data is None:
        return g
    g.exists = True
    for item in data.get("nftables", []):
        if "set" in item and item["set"].get("name") == "bridges":
            for e in item["set"].get("elem", []):
                val, comment = (e["elem"].get("val"), e["elem"].get("comment")) if isinstance(e, dict) and "elem" in e \
                    else (e, None)
                owner = _owner(comment)
                g.members[str(val)] = owner if owner else ("", ())
        elif "rule" in item:
            comment = item["rule"].get("comment") or ""
            for fam in FAMILIES:
                if comment.startswith(f"cn:forwarding guard {fam}"):
                    g.drops.add(fam)
    return g


def guard_ruleset(members: dict[str, tuple[str, tuple[str, ...]]], drops: list[str], record: dict[str, Any]) -> str:
    """The whole table, to load in one transaction (declared, deleted, re-created)."""
    before = ", ".join(f"{f} {record[f]['value']}" for f in FAMILIES if f in record) or "none recorded"
    elems = []
    for b in sorted(members):
        owner, fams = members[b]  # an owner read back as "#<hash>" is labelled the same way again
        elems.append(quote(b) + (f' comment "{label(owner, fams)}"' if owner else ""))
    lines = [f"table inet {GUARD_TABLE}", f"delete table inet {GUARD_TABLE}", f"table inet {GUARD_TABLE} {{",
             f'\tcomment "composenet: forwarded packets must touch a composenet bridge; host forwarding before: {before}"',
             "\tset bridges {", "\t\ttype ifname;", '\t\tcomment "bridges of every composenet project";']
    if elems:
        lines.append(f"\t\telements = {{ {', '.join(elems)} }};")
    lines += ["\t}", "\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;"]
    for fam in drops:
        lines.append(f"\t\tmeta nfproto {fam} iifname != @bridges oifname != @bridges counter drop "
                     f'comment "cn:forwarding guard {fam}: composenet turned it on; only via its bridges"')
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


# ---- the record and the lock ------------------------------------------------------------------


def _record_path(run_dir: str) -> str:
    return os.path.join(run_dir, FORWARDING_RECORD)


def read_records(run_dir: str) -> dict[str, Any]:
    """Every namespace's record: ``{netns id: {family: {"value", "conf"}}}``."""
    try:
        with open(_record_path(run_dir)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(run_dir: str, ns: str, record: dict[str, Any]) -> None:
    records = read_records(run_dir)
    if record:
        records[ns] = record
    else:
        records.pop(ns, None)
    if records:
        atomic_write(_record_path(run_dir), json.dumps(records, indent=1, sort_keys=True) + "\n")
    else:
        try:
            os.unlink(_record_path(run_dir))
        except FileNotFoundError:
            pass


@contextmanager
def guard_lock(run_dir: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``<run dir>/.guard.lock`` (host-wide; held only while one membership changes)."""
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    path = os.path.join(run_dir, GUARD_LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        end = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise LockError(f"another composenet run holds {path}; gave up after {timeout:g} s",
                                    hint="wait for it to finish", retryable=True) from None
                time.sleep(LOCK_POLL)
        yield
    finally:
        os.close(fd)  # releases the flock


# ---- join and leave ---------------------------------------------------------------------------


def sync(run_dir: str, project: str, want: ForwardingGuard | None) -> None:
    """Make ``project``'s membership ``want`` (None: leave), under the guard lock, in the order
    the module docstring gives."""
    with guard_lock(run_dir):
        ns = netns_id()
        record = dict(read_records(run_dir).get(ns, {}))
        g = read_guard()
        members = {b: m for b, m in g.members.items() if not (m[0] and _is(m[0], project))}
        if want is not None:
            for b in want.bridges:
                members[b] = (project, want.families)
        needed = {f for _o, fams in members.values() for f in fams if forwarding(f) is not None}
        fresh = [f for f in FAMILIES if f in needed and f not in record]
        for f in fresh:
            record[f] = snapshot(f)
        if fresh:
            write_record(run_dir, ns, record)
        gone = [f for f in FAMILIES if f in record and f not in needed]
        for f in gone:  # forwarding off first: the drop rule still holds meanwhile
            if record[f].get("value") != "1":
                restore(f, record[f])
        kept = {f: record[f] for f in FAMILIES if f in record and f in needed}
        if any(o for o, _f in members.values()):
            drops = [f for f in FAMILIES if f in kept and kept[f].get("value") != "1"]
            nft.load(guard_ruleset(members, drops, kept), f"table inet {GUARD_TABLE}")
        elif g.exists:
            nft.load(f"table inet {GUARD_TABLE}\ndelete table inet {GUARD_TABLE}\n", f"the deletion of table inet {GUARD_TABLE}")
        for f in FAMILIES:
            if f in needed and forwarding(f) != "1":
                _write(_proc(SYSCTL[f]), "1", SYSCTL[f])
        if gone:
            write_record(run_dir, ns, kept)


class GuardHandler(HandlerBase):
    """Observe, join, change and leave a project's membership in the forwarding guard.

    A changed membership is one ``sync`` whatever the plan calls it: a plan that replaces it
    (delete, then create) must not leave in between, or the last member would restore the
    host's forwarding for a moment and record it again. ``check`` notes those keys (this
    registry lives for one run), and their delete leaves the work to the create that follows."""

    kinds: tuple[str, ...] = ("guard",)

    def __init__(self) -> None:
        self.replaced: set[str] = set()

    def check(self, ctx: Context, plan: Plan) -> None:
        self.replaced = {c.key for c in plan.changes if c.kind == "guard" and c.action == Action.replace}

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        g = read_guard()
        bridges, families = g.of(ctx.project)
        if not bridges:
            return
        record = read_records(ctx.run_dir).get(netns_id(), {})
        # A family counts as in place when forwarding is on and, if composenet turned it on,
        # its drop rule is there: else the plan shows the membership to repair.
        # (A host without IPv6 has nothing to turn on: that family counts as in place.)
        in_place = tuple(f for f in families if forwarding(f) is None or (
            forwarding(f) == "1" and (f in g.drops or record.get(f, {}).get("value", "1") == "1")))
        others = {f for b, (o, fams) in g.members.items() if o and not _is(o, ctx.project) for f in fams}
        restores = tuple(f"{SYSCTL[f]} = {record[f]['value']}" for f in families
                         if f not in others and f in record and record[f].get("value") != "1")
        last = not any(o and not _is(o, ctx.project) for o, _f in g.members.values())
        observed.add(ForwardingGuard(ctx.project, bridges, in_place, restores, last))

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, ForwardingGuard)
        sync(ctx.run_dir, r.project, r)

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        assert isinstance(after, ForwardingGuard)
        sync(ctx.run_dir, after.project, after)

    def delete(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, ForwardingGuard)
        if r.key in self.replaced:
            self.replaced.discard(r.key)  # the create that follows changes the membership in one go
            return
        sync(ctx.run_dir, r.project, None)
