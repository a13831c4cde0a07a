"""The host's cluster settings: which store, this node's name, its underlay address, the TTL.

Owns: the store URL syntax and its errors, the environment variables, their defaults and checks.
Reads nothing but the environment given, the existence of the TLS files and, for the defaults,
the hostname and the route towards the store (:func:`route_source`, a UDP socket that sends
nothing). Must not: talk to the store (``client.py``) or touch the kernel.

    --store URL         COMPOSENET_STORE           etcd://HOST:PORT[,HOST:PORT...]  (port 2379 when
                                                   omitted; http:// is the same; etcds:// or https://
                                                   for TLS, with the three variables below)
                        COMPOSENET_STORE_CA        CA bundle the store's certificate must chain to
                        COMPOSENET_STORE_CERT      client certificate (with _KEY; both or neither)
                        COMPOSENET_STORE_KEY       its private key
    --node NAME         COMPOSENET_NODE            this host's name in the cluster (default: the
                                                   hostname; unique in the cluster)
    --advertise-addr IP COMPOSENET_ADVERTISE_ADDR  this host's underlay IPv4 (VTEP) (default: the
                                                   source address of the route towards the first
                                                   store endpoint)
                        COMPOSENET_STORE_TTL       the node lease's TTL in seconds (default 10)
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from composenet.cluster.errors import StoreConfigError

ENV_STORE = "COMPOSENET_STORE"
ENV_CA = "COMPOSENET_STORE_CA"
ENV_CERT = "COMPOSENET_STORE_CERT"
ENV_KEY = "COMPOSENET_STORE_KEY"
ENV_NODE = "COMPOSENET_NODE"
ENV_ADVERTISE = "COMPOSENET_ADVERTISE_ADDR"
ENV_TTL = "COMPOSENET_STORE_TTL"

DEFAULT_PORT = 2379
DEFAULT_TTL = 10
MIN_TTL = 2  # etcd grants no less
MAX_TTL = 3600
PLAIN_SCHEMES = ("etcd", "http")
TLS_SCHEMES = ("etcds", "https")
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SYNTAX = "etcd://HOST:PORT[,HOST:PORT...] (or http://, or etcds:// / https:// for TLS)"


@dataclass(frozen=True)
class Endpoint:
    host: str  # a name or an IP address (IPv6 without brackets)
    port: int

    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class StoreURL:
    """A parsed store setting: endpoints in the order given (the client tries them in turn)."""

    text: str
    tls: bool
    endpoints: tuple[Endpoint, ...]
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def base_urls(self) -> list[str]:
        return [f"{self.scheme}://{e.netloc()}" for e in self.endpoints]

    def __str__(self) -> str:
        return ("etcds://" if self.tls else "etcd://") + ",".join(e.netloc() for e in self.endpoints)


@dataclass(frozen=True)
class ClusterSettings:
    """What a host needs to join the cluster. ``advertise`` None: :func:`route_source` decides."""

    store: StoreURL
    node: str
    advertise: str | None
    ttl: int


def _fail(text: str, why: str) -> StoreConfigError:
    return StoreConfigError(f"store {text!r}: {why}", hint=f"expected {SYNTAX}")


def _endpoint(text: str, part: str) -> Endpoint:
    if not part:
        raise _fail(text, "an empty endpoint")
    if "@" in part:
        raise _fail(text, "user names and passwords in the URL are not supported (use client certificates "
                    "with etcds://)")
    if "/" in part or "?" in part or "#" in part:
        raise _fail(text, f"{part!r}: a store URL has no path, query or fragment")
    if part.startswith("["):
        host, sep, rest = part[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise _fail(text, f"{part!r} is not [IPv6]:PORT")
        port_text = rest[1:] if rest else ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _fail(text, f"{host!r} is not an IPv6 address") from None
    else:
        host, _, port_text = part.partition(":")
        if ":" in port_text:
            raise _fail(text, f"{part!r}: write an IPv6 address in brackets, [ADDRESS]:PORT")
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
            raise _fail(text, f"{host!r} is not a host name or address")
    if port_text == "":
        port = DEFAULT_PORT
    elif port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise _fail(text, f"{port_text!r} is not a port (1-65535)")
    return Endpoint(host, port)


def parse_store_url(text: str, env: Mapping[str, str] | None = None) -> StoreURL:
    """``etcd://h1:2379,h2:2379`` and friends (see the module doc). TLS files come from ``env``
    (default: the process environment) and must exist. Raises :class:`StoreConfigError`."""
    env = os.environ if env is None else env
    value = text.strip()
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise _fail(text, "no scheme")
    scheme = scheme.lower()
    if scheme not in PLAIN_SCHEMES + TLS_SCHEMES:
        raise _fail(text, f"unknown scheme {scheme!r}")
    parts = []
    for item in rest.split(","):
        item = item.strip()
        # Each endpoint may repeat the scheme: "http://h1:2379,http://h2:2379".
        other, sep, tail = item.partition("://")
        if sep:
            if other.lower() != scheme and {other.lower(), scheme} not in ({"etcd", "http"}, {"etcds", "https"}):
                raise _fail(text, f"endpoints mix schemes ({scheme}, {other})")
            item = tail
        parts.append(item[:-1] if item.endswith("/") else item)  # "etcd://h:2379/" is fine
    endpoints = tuple(_endpoint(text, p) for p in parts)
    if len(set(endpoints)) != len(endpoints):
        raise _fail(text, "an endpoint is listed twice")
    tls = scheme in TLS_SCHEMES
    ca, cert, key = (env.get(n) or None for n in (ENV_CA, ENV_CERT, ENV_KEY))
    if not tls:
        if ca or cert or key:
            raise StoreConfigError(f"store {text!r}: {ENV_CA}/{ENV_CERT}/{ENV_KEY} are set but the URL is not TLS",
                                   hint="use etcds://HOST:PORT for a store with TLS")
        return StoreURL(text, False, endpoints)
    if bool(cert) != bool(key):
        raise StoreConfigError(f"store {text!r}: {ENV_CERT} and {ENV_KEY} go together (one is not set)",
                               hint="set both for a client certificate, or neither")
    for name, path in ((ENV_CA, ca), (ENV_CERT, cert), (ENV_KEY, key)):
        if path and not os.path.isfile(path):
            raise StoreConfigError(f"{name}={path}: no such file")
    return StoreURL(text, True, endpoints, ca, cert, key)


def parse_node(name: str) -> str:
    if not NODE_NAME.fullmatch(name):
        raise StoreConfigError(f"node name {name!r} is not valid",
                               hint="1-63 characters: letters, digits, '_', '.', '-', starting with a letter or digit")
    return name


def parse_advertise(text: str) -> str:
    try:
        addr = ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise StoreConfigError(f"advertise address {text!r} is not an IPv4 address",
                               hint="the underlay address of this host that the others reach it on") from None
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback:
        raise StoreConfigError(f"advertise address {text!r} cannot carry VXLAN between hosts")
    return str(addr)


def parse_ttl(text: str) -> int:
    t = text.strip()
    if not (t.isascii() and t.isdigit()) or not MIN_TTL <= int(t) <= MAX_TTL:
        raise StoreConfigError(f"{ENV_TTL}={text!r}: expected whole seconds, {MIN_TTL}-{MAX_TTL}")
    return int(t)


def settings_from(store: str | None = None, node: str | None = None, advertise: str | None = None,
                  env: Mapping[str, str] | None = None) -> ClusterSettings | None:
    """The host's settings from the options (when given) and the environment; None without a
    store (overlay networks then use static peers). Raises :class:`StoreConfigError`."""
    env = os.environ if env is None else env
    text = store if store is not None else env.get(ENV_STORE, "")
    if not text.strip():
        return None
    url = parse_store_url(text, env)
    node_name = node if node is not None else (env.get(ENV_NODE) or socket.gethostname())
    adv = advertise if advertise is not None else env.get(ENV_ADVERTISE)
    ttl_text = env.get(ENV_TTL)
    return ClusterSettings(url, parse_node(node_name), parse_advertise(adv) if adv else None,
                           parse_ttl(ttl_text) if ttl_text else DEFAULT_TTL)


def route_source(endpoint: Endpoint) -> str:
    """The source address this host uses towards ``endpoint`` (a connected UDP socket: the
    kernel picks the route and the address; nothing is sent). Raises StoreConfigError."""
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as e:
        raise StoreConfigError(f"cannot resolve store host {endpoint.host!r}: {e}",
                               hint="set --advertise-addr / COMPOSENET_ADVERTISE_ADDR") from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(infos[0][4])
        except OSError as e:
            raise StoreConfigError(f"no route towards the store at {endpoint.netloc()}: {e.strerror}",
                                   hint="set --advertise-addr / COMPOSENET_ADVERTISE_ADDR") from None
        return str(s.getsockname()[0])


def advertise_address(settings: ClusterSettings) -> str:
    """This host's VTEP address: the setting, else the route's source towards the first endpoint."""
    if settings.advertise:
        return settings.advertise
    return parse_advertise(route_source(settings.store.endpoints[0]))
