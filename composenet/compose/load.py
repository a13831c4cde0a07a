"""Read one Compose file as Compose reads it: YAML with a 1.2-style resolver, every key and value
kept with its source position.

Owns: bytes -> ``YMap``/``YList`` trees (ytree.py: dicts and lists that remember FILE:LINE:COL
of each key and value), ``!reset``/``!override`` tags, anchors, aliases and merge keys (``<<``),
the limits that keep hostile input harmless (size, depth, alias expansion; yamlspec.py), and the
wording of every YAML error. Must not: interpolate, merge, validate, or touch anything but the
file it is given.

Two paths build the same tree: with libyaml, one pass over its C parser's events (fastyaml.py,
~20x faster on big files); for anything that pass is not sure of, and for every error, the
pure-Python reference path here (``_reference_parse``), whose answer and wording are
authoritative. What YAML means (the 1.2 core schema, scalar conversion) is yamlspec.py's, for
both.

The tree's names (``YMap``, ``YList``, ``locate``, ...) are re-exported from ytree.py for the
modules that import them from here.
"""

from __future__ import annotations

from typing import Any

import yaml

from composenet.compose.fastyaml import HAVE_LIBYAML, fast_parse
from composenet.compose.yamlspec import KNOWN_TAGS, MAX_BYTES, MAX_DEPTH, MAX_NODES, CoreResolver, convert
from composenet.compose.ytree import Loc, Path, YList, YMap, clone, fmt_path, locate, plain, problem_at
from composenet.errors import Problem

__all__ = [
    "Loc", "Path", "YList", "YMap", "YamlProblem", "clone", "decode", "fmt_path", "locate", "parse_text", "plain",
    "problem_at", "read_file",
]


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


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer,
              CoreResolver):
    def __init__(self, stream: str):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        CoreResolver.__init__(self)


class _Builder:
    """Nodes -> YMap/YList/scalars, with positions; counts nodes to bound alias expansion."""

    def __init__(self, file: str, loader: _Loader):
        self.file = file
        self.loader = loader
        self.count = 0

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag in KNOWN_TAGS or not tag.startswith("tag:yaml.org,2002:"):
            # A tagged scalar is not resolved by the parser; resolve it as if untagged.
            tag = self.loader.resolve(yaml.ScalarNode, node.value, (node.style is None, False))
        try:
            return convert(tag, node.value)
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
            tag = KNOWN_TAGS.get(vnode.tag)
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
    if HAVE_LIBYAML and "\t" not in text and "\ufeff" not in text:  # libyaml is laxer about these
        try:
            return fast_parse(file, text)
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
