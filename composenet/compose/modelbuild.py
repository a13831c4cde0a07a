"""Merged, schema-valid compose document -> ``model.Project`` parts and the normalised document.

Owns: building each top-level network and each service of the model from its document (every
value through the parsers of values.py and ports.py), collecting every problem located by its
key path (``Ctx``) rather than raising on the first, and writing the long-form document that
`composenet config` prints. A service is built aspect by aspect (``_ServiceBuilder``: networks,
ports, links, DNS, replicas, environment, ...), in the order its problems are reported.
Must not: check cross-references (that is validate.py), touch the kernel, or read files other
than ``env_file`` entries.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from composenet.compose.interpolate import parse_dotenv
from composenet.compose.merge import networks_map
from composenet.compose.ports import ALLOW_KEY, check_expose, parse_allow, parse_port, port_doc
from composenet.compose.values import (
    ValueProblem,
    as_bool,
    as_int,
    as_str,
    canonical_ip,
    canonical_net,
    dedupe,
    env_pairs,
    parse_capabilities,
    parse_command,
    parse_duration,
    parse_extra_hosts,
    parse_ifname,
    parse_link,
    parse_mac,
    parse_restart,
    string_list,
)
from composenet.compose.ytree import Path, YList, YMap, fmt_path, locate, plain, problem_at
from composenet.core.model import Attachment, IpamConfig, Network, Port, Pos, Service
from composenet.errors import Problem

DRIVERS = ("bridge", "host", "none", "macvlan", "ipvlan", "overlay")


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


class _Fields:
    """The values of one mapping of the document (``body`` at ``path``) read through parsers: a
    value a parser refuses becomes a located problem, and ``ok`` turns False."""

    def __init__(self, ctx: Ctx, path: Path, body: dict[str, Any]):
        self.ctx = ctx
        self.path = path
        self.body = body
        self.ok = True

    def get(self, name: str, parse: Callable[[Any], Any], default: Any = None) -> Any:
        """``parse(body[name])``; ``default`` when the key is absent or null, or its value is refused."""
        if name not in self.body or self.body[name] is None:
            return default
        try:
            return parse(self.body[name])
        except ValueProblem as e:
            self.ctx.err(self.path + (name,), e.message, e.hint, e.rule)
            self.ok = False
            return default


# ---- networks ---------------------------------------------------------------------------------------

def build_network(ctx: Ctx, key: str, body: Any, project: str) -> tuple[Network | None, dict[str, Any]]:
    """One top-level network: (its model, None when a value was refused; its long-form document)."""
    f = _Fields(ctx, ("networks", key), body if isinstance(body, dict) else {})
    external, name = _external(f)
    net_name = str(name) if name is not None else (key if external else f"{project}_{key}")
    driver = f.get("driver", as_str, "bridge")
    if driver not in DRIVERS:
        ctx.err(f.path + ("driver",), f"driver {driver!r} is not available",
                hint="composenet provides bridge, host, none, macvlan, ipvlan and overlay", rule="CS-NET-08")
        f.ok = False
    driver_opts = tuple(sorted((str(k), as_str(v)) for k, v in (f.body.get("driver_opts") or {}).items()))
    internal = f.get("internal", as_bool, False)
    attachable = f.get("attachable", as_bool, False)
    enable_ipv4 = f.get("enable_ipv4", as_bool, True)
    enable_ipv6 = f.get("enable_ipv6", as_bool, False)
    labels = tuple(sorted((k, "" if val is None else val) for k, val in env_pairs(f.body.get("labels"))))
    ipam_raw: dict[str, Any] = f.body["ipam"] if isinstance(f.body.get("ipam"), dict) else {}
    configs, cfg_docs = _ipam_configs(f, ipam_raw)
    ipam_options = tuple(sorted((k, as_str(v)) for k, v in (ipam_raw.get("options") or {}).items()))
    ipam_driver = as_str(ipam_raw["driver"]) if ipam_raw.get("driver") is not None else None
    net = Network(key=key, name=net_name, driver=driver, driver_opts=driver_opts, internal=internal,
                  attachable=attachable, enable_ipv4=enable_ipv4, enable_ipv6=enable_ipv6, external=external,
                  ipam_driver=ipam_driver, ipam=tuple(configs), ipam_options=ipam_options, labels=labels,
                  pos=ctx.pos(f.path), driver_pos=ctx.pos(f.path + ("driver",)) if "driver" in f.body else None)
    return (net if f.ok else None), _network_doc(net, f.body, ipam_raw, cfg_docs)


def _external(f: _Fields) -> tuple[bool, Any]:
    """(external?, the name the file gives or None): ``external: true``, or the deprecated
    ``external: {name: X}`` (CS-NET-15). An external network takes nothing but its name."""
    ext = f.body.get("external")
    external = False
    name = f.body.get("name")
    if isinstance(ext, dict):  # legacy external: {name: X} (CS-NET-15)
        external = True
        legacy = ext.get("name")
        f.ctx.warn(f.path + ("external",), "`external: {name: ...}` is deprecated; use `name:` with `external: true`",
                   rule="CS-NET-15")
        if legacy is not None:
            if name is not None and name != legacy:
                f.ctx.err(f.path + ("external", "name"), f"conflicts with name {name!r}", rule="CS-NET-15")
                f.ok = False
            name = legacy
    elif ext is not None:
        external = f.get("external", as_bool, False)
    if external:
        extra = [k for k in f.body if k not in ("name", "external") and not k.startswith("x-")]
        for k in extra:
            f.ctx.err(f.path + (k,), f"{k} is not allowed on an external network: only `name` is",
                      hint="composenet does not create external networks; remove the attribute", rule="CS-NET-13",
                      key=True)
            f.ok = False
    return external, name


_IPAM_FIELDS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("subnet", canonical_net),
    ("ip_range", lambda t: canonical_net(t, "ip_range")),
    ("gateway", lambda t: canonical_ip(as_str(t), what="gateway")),
)


def _ipam_configs(f: _Fields, ipam_raw: dict[str, Any]) -> tuple[list[IpamConfig], list[dict[str, Any]]]:
    """(the ``ipam.config`` blocks, their long-form documents), addresses canonical (CS-NET-17)."""
    configs: list[IpamConfig] = []
    cfg_docs = []
    for i, c in enumerate(ipam_raw.get("config") or []):
        cpath = f.path + ("ipam", "config", i)
        c = c if isinstance(c, dict) else {}
        vals: dict[str, Any] = {}
        for k, fn in _IPAM_FIELDS:
            if c.get(k) is not None:
                try:
                    vals[k] = fn(c[k])
                except ValueProblem as e:
                    f.ctx.err(cpath + (k,), e.message, e.hint, e.rule or "CS-NET-17")
                    f.ok = False
        aux = []
        for h, ip in (c.get("aux_addresses") or {}).items():
            try:
                aux.append((h, canonical_ip(as_str(ip), what="aux address")))
            except ValueProblem as e:
                f.ctx.err(cpath + ("aux_addresses", h), e.message, rule="CS-NET-17")
                f.ok = False
        configs.append(IpamConfig(vals.get("subnet"), vals.get("ip_range"), vals.get("gateway"), tuple(sorted(aux)),
                                  pos=f.ctx.pos(cpath + ("subnet",)) if "subnet" in c else f.ctx.pos(cpath)))
        cd = dict(vals)
        if aux:
            cd["aux_addresses"] = dict(sorted(aux))
        cfg_docs.append(cd)
    return configs, cfg_docs


def _network_doc(net: Network, body: dict[str, Any], ipam_raw: dict[str, Any],
                 cfg_docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The network as `composenet config` prints it: what the file says, defaults that differ."""
    doc: dict[str, Any] = {"name": net.name}
    if net.external:
        doc["external"] = True
        return doc
    if "driver" in body:
        doc["driver"] = net.driver
    if net.driver_opts:
        doc["driver_opts"] = dict(net.driver_opts)
    for k, v, dflt in (("internal", net.internal, False), ("attachable", net.attachable, False),
                       ("enable_ipv4", net.enable_ipv4, True), ("enable_ipv6", net.enable_ipv6, False)):
        if k in body and body[k] is not None:
            doc[k] = v
        elif v != dflt:
            doc[k] = v
    if ipam_raw:
        idoc: dict[str, Any] = {}
        if net.ipam_driver is not None:
            idoc["driver"] = net.ipam_driver
        if cfg_docs:
            idoc["config"] = cfg_docs
        if net.ipam_options:
            idoc["options"] = dict(net.ipam_options)
        if idoc:  # `ipam: {config: []}` says nothing: printed, it must load back the same
            doc["ipam"] = idoc
    if net.labels:
        doc["labels"] = dict(net.labels)
    return doc


