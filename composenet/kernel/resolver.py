"""The ``resolver`` and ``dnsrecords`` resources: the project's DNS resolver daemon and the
records it publishes for other projects' resolvers.

Owns:
- the resolver daemon's life: its config ``<project dir>/dns.json``, start (detached, in its
  own session, waiting for its pidfile, which it writes once every listener is bound), reload
  (SIGHUP, waiting for the "reloaded" or "reload failed" it logs), stop; its log
  ``<project dir>/logs/dns.log`` (appended);
- ``<project dir>/dns-peers.json``: the project's endpoints on networks other projects own;
- telling the resolvers of other projects on the networks concerned that the names changed
  (composenet.dns.peers.notify), best effort.

Which daemon is the project's live resolver is composenet.dns.running's answer (the one the
other projects' resolvers use too).

Must not: signal a pid that is not the live resolver (pidfile checked against /proc) or one it
started itself, or wait for a daemon without a bound (every wait has its timeout).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import composenet
from composenet.core.resources import DnsRecords, Resolver, Resource, resolver_listeners
from composenet.core.state import ObservedState
from composenet.dns import peers, running
from composenet.errors import KernelError
from composenet.kernel.context import Context, HandlerBase
from composenet.linux import proc
from composenet.linux.fileio import atomic_write, tail_lines
from composenet.linux.spawn import open_log
from composenet.paths import DNS_LOG

RESOLVER_START_TIMEOUT = 5.0
RESOLVER_STOP_TIMEOUT = 2.0
RESOLVER_RELOAD_TIMEOUT = 2.0


def resolver_config_path(ctx: Context) -> str:
    return ctx.paths.dns_config


def resolver_pidfile(ctx: Context) -> str:
    return running.pidfile(ctx.paths)


def resolver_pid(ctx: Context) -> int | None:
    return running.resolver_pid(ctx.run_dir, ctx.project)


def resolver_alive(ctx: Context) -> bool:
    return resolver_pid(ctx) is not None


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _log_tail(path: str, n: int = 15) -> str:
    return "\n".join("  | " + ln for ln in tail_lines(path, n))


def _package_root() -> str:
    """The directory that holds the ``composenet`` package (a checkout's root, or site-packages)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(composenet.__file__)))


def _config_networks(config_text: str) -> set[str]:
    """The networks a resolver config (its JSON text) listens on: what other projects'
    resolvers read of it (composenet.dns.peers)."""
    try:
        cfg = json.loads(config_text)
    except ValueError:
        return set()
    return peers.listener_networks(cfg) if isinstance(cfg, dict) else set()


def _notify_peers(ctx: Context, networks: set[str]) -> None:
    """Tell the resolvers of the other projects on ``networks`` that this project's names there
    changed (they reload; bounded wait). Best effort: their periodic re-scan is the fallback."""
    try:
        peers.notify(ctx.run_dir, ctx.project, networks)
    except OSError:
        pass


class ResolverHandler(HandlerBase):
    """The project's resolver daemon. One per run: it knows the daemon it started whose readiness
    the executor has not awaited yet (``starting``), so that a rollback stops it."""

    kinds: tuple[str, ...] = ("resolver",)

    def __init__(self) -> None:
        self.starting: subprocess.Popen | None = None

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        path = resolver_config_path(ctx)
        try:
            with open(path) as f:
                text = f.read()
            cfg = json.loads(text)
        except (OSError, ValueError):
            return
        if not isinstance(cfg, dict) or running.daemon_pid(running.pidfile_of(text, ctx.paths.dns_pid)) is None:
            return
        try:
            listeners = resolver_listeners(cfg)
        except (KeyError, TypeError, AttributeError):
            listeners = ()
        observed.add(Resolver(ctx.project, listeners, text, hashlib.sha256(text.encode()).hexdigest()))

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, Resolver)
        path = resolver_config_path(ctx)
        pidfile = running.pidfile_of(r.config, ctx.paths.dns_pid)
        old = running.daemon_pid(pidfile)
        if old is not None:  # left by a crash with its config gone: it holds the listeners
            proc.stop_group(old, None, RESOLVER_STOP_TIMEOUT, "the old DNS resolver")
        for pid in running.started_on(path):  # started by a run that crashed before it was ready
            proc.stop_group(pid, None, RESOLVER_STOP_TIMEOUT, "the old DNS resolver")
        _unlink(pidfile)
        atomic_write(path, r.config)
        log = ctx.paths.log(DNS_LOG)
        p = self._start(path, log)
        # Under the executor, the wait for readiness (the daemon's start-up, tens of ms) overlaps
        # the next steps; the executor waits before the first service process starts and before
        # it finishes (apply.defer). Called directly, create waits here.
        self.starting = p
        if not ctx.defer(lambda: self._await_ready(ctx, p, path, pidfile, log)):
            self._await_ready(ctx, p, path, pidfile, log)

    def _start(self, path: str, log: str) -> subprocess.Popen:
        """Start the daemon on config ``path``, detached, from / and logging to ``log``."""
        logfd = open_log(log)
        env = dict(os.environ)
        # The daemon runs from / (it must not keep a directory busy): make the package importable.
        env["PYTHONPATH"] = os.pathsep.join([_package_root(), *filter(None, [env.get("PYTHONPATH")])])
        try:
            p = subprocess.Popen([sys.executable, "-m", running.RESOLVER_MODULE, path], stdin=subprocess.DEVNULL,
                                 stdout=logfd, stderr=logfd, close_fds=True, start_new_session=True, cwd="/", env=env)
        except OSError as e:
            _unlink(path)
            raise KernelError(f"cannot start the DNS resolver: {e.strerror}") from None
        finally:
            os.close(logfd)
        proc.adopt(p)
        return p

    def _await_ready(self, ctx: Context, p: subprocess.Popen, path: str, pidfile: str, log: str) -> None:
        def ready() -> bool:
            return p.poll() is not None or running.daemon_pid(pidfile) == p.pid

        proc.wait_until(ready, RESOLVER_START_TIMEOUT)
        if self.starting is p:
            self.starting = None
        if running.daemon_pid(pidfile) == p.pid:
            _notify_peers(ctx, _config_networks(_read_text(path)))
            return
        rc = p.poll()
        if rc is None:
            proc.stop_group(p.pid, None, 0.0, "the DNS resolver")
            why = f"did not become ready within {RESOLVER_START_TIMEOUT:g} s"
        else:
            why = f"exited with status {rc}"
            proc.forget(p.pid)
        _unlink(path)
        _unlink(pidfile)
        tail = _log_tail(log)
        raise KernelError(f"the DNS resolver of project {ctx.project} {why}" + (f"; its log ({log}) ends with:\n{tail}" if tail else ""))

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        assert isinstance(after, Resolver)
        pid = resolver_pid(ctx)
        if pid is None or running.pidfile_of(after.config, ctx.paths.dns_pid) != resolver_pidfile(ctx):
            if pid is not None:
                self.delete(ctx, before)
            self.create(ctx, after)
            return
        self._reload(ctx, pid, after)

    def _reload(self, ctx: Context, pid: int, after: Resolver) -> None:
        """Write the new config and SIGHUP the live daemon ``pid``. The daemon says "reloaded" or
        "reload failed" in its log; wait a little for either so a config it rejects is an error
        of this step, not a silent keep-the-old-one."""
        log = ctx.paths.log(DNS_LOG)
        try:
            offset = os.path.getsize(log)
        except OSError:
            offset = 0
        before_text = _read_text(resolver_config_path(ctx))
        atomic_write(resolver_config_path(ctx), after.config)
        os.kill(pid, signal.SIGHUP)
        outcome: list[str] = []

        def answered() -> bool:
            text = peers.read_from(log, offset)
            if text is None:
                return False
            for line in text.splitlines():
                if "reload failed" in line or "reloaded" in line:
                    outcome.append(line)
                    return True
            return not proc.alive(pid)

        proc.wait_until(answered, RESOLVER_RELOAD_TIMEOUT)
        if outcome and "reload failed" in outcome[0]:
            raise KernelError(f"the DNS resolver of project {ctx.project} rejected its new configuration: {outcome[0]}")
        if not proc.alive(pid):
            raise KernelError(f"the DNS resolver of project {ctx.project} exited on reload:\n{_log_tail(log)}")
        _notify_peers(ctx, _config_networks(before_text) | _config_networks(after.config))

    def delete(self, ctx: Context, r: Resource) -> None:
        starting, self.starting = self.starting, None
        if starting is not None and starting.poll() is None:  # started, readiness not awaited yet
            proc.stop_group(starting.pid, proc.start_time(starting.pid), RESOLVER_STOP_TIMEOUT, "the DNS resolver")
        pidfile = resolver_pidfile(ctx)
        pid = running.daemon_pid(pidfile)
        if pid is not None:
            proc.stop_group(pid, proc.start_time(pid), RESOLVER_STOP_TIMEOUT, "the DNS resolver")
        networks = _config_networks(_read_text(resolver_config_path(ctx)))
        _unlink(resolver_config_path(ctx))
        _unlink(pidfile)
        _notify_peers(ctx, networks)


