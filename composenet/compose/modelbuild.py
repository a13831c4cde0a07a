"""Merged, schema-valid compose document -> ``model.Project`` parts and the normalised document.

Owns: parsing every networking and process value (ports short and long syntax, service networks
list and map forms, extra_hosts, links, environment + env_file, durations, replicas) into the
frozen model, and writing the long-form document that `composenet config` prints. Problems are
collected, never raised one by one. Must not: check cross-references (that is validate.py), touch
the kernel, or read files other than ``env_file`` entries.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from composenet.compose.interpolate import parse_dotenv
from composenet.compose.merge import networks_map
from composenet.compose.ytree import Path, YList, YMap, fmt_path, locate, plain, problem_at
from composenet.core.model import Attachment, IpamConfig, Network, Port, Pos, Service
from composenet.errors import Problem

PROTOCOLS = ("tcp", "udp", "sctp")
DRIVERS = ("bridge", "host", "none", "macvlan", "overlay")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$")


class ValueProblem(Exception):
    def __init__(self, message: str, hint: str | None = None, rule: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.rule = rule


@dataclass
class Ctx:
    """Where problems and warnings of one load go; locates paths in the merged document."""

    doc: Any
    env: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def err(self, path: Path, message: str, hint: str | None = None, rule: str | None = None,
            key: bool = False) -> None:
        self.problems.append(problem_at(self.doc, path, message, hint=hint, rule=rule, key=key))

    def warn(self, path: Path, message: str, rule: str | None = None, key: bool = False) -> None:
        loc = locate(self.doc, path, key=key)
        where = f"{loc}: " if loc else ""
        self.warnings.append(f"{where}{fmt_path(path)}: {message}" + (f" [{rule}]" if rule else ""))

    def pos(self, path: Path) -> Pos | None:
        loc = locate(self.doc, path)
        return Pos(loc.file, loc.line, loc.col, fmt_path(path)) if loc else None


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


# ---- ports ------------------------------------------------------------------------------------------

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
    host_ip = canonical_ip(ip, what="host address") if ip.strip() else None
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
    host_ip = canonical_ip(str(hip), what="host_ip") if hip not in (None, "") else None
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
    return d


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


# ---- networks ---------------------------------------------------------------------------------------

_NET_ATTRS = ("driver", "driver_opts", "ipam", "internal", "attachable", "enable_ipv4", "enable_ipv6", "labels")


def _labels(v: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, "" if val is None else val) for k, val in env_pairs(v)))


def build_network(ctx: Ctx, key: str, body: Any, project: str) -> tuple[Network | None, dict[str, Any]]:
    path: Path = ("networks", key)
    body = body if isinstance(body, dict) else {}
    doc: dict[str, Any] = {}
    ok = True

    def field_(name: str, fn: Any, default: Any) -> Any:
        nonlocal ok
        if name not in body or body[name] is None:
            return default
        try:
            return fn(body[name])
        except ValueProblem as e:
            ctx.err(path + (name,), e.message, e.hint, e.rule)
            ok = False
            return default

    ext = body.get("external")
    external = False
    name = body.get("name")
    if isinstance(ext, dict):  # legacy external: {name: X} (CS-NET-15)
        external = True
        legacy = ext.get("name")
        ctx.warn(path + ("external",), "`external: {name: ...}` is deprecated; use `name:` with `external: true`",
                 rule="CS-NET-15")
        if legacy is not None:
            if name is not None and name != legacy:
                ctx.err(path + ("external", "name"), f"conflicts with name {name!r}", rule="CS-NET-15")
                ok = False
            name = legacy
    elif ext is not None:
        external = field_("external", as_bool, False)
    if external:
        extra = [k for k in body if k not in ("name", "external") and not k.startswith("x-")]
        for k in extra:
            ctx.err(path + (k,), f"{k} is not allowed on an external network: only `name` is",
                    hint="composenet does not create external networks; remove the attribute", rule="CS-NET-13",
                    key=True)
            ok = False
    net_name = str(name) if name is not None else (key if external else f"{project}_{key}")
    driver = field_("driver", as_str, "bridge")
    if driver not in DRIVERS:
        ctx.err(path + ("driver",), f"driver {driver!r} is not available",
                hint="composenet provides bridge, host, none, macvlan and overlay", rule="CS-NET-08")
        ok = False
    driver_opts = tuple(sorted((str(k), as_str(v)) for k, v in (body.get("driver_opts") or {}).items()))
    internal = field_("internal", as_bool, False)
    attachable = field_("attachable", as_bool, False)
    enable_ipv4 = field_("enable_ipv4", as_bool, True)
    enable_ipv6 = field_("enable_ipv6", as_bool, False)
    labels = _labels(body.get("labels"))
    ipam_raw = body.get("ipam") if isinstance(body.get("ipam"), dict) else {}
    configs: list[IpamConfig] = []
    cfg_docs = []
    for i, c in enumerate(ipam_raw.get("config") or []):
        cpath = path + ("ipam", "config", i)
        c = c if isinstance(c, dict) else {}
        vals: dict[str, Any] = {}
        for k, fn in (("subnet", canonical_net), ("ip_range", lambda t: canonical_net(t, "ip_range")),
                      ("gateway", lambda t: canonical_ip(as_str(t), what="gateway"))):
            if c.get(k) is not None:
                try:
                    vals[k] = fn(c[k])
                except ValueProblem as e:
                    ctx.err(cpath + (k,), e.message, e.hint, e.rule or "CS-NET-17")
                    ok = False
        aux = []
        for h, ip in (c.get("aux_addresses") or {}).items():
            try:
                aux.append((h, canonical_ip(as_str(ip), what="aux address")))
            except ValueProblem as e:
                ctx.err(cpath + ("aux_addresses", h), e.message, rule="CS-NET-17")
                ok = False
        configs.append(IpamConfig(vals.get("subnet"), vals.get("ip_range"), vals.get("gateway"), tuple(sorted(aux))))
        cd = dict(vals)
        if aux:
            cd["aux_addresses"] = dict(sorted(aux))
        cfg_docs.append(cd)
    ipam_options = tuple(sorted((k, as_str(v)) for k, v in (ipam_raw.get("options") or {}).items()))
    ipam_driver = as_str(ipam_raw["driver"]) if ipam_raw.get("driver") is not None else None
    net = Network(key=key, name=net_name, driver=driver, driver_opts=driver_opts, internal=internal,
                  attachable=attachable, enable_ipv4=enable_ipv4, enable_ipv6=enable_ipv6, external=external,
                  ipam_driver=ipam_driver, ipam=tuple(configs), ipam_options=ipam_options, labels=labels,
                  pos=ctx.pos(path))
    doc["name"] = net_name
    if external:
        doc["external"] = True
        return (net if ok else None), doc
    if "driver" in body:
        doc["driver"] = driver
    if driver_opts:
        doc["driver_opts"] = dict(driver_opts)
    for k, v, dflt in (("internal", internal, False), ("attachable", attachable, False),
                       ("enable_ipv4", enable_ipv4, True), ("enable_ipv6", enable_ipv6, False)):
        if k in body and body[k] is not None:
            doc[k] = v
        elif v != dflt:
            doc[k] = v
    if ipam_raw:
        idoc: dict[str, Any] = {}
        if ipam_driver is not None:
            idoc["driver"] = ipam_driver
        if cfg_docs:
            idoc["config"] = cfg_docs
        if ipam_options:
            idoc["options"] = dict(ipam_options)
        doc["ipam"] = idoc
    if labels:
        doc["labels"] = dict(labels)
    return (net if ok else None), doc


# ---- services ---------------------------------------------------------------------------------------

_ATT_KEYS = ("aliases", "ipv4_address", "ipv6_address", "link_local_ips", "mac_address", "priority",
             "gw_priority", "interface_name", "driver_opts")


def build_attachment(ctx: Ctx, path: Path, key: str, body: Any) -> tuple[Attachment | None, dict[str, Any] | None]:
    body = body if isinstance(body, dict) else {}
    ok = True
    vals: dict[str, Any] = {}

    def get(name: str, fn: Any) -> None:
        nonlocal ok
        if body.get(name) is None:
            return
        try:
            vals[name] = fn(body[name])
        except ValueProblem as e:
            ctx.err(path + (name,), e.message, e.hint, e.rule)
            ok = False

    get("aliases", lambda v: dedupe(string_list(v)))
    get("ipv4_address", lambda v: canonical_ip(as_str(v), 4))
    get("ipv6_address", lambda v: canonical_ip(as_str(v), 6))
    get("link_local_ips", lambda v: dedupe([canonical_ip(x, what="link-local address") for x in string_list(v)]))
    get("mac_address", parse_mac)
    get("priority", lambda v: as_int(v, "priority"))
    get("gw_priority", lambda v: as_int(v, "gw_priority"))
    get("interface_name", _ifname)
    get("driver_opts", lambda v: tuple(sorted((str(k), as_str(x)) for k, x in v.items())))
    att = Attachment(network=key, pos=ctx.pos(path), **vals)
    doc: dict[str, Any] = {}
    for k in _ATT_KEYS:
        if k in vals:
            v = vals[k]
            doc[k] = list(v) if k in ("aliases", "link_local_ips") else dict(v) if k == "driver_opts" else v
    return (att if ok else None), (doc or None)


def _ifname(v: Any) -> str:
    s = as_str(v)
    if not s or len(s) > 15 or "/" in s or any(c.isspace() for c in s) or s in (".", ".."):
        raise ValueProblem(f"invalid interface name {s!r}", hint="at most 15 characters, no '/' or spaces",
                           rule="CS-SNET-06")
    return s


def _env_from_files(ctx: Ctx, path: Path, v: Any) -> list[tuple[str, str]]:
    entries = v if isinstance(v, list) else [v]
    out: list[tuple[str, str]] = []
    for i, e in enumerate(entries):
        epath = path + (i,) if isinstance(v, list) else path
        required = True
        if isinstance(e, dict):
            fname = e.get("path")
            try:
                required = as_bool(e.get("required", True))
            except ValueProblem as err:
                ctx.err(epath + ("required",), err.message)
        else:
            fname = e
        if not isinstance(fname, str) or not fname:
            ctx.err(epath, "env_file entry without a path")
            continue
        try:
            with open(fname, encoding="utf-8") as f:
                text = f.read(4 * 1024 * 1024)
        except FileNotFoundError:
            if required:
                ctx.err(epath, f"env_file {fname} not found", hint="create it, or set `required: false`")
            continue
        except (OSError, UnicodeDecodeError) as err:
            ctx.err(epath, f"cannot read env_file {fname}: {err}")
            continue
        try:
            out.extend(parse_dotenv(text, fname, ctx.env.get, bare=ctx.env.get))
        except ValueError as err:
            line, _, msg = str(err).partition(": ")
            ctx.problems.append(Problem(msg or str(err), file=fname, line=int(line) if line.isdigit() else None,
                                        rule="CS-INT-15"))
    return out


def build_service(ctx: Ctx, name: str, body: dict[str, Any], net_keys: set[str],
                  internal_nets: set[str]) -> tuple[Service, dict[str, Any]]:
    """One service. Cross-service checks are left to validate.py."""
    path: Path = ("services", name)
    ok = True
    kw: dict[str, Any] = {}

    def get(key: str, fn: Any) -> Any:
        nonlocal ok
        if key not in body or body[key] is None:
            return None
        try:
            return fn(body[key])
        except ValueProblem as e:
            ctx.err(path + (key,), e.message, e.hint, e.rule)
            ok = False
            return None

    doc: dict[str, Any] = {k: plain(v) for k, v in body.items() if k not in ("extends", "env_file")}

    # network_mode / networks
    mode = get("network_mode", as_str)
    if mode is not None:
        if mode in ("bridge", "default"):
            ctx.warn(path + ("network_mode",), f"network_mode {mode} (Docker's default bridge) is the project's "
                     "default network here", rule="CS-NM-05")
            mode = None
            doc.pop("network_mode", None)
        elif mode in ("none", "host") or re.fullmatch(r"(service|container):.+", mode):
            pass
        else:
            ctx.err(path + ("network_mode",), f"unknown network_mode {mode!r}",
                    hint="use none, host, service:NAME or container:NAME", rule="CS-NM-05")
            ok = False
    raw_nets = body.get("networks")
    atts: list[Attachment] = []
    net_docs: dict[str, Any] = {}
    if mode is None:
        nets = networks_map(raw_nets) if raw_nets else {"default": None}
        if isinstance(nets, list):  # duplicates in list form: the schema said so already
            nets = {n: None for n in nets if isinstance(n, str)}
        for key, att_body in nets.items():
            a, adoc = build_attachment(ctx, path + ("networks", key), key, att_body)
            if a is None:
                ok = False
                continue
            atts.append(a)
            net_docs[key] = adoc
        # Interface order: file order, stably sorted by priority, highest first (CS-SNET-12).
        atts.sort(key=lambda a: -a.priority)
        doc["networks"] = {a.network: net_docs[a.network] for a in atts}
    kw["networks"] = tuple(atts)
    kw["network_mode"] = mode

    # ports
    ports: list[Port] = []
    for i, item in enumerate(body.get("ports") or []):
        ppath = path + ("ports", i)
        try:
            ports.extend(parse_port(item, ctx.pos(ppath)))
        except ValueProblem as e:
            ctx.err(ppath, e.message, e.hint, e.rule)
            ok = False
    kw["ports"] = dedupe(ports)
    if "ports" in body:
        doc["ports"] = [port_doc(p) for p in kw["ports"]]
    expose = []
    for i, item in enumerate(body.get("expose") or []):
        s = as_str(item)
        m = re.fullmatch(r"([0-9]+(?:-[0-9]+)?)(?:/([A-Za-z]+))?", s)
        try:
            if not m:
                raise ValueProblem(f"invalid expose entry {s!r}", hint="write PORT[/PROTO] or START-END[/PROTO]",
                                   rule="CS-EXP-01")
            _port_range(m.group(1), "exposed port")
            if m.group(2):
                _protocol(m.group(2))
        except ValueProblem as err:
            ctx.err(path + ("expose", i), err.message, err.hint, err.rule or "CS-EXP-01")
            ok = False
        expose.append(s)
    kw["expose"] = dedupe(expose)
    if "expose" in body:
        doc["expose"] = list(kw["expose"])

    for key in ("links", "external_links"):
        pairs = []
        for i, item in enumerate(body.get(key) or []):
            try:
                pairs.append(parse_link(as_str(item)))
            except ValueProblem as err:
                ctx.err(path + (key, i), err.message, err.hint, err.rule)
                ok = False
        kw[key] = dedupe(pairs)
        if key in body:
            doc[key] = [s if s == a else f"{s}:{a}" for s, a in kw[key]]

    dns = []
    for i, d in enumerate(string_list(body.get("dns"))):
        try:
            dns.append(canonical_ip(d, what="DNS server"))
        except ValueProblem as err:
            ctx.err(path + ("dns", i) if isinstance(body.get("dns"), list) else path + ("dns",), err.message,
                    rule="CS-DNS-01")
            ok = False
    kw["dns"] = dedupe(dns)
    kw["dns_search"] = dedupe(string_list(body.get("dns_search")))
    kw["dns_opt"] = dedupe(string_list(body.get("dns_opt")))
    for key in ("dns", "dns_search", "dns_opt"):
        if key in body:
            doc[key] = list(kw[key])

    hosts = get("extra_hosts", parse_extra_hosts)
    kw["extra_hosts"] = tuple(hosts or ())
    if "extra_hosts" in body:
        doc["extra_hosts"] = [f"{h}={ip}" for h, ip in kw["extra_hosts"]]

    for key in ("hostname", "domainname", "container_name", "working_dir", "user"):
        v = get(key, as_str)
        kw[key] = v
    kw["mac_address"] = get("mac_address", parse_mac)

    # replicas (CS-REP-01)
    scale = get("scale", lambda v: as_int(v, "scale"))
    deploy: dict[str, Any] = body["deploy"] if isinstance(body.get("deploy"), dict) else {}
    rep = None
    if deploy.get("replicas") is not None:
        try:
            rep = as_int(deploy["replicas"], "deploy.replicas")
        except ValueProblem as e:
            ctx.err(path + ("deploy", "replicas"), e.message)
            ok = False
    for v, p in ((scale, path + ("scale",)), (rep, path + ("deploy", "replicas"))):
        if v is not None and v < 0:
            ctx.err(p, f"must not be negative ({v})", rule="CS-REP-01")
            ok = False
    if scale is not None and rep is not None and scale != rep:
        ctx.err(path + ("scale",), f"scale {scale} and deploy.replicas {rep} disagree",
                hint="set one of them, or the same value in both", rule="CS-REP-01")
        ok = False
    kw["replicas"] = rep if rep is not None else scale if scale is not None else 1

    kw["command"] = get("command", parse_command)
    kw["entrypoint"] = get("entrypoint", parse_command)
    for key in ("command", "entrypoint"):
        if key in body:
            doc[key] = list(kw[key]) if kw[key] is not None else None

    env: dict[str, str] = {}
    if body.get("env_file") is not None:
        for k, v in _env_from_files(ctx, path + ("env_file",), body["env_file"]):
            env[k] = v
    for k, v in env_pairs(body.get("environment")):
        if v is None:
            v = ctx.env.get(k)
            if v is None:
                env.pop(k, None)
                continue
        env[k] = v
    kw["environment"] = tuple(env.items())
    if env or "environment" in body or "env_file" in body:
        doc["environment"] = dict(env)

    sgp = get("stop_grace_period", parse_duration)
    kw["stop_grace_period"] = sgp if sgp is not None else 10.0

    deps: dict[str, dict[str, Any]] = {}
    raw_deps = body.get("depends_on")
    if isinstance(raw_deps, list):
        for d in raw_deps:
            deps[as_str(d)] = {"condition": "service_started", "required": True}
    elif isinstance(raw_deps, dict):
        for d, spec in raw_deps.items():
            spec = spec if isinstance(spec, dict) else {}
            entry = {"condition": spec.get("condition") or "service_started",
                     "required": spec.get("required", True) is not False}
            if "restart" in spec:
                entry["restart"] = spec["restart"]
            deps[d] = entry
    if "depends_on" in body:
        doc["depends_on"] = deps
    implicit = [s for s, _ in kw["links"]]
    if mode and mode.startswith("service:"):
        implicit.append(mode.split(":", 1)[1])
    kw["depends_on"] = dedupe(list(deps) + implicit)
    svc = Service(name=name, pos=ctx.pos(path), **kw)
    _ = internal_nets, net_keys, ok
    # Returned even when a value was invalid (its problem is recorded), so that the cross-checks
    # still run and one load reports every problem.
    return svc, doc


def required_deps(body: Any) -> dict[str, bool]:
    """depends_on targets -> required?"""
    raw = body.get("depends_on") if isinstance(body, dict) else None
    if isinstance(raw, list):
        return {as_str(d): True for d in raw}
    if isinstance(raw, dict):
        return {d: not (isinstance(s, dict) and s.get("required") is False) for d, s in raw.items()}
    return {}


def default_env_path(value: Any, base: str) -> Any:
    """env_file entries made absolute against ``base`` (the declaring file's project directory)."""
    def fix(p: Any) -> Any:
        return p if not isinstance(p, str) or os.path.isabs(p) else os.path.normpath(os.path.join(base, p))

    if isinstance(value, str):
        return fix(value)
    if isinstance(value, YList):
        for i, e in enumerate(value):
            if isinstance(e, YMap) and "path" in e:
                e["path"] = fix(e["path"])
            else:
                value[i] = fix(e)
    return value
