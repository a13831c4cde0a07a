"""Listeners: the UDP and TCP sockets askers reach the daemon on, in the host and in containers.

Owns: binding a listener pair (:func:`listen_pair`) on each of the config's listener addresses
in the host namespace (a failure at start is fatal, ``server.py``; after a reload it is logged
and retried every ``RETRY_BIND`` seconds) and inside container namespaces (``namespaces``:
containers on macvlan networks). A namespace listener is bound by entering /run/netns/<name>,
making the sockets and returning; a failure is logged once and retried every ``NS_CHECK``
seconds, never fatal. Its sockets keep the namespace alive, so every ``NS_CHECK`` seconds (and
on reload) a listener whose /run/netns/<name> is gone or is another namespace now is closed
(and rebound if the config still names it). Registers each socket with the selector, tagged
with the handler the loop calls (``server.py``).

Must not: read from the sockets it binds (``udp.py``, ``tcp.py`` do), or leave the daemon's
thread in another namespace (``composenet.linux.netns.entered`` returns, also on errors).
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time

from composenet.dns.config import Listener, NsListener
from composenet.dns.state import RCVBUF, NsSockets, State, log
from composenet.dns.udp import open_batch
from composenet.linux import netns as nsmod

RETRY_BIND = 3.0  # seconds between attempts to bind a listener that failed on reload
NS_CHECK = 1.0  # seconds between checks that the namespaces listened in are still there


def listen_pair(family: int, key: tuple[str, int], bufsize: int | None = None) -> tuple[socket.socket, socket.socket]:
    """A non-blocking UDP socket and a listening TCP socket bound to ``key``, in the namespace
    of the calling thread; ``bufsize`` sets the UDP buffers. Raises OSError, leaving nothing open."""
    u = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    t = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        if bufsize:
            u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            u.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        u.bind(key)
        u.setblocking(False)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(key)
        t.listen(128)
        t.setblocking(False)
    except OSError:
        u.close()
        t.close()
        raise
    return u, t


class Listeners(State):
    """Host and namespace listeners; state: ``udp``, ``tcp``, ``unbound``, ``ns_bound``,
    ``ns_unbound``, ``ns_failed_logged`` and their retry times."""

    # -- in the host namespace -----------------------------------------------------------------

    def _bind(self, lst: Listener) -> None:
        """Bind UDP and TCP on one listener; raises OSError (nothing left half-bound)."""
        family = socket.AF_INET if lst.family == 4 else socket.AF_INET6
        key = (lst.address, lst.port)
        u, t = listen_pair(family, key, RCVBUF)
        self.udp[key] = u
        self.tcp[key] = t
        if family not in self.batches:
            self.batches[family] = open_batch(family)
        self.sel.register(u, selectors.EVENT_READ, ("udp", (lst.address, self.batches[family])))
        self.sel.register(t, selectors.EVENT_READ, ("accept", lst.address))

    def _unbind(self, key: tuple[str, int]) -> None:
        for table in (self.udp, self.tcp):
            s = table.pop(key, None)
            if s is not None:
                self.sel.unregister(s)
                s.close()

    def _bind_missing(self) -> None:
        """Try the listeners of ``unbound`` again (a reload named an address not up yet)."""
        for key, lst in list(self.unbound.items()):
            try:
                self._bind(lst)
                del self.unbound[key]
                self._scan_interfaces()
                log(f"listening on {lst.address}:{lst.port} (network {lst.network})")
            except OSError as e:
                log(f"cannot listen on {lst.address}:{lst.port} (network {lst.network}): {e.strerror}; "
                    f"retrying every {RETRY_BIND:.0f} s")
        self.next_bind_retry = time.monotonic() + RETRY_BIND

    def _listening(self) -> str:
        return ", ".join([f"{a}:{p}" for a, p in sorted(self.udp)]
                         + [f"{b.listener.address}:{b.listener.port} in {n}" for n, b in sorted(self.ns_bound.items())])

    # -- inside container namespaces -----------------------------------------------------------

    def _bind_ns(self, lst: NsListener) -> None:
        """Bind UDP and TCP on ``lst.address``:``lst.port`` inside namespace ``lst.netns``: the
        sockets are made there (a socket belongs to the namespace it is created in), then this
        thread returns to its own namespace; they keep working from here. Raises OSError."""
        path = nsmod.netns_path(lst.netns)
        if not nsmod.is_netns(path):
            raise OSError(errno.ENOENT, f"no namespace {path}")
        inode = os.stat(path).st_ino
        family = socket.AF_INET if ":" not in lst.address else socket.AF_INET6
        key = (lst.address, lst.port)
        with nsmod.entered(lst.netns):
            u, t = listen_pair(family, key)
        self.ns_bound[lst.netns] = NsSockets(lst, u, t, inode)
        self.sel.register(u, selectors.EVENT_READ, ("nsudp", lst.netns))
        self.sel.register(t, selectors.EVENT_READ, ("nsaccept", lst.netns))

    def _unbind_ns(self, netns: str) -> None:
        b = self.ns_bound.pop(netns, None)
        if b is None:
            return
        for s in (b.udp, b.tcp):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self._close_clients_of(netns)

    def _sync_namespaces(self) -> None:
        """Listen in the namespaces the zone names and only there: close the listeners of a
        namespace no longer named or no longer at /run/netns/<name> (so the daemon does not keep
        a deleted namespace, with its links, alive), bind the missing ones (retried every
        ``NS_CHECK`` seconds; a failure is logged once per namespace, never fatal)."""
        self.next_ns_check = time.monotonic() + NS_CHECK
        wanted = {lst.netns: lst for lst in self.zone.ns_listeners}
        for name, b in list(self.ns_bound.items()):
            lst = wanted.get(name)
            try:
                same = nsmod.is_netns(nsmod.netns_path(name)) and os.stat(nsmod.netns_path(name)).st_ino == b.inode
            except OSError:
                same = False
            if lst is None or lst != b.listener or not same:
                self._unbind_ns(name)
                if lst is not None and not same:
                    log(f"namespace {name} is gone: closed its listener")
        self.ns_unbound = {n: lst for n, lst in wanted.items() if n not in self.ns_bound}
        self.ns_failed_logged &= set(self.ns_unbound)
        for name, lst in list(self.ns_unbound.items()):
            try:
                self._bind_ns(lst)
            except OSError as e:
                if name not in self.ns_failed_logged:
                    self.ns_failed_logged.add(name)
                    log(f"cannot listen on {lst.address}:{lst.port} in namespace {name} (container "
                        f"{lst.container}): {e.strerror or e}; retrying every {NS_CHECK:.0f} s")
                continue
            del self.ns_unbound[name]
            if name in self.ns_failed_logged:
                self.ns_failed_logged.discard(name)
                log(f"listening on {lst.address}:{lst.port} in namespace {name}")