# ---- a service's networks ----------------------------------------------------------------------------

# The attributes of a service's attachment to a network, in the order they are read and printed.
_ATTACHMENT_FIELDS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("aliases", lambda v: dedupe(string_list(v))),
    ("ipv4_address", lambda v: canonical_ip(as_str(v), 4)),
    ("ipv6_address", lambda v: canonical_ip(as_str(v), 6)),
    ("link_local_ips", lambda v: dedupe([canonical_ip(x, what="link-local address") for x in string_list(v)])),
    ("mac_address", parse_mac),
    ("priority", lambda v: as_int(v, "priority")),
    ("gw_priority", lambda v: as_int(v, "gw_priority")),
    ("interface_name", parse_ifname),
    ("driver_opts", lambda v: tuple(sorted((str(k), as_str(x)) for k, x in v.items()))),
)
_UNSET = object()


def build_attachment(ctx: Ctx, path: Path, key: str, body: Any) -> tuple[Attachment | None, dict[str, Any] | None]:
    """A service's attachment to network ``key``: (its model, None when a value was refused; its
    long-form document, None when it has no attribute)."""
    f = _Fields(ctx, path, body if isinstance(body, dict) else {})
    vals: dict[str, Any] = {}
    for name, parse in _ATTACHMENT_FIELDS:
        v = f.get(name, parse, _UNSET)
        if v is not _UNSET:
            vals[name] = v
    att = Attachment(network=key, pos=ctx.pos(path), **vals)
    doc: dict[str, Any] = {}
    for k, _parse in _ATTACHMENT_FIELDS:
        if k in vals:
            v = vals[k]
            doc[k] = list(v) if k in ("aliases", "link_local_ips") else dict(v) if k == "driver_opts" else v
    return (att if f.ok else None), (doc or None)


