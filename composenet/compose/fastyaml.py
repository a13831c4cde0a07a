"""The fast path of the loader: libyaml's events -> the same YMap/YList tree, in one pass.

PyYAML's pure-Python reader, scanner and parser dominate the time of a big file (an 8 MB file
took ~40 s, parsed twice: once for the depth check, once to compose). When PyYAML has libyaml,
its C parser yields the same events with the same marks, and one iterative pass here builds the
positioned tree while checking depth and node count.

Only documents this pass is sure about are built here: anything else (a YAML error, a duplicate
key or anchor, an undefined or recursive alias, a complex key, a bad merge, a value that does
not fit its tag, a limit) raises, and load.py hands the text to its reference path, which gives
the one authoritative answer and message. tests/unit/test_load.py checks that both paths build
the same tree, positions and tags included.

Must not: word errors (the reference path does), or accept anything the reference refuses.
"""

from __future__ import annotations

import gc
import re
from typing import Any

import yaml

from composenet.compose.yamlspec import (
    CORE_TAG,
    KNOWN_TAGS,
    MAX_DEPTH,
    MAX_NODES,
    MERGE_TAG,
    convert,
    resolve_scalar,
)
from composenet.compose.ytree import Loc, YList, YMap, clone

HAVE_LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))
_MERGE_KEY = object()  # marks "the next value is a merge (<<) source"
# A block scalar header with a comment not preceded by a space (`key: |#`): libyaml takes it,
# PyYAML (and the YAML spec) refuse it. Any text that may hold one goes to the reference path.
_BLOCK_HEADER_COMMENT = re.compile(r"[|>][-+0-9]{0,2}#")


class _Fallback(Exception):
    """The fast path leaves this document to the reference path."""


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


def fast_parse(file: str, text: str) -> Any:
    """Like load.py's ``_Builder(...).build(get_single_node())``, or raise _Fallback (or any error)."""
    if _BLOCK_HEADER_COMMENT.search(text):
        raise _Fallback
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
        top.explicit.append((key, value, top.kloc, loc, KNOWN_TAGS.get(tag) if tag else None))


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
    """The document of ``parser``'s stream (None when empty), or _Fallback."""
    get = parser.get_event
    if not isinstance(get(), yaml.StreamStartEvent):
        raise _Fallback
    ev = get()
    if isinstance(ev, yaml.StreamEndEvent):
        return None
    if not isinstance(ev, yaml.DocumentStartEvent):
        raise _Fallback
    value = _Pass(file, last_line).run(get)
    if not isinstance(get(), yaml.DocumentEndEvent) or not isinstance(get(), yaml.StreamEndEvent):
        raise _Fallback  # more than one document: the reference path says so
    return value


