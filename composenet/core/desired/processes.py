"""The service processes of the planned containers (``core.resources.Process``). Pure.

Owns: which containers run a command, with what (argv, environment, working directory, user,
hostname, stop grace period) and after which others (depends_on, and the owner of the namespace a
``service:`` container shares). Must not: decide anything about networks or namespaces
(containers.py did).
"""

from __future__ import annotations

from composenet.core.desired.containers import Container, by_service
from composenet.core.resources import Process
from composenet.core.state import DesiredState


def add_processes(d: DesiredState, containers: list[Container]) -> None:
    """A process per container whose service has a command, started after those it depends on
    (depends_on, and the owner of the namespace it shares) that also run one."""
    services = by_service(containers)
    for c in containers:
        argv = c.service.argv
        if not argv:
            continue
        after: list[str] = []
        for dep in c.service.depends_on:
            after += [x.name for x in services.get(dep, [])]
        if c.service.network_mode and c.service.network_mode.startswith("service:"):
            target = services.get(c.service.network_mode.split(":", 1)[1], [])
            after += [x.name for x in target[:1]]
        after = sorted(set(a for a in after if a != c.name and any(x.name == a and x.service.argv for x in containers)))
        d.add(Process(c.name, c.service.name, c.ns, tuple(argv), tuple(c.service.environment),
                      c.service.working_dir, c.service.user, c.hostname if c.ns or c.own_ns else None,
                      c.service.stop_grace_period, tuple(after)))
