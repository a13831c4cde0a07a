"""Read one Compose file as Compose reads it: YAML with a 1.2-style resolver, every key and value
kept with its source position.

Owns: bytes -> ``YMap``/``YList`` trees (dicts and lists that remember FILE:LINE:COL of each key
and value), ``!reset``/``!override`` tags, anchors, aliases and merge keys (``<<``), the limits that
keep hostile input harmless (size, depth, alias expansion), key-path formatting and position
lookup. Must not: interpolate, merge, validate, or touch anything but the file it is given.

Why not ``yaml.safe_load``: PyYAML's default resolver is YAML 1.1, which reads an unquoted
``22:22`` as the integer 1342 and ``on``/``no`` as booleans (CS-PORT-06, CS-YAML-05). Compose's
reference loader is YAML 1.2, so we install the 1.2 core-schema resolvers instead.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from composenet.errors import Problem

MAX_BYTES = 16 * 1024 * 1024  # a compose file is a few KB; refuse anything absurd
MAX_DEPTH = 64  # real files nest < 10 levels; PyYAML's composer is recursive
MAX_NODES = 1_000_000  # bounds alias expansion ("billion laughs")

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Loc:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class YMap(dict):
    """A mapping that remembers where each key (``kpos``) and value (``vpos``) was written.

    ``tags`` holds ``reset``/``override`` markers of values (CS-MERGE-07/08) until merging."""

    __slots__ = ("pos", "kpos", "vpos", "tags")

    def __init__(self, pos: Loc | None = None):
        super().__init__()
        self.pos = pos
        self.kpos: dict[str, Loc | None] = {}
        self.vpos: dict[str, Loc | None] = {}
        self.tags: dict[str, str] = {}

    def put(self, key: str, value: Any, kloc: Loc | None = None, vloc: Loc | None = None) -> None:
        self[key] = value
        self.kpos[key] = kloc
        self.vpos[key] = vloc

    def drop(self, key: str) -> None:
        self.pop(key, None)
        self.kpos.pop(key, None)
        self.vpos.pop(key, None)
        self.tags.pop(key, None)


class YList(list):
    """A sequence that remembers where each item (``ipos``) was written."""

    __slots__ = ("pos", "ipos")

    def __init__(self, pos: Loc | None = None):
        super().__init__()
        self.pos = pos
        self.ipos: list[Loc | None] = []

    def add(self, value: Any, loc: Loc | None = None) -> None:
        self.append(value)
        self.ipos.append(loc)


def ymap(items: dict[str, Any] | None = None, pos: Loc | None = None) -> YMap:
    m = YMap(pos)
    for k, v in (items or {}).items():
        m.put(k, v, pos, pos)
    return m


def ylist(items: list[Any] | None = None, pos: Loc | None = None) -> YList:
    lst = YList(pos)
    for v in items or []:
        lst.add(v, pos)
    return lst


def clone(value: Any) -> Any:
    """Deep copy that keeps positions (``copy.deepcopy`` would, but slowly and via pickling rules)."""
    if isinstance(value, YMap):
        m = YMap(value.pos)
        for k, v in value.items():
            m.put(k, clone(v), value.kpos.get(k), value.vpos.get(k))
        m.tags.update(value.tags)
        return m
    if isinstance(value, YList):
        lst = YList(value.pos)
        for i, v in enumerate(value):
            lst.add(clone(v), value.ipos[i] if i < len(value.ipos) else None)
        return lst
    if isinstance(value, dict):
        return ymap({str(k): clone(v) for k, v in value.items()})
    if isinstance(value, list):
        return ylist([clone(v) for v in value])
    return value


def plain(value: Any) -> Any:
    """Positions stripped: plain dicts and lists (JSON-compatible)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def fmt_path(path: Path) -> str:
    """``("services", "web", "ports", 1)`` -> ``services.web.ports[1]``; odd keys are quoted."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _SIMPLE_KEY.match(p):
            out += ("." if out else "") + p
        else:
            out += f"[{json.dumps(p, ensure_ascii=False)}]"
    return out


def locate(doc: Any, path: Path, key: bool = False) -> Loc | None:
    """Best known position of ``path`` in ``doc``: the deepest step that has one.

    ``key=True`` gives the position of the last key rather than of its value."""
    loc: Loc | None = getattr(doc, "pos", None)
    node = doc
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, YMap) and isinstance(step, str) and step in node:
            here = node.kpos.get(step) if (key and last) else (node.vpos.get(step) or node.kpos.get(step))
            loc = here or loc
            node = node[step]
        elif isinstance(node, YList) and isinstance(step, int) and 0 <= step < len(node):
            here = node.ipos[step] if step < len(node.ipos) else None
            loc = here or loc
            node = node[step]
        elif isinstance(node, YList) and isinstance(step, str) and step in node:
            # A list standing for a mapping (service `networks: [a, b]`): the item names the key.
            i = node.index(step)
            loc = (node.ipos[i] if i < len(node.ipos) else None) or loc
            node = None
        else:
            break
    return loc


def problem_at(doc: Any, path: Path, message: str, hint: str | None = None, rule: str | None = None,
               key: bool = False, default_file: str | None = None) -> Problem:
    loc = locate(doc, path, key=key)
    return Problem(message, file=loc.file if loc else default_file, line=loc.line if loc else None,
                   col=loc.col if loc else None, path=fmt_path(path) or None, hint=hint, rule=rule)


# ---- YAML 1.2 core-schema resolver ------------------------------------------------------------

class _Resolver(yaml.resolver.BaseResolver):
    pass


_Resolver.yaml_implicit_resolvers = {}
_IMPLICIT = [
    ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    ("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
     list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
     list("-+.0123456789")),
    ("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"]),
]
for _tag, _rx, _first in _IMPLICIT:
    _Resolver.add_implicit_resolver(_tag, _rx, _first)


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer,
              _Resolver):
    def __init__(self, stream: str):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Resolver.__init__(self)


class Dumper(yaml.SafeDumper):
    """Quotes every string that a YAML 1.1 *or* 1.2 reader would take for something else, so
    that what `composenet config` prints reads back identically (e.g. ``"0o17"``, ``"22:22"``)."""


for _tag, _rx, _first in _IMPLICIT:
    Dumper.add_implicit_resolver(_tag, _rx, _first)


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


Dumper.add_representer(str, _str_presenter)


class YamlProblem(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def _loc(file: str, mark: Any) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


def _fail(file: str, mark: Any, message: str, hint: str | None = None) -> YamlProblem:
    if mark is None:
        return YamlProblem(Problem(message, file=file, hint=hint))
    return YamlProblem(Problem(message, file=file, line=mark.line + 1, col=mark.column + 1, hint=hint))


_KNOWN_TAGS = {"!reset": "reset", "!override": "override"}


class _Builder:
    """Nodes -> YMap/YList/scalars, with positions; counts nodes to bound alias expansion."""

    def __init__(self, file: str, loader: _Loader):
        self.file = file
        self.loader = loader
        self.count = 0

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag in _KNOWN_TAGS or not tag.startswith("tag:yaml.org,2002:"):
            # A tagged scalar is not resolved by the parser; resolve it as if untagged.
            tag = self.loader.resolve(yaml.ScalarNode, node.value, (node.style is None, False))
        v = node.value
        if tag == "tag:yaml.org,2002:null":
            return None
        if tag == "tag:yaml.org,2002:bool":
            if v.lower() in ("true", "false"):
                return v.lower() == "true"
            raise _fail(self.file, node.start_mark, f"invalid boolean {v!r}")
        if tag == "tag:yaml.org,2002:int":
            try:
                s = v.replace("_", "")
                if s.startswith("0o"):
                    return int(s[2:], 8)
                if s.startswith(("0x", "-0x", "+0x")):
                    return int(s, 16)
                return int(s, 10)
            except ValueError:
                raise _fail(self.file, node.start_mark, f"invalid integer {v!r}") from None
        if tag == "tag:yaml.org,2002:float":
            low = v.lower()
            if low in (".inf", "+.inf"):
                return math.inf
            if low == "-.inf":
                return -math.inf
            if low == ".nan":
                return math.nan
            try:
                return float(v)
            except ValueError:
                raise _fail(self.file, node.start_mark, f"invalid number {v!r}") from None
        return v  # str, and anything else (timestamps, binary) as its text

    def build(self, node: yaml.Node, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _fail(self.file, node.start_mark, "document too large after expanding aliases",
                        hint="anchors that expand exponentially are refused")
        if depth > MAX_DEPTH:
            raise _fail(self.file, node.start_mark, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if isinstance(node, yaml.SequenceNode):
            lst = YList(_loc(self.file, node.start_mark))
            for item in node.value:
                lst.add(self.build(item, depth + 1), _loc(self.file, item.start_mark))
            return lst
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, depth)
        raise _fail(self.file, node.start_mark, "unsupported YAML node")

    def _merge_sources(self, value_node: yaml.Node, depth: int) -> list[YMap]:
        nodes = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        out = []
        for n in nodes:
            v = self.build(n, depth + 1)
            if not isinstance(v, YMap):
                raise _fail(self.file, n.start_mark, "a merge key (<<) takes a mapping or a list of mappings",
                            hint="merge keys do not apply to sequences (CS-YAML-02)")
            out.append(v)
        return out

    def mapping(self, node: yaml.MappingNode, depth: int) -> YMap:
        m = YMap(_loc(self.file, node.start_mark))
        merged: list[YMap] = []
        explicit: list[tuple[str, Any, Loc, Loc, str | None]] = []
        seen: set[str] = set()
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                merged.extend(self._merge_sources(vnode, depth))
                continue
            if not isinstance(knode, yaml.ScalarNode):
                raise _fail(self.file, knode.start_mark, "a mapping key must be a plain value, not a "
                            "mapping or a sequence")
            self.count += 1
            key = knode.value  # keys are text, as written (Go's map[string]any)
            if key in seen:
                raise _fail(self.file, knode.start_mark, f"duplicate key {key!r} in this mapping")
            seen.add(key)
            tag = _KNOWN_TAGS.get(vnode.tag)
            explicit.append((key, self.build(vnode, depth + 1), _loc(self.file, knode.start_mark),
                             _loc(self.file, vnode.start_mark), tag))
        # Merge keys: earlier sources win over later ones, explicit keys win over all (YAML merge).
        for src in merged:
            for k, v in src.items():
                if k not in seen and k not in m:
                    m.put(k, clone(v), src.kpos.get(k), src.vpos.get(k))
                    if k in src.tags:
                        m.tags[k] = src.tags[k]
        for key, value, kl, vl, tag in explicit:
            m.put(key, value, kl, vl)
            if tag:
                m.tags[key] = tag
        return m


def _check_depth(file: str, text: str) -> None:
    """PyYAML's composer recurses once per level: refuse deep nesting before composing."""
    depth = 0
    for ev in yaml.parse(text, Loader=_Loader):  # type: ignore[arg-type]
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _fail(file, ev.start_mark, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def decode(file: str, data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise YamlProblem(Problem(f"file is too large ({len(data)} bytes; the limit is {MAX_BYTES})", file=file))
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise YamlProblem(Problem(f"not valid UTF-16 text ({e.reason})", file=file)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise YamlProblem(Problem("not UTF-8 text: a compose file must be UTF-8 YAML", file=file, line=line,
                                  col=col)) from None


def parse_text(file: str, text: str) -> Any:
    """YAML text -> YMap/YList/scalars with positions. Raises YamlProblem."""
    try:
        _check_depth(file, text)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        if node is None:
            return None
        return _Builder(file, loader).build(node)
    except YamlProblem:
        raise
    except yaml.reader.ReaderError as e:
        pos = e.position
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        raise YamlProblem(Problem(f"unacceptable character #x{e.character if isinstance(e.character, int) else 0:04x}"
                                  ": not a text file?", file=file, line=line, col=col)) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        msg = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        raise _fail(file, mark, f"invalid YAML: {msg}") from None
    except yaml.YAMLError as e:
        raise YamlProblem(Problem(f"invalid YAML: {e}", file=file)) from None
    except RecursionError:
        raise YamlProblem(Problem("nested too deeply", file=file)) from None


def read_file(file: str) -> Any:
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise YamlProblem(Problem("file not found", file=file)) from None
    except IsADirectoryError:
        raise YamlProblem(Problem("is a directory, not a compose file", file=file)) from None
    except OSError as e:
        raise YamlProblem(Problem(f"cannot read: {e.strerror}", file=file)) from None
    return parse_text(file, decode(file, data))


def walk(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every (path, value) pair, depth first, containers included."""
    stack: list[tuple[Path, Any]] = [(path, value)]
    while stack:
        p, v = stack.pop()
        yield p, v
        if isinstance(v, dict):
            stack.extend((p + (k,), c) for k, c in reversed(list(v.items())))
        elif isinstance(v, list):
            stack.extend((p + (i,), c) for i, c in reversed(list(enumerate(v))))
