"""Load a Compose project: files -> one merged, validated document -> ``model.Project``.

Owns: which files are read (``-f``, ``COMPOSE_FILE``, default lookup and override files), the
project environment (OS environment, then ``.env`` or ``--env-file``), the project name, per-file
interpolation, ``include`` and ``extends``, merging, profiles, and the order of the stages. It
turns every failure, even an unexpected one, into an ``InputError`` with located Problems.
Must not: touch the kernel, write files, or print.

Entry point: ``load_project(LoadOptions, SchemaCache | None) -> Project``. The optional
``SchemaCache`` lets the caller skip the JSON-schema validation of documents that passed before
(storing it is the caller's business: this module only reads ``known`` and fills ``passed``).
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from composenet.compose import schema
from composenet.compose.interpolate import InterpolationError, interpolate_tree, parse_dotenv, substitute
from composenet.compose.load import (
    Path,
    YamlProblem,
    YList,
    YMap,
    clone,
    fmt_path,
    locate,
    plain,
    problem_at,
    read_file,
)
from composenet.compose.merge import merge_documents, merge_service, merge_values, strip_tags
from composenet.compose.modelbuild import Ctx, build_network, build_service, default_env_path, string_list
from composenet.compose.options import LoadOptions, name_problem
from composenet.compose.validate import check
from composenet.core.model import Network, Project, Service
from composenet.errors import InputError, Problem

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_FILES = ("compose.override.yml", "compose.override.yaml", "docker-compose.override.yml",
                  "docker-compose.override.yaml")
_V1_KEYS = {"image", "build", "net", "ports", "links", "command", "volumes", "environment", "container_name",
            "expose", "entrypoint", "dns", "extends"}
_IMPORTED = ("services", "networks", "volumes", "secrets", "configs")


def normalize_project_name(name: str) -> str:
    """Compose's normalisation (CS-NAME-04): lower case, only [a-z0-9_-], no leading '_' or '-'."""
    out = re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")
    if not out:
        raise InputError([Problem(f"cannot make a project name out of {name!r}", hint="pass -p NAME",
                                  rule="CS-NAME-03")])
    return out


LOCALHOST_ONLY_ENV = "COMPOSENET_PUBLISH_LOCALHOST_ONLY"  # 1: `up --publish-localhost-only` by default


@dataclass
class SchemaCache:
    """Schema verdicts remembered by the caller, keyed by ``schema.validation_key``.

    A document whose key is in ``known`` passed the schema before and is not validated again;
    every other document is. Because the key is a digest of the document the validator would
    see (after interpolation, include and extends), nothing else (file names, variables,
    profiles) needs to be part of it, and an invalid document can never match: only keys of
    documents that passed are ever stored. After a load that succeeded as a whole, ``passed``
    holds the key of every document it validated or skipped (the caller stores them); after a
    failed load it is left empty."""

    known: frozenset[str] = frozenset()
    passed: list[str] = field(default_factory=list)


