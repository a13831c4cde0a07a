"""Published ports (``services.*.ports``) and exposed ports (``expose``): the short syntax
``[[IP:](HOST|RANGE):](PORT|RANGE)[/PROTO]`` and the long one, into ``model.Port``. Pure.

Owns: port numbers and ranges, protocols, host addresses of ports, the long-form document of a
port (`composenet config`), and the identity two ports entries merge on (CS-MERGE-05), which
merge.py and modelbuild.py both use. Must not: choose host ports (core/desired/ports.py does) or
check clashes between services (validate.py does).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from composenet.compose.values import ValueProblem, as_str, canonical_ip
from composenet.core.model import Port, Pos

PROTOCOLS = ("tcp", "udp", "sctp")
ALLOW_KEY = "x-composenet-allow"  # on a port's long syntax, or on a service (all its ports)
# Why a port cannot be published on [::1] (composenet has no userland proxy; see core/ruleset.py).
IPV6_LOOPBACK_REASON = (
    "a port cannot be published on [::1]: the kernel drops a packet to or from ::1 on any interface "
    "but lo (RFC 4291), so a container's answer to the host's [::1] never arrives and the port "
    "would be dead")
IPV6_LOOPBACK_HINT = ("publish it on 127.0.0.1 for the host alone (IPv4 loopback works), or on an address "
                      "the host owns")


def _host_address(text: str, what: str) -> str:
    """A port's host address, canonical; [::1] refused (IPV6_LOOPBACK_REASON)."""
    ip = canonical_ip(text, what=what)
    if ip == "::1":
        raise ValueProblem(IPV6_LOOPBACK_REASON, hint=IPV6_LOOPBACK_HINT)
    return ip


def _port_range(text: str, what: str) -> tuple[int, int]:
    t = text.strip()
    m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", t)
    if not m:
        raise ValueProblem(f"invalid {what} {text!r}", rule="CS-PORT-01")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    for n in (lo, hi):
        if not 1 <= n <= 65535:
            raise ValueProblem(f"{what} {n} is out of range (1-65535)", rule="CS-PORT-01")
    if hi < lo:
        raise ValueProblem(f"invalid {what} range {text!r}: end before start", rule="CS-PORT-01")
    return lo, hi


def _protocol(p: Any) -> str:
    proto = str(p).strip().lower()
    if proto == "upd":  # CS-OPEN-01 is a typo in the spec, not a protocol: still refuse it clearly
        raise ValueProblem("unknown protocol 'upd'", hint="did you mean udp?", rule="CS-PORT-03")
    if proto not in PROTOCOLS:
        raise ValueProblem(f"unknown protocol {p!r}", hint="use tcp, udp or sctp", rule="CS-PORT-03")
    return proto


PORT_FORMAT = ("write [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO], e.g. 8080:80, 127.0.0.1:8080:80/tcp, "
               "53:53/udp, 9000-9002:9000-9002")


def parse_port_short(spec: Any, pos: Pos | None = None) -> list[Port]:
    """``[[IP:](HOST|RANGE):](PORT|RANGE)[/PROTO]`` -> one Port per container port (CS-PORT-01..08)."""
    if isinstance(spec, bool) or not isinstance(spec, (str, int, float)):
        raise ValueProblem(f"invalid port {spec!r}")
    s = as_str(spec).strip()
    if not s:
        raise ValueProblem("empty port", rule="CS-PORT-01")
    proto = "tcp"
    if "/" in s:
        s, p = s.rsplit("/", 1)
        proto = _protocol(p)
    parts = s.split(":")
    n = len(parts)
    if n == 1:
        ip, host, cont = "", "", parts[0]
    elif n == 2:
        ip, host, cont = "", parts[0], parts[1]
    elif n == 3:
        ip, host, cont = parts
    else:  # IPv6 host IP, bracketed or not (CS-PORT-07): split on the last two colons
        ip, host, cont = ":".join(parts[:-2]), parts[-2], parts[-1]
    if ip.strip() and re.fullmatch(r"[0-9]+(-[0-9]+)?", ip.strip()):  # 8080:80:90: three ports, no address
        raise ValueProblem(f"invalid port {as_str(spec)!r}: {ip.strip()!r} stands where the host address goes",
                           hint=PORT_FORMAT, rule="CS-PORT-01")
    host_ip = _host_address(ip, "host address") if ip.strip() else None
    c_lo, c_hi = _port_range(cont, "container port")
    if not host.strip():
        return [Port(t, None, host_ip, proto, pos=pos) for t in range(c_lo, c_hi + 1)]
    h_lo, h_hi = _port_range(host, "host port")
    if c_lo == c_hi:
        pub = f"{h_lo}-{h_hi}" if h_hi != h_lo else str(h_lo)  # CS-PORT-05: one port of the range
        return [Port(c_lo, pub, host_ip, proto, pos=pos)]
    if h_hi - h_lo != c_hi - c_lo:
        raise ValueProblem(f"host range {host} and container range {cont} have different lengths",
                           hint="write ranges of equal length, e.g. 8000-8001:9000-9001", rule="CS-PORT-05")
    return [Port(c_lo + i, str(h_lo + i), host_ip, proto, pos=pos) for i in range(c_hi - c_lo + 1)]


