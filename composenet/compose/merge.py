"""Merge several Compose documents (``-f a -f b``, ``extends``, ``include``) by the Compose
Specification's merge rules (CS-MERGE-*), keeping source positions.

Owns: the merge of two YMap trees; ``!reset`` / ``!override``. Must not: interpolate, validate or
read files. Wrong types are never an error here: the later value simply replaces the earlier one
(the schema reports the type problem with its position).
"""

from __future__ import annotations

from typing import Any

from composenet.compose.ports import port_identity
from composenet.compose.ytree import Path, YList, YMap, clone

# Attributes replaced as a whole, never appended (CS-MERGE-04).
_REPLACE = {("services", "*", "command"), ("services", "*", "entrypoint"),
            ("services", "*", "healthcheck", "test")}
# Accept a list of KEY=VAL or a mapping: merged as mappings (CS-MERGE-06, CS-EXT-06).
_MAPPINGS = {("services", "*", k) for k in ("environment", "labels", "annotations", "sysctls", "depends_on")} | {
    ("services", "*", "build", "args"), ("services", "*", "build", "labels"),
    ("services", "*", "deploy", "labels"), ("networks", "*", "labels"), ("volumes", "*", "labels"),
}
# Accept a string or a list: appended as lists.
_STRING_OR_LIST = {("services", "*", k) for k in ("dns", "dns_search", "env_file", "tmpfs")}
# Unique resources (CS-MERGE-05): entries with the same key are merged, others appended.
_UNIQUE = {("services", "*", "ports"), ("services", "*", "volumes"), ("services", "*", "secrets"),
           ("services", "*", "configs")}


def _match(path: Path, patterns: Any) -> bool:
    for pat in patterns:
        if len(pat) == len(path) and all(a == "*" or a == b for a, b in zip(pat, path, strict=True)):
            return True
    return False


def strip_tags(doc: Any) -> Any:
    """Apply ``!reset`` (drop the key) and forget ``!override`` in a document merged into nothing."""
    if isinstance(doc, YMap):
        for k in [k for k, t in doc.tags.items() if t == "reset"]:
            doc.drop(k)
        doc.tags.clear()
        for v in doc.values():
            strip_tags(v)
    elif isinstance(doc, YList):
        for v in doc:
            strip_tags(v)
    return doc


def _as_mapping(value: Any) -> Any:
    """``[K=V, K]`` -> ``{K: V, K: None}``; a list of names (depends_on) -> ``{name: {}}``."""
    if not isinstance(value, YList):
        return value
    m = YMap(value.pos)
    for i, item in enumerate(value):
        loc = value.ipos[i] if i < len(value.ipos) else None
        if isinstance(item, str):
            if "=" in item:
                k, _, v = item.partition("=")
                m.put(k, v, loc, loc)
            else:
                m.put(item, None, loc, loc)
        else:
            return value  # not a KEY=VAL list: let the schema say so
    return m


def _depends_map(value: Any) -> Any:
    if not isinstance(value, YList):
        return value
    m = YMap(value.pos)
    for i, item in enumerate(value):
        loc = value.ipos[i] if i < len(value.ipos) else None
        if not isinstance(item, str):
            return value
        m.put(item, YMap(loc), loc, loc)
    return m


def networks_map(value: Any) -> Any:
    """Service ``networks`` list form -> map form (``- front`` -> ``front: null``)."""
    if not isinstance(value, YList):
        return value
    m = YMap(value.pos)
    for i, item in enumerate(value):
        loc = value.ipos[i] if i < len(value.ipos) else None
        if not isinstance(item, str) or item in m:
            return value
        m.put(item, None, loc, loc)
    return m


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        out = YList()
        out.add(value, None)
        return out
    return value


def _unique_key(path: Path, item: Any) -> Any:
    if path[-1] == "ports":
        return port_identity(item)
    if isinstance(item, dict):
        return ("target", str(item.get("target", item.get("source"))))
    if isinstance(item, str):
        parts = item.split(":")
        return ("target", parts[1] if len(parts) > 1 else parts[0])
    return ("raw", repr(item))


