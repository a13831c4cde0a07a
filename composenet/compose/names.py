"""Names that become kernel or file names: checked before anything is touched, each at its place
in the file. Pure (called by validate.py).

Which names and why (Linux and composenet's own layout):

- a network's key (the Compose rule ``^[a-zA-Z0-9._-]+$``) and its name (``<project>_<key>``, or
  ``name:``; Docker's rule ``^[a-zA-Z0-9][a-zA-Z0-9_.-]*$``): the name goes into link labels
  (ifalias ``composenet:<project>/<network>``, at most 255 bytes, '/' separates the parts), nft
  comments and DNS names (``<container>.<network>``): at most 63 characters;
- a container's name (``<project>-<service>-<n>``, or ``container_name``): the name of its network
  namespace (/run/netns, /etc/netns), of its files in the run directory and its cgroup, its
  default host name (at most 64 bytes for the kernel) and a DNS name: at most 63 characters,
  DNS labels, unique in the project;
- ``hostname``: the kernel takes at most 64 bytes.

With these bounds every label composenet writes (``composenet:<project>/<container>/<network>``)
stays under the kernel's 255 bytes, and no name can hold the '/' that separates a label's parts.

Must not: parse values (modelbuild.py did) or know the kernel beyond these limits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from composenet.compose.modelbuild import Ctx
from composenet.core.model import Network, Service

MAX_NAME = 63  # a DNS label; below the kernel's limits for host names and file names
MAX_HOSTNAME = 64  # HOST_NAME_MAX
NETWORK_KEY = re.compile(r"^[a-zA-Z0-9._-]+$")
NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")  # validate.py's (CS-NAME-10)


def check_names(ctx: Ctx, services: Mapping[str, Service], networks: Mapping[str, Network]) -> None:
    project = ctx.env.get("COMPOSE_PROJECT_NAME", "")
    for key, net in sorted(networks.items()):
        _network(ctx, project, key, net)
    _unique_networks(ctx, networks)
    for name, svc in sorted(services.items()):
        _container_name(ctx, project, name, svc, services)
        if svc.hostname is not None and len(svc.hostname.encode()) > MAX_HOSTNAME:
            ctx.err(("services", name, "hostname"), f"hostname is {len(svc.hostname.encode())} bytes long: the "
                    f"kernel takes at most {MAX_HOSTNAME}", rule="CS-NAME-11")


def _network(ctx: Ctx, project: str, key: str, net: Network) -> None:
    where: tuple[Any, ...] = ("networks", key)
    if not NETWORK_KEY.match(key):
        ctx.err(where, f"network key {key!r} is invalid", key=True,
                hint="letters, digits, '.', '_' and '-' only (the Compose rule)")
        return
    explicit = _given_name(ctx, key)
    what = f"network name {net.name!r}" + ("" if explicit else f" (project {project!r} + '_' + key)")
    path = where + ("name",) if explicit else where
    if not NETWORK_NAME.match(net.name):
        ctx.err(path, f"{what} is invalid", key=not explicit,
                hint="start with a letter or digit; then letters, digits, '_', '.', '-' (Docker's rule)")
    elif len(net.name) > MAX_NAME:
        ctx.err(path, f"{what} is {len(net.name)} characters long: at most {MAX_NAME} (it goes into link "
                "labels and DNS names)", key=not explicit,
                hint="set a shorter `name:`" if explicit else "use a shorter project name (-p) or network key, "
                "or set `name:`")


def _unique_networks(ctx: Ctx, networks: Mapping[str, Network]) -> None:
    """Two networks the project creates may not have one name: they would be one bridge, one
    label and one DNS suffix (an external network may be named by several keys: it is found,
    not made)."""
    first: dict[str, str] = {}
    for key, net in sorted(networks.items()):
        if net.external or not NETWORK_KEY.match(key):
            continue
        other = first.setdefault(net.name, key)
        if other != key:
            path: tuple[Any, ...] = ("networks", key, "name") if _given_name(ctx, key) else ("networks", key)
            ctx.err(path, f"network name {net.name!r} is also the name of network {other!r}",
                    key=not _given_name(ctx, key),
                    hint="give each network its own `name:` (or mark the shared one `external: true`)")


def _given_name(ctx: Ctx, key: str) -> bool:
    nets = ctx.doc.get("networks") if isinstance(ctx.doc, dict) else None
    body = nets.get(key) if isinstance(nets, dict) else None
    return isinstance(body, dict) and (body.get("name") is not None or isinstance(body.get("external"), dict))


def _container_name(ctx: Ctx, project: str, name: str, svc: Service, services: Mapping[str, Service]) -> None:
    """The service's container names (``container_name``, or Docker's ``<project>-<service>-<n>``,
    of which the last is the longest): length, DNS labels, and no clash with another service's."""
    given = svc.container_name
    if given is not None and not _CONTAINER_NAME.match(given):
        return  # validate.py said why
    path: tuple[Any, ...] = ("services", name, "container_name") if given is not None else ("services", name)
    cname = given if given is not None else f"{project}-{name}-{max(1, svc.replicas)}"
    what = f"container_name {cname!r}" if given is not None else f"container name {cname!r} (project-service-index)"
    if len(cname) > MAX_NAME:
        ctx.err(path, f"{what} is {len(cname)} characters long: at most {MAX_NAME} (it names the container's "
                "namespace and files, and is its default host name and a DNS name)", key=given is None,
                hint="set a shorter container_name" if given is not None else "use a shorter project (-p) or "
                "service name, or set container_name", rule="CS-NAME-10")
    elif not all(_LABEL.match(label) for label in cname.split(".")):
        ctx.err(path, f"{what} is not a valid DNS name", key=given is None, rule="CS-NAME-10",
                hint="letters, digits, '-' and '_' in dot-separated parts, none empty or starting or ending with '-'")
    elif given is not None:
        m = re.fullmatch(re.escape(f"{project}-") + r"(.+)-([0-9]+)", given)
        other = services.get(m.group(1)) if m else None
        if m and other is not None and other.container_name is None and 1 <= int(m.group(2)) <= other.replicas:
            ctx.err(path, f"{what} is also the name of a container of service {m.group(1)!r}", rule="CS-NAME-10",
                    hint="set another container_name")
