"""The resolver's JSON config: reading it, validating it, and the model it describes.

Owns: :class:`ConfigError`, the frozen records of the config (:class:`Listener`,
:class:`NsListener`, :class:`Container`, :class:`Endpoint`), the defaults of optional keys,
upstream server syntax (:func:`parse_upstream`) and :func:`parse_config`, which checks every key
of the contract written in ``composenet/dns/__init__.py`` and names ``file: key.path`` in each
error. Must not: decide what a name answers (``zone.py``), encode packets (``wire.py``), or
touch anything but the config file itself (:func:`load_config` reads it; nothing else does I/O).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composenet.errors import ComposenetError

DEFAULT_TTL = 5
DEFAULT_PORT = 53
NETNS_ADDRESS = "127.0.0.11"  # a namespace listener's address inside the container (Docker's)
DEFAULT_FORWARD_TIMEOUT = 2.0


class ConfigError(ComposenetError):
    """The resolver config is unusable; the message names the file and the key."""

    kind = "dns-config"


# -- the model the config describes ------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    network: str
    address: str
    port: int
    internal: bool

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class NsListener:
    """A listener inside one container's network namespace (/run/netns/<netns>), for containers
    on a macvlan network, which cannot reach the bridge gateways: every query arriving on it is
    from that container (``container``), whatever its source address."""

    netns: str
    container: str
    network: str  # for logs
    address: str
    port: int


@dataclass(frozen=True)
class Endpoint:
    network: str
    ipv4: str | None
    ipv6: str | None
    aliases: tuple[str, ...]
    internal: bool


@dataclass(frozen=True)
class Container:
    name: str
    service: str
    hostname: str | None
    register: bool
    upstreams: tuple[str, ...] | None
    links: tuple[tuple[str, str], ...]
    endpoints: tuple[Endpoint, ...]

    def names(self, endpoint: Endpoint) -> list[str]:
        """The DNS names of this container on one of its endpoints (Docker's Aliases)."""
        out = [self.service, self.name]
        if self.hostname:
            out.append(self.hostname)
        out += endpoint.aliases
        return out


# -- reading and checking ----------------------------------------------------------------------


def parse_upstream(text: str) -> tuple[str, int]:
    """``"198.51.100.53"``, ``"198.51.100.53:5353"``, ``"2001:db8::1"``, ``"[2001:db8::1]:53"``."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
        if rest and not rest.startswith(":"):
            raise ValueError(text)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    else:
        host, port = text, DEFAULT_PORT
    addr = ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(text)
    return addr.compressed, port


def load_config(path: str | Path) -> dict:
    """Read the JSON config; errors name the file (and the line for JSON syntax errors)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the DNS config: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return data


class _Reader:
    """Typed access to the JSON config; every error names ``file: key.path``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {message}",
                           hint="the planner writes this file; re-run `composenet up` to rewrite it")

    def get(self, obj: dict, key: str, path: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in obj or obj[key] is None:
            if default is ...:
                raise self.fail(f"{path}{key}", "missing")
            return default
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            raise self.fail(f"{path}{key}", f"expected {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def ip(self, value: Any, path: str, version: int | None = None) -> str:
        try:
            addr = ipaddress.ip_address(value)
        except (ValueError, TypeError):
            raise self.fail(path, f"{value!r} is not an IP address") from None
        if version is not None and addr.version != version:
            raise self.fail(path, f"{value!r} is not an IPv{version} address")
        return addr.compressed

    def upstream(self, value: Any, path: str) -> str:
        try:
            parse_upstream(value)
        except (ValueError, TypeError):
            raise self.fail(path, f"{value!r} is not an upstream server (IP, IP:PORT or [IPv6]:PORT)") from None
        return str(value)

    def name(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a name, got {value!r}")
        return value

    def objects(self, obj: dict, key: str, path: str, default: Any = ...) -> Iterator[tuple[str, dict]]:
        """The items of the list at ``obj[key]`` as (key path prefix, object), each checked to be
        an object as it comes (lazily: errors keep the order of the file)."""
        for i, item in enumerate(self.get(obj, key, path, list, default)):
            p = f"{path}{key}[{i}]."
            if not isinstance(item, dict):
                raise self.fail(p[:-1], "expected an object")
            yield p, item


def parse_config(config: dict, source: str) -> tuple[dict[str, Any], list[Listener], list[Container]]:
    """Check ``config`` (errors name ``source``): (top-level settings, listeners, containers).

    The settings are ``project``, ``ttl``, ``pidfile``, ``forward_timeout``, ``upstreams`` and
    ``namespaces`` (the :class:`NsListener` list). Keys are checked in file order, so the first
    error reported is the first one in the file. Raises :class:`ConfigError`."""
    r = _Reader(source)
    top = _parse_settings(r, config)
    listeners = _parse_listeners(r, config)
    containers = [_parse_container(r, p, obj) for p, obj in r.objects(config, "containers", "", [])]
    top["namespaces"] = _parse_namespaces(r, config)
    return top, listeners, containers


def _parse_settings(r: _Reader, config: dict) -> dict[str, Any]:
    top: dict[str, Any] = {
        "project": r.get(config, "project", "", str),
        "ttl": r.get(config, "ttl", "", int, DEFAULT_TTL),
        "pidfile": r.get(config, "pidfile", "", str),
        "forward_timeout": float(r.get(config, "forward_timeout", "", (int, float), DEFAULT_FORWARD_TIMEOUT)),
    }
    if not 0 <= top["ttl"] <= 2**31 - 1:
        raise r.fail("ttl", f"{top['ttl']} is out of range")
    if not 0.05 <= top["forward_timeout"] <= 60:
        raise r.fail("forward_timeout", "must be between 0.05 and 60 seconds")
    top["upstreams"] = tuple(r.upstream(u, f"upstreams[{i}]")
                             for i, u in enumerate(r.get(config, "upstreams", "", list, [])))
    return top


def _parse_listeners(r: _Reader, config: dict) -> list[Listener]:
    listeners = []
    seen: set[tuple[str, int]] = set()
    for p, obj in r.objects(config, "listeners", ""):
        lst = Listener(network=r.get(obj, "network", p, str),
                       address=r.ip(r.get(obj, "address", p, str), p + "address"),
                       port=r.get(obj, "port", p, int, DEFAULT_PORT),
                       internal=r.get(obj, "internal", p, bool, False))
        if not 0 < lst.port < 65536:
            raise r.fail(p + "port", f"{lst.port} is not a port")
        if (lst.address, lst.port) in seen:
            raise r.fail(p + "address", f"{lst.address}:{lst.port} is listed twice")
        seen.add((lst.address, lst.port))
        listeners.append(lst)
    return listeners


def _parse_container(r: _Reader, p: str, obj: dict) -> Container:
    endpoints = []
    for q, ep in r.objects(obj, "endpoints", p, []):
        v4 = r.get(ep, "ipv4", q, str, None)
        v6 = r.get(ep, "ipv6", q, str, None)
        endpoints.append(Endpoint(
            network=r.get(ep, "network", q, str),
            ipv4=r.ip(v4, q + "ipv4", 4) if v4 is not None else None,
            ipv6=r.ip(v6, q + "ipv6", 6) if v6 is not None else None,
            aliases=tuple(r.name(a, f"{q}aliases[{k}]") for k, a in enumerate(r.get(ep, "aliases", q, list, []))),
            internal=r.get(ep, "internal", q, bool, False)))
    links = []
    for k, link in enumerate(r.get(obj, "links", p, list, [])):
        if not (isinstance(link, list) and len(link) == 2 and all(isinstance(x, str) for x in link)):
            raise r.fail(f"{p}links[{k}]", f"expected [alias, service], got {link!r}")
        links.append((link[0], link[1]))
    ups = r.get(obj, "upstreams", p, list, None)
    return Container(
        name=r.get(obj, "name", p, str),
        service=r.get(obj, "service", p, str),
        hostname=r.get(obj, "hostname", p, str, None) or None,
        register=r.get(obj, "register", p, bool, True),
        upstreams=None if ups is None else tuple(r.upstream(u, f"{p}upstreams[{k}]") for k, u in enumerate(ups)),
        links=tuple(links),
        endpoints=tuple(endpoints))


def _parse_namespaces(r: _Reader, config: dict) -> list[NsListener]:
    out = []
    seen: set[str] = set()
    for p, obj in r.objects(config, "namespaces", "", []):
        lst = NsListener(netns=r.get(obj, "netns", p, str), container=r.get(obj, "container", p, str),
                         network=r.get(obj, "network", p, str, ""),
                         address=r.ip(r.get(obj, "address", p, str, NETNS_ADDRESS), p + "address"),
                         port=r.get(obj, "port", p, int, DEFAULT_PORT))
        if not lst.netns or "/" in lst.netns or lst.netns in (".", ".."):
            raise r.fail(p + "netns", f"{lst.netns!r} is not a namespace name")
        if not 0 < lst.port < 65536:
            raise r.fail(p + "port", f"{lst.port} is not a port")
        if lst.netns in seen:
            raise r.fail(p + "netns", f"{lst.netns} is listed twice")
        seen.add(lst.netns)
        out.append(lst)
    return out
