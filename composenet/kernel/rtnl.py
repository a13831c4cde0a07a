"""The run's rtnetlink sockets, and what every netlink operation of the kernel handlers shares.

Owns: one rtnetlink socket per namespace per run (``nl``) and one pyroute2 IPRoute bound the
same way (``ipr``, for vxlan links and their FDB), both kept in the run's Context; the
KernelError a failed request becomes, naming the object and the kernel's message (``fail``);
changing and deleting a link by name (``setlink``, ``dellink``), where deleting what is already
gone succeeds (``ignore_gone``).

Must not: know resource kinds, labels or projects (kernel.links, kernel.addresses,
kernel.readback give the requests their meaning), or close a socket (``Context.drop_sockets``
and ``Context.close`` do). The messages themselves are composenet.linux.netlink's.
"""

from __future__ import annotations

import errno
from typing import Any

from composenet.errors import KernelError
from composenet.kernel.context import Context
from composenet.linux import netns
from composenet.linux.netlink import (
    IFLA_IFNAME,
    NL,
    RTM_DELLINK,
    RTM_NEWLINK,
    NetlinkError,
    ifinfomsg,
    nla,
    pack_str,
)

# A veth whose namespace was just deleted disappears asynchronously: how long to wait for it.
DYING_LINK_TIMEOUT = 5.0


def fail(what: str, e: BaseException) -> KernelError:
    """KernelError ``what: <the kernel's message>``: errno name and extended ack of a netlink
    error, strerror, errno name and file of an OSError, else the exception's text (pyroute2)."""
    if isinstance(e, NetlinkError):
        text = e.describe()
    elif isinstance(e, OSError) and e.errno is not None:
        text = f"{e.strerror} ({errno.errorcode.get(e.errno, e.errno)})"
        if e.filename:
            text += f": {e.filename}"
    else:
        text = str(e)
    return KernelError(f"{what}: {text}")


# ---- per-run sockets ------------------------------------------------------------------------


def nl(ctx: Context, ns: str) -> NL:
    """The run's rtnetlink socket for namespace ``ns`` ("" = the namespace composenet runs in),
    created by entering the namespace with setns in this thread, then returning."""
    s = ctx.netlink.get(ns)
    if s is None:
        s = ctx.netlink[ns] = NL(netns.socket_in(ns), ns)
    return s


def ipr(ctx: Context, ns: str) -> Any:
    """A pyroute2 IPRoute bound to namespace ``ns`` ("" = the current one), one per run, closed
    by ``ctx.close()``.

    pyroute2 0.9 would fork a helper to open a socket in a namespace (``IPRoute(netns=...)``);
    instead the IPRoute is constructed while this thread is inside the namespace: its socket is
    created eagerly in the constructor, and a socket stays in the namespace it was created in.
    Use it from the thread that called ``ipr`` (pyroute2 keeps its socket per thread)."""
    from pyroute2 import IPRoute  # deferred: pyroute2 costs ~0.2 s to import; only vxlan work needs it

    r = ctx.pyroute.get(ns)
    if r is None:
        with netns.entered(ns):
            r = ctx.pyroute[ns] = IPRoute()
    return r


# ---- links by name --------------------------------------------------------------------------


def ignore_gone(e: OSError) -> bool:
    """Deleting what is already gone succeeds (rollback and `down` after a crash rely on it)."""
    return e.errno in (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)


def setlink(n: NL, name: str, *parts: bytes, index: int = 0) -> None:
    """Change an existing link, by name (index 0 + IFLA_IFNAME) unless an index is given."""
    body = ifinfomsg(index=index) + (b"" if index else nla(IFLA_IFNAME, pack_str(name))) + b"".join(parts)
    n.request(RTM_NEWLINK, body)


def dellink(n: NL, name: str) -> None:
    """Delete link ``name`` of ``n``'s namespace; already gone is fine."""
    n.forget(name)
    try:
        n.request(RTM_DELLINK, ifinfomsg() + nla(IFLA_IFNAME, pack_str(name)))
    except NetlinkError as e:
        if not ignore_gone(e):
            raise
