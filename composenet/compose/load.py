"""Read one Compose file as Compose reads it: YAML with a 1.2-style resolver, every key and value
kept with its source position.

Owns: bytes -> ``YMap``/``YList`` trees (dicts and lists that remember FILE:LINE:COL of each key
and value), ``!reset``/``!override`` tags, anchors, aliases and merge keys (``<<``), the limits that
keep hostile input harmless (size, depth, alias expansion), key-path formatting and position
lookup. Must not: interpolate, merge, validate, or touch anything but the file it is given.

Two paths build the same tree: with libyaml, one pass over its C parser's events (``_fast_parse``,
~20x faster on big files); for anything that pass is not sure of, and for every error, the
pure-Python reference path (``_reference_parse``), whose answer and wording are authoritative.

Why not ``yaml.safe_load``: PyYAML's default resolver is YAML 1.1, which reads an unquoted
``22:22`` as the integer 1342 and ``on``/``no`` as booleans (CS-PORT-06, CS-YAML-05). Compose's
reference loader is YAML 1.2, so we install the 1.2 core-schema resolvers instead.
"""

from __future__ import annotations

import gc
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


def _convert(tag: str, v: str) -> Any:
    """A resolved scalar's value; ValueError(message) if its text does not fit its tag."""
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        raise ValueError(f"invalid boolean {v!r}")
    if tag == "tag:yaml.org,2002:int":
        try:
            s = v.replace("_", "")
            if s.startswith("0o"):
                return int(s[2:], 8)
            if s.startswith(("0x", "-0x", "+0x")):
                return int(s, 16)
            return int(s, 10)
        except ValueError:
            raise ValueError(f"invalid integer {v!r}") from None
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
            raise ValueError(f"invalid number {v!r}") from None
    return v  # str, and anything else (timestamps, binary) as its text


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
        try:
            return _convert(tag, node.value)
        except ValueError as e:
            raise _fail(self.file, node.start_mark, str(e)) from None

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


# ---- the fast path: libyaml events -> YMap/YList in one pass -------------------------------------
#
# PyYAML's pure-Python reader, scanner and parser dominate the time of a big file (an 8 MB file
# took ~40 s, parsed twice: once for the depth check, once to compose). When PyYAML has libyaml,
# its C parser yields the same events with the same marks, and one iterative pass here builds the
# positioned tree while checking depth and node count. Only documents this pass is sure about are
# built here: anything else (a YAML error, a duplicate key or anchor, an undefined or recursive
# alias, a complex key, a bad merge, a value that does not fit its tag, a limit) is handed to the
# reference path above, which gives the one authoritative answer and message.

_HAVE_LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))
_CORE = "tag:yaml.org,2002:"
_STR = _CORE + "str"
_MERGE = "tag:yaml.org,2002:merge"
_MERGE_KEY = object()  # marks "the next value is a merge (<<) source"


class _Fallback(Exception):
    """The fast path leaves this document to the reference path."""


def _resolve(value: str, plain: bool) -> str:
    """``_Resolver.resolve`` for a scalar (no path resolvers, no wildcard resolvers)."""
    if plain:
        for tag, rx in _Resolver.yaml_implicit_resolvers.get(value[0] if value else "", ()):
            if rx.match(value):
                return str(tag)
    return _STR


class _Frame:
    """One open collection of the fast path."""

    __slots__ = ("value", "is_map", "flow", "loc", "anchor", "tag", "height", "count0", "key", "kloc", "explicit",
                 "merged", "seen")

    def __init__(self, value: YMap | YList, loc: Loc | None, anchor: str | None, tag: str | None, count0: int,
                 flow: bool = False):
        self.value = value
        self.is_map = isinstance(value, YMap)
        self.flow = flow
        self.loc = loc
        self.anchor = anchor
        self.tag = tag
        self.height = 0  # how many levels the builder adds below this node
        self.count0 = count0
        self.key: Any = None  # mappings: None (a key is next), _MERGE_KEY or the pending key
        self.kloc: Loc | None = None
        self.explicit: list[tuple[str, Any, Loc | None, Loc | None, str | None]] = []
        self.merged: list[YMap] = []
        self.seen: set[str] = set()


def _fast_parse(file: str, text: str) -> Any:
    """Like ``_Builder(...).build(get_single_node())``, or raise _Fallback (or any error)."""
    parser = yaml.cyaml.CParser(text)  # type: ignore[attr-defined]
    paused = gc.isenabled()
    gc.disable()  # only acyclic containers are made here: the collector would scan them for nothing
    try:
        return _fast_build(file, parser, text.count("\n"))
    finally:
        parser.dispose()
        if paused:
            gc.enable()


def _put(top: _Frame, value: Any, loc: Loc | None, height: int, tag: str | None) -> None:
    """A finished value goes into the collection being built."""
    if height >= top.height:
        top.height = height + 1
    if not top.is_map:
        top.value.add(value, loc)  # type: ignore[union-attr]
        return
    key = top.key
    top.key = None
    if key is _MERGE_KEY:
        sources = list(value) if isinstance(value, YList) else [value]
        if not all(isinstance(s, YMap) for s in sources):
            raise _Fallback
        top.merged.extend(sources)
    else:
        top.explicit.append((key, value, top.kloc, loc, _KNOWN_TAGS.get(tag) if tag else None))


def _close_mapping(frame: _Frame) -> None:
    """Merge keys, then explicit keys, exactly as ``_Builder.mapping`` orders them."""
    m = frame.value
    assert isinstance(m, YMap)
    seen = frame.seen
    for src in frame.merged:  # earlier sources win, explicit keys win over all
        for k, v in src.items():
            if k not in seen and k not in m:
                m.put(k, clone(v), src.kpos.get(k), src.vpos.get(k))
                if k in src.tags:
                    m.tags[k] = src.tags[k]
    for key, value, kl, vl, vtag in frame.explicit:
        m.put(key, value, kl, vl)
        if vtag:
            m.tags[key] = vtag


