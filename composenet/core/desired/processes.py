"""The service processes of the planned containers (``core.resources.Process``) and the project's
supervisor that runs them and holds its published ports (``core.resources.Supervisor``). Pure.

Owns: which containers run a command, with what (argv, environment, working directory, user,
capabilities, hostname, restart policy, stop grace period) and after which others (depends_on,
and the owner of the namespace a ``service:`` container shares); whether the project needs a
supervisor (it has a command or a published port) and which ports it holds. Must not: decide
anything about networks or namespaces (containers.py did) or about host ports (ports.py does).
"""

from __future__ import annotations

from composenet.core.desired.containers import Container, by_service
from composenet.core.desired.ports import fixed_port_maps, held_specs
from composenet.core.resources import Process, Supervisor
from composenet.core.ruleset import PortMap
from composenet.core.state import DesiredState


def add_processes(d: DesiredState, containers: list[Container], port_maps: list[PortMap] | None = None) -> None:
    """A process per container whose service has a command, started after those it depends on
    (depends_on, and the owner of the namespace it shares) that also run one; and the project's
    supervisor, holding the host ports of ``port_maps`` (None: those of the fixed ports, which
    need no observed state to place)."""
    services = by_service(containers)
    any_process = False
    for c in containers:
        argv = c.service.argv
        if not argv:
            continue
        any_process = True
        after: list[str] = []
        for dep in c.service.depends_on:
            after += [x.name for x in services.get(dep, [])]
        if c.service.network_mode and c.service.network_mode.startswith("service:"):
            target = services.get(c.service.network_mode.split(":", 1)[1], [])
            after += [x.name for x in target[:1]]
        after = sorted(set(a for a in after if a != c.name and any(x.name == a and x.service.argv for x in containers)))
        svc = c.service
        d.add(Process(c.name, svc.name, c.ns, tuple(argv), tuple(svc.environment), svc.working_dir, svc.user,
                      c.hostname if c.ns or c.own_ns else None, svc.stop_grace_period, tuple(after),
                      restart=svc.restart, cap_add=svc.cap_add, cap_drop=svc.cap_drop, privileged=svc.privileged,
                      project=d.project, where=f"{svc.pos}: services.{svc.name}" if svc.pos else f"services.{svc.name}"))
    ports = held_specs(port_maps if port_maps is not None else fixed_port_maps(containers))
    if any_process or ports:
        d.add(Supervisor(d.project, ports))