def parse_port_long(d: dict[str, Any], pos: Pos | None = None) -> list[Port]:
    if "target" not in d or d["target"] in (None, ""):
        raise ValueProblem("target (the container port) is required", rule="CS-PORT-10")
    t_lo, t_hi = _port_range(as_str(d["target"]), "target port")
    if t_lo != t_hi:
        raise ValueProblem(f"target must be a single port, not {d['target']!r}", rule="CS-PORT-10")
    pub = d.get("published")
    published = None
    if pub not in (None, ""):
        lo, hi = _port_range(as_str(pub), "published port")
        published = f"{lo}-{hi}" if hi != lo else str(lo)
    hip = d.get("host_ip")
    host_ip = _host_address(str(hip), "host_ip") if hip not in (None, "") else None
    proto = _protocol(d.get("protocol") or "tcp")
    mode = str(d.get("mode") or "ingress")
    if mode not in ("host", "ingress"):
        raise ValueProblem(f"unknown mode {mode!r}", hint="use host or ingress", rule="CS-PORT-10")
    app = d.get("app_protocol")
    name = d.get("name")
    return [Port(t_lo, published, host_ip, proto, mode, str(app) if app is not None else None,
                 str(name) if name is not None else None, pos=pos)]


def parse_port(item: Any, pos: Pos | None = None) -> list[Port]:
    if isinstance(item, dict):
        return parse_port_long(item, pos)
    return parse_port_short(item, pos)


def parse_allow(value: Any) -> tuple[str, ...]:
    """A source allowlist (``x-composenet-allow``, ``com.composenet.publish.allow``): a list of
    CIDRs or addresses, or one comma-separated string; canonical CIDRs, in the file's order."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueProblem(f"expected a list of CIDRs, not {value!r}", hint="e.g. [192.0.2.0/24, 2001:db8::/32]")
    out: list[str] = []
    for item in items:
        text = as_str(item).strip()
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError:
            try:
                fixed = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueProblem(f"{text!r} is not a CIDR or an IP address",
                                   hint="e.g. 192.0.2.0/24, 198.51.100.7 or 2001:db8::/32") from None
            raise ValueProblem(f"{text!r}: host bits are set", hint=f"did you mean {fixed}?") from None
        if str(net) not in out:
            out.append(str(net))
    if not out:
        raise ValueProblem("an empty allowlist would refuse every source",
                           hint="list the sources that may connect, or publish on host_ip 127.0.0.1 for the host alone")
    return tuple(out)


def port_identity(item: Any) -> Any:
    """Merge key of a ports entry (CS-MERGE-05: ip, target, published, protocol)."""
    try:
        return tuple((p.host_ip, p.target, p.published, p.protocol) for p in parse_port(item))
    except Exception:
        return ("raw", repr(item))


def port_doc(p: Port) -> dict[str, Any]:
    d: dict[str, Any] = {"target": p.target}
    if p.published is not None:
        d["published"] = p.published
    if p.host_ip is not None:
        d["host_ip"] = p.host_ip
    d["protocol"] = p.protocol
    d["mode"] = p.mode
    if p.app_protocol is not None:
        d["app_protocol"] = p.app_protocol
    if p.name is not None:
        d["name"] = p.name
    if p.allow is not None:
        d[ALLOW_KEY] = list(p.allow)
    return d


def check_expose(entry: str) -> None:
    """An ``expose`` entry: ``PORT[/PROTO]`` or ``START-END[/PROTO]`` (CS-EXP-01)."""
    m = re.fullmatch(r"([0-9]+(?:-[0-9]+)?)(?:/([A-Za-z]+))?", entry)
    if not m:
        raise ValueProblem(f"invalid expose entry {entry!r}", hint="write PORT[/PROTO] or START-END[/PROTO]",
                           rule="CS-EXP-01")
    _port_range(m.group(1), "exposed port")
    if m.group(2):
        _protocol(m.group(2))
