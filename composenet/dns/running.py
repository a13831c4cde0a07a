"""Which resolver daemon runs for a project, seen from outside it: the module it runs as, the
pidfile its config names (it writes the pidfile once every listener is bound), and the live
pid (the pidfile's pid, checked against /proc: running, started as the resolver, and of this
host). One answer for the kernel's resolver handler (start, reload, stop) and for the resolvers
of other projects (``peers.py``: whose names to merge, whom to signal).

"Of this host": ``composenet.linux.proc.of_this_host`` (re-exported here): several hosts
simulated on one machine run the same project names with the same paths and command lines, in
one pid namespace: a pid or a command line alone would let one host's `up` stop another's
resolver. The resolver's identity is its run directory only: the run directory is the host's state (two network namespaces sharing one
and a project name would clash on every file anyway), and callers may ask from a thread that
entered another namespace.

Must not: start, signal or stop a daemon (composenet.kernel.resolver does; peers.py signals
reloads), or know other projects' records.
"""

from __future__ import annotations

import json

from composenet.linux import proc
from composenet.linux.proc import of_this_host
from composenet.paths import ProjectPaths

__all__ = ["RESOLVER_MODULE", "daemon_pid", "of_this_host", "pidfile", "pidfile_of", "resolver_pid", "started_on"]

RESOLVER_MODULE = "composenet.dns.server"  # started as `python -m RESOLVER_MODULE CONFIG`


def pidfile_of(config_text: str, default: str) -> str:
    """The pidfile a resolver config (its JSON text) names; ``default`` when it names none or
    does not parse."""
    try:
        pf = json.loads(config_text).get("pidfile")
    except (ValueError, AttributeError):
        pf = None
    return str(pf) if pf else default


def pidfile(paths: ProjectPaths) -> str:
    """The pidfile of the project's resolver: the one its config names, else ``dns.pid``."""
    try:
        with open(paths.dns_config) as f:
            return pidfile_of(f.read(), paths.dns_pid)
    except OSError:
        return paths.dns_pid


def daemon_pid(pidfile: str) -> int | None:
    """The pid in ``pidfile`` if it is a live resolver daemon."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    if proc.alive(pid) and RESOLVER_MODULE in proc.cmdline(pid) and of_this_host(pid, pidfile, netns=False):
        return pid
    return None


def resolver_pid(run_dir: str, project: str) -> int | None:
    """The live resolver daemon of ``project`` under ``run_dir`` (pidfile, checked against
    /proc), or None."""
    return daemon_pid(pidfile(ProjectPaths(run_dir, project)))


def started_on(config: str) -> list[int]:
    """Live resolver daemons of this host started on config file ``config`` (by their command
    line, checked with :func:`of_this_host`), ready or not: one whose start the caller did not
    see through leaves no pidfile yet."""
    want = [RESOLVER_MODULE.encode(), config.encode()]
    out = []
    for pid in proc.pids():
        args = proc.argv(pid)
        if args is not None and args[-3:-1] == want and proc.alive(pid) and of_this_host(pid, config, netns=False):
            out.append(pid)
    return out
