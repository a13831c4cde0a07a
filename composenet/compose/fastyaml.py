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
            if tag is not None and tag not in KNOWN_TAGS and tag != "!" and not tag.startswith(CORE_TAG):
                raise _Fallback  # other tags: libyaml takes some PyYAML refuses (`!&!x`)
            mark = ev.start_mark
            if not text and mark.line >= last_line:
                raise _Fallback  # an empty value at the very end (`? a` unterminated): placed differently
            loc = Loc(file, mark.line + 1, mark.column + 1)
            if top.is_map and top.key is None:  # a key
                if ev.anchor is not None:
                    raise _Fallback
                if tag == MERGE_TAG or (text == "<<" and (tag == "!" or (tag is None and ev.implicit[0]))):
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
                        value = plain_values[text] = convert(resolve_scalar(text, True), text)
                else:
                    value = text
            else:
                rtag = resolve_scalar(text, True) if tag == "!" else tag  # PyYAML: `!` makes any scalar plain
                if rtag in KNOWN_TAGS or not rtag.startswith("tag:yaml.org,2002:"):
                    rtag = resolve_scalar(text, ev.style in (None, ""))
                value = convert(rtag, text)  # ValueError: the reference path words it
            if ev.anchor is not None:
                if ev.anchor in anchors or ev.anchor in pending:
                    raise _Fallback
                anchors[ev.anchor] = (value, loc, 0, 1, tag)
            _put(top, value, loc, 0, tag)
        elif cls is map_start or cls is seq_start:
            if (top.is_map and top.key is None) or len(stack) > MAX_DEPTH:
                raise _Fallback
            if ev.tag is not None and ev.tag not in KNOWN_TAGS and ev.tag != "!" and not ev.tag.startswith(CORE_TAG):
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