class _Pass:
    """One document's events -> its tree: one handler per event class (``run`` dispatches)."""

    __slots__ = ("file", "last_line", "root", "stack", "anchors", "pending", "plain_values", "count", "flows")

    def __init__(self, file: str, last_line: int):
        self.file = file
        self.last_line = last_line
        self.root = _Frame(YList(), None, None, None, 0)
        self.stack: list[_Frame] = [self.root]  # the document is the root frame's one item
        self.anchors: dict[str, tuple[Any, Loc | None, int, int, str | None]] = {}  # value, loc, height, nodes, tag
        self.pending: set[str] = set()  # anchors of collections still open: an alias to one is recursive
        self.plain_values: dict[str, Any] = {}  # untagged plain scalar text -> value
        self.count = 0  # nodes, aliases expanded
        self.flows = 0  # open flow collections ([...] and {...})

    def run(self, get: Any) -> Any:
        handlers = {yaml.ScalarEvent: self.scalar, yaml.AliasEvent: self.alias,
                    yaml.MappingStartEvent: self.start, yaml.SequenceStartEvent: self.start,
                    yaml.MappingEndEvent: self.end, yaml.SequenceEndEvent: self.end}
        root, stack = self.root, self.stack
        while len(root.value) == 0 or len(stack) > 1:
            ev = get()
            handler = handlers.get(ev.__class__)
            if handler is None:
                raise _Fallback
            handler(ev)
        return root.value[0]

    def scalar(self, ev: Any) -> None:
        text = ev.value
        tag = ev.tag
        if self.flows and ev.style in (None, "") and (not text or "?" in text):
            raise _Fallback  # libyaml reads some flow forms PyYAML refuses (`{a? b: c}`, `[!!str,1]`)
        if tag is not None and tag not in KNOWN_TAGS and tag != "!" and not tag.startswith(CORE_TAG):
            raise _Fallback  # other tags: libyaml takes some PyYAML refuses (`!&!x`)
        mark = ev.start_mark
        if not text and mark.line >= self.last_line:
            raise _Fallback  # an empty value at the very end (`? a` unterminated): placed differently
        loc = Loc(self.file, mark.line + 1, mark.column + 1)
        top = self.stack[-1]
        if top.is_map and top.key is None:
            self._key(top, ev, text, tag, loc)
            return
        self.count += 1
        if self.count > MAX_NODES:
            raise _Fallback
        if tag is None:
            if ev.implicit[0]:
                value = self.plain_values.get(text, _MERGE_KEY)
                if value is _MERGE_KEY:
                    value = self.plain_values[text] = convert(resolve_scalar(text, True), text)
            else:
                value = text
        else:
            rtag = resolve_scalar(text, True) if tag == "!" else tag  # PyYAML: `!` makes any scalar plain
            if rtag in KNOWN_TAGS or not rtag.startswith(CORE_TAG):
                rtag = resolve_scalar(text, ev.style in (None, ""))
            value = convert(rtag, text)  # ValueError: the reference path words it
        if ev.anchor is not None:
            self._anchor(ev.anchor)
            self.anchors[ev.anchor] = (value, loc, 0, 1, tag)
        _put(top, value, loc, 0, tag)

    def _key(self, top: _Frame, ev: Any, text: str, tag: str | None, loc: Loc) -> None:
        """A mapping's key: a merge key (``<<``) or a plain one, which must be new."""
        if ev.anchor is not None:
            raise _Fallback
        if tag == MERGE_TAG or (text == "<<" and (tag == "!" or (tag is None and ev.implicit[0]))):
            top.key = _MERGE_KEY
            return
        self.count += 1
        if text in top.seen:
            raise _Fallback
        top.seen.add(text)
        top.key, top.kloc = text, loc

    def _anchor(self, anchor: str) -> None:
        if anchor in self.anchors or anchor in self.pending:
            raise _Fallback

    def start(self, ev: Any) -> None:
        """A mapping or a sequence opens."""
        if (self.stack[-1].is_map and self.stack[-1].key is None) or len(self.stack) > MAX_DEPTH:
            raise _Fallback
        if ev.tag is not None and ev.tag not in KNOWN_TAGS and ev.tag != "!" and not ev.tag.startswith(CORE_TAG):
            raise _Fallback
        self.count += 1
        if self.count > MAX_NODES:
            raise _Fallback
        mark = ev.start_mark
        loc = Loc(self.file, mark.line + 1, mark.column + 1)
        if ev.anchor is not None:
            self._anchor(ev.anchor)
            self.pending.add(ev.anchor)
        flow = bool(ev.flow_style)
        self.flows += flow
        value = YMap(loc) if ev.__class__ is yaml.MappingStartEvent else YList(loc)
        self.stack.append(_Frame(value, loc, ev.anchor, ev.tag, self.count - 1, flow))

    def end(self, ev: Any) -> None:
        """A mapping or a sequence closes: it goes into its parent (and its anchor is defined)."""
        frame = self.stack.pop()
        self.flows -= frame.flow
        if frame.is_map:
            _close_mapping(frame)
        if frame.anchor is not None:
            self.pending.discard(frame.anchor)
            self.anchors[frame.anchor] = (frame.value, frame.loc, frame.height, self.count - frame.count0, frame.tag)
        _put(self.stack[-1], frame.value, frame.loc, frame.height, frame.tag)

    def alias(self, ev: Any) -> None:
        """``*name``: a copy of the anchored value (the value itself as a merge source)."""
        top = self.stack[-1]
        if (top.is_map and top.key is None) or ev.anchor not in self.anchors:
            raise _Fallback
        value, where, height, nodes, tag = self.anchors[ev.anchor]
        self.count += nodes
        if self.count > MAX_NODES or len(self.stack) - 1 + height > MAX_DEPTH:
            raise _Fallback
        _put(top, value if top.key is _MERGE_KEY else clone(value), where, height, tag)
