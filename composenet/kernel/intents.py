"""The journal of link intents: what makes a link composenet's between the request that creates
it and the one that labels it.

The kernel drops IFLA_IFALIAS from a link-creating RTM_NEWLINK (only name, MTU, address, group,
flags and the index are honoured at creation), so a label always takes a second request, and a
crash between the two would leave a link nobody owns: the next `up` would fail on its name and
`down` would never remove it. So before each create, the intent is written to
``<project dir>/intents/<namespace>@<name>.json``: kind, namespace, name, label and an ifindex
chosen at random in [2^24, 2^30), which the create request asks the kernel to use (the veth
peer gets one too, in its namespace). A link whose name *and* index match an intent is the one
this project was making: observe reports it as the project's, with the label it actually has
(none), so the plan finishes or removes it (a bridge, vxlan or macvlan gets its label written;
a veth, whose namespace end is also unlabelled and not up yet, is deleted and made again) and
`down` deletes it. A link with the name but another index is someone else's: it stays foreign,
and the create's error names it and says how to remove it. The intent is removed once the label
is written; an intent whose link is gone or labelled is stale and ignored (the run directory
goes with `down`).

Owns: the intent files and the choice of indexes. Must not: create, change or delete links
(kernel.links does, through ``create``/``done`` here), or treat a link without a matching
intent as the project's.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass

from composenet.core.resources import LABEL_PREFIX
from composenet.errors import KernelError
from composenet.kernel.context import Context
from composenet.kernel.rtnl import dellink, fail, nl, setlink
from composenet.linux import failpoint
from composenet.linux.fileio import atomic_write
from composenet.linux.netlink import (
    IFLA_IFALIAS,
    NL,
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_NEWLINK,
    Link,
    nla,
    pack_str,
)
from composenet.paths import INTENTS

INDEX_FIRST, INDEX_LAST = 1 << 24, 1 << 30  # far above what the kernel hands out by itself
_random = random.SystemRandom()


@dataclass(frozen=True)
class Intent:
    """A link about to be created: ``index`` is the ifindex asked for; a veth's peer is
    ``peer`` in namespace ``peer_ns`` with index ``peer_index``."""

    kind: str
    ns: str  # "" = the namespace composenet runs in
    name: str
    label: str
    index: int
    peer_ns: str = ""
    peer: str = ""
    peer_index: int = 0

    @property
    def file(self) -> str:
        return f"{self.ns or '-'}@{self.name}.json"


def directory(ctx: Context) -> str:
    return ctx.paths / INTENTS


def begin(ctx: Context, kind: str, ns: str, name: str, label: str, peer_ns: str = "", peer: str = "") -> Intent:
    """Choose the indexes and write the intent (before the create request)."""
    intent = Intent(kind, ns, name, label, _random.randrange(INDEX_FIRST, INDEX_LAST), peer_ns, peer,
                    _random.randrange(INDEX_FIRST, INDEX_LAST) if peer else 0)
    atomic_write(os.path.join(directory(ctx), intent.file), json.dumps(dataclasses.asdict(intent), sort_keys=True))
    failpoint.hit(f"intent {kind} {name}")
    return intent


def done(ctx: Context, intent: Intent) -> None:
    """The link carries its label (or was removed again): the intent is no longer needed."""
    try:
        os.unlink(os.path.join(directory(ctx), intent.file))
    except FileNotFoundError:
        pass


def pending(ctx: Context) -> list[Intent]:
    """Every intent on file (unreadable ones are skipped: they can only be stale)."""
    d = directory(ctx)
    try:
        names = sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    fields = {f.name for f in dataclasses.fields(Intent)}
    for n in names:
        if n.startswith(".") or not n.endswith(".json"):
            continue
        try:
            with open(os.path.join(d, n)) as f:
                data = json.load(f)
            out.append(Intent(**{k: v for k, v in data.items() if k in fields}))
        except (OSError, ValueError, TypeError):
            continue
    return out


def adopt(links: Iterable[Link], intents: Iterable[Intent], ns: str, project: str) -> tuple[list[Link], dict[int, str]]:
    """``links`` (of namespace ``ns``) with the intended label put on each one an intent accounts
    for (same name and index, no composenet label), so that observe selects it as the project's;
    and {index: the alias it really has} of those, so that observe reports the real one."""
    # A veth's peer is not adopted: found without its label, the veth is made again.
    want = {(i.name, i.index): i.label for i in intents if i.ns == ns and i.label.startswith(f"{LABEL_PREFIX}{project}/")}
    out: list[Link] = []
    real: dict[int, str] = {}
    for lk in links:
        label = want.get((lk.name, lk.index))
        if label is not None and not lk.alias.startswith(LABEL_PREFIX):
            real[lk.index] = lk.alias
            lk = dataclasses.replace(lk, alias=label)
        out.append(lk)
    return out, real


def exists_error(n: NL, name: str, what: str, e: OSError) -> KernelError | None:
    """For a create that failed with EEXIST: the error to raise when a link named ``name`` is
    there and is not composenet's (no label; no intent accounts for it, or observe would have
    reported it), naming it and how to remove it. None when the EEXIST has another cause."""
    if e.errno != errno.EEXIST:
        return None
    try:
        lk = n.link(name)
    except OSError:
        return None
    if lk is None or lk.alias.startswith(LABEL_PREFIX):
        return None
    where = f" in namespace {n.ns}" if n.ns else ""
    return KernelError(
        f"{what}: a link named {name} already exists{where} and is not composenet's "
        "(it has no composenet label, and no record says composenet made it)",
        hint=f"composenet never touches it; if nothing uses it, remove it (`ip{f' -n {n.ns}' if n.ns else ''} link "
             f"del {name}`) and run `composenet up` again")


def create_in_netns(ctx: Context, intent: Intent, body: bytes, fd: int, what: str, point: str) -> None:
    """Create the link ``body`` describes directly inside ``intent.ns`` (IFLA_NET_NS_FD ``fd``,
    closed here), then label it (``intent.label``); ``point`` names the failpoint between the two.
    The intent is done either way; a link that cannot be labelled is deleted again; a name
    already taken is named by :func:`exists_error`."""
    try:
        nl(ctx, "").request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)
    except OSError as e:
        done(ctx, intent)
        raise (exists_error(nl(ctx, intent.ns), intent.name, what, e) or fail(what, e)) from e
    finally:
        os.close(fd)
    failpoint.hit(point)
    n = nl(ctx, intent.ns)
    try:
        setlink(n, intent.name, nla(IFLA_IFALIAS, pack_str(intent.label)))
    except OSError as e:
        dellink(n, intent.name)
        done(ctx, intent)
        raise fail(what, e) from e
    done(ctx, intent)