def _merge_unique(path: Path, base: YList, over: YList) -> YList:
    out = clone(base)
    index: dict[Any, int] = {}
    for i, item in enumerate(out):
        index.setdefault(_unique_key(path, item), i)
    for i, item in enumerate(over):
        loc = over.ipos[i] if i < len(over.ipos) else None
        key = _unique_key(path, item)
        if key in index:
            j = index[key]
            old = out[j]
            out[j] = merge_values(path + (j,), old, item) if isinstance(old, YMap) else _fresh(item)
            out.ipos[j] = loc
        else:
            index[key] = len(out)
            out.add(_fresh(item), loc)
    return out


def merge_values(path: Path, base: Any, over: Any) -> Any:
    """The value at ``path`` after ``over`` is merged onto ``base`` (neither is modified)."""
    if _match(path, _REPLACE):
        return _fresh(over)
    if len(path) == 3 and path[0] == "services" and path[2] == "networks":
        base, over = networks_map(base), networks_map(over)
    elif len(path) == 3 and path[0] == "services" and path[2] == "depends_on":
        base, over = _depends_map(base), _depends_map(over)
    elif _match(path, _MAPPINGS):
        if isinstance(base, YList) != isinstance(over, YList):
            base, over = _as_mapping(base), _as_mapping(over)
    elif _match(path, _STRING_OR_LIST):
        base, over = _as_list(base), _as_list(over)
    elif len(path) == 3 and path[0] == "services" and path[2] == "extra_hosts":
        if isinstance(base, YMap) and isinstance(over, YList):
            base = _hosts_list(base)
        elif isinstance(base, YList) and isinstance(over, YMap):
            over = _hosts_list(over)
    if isinstance(base, YMap) and isinstance(over, YMap):
        return merge_maps(path, base, over)
    if isinstance(base, YList) and isinstance(over, YList):
        if _match(path, _UNIQUE):
            return _merge_unique(path, base, over)
        out = clone(base)
        for i, item in enumerate(over):
            out.add(_fresh(item), over.ipos[i] if i < len(over.ipos) else None)
        return out
    if over is None and isinstance(base, (YMap, YList)) and len(path) >= 2 and path[0] in (
            "services", "networks") and (len(path) == 2 or path[-2] == "networks"):
        # `web:` / `front:` with an empty body in an override adds nothing (CS-REAL-10).
        return clone(base)
    return _fresh(over)


def _fresh(value: Any) -> Any:
    return strip_tags(clone(value))


def _hosts_list(m: YMap) -> YList:
    out = YList(m.pos)
    for k, v in m.items():
        for ip in (v if isinstance(v, list) else [v]):
            out.add(f"{k}={ip}", m.vpos.get(k))
    return out


def merge_maps(path: Path, base: YMap, over: YMap) -> YMap:
    out = clone(base)
    out.tags.clear()
    for k, v in over.items():
        tag = over.tags.get(k)
        if tag == "reset":
            out.drop(k)
            continue
        if tag == "override" or k not in out:
            out.put(k, _fresh(v), over.kpos.get(k), over.vpos.get(k))
            continue
        merged = merge_values(path + (k,), out[k], v)
        keep = isinstance(out[k], (YMap, YList)) and isinstance(v, (YMap, YList))
        out.put(k, merged, out.kpos.get(k) if keep else over.kpos.get(k),
                out.vpos.get(k) if keep else over.vpos.get(k))
    return out


def merge_documents(base: YMap, over: YMap) -> YMap:
    """``-f base -f over`` (CS-MERGE-01..08)."""
    return merge_maps((), base, over)


def merge_service(base: YMap, over: YMap, name: str) -> YMap:
    """A service extending ``base`` (CS-EXT-05..08): same rules as merging files."""
    return merge_maps(("services", name), base, over)
