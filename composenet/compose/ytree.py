"""The positioned tree the loader builds and every later stage reads: ``YMap`` and ``YList``,
a dict and a list that remember FILE:LINE:COL of each key, value and item.

Owns: the tree types and their copies (``clone``, ``plain``), key paths (``Path``, ``fmt_path``)
and finding the best known position of a path (``locate``, ``problem_at``). Pure, and knows
nothing of YAML: load.py builds these trees, interpolate.py, merge.py, schema.py and
modelbuild.py read them. Must not: read files or import yaml.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from composenet.errors import Problem

Path = tuple[str | int, ...]  # a key path: ("services", "web", "ports", 0)


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