# ---- services ---------------------------------------------------------------------------------------

def build_service(ctx: Ctx, name: str, body: dict[str, Any], net_keys: set[str],
                  internal_nets: set[str]) -> tuple[Service, dict[str, Any]]:
    """One service and its long-form document. Cross-service checks are left to validate.py."""
    s = _ServiceBuilder(ctx, ("services", name), body)
    mode = s.network_mode()
    s.networks(mode)
    s.ports()
    s.expose()
    s.links()
    s.dns()
    s.extra_hosts()
    s.names()
    s.replicas()
    s.commands()
    s.environment()
    s.stop_grace_period()
    s.privileges()
    s.depends_on(mode)
    _ = internal_nets, net_keys
    # Returned even when a value was invalid (its problem is recorded), so that the cross-checks
    # still run and one load reports every problem.
    return Service(name=name, pos=ctx.pos(s.path), **s.kw), s.doc


class _ServiceBuilder(_Fields):
    """One service's model arguments (``kw``) and its long-form document (``doc``: the file's
    keys, in the file's order, each aspect rewriting its own in long form), aspect by aspect."""

    def __init__(self, ctx: Ctx, path: Path, body: dict[str, Any]):
        super().__init__(ctx, path, body)
        self.kw: dict[str, Any] = {}
        self.doc: dict[str, Any] = {k: plain(v) for k, v in body.items() if k not in ("extends", "env_file")}

    def network_mode(self) -> str | None:
        """none, host, service:NAME or container:NAME; Docker's ``bridge`` and ``default`` are the
        project's default network here (None, with a warning)."""
        mode = self.get("network_mode", as_str)
        if mode is not None:
            if mode in ("bridge", "default"):
                self.ctx.warn(self.path + ("network_mode",), f"network_mode {mode} (Docker's default bridge) is the "
                              "project's default network here", rule="CS-NM-05")
                mode = None
                self.doc.pop("network_mode", None)
            elif mode in ("none", "host") or re.fullmatch(r"(service|container):.+", mode):
                pass
            else:
                self.ctx.err(self.path + ("network_mode",), f"unknown network_mode {mode!r}",
                             hint="use none, host, service:NAME or container:NAME", rule="CS-NM-05")
                self.ok = False
        self.kw["network_mode"] = mode
        return mode

    def networks(self, mode: str | None) -> None:
        """Attachments (without a network_mode; none given: the default network), in interface
        order: file order, stably sorted by priority, highest first (CS-SNET-12)."""
        raw_nets = self.body.get("networks")
        atts: list[Attachment] = []
        net_docs: dict[str, Any] = {}
        if mode is None:
            nets = networks_map(raw_nets) if raw_nets else {"default": None}
            if isinstance(nets, list):  # duplicates in list form: the schema said so already
                nets = {n: None for n in nets if isinstance(n, str)}
            for key, att_body in nets.items():
                a, adoc = build_attachment(self.ctx, self.path + ("networks", key), key, att_body)
                if a is None:
                    self.ok = False
                    continue
                atts.append(a)
                net_docs[key] = adoc
            atts.sort(key=lambda a: -a.priority)
            self.doc["networks"] = {a.network: net_docs[a.network] for a in atts}
        self.kw["networks"] = tuple(atts)

    def ports(self) -> None:
        ports: list[Port] = []
        for i, item in enumerate(self.body.get("ports") or []):
            ppath = self.path + ("ports", i)
            try:
                parsed = parse_port(item, self.ctx.pos(ppath))
            except ValueProblem as e:
                self.ctx.err(ppath, e.message, e.hint, e.rule)
                self.ok = False
                continue
            if isinstance(item, dict) and item.get(ALLOW_KEY) is not None:
                try:
                    allow = parse_allow(item[ALLOW_KEY])
                except ValueProblem as e:
                    self.ctx.err(ppath + (ALLOW_KEY,), e.message, e.hint, e.rule)
                    self.ok = False
                else:
                    parsed = [replace(p, allow=allow) for p in parsed]
            ports.extend(parsed)
        self.kw["ports"] = dedupe(ports)
        self.kw["publish_allow"] = self.get(ALLOW_KEY, parse_allow)
        if "ports" in self.body:
            self.doc["ports"] = [port_doc(p) for p in self.kw["ports"]]

    def expose(self) -> None:
        """Exposed ports are kept as written (composenet publishes nothing for them)."""
        expose = []
        for i, item in enumerate(self.body.get("expose") or []):
            s = as_str(item)
            try:
                check_expose(s)
            except ValueProblem as err:
                self.ctx.err(self.path + ("expose", i), err.message, err.hint, err.rule or "CS-EXP-01")
                self.ok = False
            expose.append(s)
        self.kw["expose"] = dedupe(expose)
        if "expose" in self.body:
            self.doc["expose"] = list(self.kw["expose"])

    def links(self) -> None:
        """links and external_links: (service, alias) pairs."""
        for key in ("links", "external_links"):
            pairs = []
            for i, item in enumerate(self.body.get(key) or []):
                try:
                    pairs.append(parse_link(as_str(item)))
                except ValueProblem as err:
                    self.ctx.err(self.path + (key, i), err.message, err.hint, err.rule)
                    self.ok = False
            self.kw[key] = dedupe(pairs)
            if key in self.body:
                self.doc[key] = [s if s == a else f"{s}:{a}" for s, a in self.kw[key]]

    def dns(self) -> None:
        """dns (server addresses), dns_search and dns_opt."""
        dns = []
        for i, d in enumerate(string_list(self.body.get("dns"))):
            try:
                dns.append(canonical_ip(d, what="DNS server"))
            except ValueProblem as err:
                where = self.path + ("dns", i) if isinstance(self.body.get("dns"), list) else self.path + ("dns",)
                self.ctx.err(where, err.message, rule="CS-DNS-01")
                self.ok = False
        self.kw["dns"] = dedupe(dns)
        self.kw["dns_search"] = dedupe(string_list(self.body.get("dns_search")))
        self.kw["dns_opt"] = dedupe(string_list(self.body.get("dns_opt")))
        for key in ("dns", "dns_search", "dns_opt"):
            if key in self.body:
                self.doc[key] = list(self.kw[key])

    def extra_hosts(self) -> None:
        hosts = self.get("extra_hosts", parse_extra_hosts)
        self.kw["extra_hosts"] = tuple(hosts or ())
        if "extra_hosts" in self.body:
            self.doc["extra_hosts"] = [f"{h}={ip}" for h, ip in self.kw["extra_hosts"]]

    def names(self) -> None:
        """hostname, domainname, container_name, working_dir, user and mac_address."""
        for key in ("hostname", "domainname", "container_name", "working_dir", "user"):
            self.kw[key] = self.get(key, as_str)
        self.kw["mac_address"] = self.get("mac_address", parse_mac)

    def replicas(self) -> None:
        """``scale`` or ``deploy.replicas`` (both: they must agree), default 1 (CS-REP-01)."""
        scale = self.get("scale", lambda v: as_int(v, "scale"))
        deploy: dict[str, Any] = self.body["deploy"] if isinstance(self.body.get("deploy"), dict) else {}
        rep = None
        if deploy.get("replicas") is not None:
            try:
                rep = as_int(deploy["replicas"], "deploy.replicas")
            except ValueProblem as e:
                self.ctx.err(self.path + ("deploy", "replicas"), e.message)
                self.ok = False
        for v, p in ((scale, self.path + ("scale",)), (rep, self.path + ("deploy", "replicas"))):
            if v is not None and v < 0:
                self.ctx.err(p, f"must not be negative ({v})", rule="CS-REP-01")
                self.ok = False
        if scale is not None and rep is not None and scale != rep:
            self.ctx.err(self.path + ("scale",), f"scale {scale} and deploy.replicas {rep} disagree",
                         hint="set one of them, or the same value in both", rule="CS-REP-01")
            self.ok = False
        self.kw["replicas"] = rep if rep is not None else scale if scale is not None else 1

    def commands(self) -> None:
        self.kw["command"] = self.get("command", parse_command)
        self.kw["entrypoint"] = self.get("entrypoint", parse_command)
        for key in ("command", "entrypoint"):
            if key in self.body:
                self.doc[key] = list(self.kw[key]) if self.kw[key] is not None else None

    def environment(self) -> None:
        """env_file entries, then ``environment`` over them; a name without a value takes the
        project environment's (unset there: the variable is dropped)."""
        env: dict[str, str] = {}
        if self.body.get("env_file") is not None:
            for k, v in _env_from_files(self.ctx, self.path + ("env_file",), self.body["env_file"]):
                env[k] = v
        for k, val in env_pairs(self.body.get("environment")):
            if val is None:
                val = self.ctx.env.get(k)
                if val is None:
                    env.pop(k, None)
                    continue
            env[k] = val
        self.kw["environment"] = tuple(env.items())
        if env or "environment" in self.body or "env_file" in self.body:
            self.doc["environment"] = dict(env)

    def stop_grace_period(self) -> None:
        sgp = self.get("stop_grace_period", parse_duration)
        self.kw["stop_grace_period"] = sgp if sgp is not None else 10.0

    def privileges(self) -> None:
        """restart, cap_add, cap_drop and privileged: how the supervisor runs the command."""
        self.kw["restart"] = self.get("restart", parse_restart, "no")
        for key in ("cap_add", "cap_drop"):
            self.kw[key] = self.get(key, parse_capabilities, ())
        self.kw["privileged"] = self.get("privileged", as_bool, False)
        for key in ("restart", "cap_add", "cap_drop", "privileged"):
            if key in self.body:
                v = self.kw[key]
                self.doc[key] = list(v) if isinstance(v, tuple) else v

    def depends_on(self, mode: str | None) -> None:
        """The services this one starts after: depends_on, then the implicit ones (links, and the
        owner of a ``service:X`` namespace)."""
        deps: dict[str, dict[str, Any]] = {}
        raw_deps = self.body.get("depends_on")
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
        if "depends_on" in self.body:
            self.doc["depends_on"] = deps
        implicit = [s for s, _ in self.kw["links"]]
        if mode and mode.startswith("service:"):
            implicit.append(mode.split(":", 1)[1])
        self.kw["depends_on"] = dedupe(list(deps) + implicit)


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