def _fast_build(file: str, parser: Any, last_line: int) -> Any:
    get = parser.get_event
    if not isinstance(get(), yaml.StreamStartEvent):
        raise _Fallback
    ev = get()
    if isinstance(ev, yaml.StreamEndEvent):
        return None
    if not isinstance(ev, yaml.DocumentStartEvent):
        raise _Fallback
    root = _Frame(YList(), None, None, None, 0)
    stack: list[_Frame] = [root]  # the document is the root frame's one item
    anchors: dict[str, tuple[Any, Loc | None, int, int, str | None]] = {}  # value, loc, height, nodes, tag
    pending: set[str] = set()  # anchors of collections still open: an alias to one is recursive
    plain_values: dict[str, Any] = {}  # untagged plain scalar text -> value
    count = 0
    flows = 0  # open flow collections ([...] and {...})
    scalar_ev, alias_ev = yaml.ScalarEvent, yaml.AliasEvent
    map_start, seq_start, map_end, seq_end = (yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.MappingEndEvent,
                                              yaml.SequenceEndEvent)
    while len(root.value) == 0 or len(stack) > 1:
        ev = get()
        cls = ev.__class__
        top = stack[-1]
        if cls is scalar_ev:
            text = ev.value
            tag = ev.tag
            if flows and ev.style in (None, "") and (not text or "?" in text):
                raise _Fallback  # libyaml reads some flow forms PyYAML refuses (`{a? b: c}`, `[!!str,1]`)
            if tag is not None and tag not in _KNOWN_TAGS and tag != "!" and not tag.startswith(_CORE):
                raise _Fallback  # other tags: libyaml takes some PyYAML refuses (`!&!x`)
            mark = ev.start_mark
            if not text and mark.line >= last_line:
                raise _Fallback  # an empty value at the very end (`? a` unterminated): placed differently
            loc = Loc(file, mark.line + 1, mark.column + 1)
            if top.is_map and top.key is None:  # a key
                if ev.anchor is not None:
                    raise _Fallback
                if tag == _MERGE or (text == "<<" and (tag == "!" or (tag is None and ev.implicit[0]))):
                    top.key = _MERGE_KEY
                    continue
                count += 1
                if text in top.seen:
                    raise _Fallback
                top.seen.add(text)
                top.key, top.kloc = text, loc
                continue
            count += 1
            if count > MAX_NODES:
                raise _Fallback
            if tag is None:
                if ev.implicit[0]:
                    value = plain_values.get(text, _MERGE_KEY)
                    if value is _MERGE_KEY:
                        value = plain_values[text] = _convert(_resolve(text, True), text)
                else:
                    value = text
            else:
                rtag = _resolve(text, True) if tag == "!" else tag  # PyYAML: `!` makes any scalar plain
                if rtag in _KNOWN_TAGS or not rtag.startswith("tag:yaml.org,2002:"):
                    rtag = _resolve(text, ev.style in (None, ""))
                value = _convert(rtag, text)  # ValueError: the reference path words it
            if ev.anchor is not None:
                if ev.anchor in anchors or ev.anchor in pending:
                    raise _Fallback
                anchors[ev.anchor] = (value, loc, 0, 1, tag)
            _put(top, value, loc, 0, tag)
        elif cls is map_start or cls is seq_start:
            if (top.is_map and top.key is None) or len(stack) > MAX_DEPTH:
                raise _Fallback
            if ev.tag is not None and ev.tag not in _KNOWN_TAGS and ev.tag != "!" and not ev.tag.startswith(_CORE):
                raise _Fallback
            count += 1
            if count > MAX_NODES:
                raise _Fallback
            mark = ev.start_mark
            loc = Loc(file, mark.line + 1, mark.column + 1)
            anchor = ev.anchor
            if anchor is not None:
                if anchor in anchors or anchor in pending:
                    raise _Fallback
                pending.add(anchor)
            flow = bool(ev.flow_style)
            flows += flow
            stack.append(_Frame(YMap(loc) if cls is map_start else YList(loc), loc, anchor, ev.tag, count - 1, flow))
        elif cls is map_end or cls is seq_end:
            frame = stack.pop()
            flows -= frame.flow
            if frame.is_map:
                _close_mapping(frame)
            if frame.anchor is not None:
                pending.discard(frame.anchor)
                anchors[frame.anchor] = (frame.value, frame.loc, frame.height, count - frame.count0, frame.tag)
            _put(stack[-1], frame.value, frame.loc, frame.height, frame.tag)
        elif cls is alias_ev:
            if (top.is_map and top.key is None) or ev.anchor not in anchors:
                raise _Fallback
            value, where, height, nodes, tag = anchors[ev.anchor]
            count += nodes
            if count > MAX_NODES or len(stack) - 1 + height > MAX_DEPTH:
                raise _Fallback
            _put(top, value if top.key is _MERGE_KEY else clone(value), where, height, tag)
        else:
            raise _Fallback
    if not isinstance(get(), yaml.DocumentEndEvent) or not isinstance(get(), yaml.StreamEndEvent):
        raise _Fallback  # more than one document: the reference path says so
    return root.value[0]


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
    if _HAVE_LIBYAML and "\t" not in text and "\ufeff" not in text:  # libyaml is laxer about these
        try:
            return _fast_parse(file, text)
        except Exception:  # noqa: BLE001 - any doubt: the reference path decides, and words the error
            pass
    return _reference_parse(file, text)


def _reference_parse(file: str, text: str) -> Any:
    """The pure-Python path: depth check, compose, build. Authoritative for every error."""
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