class _Loader:
    def __init__(self, opts: LoadOptions, schema_cache: SchemaCache | None = None):
        self.opts = opts
        self.schema_cache = schema_cache
        self.passed: list[str] = []  # keys of the documents that passed (SchemaCache)
        self.environ: dict[str, str] = dict(os.environ if opts.environ is None else opts.environ)
        self.cwd = os.path.abspath(opts.cwd or os.getcwd())
        self.problems: list[Problem] = []
        # Schema problems whose part of the document was set aside (set_aside): the rest is still
        # checked, so one run reports them together with the semantic problems (issue 2).
        self.soft: list[Problem] = []
        self.bad_services: set[str] = set()
        self.bad_networks: set[str] = set()
        self.warnings: list[str] = []
        self.unset: dict[str, str] = {}
        self.current: str | None = None
        self.extends_cache: dict[str, YMap | None] = {}
        self.env: dict[str, str] = {}

    # ---- files and environment ----------------------------------------------------------------

    def files(self) -> list[str]:
        if self.opts.files:
            return [os.path.normpath(os.path.join(self.cwd, f)) for f in self.opts.files]
        cf = self.environ.get("COMPOSE_FILE")
        if cf:
            sep = self.environ.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
            named = [os.path.normpath(os.path.join(self.cwd, f)) for f in cf.split(sep) if f]
            if named:
                return named
            raise InputError([Problem(f"COMPOSE_FILE={cf!r} names no file",
                                      hint=f"separate file names with {sep!r}, or unset it")])
        for name in DEFAULT_FILES:  # CS-FILE-01
            p = os.path.join(self.cwd, name)
            if os.path.isfile(p):
                out = [p]
                for o in OVERRIDE_FILES:  # CS-FILE-02
                    op = os.path.join(self.cwd, o)
                    if os.path.isfile(op):
                        out.append(op)
                        break
                return out
        raise InputError([Problem(f"no compose file found in {self.cwd}",
                                  hint=f"create {DEFAULT_FILES[0]} or pass -f FILE", rule="CS-FILE-01")])

    def read_env_file(self, path: str, lookup: Mapping[str, str]) -> list[tuple[str, str]]:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(4 * 1024 * 1024)
        except (OSError, UnicodeDecodeError) as e:
            self.problems.append(Problem(f"cannot read env file: {getattr(e, 'strerror', None) or e}", file=path))
            return []
        try:
            return parse_dotenv(text, path, lookup.get)
        except ValueError as e:
            line, _, msg = str(e).partition(": ")
            self.problems.append(Problem(msg or str(e), file=path, line=int(line) if line.isdigit() else None,
                                         rule="CS-INT-15"))
            return []

    def project_env(self, project_dir: str) -> dict[str, str]:
        """OS environment, then ``.env`` (or --env-file) values the OS does not set (CS-INT-14)."""
        env = dict(self.environ)
        paths = [os.path.normpath(os.path.join(self.cwd, f)) for f in self.opts.env_files]
        if not paths and self.environ.get("COMPOSE_DISABLE_ENV_FILE", "").lower() not in ("1", "true"):
            dot = os.path.join(project_dir, ".env")
            if os.path.isfile(dot):
                paths = [dot]
        for p in paths:
            if not os.path.isfile(p):
                self.problems.append(Problem("env file not found", file=p, hint="check --env-file"))
                continue
            for k, v in self.read_env_file(p, env):
                if k not in self.environ:
                    env[k] = v
        return env

    # ---- one file --------------------------------------------------------------------------------

    def parse(self, path: str) -> YMap | None:
        self.current = path
        try:
            doc = read_file(path)
        except YamlProblem as e:
            self.problems.append(e.problem)
            return None
        if doc is None:
            self.problems.append(Problem("the file is empty", file=path, hint="a compose file needs `services:`"))
            return None
        if not isinstance(doc, YMap):
            loc = getattr(doc, "pos", None)
            self.problems.append(Problem("the top level must be a mapping (services:, networks:, ...)", file=path,
                                         line=loc.line if loc else 1, col=loc.col if loc else 1))
            return None
        if "services" not in doc:
            for k, v in doc.items():
                if not k.startswith("x-") and k not in schema.top_level_keys()[0] and isinstance(v, dict) and (
                        _V1_KEYS & set(v)):
                    self.problems.append(problem_at(
                        doc, (k,), "this looks like the Compose v1 format (services at the top level)",
                        hint="put the services under a top-level `services:` key", rule="CS-REAL-13", key=True))
                    return None
        return doc

    def prepare(self, doc: YMap, path: str, env: Mapping[str, str], paths_base: str, stack: list[str]) -> YMap | None:
        """Interpolate, validate, resolve relative paths, include and extends: one file's document."""
        self.current = path
        n = len(self.problems)
        interpolate_tree(doc, env, self.problems, self.unset)
        if len(self.problems) > n:
            return None
        if "version" in doc:
            self.warn(doc, ("version",), "`version` is obsolete and ignored", "CS-FILE-04", key=True)
        found = self.schema_problems(doc, path)
        if found:
            if not all(self.set_aside(doc, p) for p, _ in found):
                self.problems.extend(p for _, p in found)
                return None
            self.soft.extend(p for _, p in found)
        services = doc.get("services")
        if isinstance(services, YMap):
            for svc in services.values():
                if isinstance(svc, YMap):
                    if "env_file" in svc:
                        svc["env_file"] = default_env_path(svc["env_file"], paths_base)
                    ext = svc.get("extends")
                    if isinstance(ext, YMap) and isinstance(ext.get("file"), str):
                        ext["file"] = os.path.normpath(os.path.join(os.path.dirname(path), ext["file"]))
        if "include" in doc:
            self.include(doc, path, env, stack)
        self.resolve_extends(doc, path, env)
        return doc

    def schema_problems(self, doc: YMap, path: str) -> list[tuple[Path, Problem]]:
        """``schema.validate_paths`` of one file's document, unless the SchemaCache knows that
        this very document passed before."""
        checked = strip_tags(clone(doc))
        key = schema.validation_key(checked) if self.schema_cache is not None else None
        if key is not None and self.schema_cache is not None and key in self.schema_cache.known:
            self.passed.append(key)
            return []
        found = schema.validate_paths(checked, default_file=path)
        if not found and key is not None:
            self.passed.append(key)
        return found

    def set_aside(self, doc: YMap, p: Path) -> bool:
        """Keep a schema error from reaching the semantic checks: a service or network with one is
        replaced by an empty stand-in (its name stays known, so references to it are not reported
        as undefined, but it is not modelled); another top-level entry is dropped. False when the
        error is about a whole section (``services: []``) or ``include``: nothing is checked then."""
        if not p or p[0] == "include" or (p[0] in ("services", "networks") and len(p) < 2):
            return False
        section = doc.get(p[0])
        if p[0] in ("services", "networks"):
            if not isinstance(section, YMap) or not isinstance(p[1], str):
                return False
            name, body = p[1], section.get(p[1])
            stand_in = YMap(getattr(body, "pos", None))
            if p[0] == "services" and isinstance(body, YMap):  # profiles still decide if it is enabled
                profiles = body.get("profiles")
                if isinstance(profiles, YList) and all(isinstance(x, str) for x in profiles):
                    stand_in.put("profiles", profiles, body.kpos.get("profiles"), body.vpos.get("profiles"))
            if name in section:
                section.put(name, stand_in, section.kpos.get(name), section.vpos.get(name))
            (self.bad_services if p[0] == "services" else self.bad_networks).add(name)
            return True
        if isinstance(section, YMap) and len(p) >= 2 and isinstance(p[1], str):
            section.drop(p[1])
        else:
            doc.drop(str(p[0]))
        return True

    def warn(self, doc: Any, p: Path, message: str, rule: str | None = None, key: bool = False) -> None:
        loc = locate(doc, p, key=key)
        self.warnings.append(f"{loc}: " * bool(loc) + f"{fmt_path(p)}: {message}" + (f" [{rule}]" if rule else ""))

    # ---- include (CS-INC-*) -------------------------------------------------------------------------

    def include(self, doc: YMap, path: str, env: Mapping[str, str], stack: list[str]) -> None:
        try:
            self._include(doc, path, env, stack)
        finally:
            doc.drop("include")

    def _include(self, doc: YMap, path: str, env: Mapping[str, str], stack: list[str]) -> None:
        entries = doc.get("include") or []
        here = os.path.dirname(path)
        for i, entry in enumerate(entries):
            ipath: Path = ("include", i)
            if isinstance(entry, str):
                files, pdir, env_files = [entry], None, None
            else:
                files = string_list(entry.get("path"))
                pdir, env_files = entry.get("project_directory"), entry.get("env_file")
            files = [os.path.normpath(os.path.join(here, f)) for f in files]
            if not files:
                continue
            pdir = os.path.normpath(os.path.join(here, pdir)) if pdir else os.path.dirname(files[0])
            sub_env: dict[str, str] = {}
            if env_files is None:
                dot = os.path.join(pdir, ".env")
                efs = [dot] if os.path.isfile(dot) else []
            else:
                efs = [os.path.normpath(os.path.join(here, f)) for f in string_list(env_files)]
            for ef in efs:
                if not os.path.isfile(ef):
                    self.problems.append(problem_at(doc, ipath, f"env_file {ef} not found", rule="CS-INC-06"))
                    continue
                sub_env.update(self.read_env_file(ef, {**sub_env, **env}))
            sub_env.update(env)  # the including project's environment wins (CS-INT-13)
            merged: YMap | None = None
            for f in files:
                if f in stack:
                    chain = " -> ".join(os.path.basename(x) for x in stack + [f])
                    self.problems.append(problem_at(doc, ipath, f"include cycle: {chain}", rule="CS-INC-04"))
                    return
                sub = self.parse(f)
                if sub is None:
                    continue
                sub = self.prepare(sub, f, sub_env, pdir, stack + [f])
                self.current = path
                if sub is None:
                    continue
                merged = strip_tags(sub) if merged is None else merge_documents(merged, sub)
            if merged is None:
                continue
            for section in _IMPORTED:
                src = merged.get(section)
                if not isinstance(src, YMap):
                    continue
                dst = doc.get(section)
                if not isinstance(dst, YMap):
                    dst = YMap(src.pos)
                    doc.put(section, dst, src.pos, src.pos)
                for k, v in src.items():
                    if k in dst:
                        if plain(v) != plain(dst[k]):
                            self.warn(doc, (section, k), f"also defined by included {files[0]}; the local "
                                      "definition is merged over it", "CS-INC-03", key=True)
                        dst.put(k, merge_values((section, k), v, dst[k]), dst.kpos.get(k), dst.vpos.get(k))
                    else:
                        dst.put(k, v, src.kpos.get(k), src.vpos.get(k))

    # ---- extends (CS-EXT-*) ---------------------------------------------------------------------------

    def resolve_extends(self, doc: YMap, path: str, env: Mapping[str, str]) -> None:
        services = doc.get("services")
        if isinstance(services, YMap):
            for name in list(services):
                self.extend_one(doc, path, name, env, [])

    def extends_file(self, path: str, env: Mapping[str, str]) -> YMap | None:
        if path not in self.extends_cache:
            self.extends_cache[path] = None
            saved = self.current
            d = self.parse(path)
            if d is not None:
                n = len(self.problems)
                interpolate_tree(d, env, self.problems, self.unset)
                if len(self.problems) == n:
                    self.problems.extend(p for _, p in self.schema_problems(d, path))
                if len(self.problems) == n:
                    for svc in (d.get("services") or {}).values():
                        if isinstance(svc, YMap):
                            if "env_file" in svc:
                                svc["env_file"] = default_env_path(svc["env_file"], os.path.dirname(path))
                            ext = svc.get("extends")
                            if isinstance(ext, YMap) and isinstance(ext.get("file"), str):
                                ext["file"] = os.path.normpath(os.path.join(os.path.dirname(path), ext["file"]))
                    self.extends_cache[path] = d
            self.current = saved
        return self.extends_cache[path]

    def extend_one(self, doc: YMap, path: str, name: str, env: Mapping[str, str],
                   chain: list[tuple[str, str]]) -> YMap | None:
        services = doc["services"]
        svc = services.get(name)
        if not isinstance(svc, YMap) or "extends" not in svc:
            return svc if isinstance(svc, YMap) else None
        ext = svc["extends"]
        epath: Path = ("services", name, "extends")
        base_name = ext if isinstance(ext, str) else ext.get("service")
        base_file = None if isinstance(ext, str) else ext.get("file")
        if (path, name) in chain:
            cyc = " -> ".join(f"{n}" for _, n in chain + [(path, name)])
            self.problems.append(problem_at(doc, epath, f"extends cycle: {cyc}", rule="CS-EXT-03"))
            return None
        if base_file:
            if not os.path.isfile(base_file):
                self.problems.append(problem_at(doc, epath + ("file",), f"extends file {base_file} not found",
                                                rule="CS-EXT-03"))
                return None
            base_doc = self.extends_file(base_file, env)
            bpath = base_file
        else:
            base_doc, bpath = doc, path
        if base_doc is None:
            return None
        bservices = base_doc.get("services")
        if not isinstance(bservices, YMap) or base_name not in bservices:
            where = f" in {bpath}" if base_file else ""
            self.problems.append(problem_at(doc, epath, f"extends: service {base_name!r} not found{where}",
                                            rule="CS-EXT-03"))
            return None
        base = self.extend_one(base_doc, bpath, base_name, env, chain + [(path, name)])
        if base is None:
            return None
        if base_doc is doc and base_name in self.bad_services:
            self.bad_services.add(name)  # built on a stand-in: not checked either
        own = clone(svc)
        own.drop("extends")
        merged = merge_service(strip_tags(clone(base)), own, name)
        services.put(name, merged, services.kpos.get(name), services.vpos.get(name))
        return merged

    # ---- the whole project ------------------------------------------------------------------------

    def project_name(self, parsed: list[tuple[str, YMap]], project_dir: str, env: Mapping[str, str]) -> str | None:
        for given, what in ((self.opts.project_name, "-p"), (env.get("COMPOSE_PROJECT_NAME"), "COMPOSE_PROJECT_NAME")):
            if given:
                err = name_problem(given)
                if err:
                    self.problems.append(Problem(f"{what}: {err}", rule="CS-NAME-03"))
                    return None
                return given
        for _path, doc in reversed(parsed):
            if isinstance(doc.get("name"), str):
                try:
                    name = substitute(doc["name"], env.get)
                except InterpolationError as e:
                    self.problems.append(problem_at(doc, ("name",), str(e)))
                    return None
                if name:
                    err = name_problem(name)
                    if err:
                        self.problems.append(problem_at(doc, ("name",), err, rule="CS-NAME-03",
                                                        hint=f"try {normalize_project_name(name)!r}"
                                                        if re.search("[a-z0-9]", name.lower()) else None))
                        return None
                    return name
        try:
            return normalize_project_name(os.path.basename(project_dir))
        except InputError as e:
            self.problems.extend(e.problems)
            return None

    def run(self) -> Project:
        files = self.files()
        for f in files:
            if not os.path.isfile(f):
                if os.path.isdir(f):
                    self.problems.append(Problem("is a directory, not a compose file", file=f))
                elif os.path.exists(f):
                    self.problems.append(Problem("not a regular file: a compose file must be a file", file=f))
                else:
                    stdin = os.path.basename(f) == "-"
                    self.problems.append(Problem("compose file not found", file=f, hint=(
                        "composenet does not read a compose file from stdin: save it to a file" if stdin else None)))
        if self.problems:
            raise InputError(self.problems)
        project_dir = os.path.abspath(self.opts.cwd) if self.opts.cwd else os.path.dirname(files[0])
        env = self.project_env(project_dir)
        parsed = [(f, d) for f in files if (d := self.parse(f)) is not None]
        if self.problems:
            raise InputError(self.problems)
        name = self.project_name(parsed, project_dir, env)
        if name is None:
            raise InputError(self.problems)
        env["COMPOSE_PROJECT_NAME"] = name  # CS-NAME-02
        self.env = env
        merged: YMap | None = None
        for f, d in parsed:
            prepared = self.prepare(d, f, env, project_dir, [f])
            if prepared is None:
                continue
            merged = strip_tags(prepared) if merged is None else merge_documents(merged, prepared)
        self.current = None
        if self.problems or merged is None:
            raise InputError(_ordered(self.problems + self.soft) or [Problem("nothing to load")])
        return self.build(merged, name, project_dir, files)

    def profiles(self) -> set[str]:
        active = set(self.opts.profiles)
        active |= {p.strip() for p in self.env.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
        return active

    def build(self, doc: YMap, name: str, project_dir: str, files: list[str]) -> Project:
        ctx = Ctx(doc, env=self.env)
        active = self.profiles()
        services_raw: YMap = doc["services"] if isinstance(doc.get("services"), YMap) else YMap()
        if "services" not in doc:
            self.warn(doc, (), "no `services:` key: the project has no services", "CS-FILE-03")
        enabled: dict[str, Any] = {}
        disabled: set[str] = set()
        for sname, body in services_raw.items():
            profs = string_list(body.get("profiles")) if isinstance(body, dict) else []
            if not profs or "*" in active or active & set(profs):
                enabled[sname] = body
            else:
                disabled.add(sname)
        ignored = self.ignored(doc, enabled)
        # Top-level networks.
        nets_raw: YMap = doc["networks"] if isinstance(doc.get("networks"), YMap) else YMap()
        networks: dict[str, Network] = {}
        net_docs: dict[str, Any] = {}
        bad_nets: set[str] = set()
        for key, body in nets_raw.items():
            if key in self.bad_networks:
                bad_nets.add(key)
                continue
            net, ndoc = build_network(ctx, key, body, name)
            if net is None:
                bad_nets.add(key)
                continue
            networks[key] = net
            net_docs[key] = ndoc
        internal = {k for k, n in networks.items() if n.internal}
        services: dict[str, Service] = {}
        svc_docs: dict[str, Any] = {}
        for sname, body in sorted(enabled.items()):
            if sname in self.bad_services:
                continue
            services[sname], svc_docs[sname] = build_service(ctx, sname, body, set(networks) | bad_nets, internal)
        # The implicit default network, only where used (CS-NET-06).
        if "default" not in networks and "default" not in bad_nets and any(
                a.network == "default" for s in services.values() for a in s.networks):
            networks["default"] = Network("default", f"{name}_default")
            net_docs["default"] = {"name": f"{name}_default"}
        check(ctx, services, enabled, {**networks, **{k: Network(k, k) for k in bad_nets}}, disabled)
        problems = _ordered(self.problems + self.soft + ctx.problems)
        if problems:
            raise InputError(problems)
        document: dict[str, Any] = {"name": name}
        for k, v in doc.items():
            if k in ("name", "version", "include"):
                continue
            if k == "services":
                document["services"] = {s: svc_docs[s] for s in sorted(svc_docs)}
            elif k == "networks":
                continue
            else:
                document[k] = plain(v)
        if net_docs:
            document["networks"] = {k: net_docs[k] for k in sorted(net_docs)}
        if "services" not in document:
            document["services"] = {}
        warnings = list(self.unset.values()) + self.warnings + ctx.warnings
        return Project(
            name=name, working_dir=project_dir, files=tuple(files),
            networks=tuple(networks[k] for k in sorted(networks)),
            services=tuple(services[k] for k in sorted(services)),
            ignored=tuple(sorted(ignored)), warnings=tuple(dict.fromkeys(warnings)), document=document,
            publish_localhost_only=self.environ.get(LOCALHOST_ONLY_ENV, "").strip().lower() in ("1", "true", "yes"),
        )

    def ignored(self, doc: YMap, enabled: Mapping[str, Any]) -> list[str]:
        """Key paths accepted but not interpreted; unknown (non x-) keys also get a warning (CS-GEN-03)."""
        out: list[str] = []
        top_known, top_ign = schema.top_level_keys()
        svc_known, svc_ign = schema.service_keys()
        dep_known, dep_ign = schema.deploy_keys()
        for k in doc:
            if k.startswith("x-"):
                continue
            if k not in top_known:
                self.warn(doc, (k,), f"unknown top-level key {k!r} is ignored", "CS-GEN-03", key=True)
                out.append(fmt_path((k,)))
            elif k in top_ign:
                out.append(fmt_path((k,)))
        for sname, body in enabled.items():
            if not isinstance(body, dict):
                continue
            for k, v in body.items():
                if k.startswith("x-"):
                    continue
                p: Path = ("services", sname, k)
                if k not in svc_known:
                    self.warn(doc, p, f"unknown service key {k!r} is ignored", "CS-GEN-03", key=True)
                    out.append(fmt_path(p))
                elif k in svc_ign:
                    out.append(fmt_path(p))
                elif k == "deploy" and isinstance(v, dict):
                    out.extend(fmt_path(p + (d,)) for d in v if d in dep_ign or (
                        d not in dep_known and not d.startswith("x-")))
        return out


def _ordered(problems: list[Problem]) -> list[Problem]:
    """Each problem once, by file, line and column (a stable sort keeps same-place ones in order)."""
    return sorted(dict.fromkeys(problems), key=lambda p: (p.file or "", p.line or 0, p.col or 0))


def load_project(opts: LoadOptions, schema_cache: SchemaCache | None = None) -> Project:
    """Load, merge, validate and model the project ``opts`` selects. Raises InputError only.
    With ``schema_cache``, documents it knows are not validated again, and on success its
    ``passed`` lists the keys to remember (see SchemaCache)."""
    loader = _Loader(opts, schema_cache)
    paused = gc.isenabled()
    # A big file is hundreds of thousands of acyclic containers, built and copied a few times; the
    # cyclic collector would rescan them all again and again (a quarter of the time of a 20,000
    # service file). One load's garbage is bounded by its input: it is collected after.
    gc.disable()
    try:
        project = loader.run()
        if schema_cache is not None:  # only now: every document passed and the project is valid
            schema_cache.passed = list(dict.fromkeys(loader.passed))
        return project
    except InputError:
        raise
    except YamlProblem as e:
        raise InputError([e.problem]) from None
    except RecursionError:
        raise InputError([Problem("input nested too deeply", file=loader.current)]) from None
    except Exception as e:  # last resort: a located problem, never a traceback
        raise InputError([Problem(f"cannot load this input ({type(e).__name__}: {e})", file=loader.current,
                                  hint="this is a composenet bug; please report it with the file")]) from None
    finally:
        if paused:
            gc.enable()


_ = YList  # re-exported type used by callers of this module's documents
