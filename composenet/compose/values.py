"""Parsers of single Compose values: each takes what the YAML gave (a string, a number, a list or
a mapping) and returns the model's canonical form, or raises ``ValueProblem`` with the message
and hint that modelbuild.py locates. Pure.

Owns: booleans, integers and strings as Compose reads them, IP addresses and subnets (written
canonically), durations, string-or-list values, extra_hosts, links, command lines, environment
pairs, MAC addresses and interface names. Published ports have their own module (ports.py).

Must not: know where a value sits in the document (modelbuild.py does), or read files.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Any

from composenet.linux import capnames

_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$")


class ValueProblem(Exception):
    def __init__(self, message: str, hint: str | None = None, rule: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.rule = rule


# ---- scalars --------------------------------------------------------------------------------------

def as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("false", "no", "off", "0", ""):
        return False
    raise ValueProblem(f"must be true or false, not {v!r}")


def as_int(v: Any, what: str = "value") -> int:
    if isinstance(v, bool):
        raise ValueProblem(f"{what} must be an integer, not {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*[-+]?[0-9]+\s*", v):
        return int(v)
    raise ValueProblem(f"{what} must be an integer, not {v!r}")


def as_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def canonical_ip(text: str, version: int | None = None, what: str = "address") -> str:
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        raise ValueProblem(f"invalid IP {what} {text!r}") from None
    if version and ip.version != version:
        raise ValueProblem(f"{text!r} is not an IPv{version} address")
    return str(ip)


def canonical_net(text: Any, what: str = "subnet") -> str:
    if not isinstance(text, str) or "/" not in text:
        raise ValueProblem(f"invalid {what} {text!r}: expected CIDR notation such as 10.1.0.0/24")
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as e:
        try:
            fixed = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ValueProblem(f"invalid {what} {text!r}: {e}") from None
        raise ValueProblem(f"invalid {what} {text!r}: host bits are set", hint=f"did you mean {fixed}?") from None


_DUR = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(v: Any) -> float:
    """Compose duration (Go syntax: ``1m30s``, ``10s``, ``500ms``) -> seconds."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    s = str(v).strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", s):
        return float(s)
    pos = 0
    total = 0.0
    for m in _DUR.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueProblem(f"invalid duration {v!r}", hint="use a duration such as 10s, 1m30s or 500ms")
    return total


# ---- small list forms -------------------------------------------------------------------------------

def string_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, list):
        return [as_str(x) for x in v]
    return [as_str(v)]


def dedupe(items: list[Any]) -> tuple[Any, ...]:
    seen: set[Any] = set()
    out = []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return tuple(out)


def parse_extra_hosts(v: Any) -> list[tuple[str, str]]:
    """List ``host:ip`` / ``host=ip`` (IPv6 ``host:::1``, ``host=[::1]``) or map form (CS-HOST-01..04)."""
    pairs: list[tuple[str, str]] = []
    if isinstance(v, dict):
        for host, ips in v.items():
            for ip in (ips if isinstance(ips, list) else [ips]):
                pairs.append((host, as_str(ip)))
    else:
        for entry in string_list(v):
            if "=" in entry:
                host, _, ip = entry.partition("=")
            elif ":" in entry:
                host, _, ip = entry.partition(":")
            else:
                raise ValueProblem(f"invalid extra_hosts entry {entry!r}", hint="write HOST=IP",
                                   rule="CS-HOST-01")
            for one in ip.split(","):
                pairs.append((host, one))
    out = []
    for host, ip in pairs:
        host = host.strip()
        ip = ip.strip()
        if not host:
            raise ValueProblem("extra_hosts entry without a host name", rule="CS-HOST-01")
        if ip != "host-gateway":
            ip = canonical_ip(ip)
        out.append((host, ip))
    return out


def parse_link(entry: str) -> tuple[str, str]:
    name, _, alias = entry.partition(":")
    name, alias = name.strip(), alias.strip()
    if not name:
        raise ValueProblem(f"invalid link {entry!r}", hint="write SERVICE or SERVICE:ALIAS", rule="CS-LINK-01")
    return name, alias or name


def parse_command(v: Any) -> tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, list):
        return tuple(as_str(x) for x in v)
    try:
        return tuple(shlex.split(as_str(v)))
    except ValueError as e:
        raise ValueProblem(f"cannot split the command line: {e}", hint="check the quotes") from None


def env_pairs(v: Any) -> list[tuple[str, str | None]]:
    if v is None:
        return []
    out: list[tuple[str, str | None]] = []
    if isinstance(v, dict):
        for k, val in v.items():
            out.append((k, None if val is None else as_str(val)))
    else:
        for item in string_list(v):
            if "=" in item:
                k, _, val = item.partition("=")
                out.append((k, val))
            else:
                out.append((item, None))
    return out


def parse_mac(v: Any) -> str:
    s = as_str(v).strip()
    if not _MAC.match(s):
        raise ValueProblem(f"invalid MAC address {v!r}", hint="write six hex pairs, e.g. 02:42:0a:00:00:02")
    return s.replace("-", ":").lower()


def parse_ifname(v: Any) -> str:
    """An interface name the kernel accepts (dev_valid_name): 1-15 bytes, no '/', ':' or white
    space, not "." or ".."."""
    s = as_str(v)
    if (not s or len(s.encode()) > 15 or "/" in s or ":" in s or any(c.isspace() for c in s)
            or s in (".", "..")):
        raise ValueProblem(f"invalid interface name {s!r}", hint="1 to 15 bytes, without '/', ':' or spaces",
                           rule="CS-SNET-06")
    return s


_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(?::[0-9]+)?)$")


def parse_restart(v: Any) -> str:
    """A restart policy: ``no`` (also YAML's false), ``always``, ``on-failure[:N]``,
    ``unless-stopped`` (composenet.supervisor.policy reads the same forms)."""
    s = "no" if v is False else as_str(v).strip()
    if not _RESTART.match(s):
        raise ValueProblem(f"invalid restart policy {s!r}", hint='use "no", always, on-failure, on-failure:N or '
                           "unless-stopped", rule="CS-RESTART-01")
    return s


def parse_capabilities(v: Any) -> tuple[str, ...]:
    """``cap_add``/``cap_drop``: capability names as Docker takes them (``NET_ADMIN``,
    ``CAP_NET_ADMIN``, any case, or ``ALL``), canonical (``NET_ADMIN``), sorted."""
    out = []
    for item in string_list(v):
        name = capnames.canonical(item)
        if name is None:
            raise ValueProblem(f"unknown capability {item!r}", hint="a Linux capability such as NET_ADMIN or "
                               "CAP_NET_RAW (capabilities(7)), or ALL")
        out.append(name)
    return tuple(sorted(set(out)))
