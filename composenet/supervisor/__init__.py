"""The supervisor: one composenet process per project that runs the project's service commands
and holds its published host ports, for the project's lifetime.

Why a process of its own (and not the resolver, nor nothing at all): only the parent of a
process learns its exit status, so exit codes for `ps` and restart policies need a parent that
outlives `up`; holding the published ports needs a process that owns the sockets; and the
resolver restarts on its own schedule and must not take the services with it. It starts fast
(standard library and composenet.linux only), is started by `up` (kernel.processes) and stopped
by `down`.

What it does (``daemon``):

- starts each service command when `up` asks, in the service's network namespace, with its
  user and capabilities (composenet.linux.spawn, linux.caps), in a cgroup of its own
  (composenet.linux.cgroup: ``<project>/c-<container>``; the supervisor itself is in
  ``<project>/supervisor``), logging to ``logs/<container>.log``;
- is the subreaper of everything its services start; when a service's main process exits it
  records the exit code, kills what the service left in its cgroup, and restarts it when its
  restart policy says so (``policy``), with backoff;
- stops a service (SIGTERM to its process group, SIGKILL to its whole cgroup after the grace
  period) when `up` or `down` asks, and everything when asked to exit or on SIGTERM;
- holds the published ports (``holder``);
- on start, kills whatever a previous supervisor of the project left in its cgroup (a crash of
  the supervisor leaves its services running; `up` then starts a new one, which starts them
  again: deterministic, never two copies).

Its files, under the project's run directory (composenet.paths): ``supervisor.json`` (pid, start
time, the ports it holds; written once it is ready), ``supervisor.sock`` (requests: one JSON
line each way, ``client``), ``supervisor-ports.json`` (the ports to hold, written by `up`),
``states/<container>.json`` (each service's state, what `ps` reads), ``logs/supervisor.log``.
"""

from __future__ import annotations

from composenet.paths import (
    SUPERVISOR_LOG,
    SUPERVISOR_PIDFILE,
    SUPERVISOR_PORTS,
    SUPERVISOR_SOCKET,
    SUPERVISOR_STATES,
)

MODULE = "composenet.supervisor"  # started as `python -m MODULE PROJECT_DIR PROJECT READY_FD`
PIDFILE = SUPERVISOR_PIDFILE
SOCKET = SUPERVISOR_SOCKET
PORTS = SUPERVISOR_PORTS
STATES = SUPERVISOR_STATES
LOG = SUPERVISOR_LOG  # logs/supervisor.log
# The PATH of a command whose environment has none (as `docker run` gives an image without ENV PATH).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