# ---- names on other projects' networks (composenet.dns.peers) --------------------------------


def peers_path(ctx: Context) -> str:
    return ctx.paths.dns_peers


class PeersHandler(HandlerBase):
    """The ``dnsrecords`` resource: ``<project dir>/dns-peers.json``, the project's endpoints on
    networks other projects own, with the host namespace's identity added (the runtime directory
    is shared by every namespace of the machine). Writing or removing it signals the resolvers
    that serve those networks."""

    kinds: tuple[str, ...] = ("dnsrecords",)

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        rec = peers.read_published(peers_path(ctx))
        if rec is None:
            return
        text = json.dumps(rec, indent=1, sort_keys=True) + "\n"
        containers = [c for c in rec.get("containers", ()) if isinstance(c, dict)]
        nets = sorted({str(ep.get("network")) for c in containers for ep in c.get("endpoints", ())
                       if isinstance(ep, dict)})
        observed.add(DnsRecords(ctx.project, tuple(nets), text, hashlib.sha256(text.encode()).hexdigest(),
                                tuple(str(c.get("name")) for c in containers)))

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, DnsRecords)
        atomic_write(peers_path(ctx), peers.published_text(json.loads(r.records)))
        _notify_peers(ctx, set(r.networks))

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        assert isinstance(before, DnsRecords) and isinstance(after, DnsRecords)
        self.create(ctx, after)
        _notify_peers(ctx, set(before.networks) - set(after.networks))

    def delete(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, DnsRecords)
        _unlink(peers_path(ctx))
        _notify_peers(ctx, set(r.networks))
