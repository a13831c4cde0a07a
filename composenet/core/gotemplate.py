"""The subset of Go's text/template that `docker ... --format` scripts use, for `composenet network
inspect --format`. Pure; no I/O.

Supported: plain text; ``{{.}}``, ``{{.A.B}}``, ``{{$}}`` and variables (``{{$v.Name}}``);
``{{range PIPELINE}}...{{else}}...{{end}}`` (``range $v := X``, ``range $k, $v := X``; a map is
walked in key order), ``{{if}}``/``{{with}}`` with ``{{else}}``; the functions json, index, len,
join, lower, upper, eq, ne, not, and pipes (``{{.Name | upper}}``); string and number literals,
parentheses; ``{{- ... -}}`` trims spaces; ``{{/* comments */}}``. Values print as Go prints
them: ``true``, ``map[k:v]``, ``[a b]``, a missing map key ``<no value>``.

Anything else is a ``TemplateError`` naming what is not supported and where, never a wrong
output. ``Struct`` marks an object that stands for a Go struct: its fields exist even when they
are left out of its JSON (``omitempty``), and an unknown field is an error, as in Go.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

FUNCTIONS = ("json", "index", "len", "join", "lower", "upper", "eq", "ne", "not")


class TemplateError(ValueError):
    pass


class Struct(dict):  # type: ignore[type-arg]
    """A Go struct as a dict: ``type_name`` for messages; ``omitted`` maps the fields left out of
    the JSON when empty to their zero values (they still exist for templates)."""

    def __init__(self, type_name: str, items: dict[str, Any], omitted: dict[str, Any] | None = None):
        super().__init__(items)
        self.type_name = type_name
        self.omitted = dict(omitted or {})


class _Missing:
    """A map key that is not there: prints ``<no value>`` (Go's text/template)."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING = _Missing()

# ---- parsing --------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<num>-?\d+(?:\.\d+)?)|(?P<var>\$[A-Za-z0-9_]*)'
                    r"(?P<vfields>(?:\.[A-Za-z0-9_]+)*)|(?P<dot>(?:\.[A-Za-z0-9_]+)+|\.)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<sym>:=|[()|,]))")


@dataclass
class _Node:
    kind: str  # text | action | range | if | with
    text: str = ""
    pipe: list[Any] = field(default_factory=list)  # commands: lists of operands
    vars: list[str] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)
    where: str = ""


def _tokens(src: str, where: str) -> list[tuple[str, str]]:
    out = []
    i = 0
    while i < len(src):
        if src[i:].strip() == "":
            break
        m = _TOKEN.match(src, i)
        if m is None or m.end() == i:
            raise TemplateError(f"{where}: cannot parse {src[i:].strip()!r}")
        kind = m.lastgroup or ""
        if kind == "vfields":
            kind = "var"
        text = m.group(kind) if kind != "var" else m.group("var") + (m.group("vfields") or "")
        out.append((kind, text))
        i = m.end()
    return out


def _split_actions(template: str) -> list[tuple[str, str, int]]:
    """(text | action, content, offset) with Go's trim markers applied."""
    parts: list[tuple[str, str, int]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        if parts and parts[-1][0] == "trim":
            parts.pop()
            text = text.lstrip()
        parts.append(("text", text, pos))
        parts.append(("action", m.group(2).strip(), m.start()))
        if m.group(3):
            parts.append(("trim", "", m.end()))
        pos = m.end()
    rest = template[pos:]
    if parts and parts[-1][0] == "trim":
        parts.pop()
        rest = rest.lstrip()
    if "{{" in rest:
        raise TemplateError(f"col {pos + rest.index('{{') + 1}: unclosed action")
    parts.append(("text", rest, pos))
    return [p for p in parts if p[0] != "text" or p[1]]


def parse(template: str) -> list[_Node]:
    """The template's nodes; TemplateError for anything outside the subset."""
    return _parse_list(_split_actions(template), 0, top=True)[0]


def _parse_list(parts: list[tuple[str, str, int]], i: int, top: bool = False) -> tuple[list[_Node], int]:
    """Nodes until an ``end`` or ``else`` at this level (returned index points at it)."""
    out: list[_Node] = []
    while i < len(parts):
        kind, content, pos = parts[i]
        where = f"col {pos + 1}"
        if kind == "text":
            out.append(_Node("text", text=content))
            i += 1
            continue
        if content.startswith("/*"):
            if not content.endswith("*/"):
                raise TemplateError(f"{where}: unclosed comment")
            i += 1
            continue
        word = content.split(None, 1)[0] if content else ""
        if word in ("end", "else"):
            if top:
                raise TemplateError(f"{where}: {{{{{word}}}}} without range, if or with")
            return out, i
        if word in ("range", "if", "with"):
            node, i = _parse_block(parts, i, word, content[len(word):], where)
            out.append(node)
            continue
        if word in ("define", "template", "block", "break", "continue"):
            raise TemplateError(f"{where}: {{{{{word}}}}} is not supported (supported: range, if, with, else, end)")
        out.append(_Node("action", pipe=_parse_pipe(_tokens(content, where), where), where=where))
        i += 1
    if not top:
        raise TemplateError("missing {{end}}")
    return out, i


def _parse_block(parts: list[tuple[str, str, int]], i: int, word: str, rest: str, where: str) -> tuple[_Node, int]:
    toks = _tokens(rest, where)
    names: list[str] = []
    if any(t == (("sym", ":=")) for t in toks):
        k = toks.index(("sym", ":="))
        names = [t[1] for t in toks[:k] if t[0] == "var"]
        if word != "range" or not 1 <= len(names) <= 2:
            raise TemplateError(f"{where}: only `range $v := X` and `range $k, $v := X` declare variables")
        toks = toks[k + 1:]
    if not toks:
        raise TemplateError(f"{where}: {{{{{word}}}}} needs a value")
    node = _Node(word, pipe=_parse_pipe(toks, where), vars=names, where=where)
    node.body, i = _parse_list(parts, i + 1)
    if parts[i][1] == "else":
        node.orelse, i = _parse_list(parts, i + 1)
    if i >= len(parts) or parts[i][1] != "end":
        raise TemplateError(f"{where}: {{{{{word}}}}} without {{{{end}}}}")
    return node, i + 1


def _parse_pipe(toks: list[tuple[str, str]], where: str) -> list[list[Any]]:
    """Commands separated by ``|``; each a list of operands (a nested pipe for parentheses)."""
    cmds: list[list[Any]] = [[]]
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        if kind == "sym" and text == "|":
            cmds.append([])
        elif kind == "sym" and text == "(":
            depth, j = 1, i + 1
            while j < len(toks) and depth:
                depth += {"(": 1, ")": -1}.get(toks[j][1], 0) if toks[j][0] == "sym" else 0
                j += 1
            if depth:
                raise TemplateError(f"{where}: unclosed parenthesis")
            inner = _parse_pipe(toks[i + 1: j - 1], where)
            fields = ""
            if j < len(toks) and toks[j][0] == "dot" and toks[j][1] != ".":
                fields, j = toks[j][1], j + 1
            cmds[-1].append(("paren", inner, fields))
            i = j
            continue
        elif kind == "sym":
            raise TemplateError(f"{where}: unexpected {text!r}")
        elif kind == "ident" and text not in FUNCTIONS and text not in ("true", "false", "nil"):
            raise TemplateError(f"{where}: function {text!r} is not supported (supported: {', '.join(FUNCTIONS)})")
        else:
            cmds[-1].append((kind, text))
        i += 1
    if any(not c for c in cmds):
        raise TemplateError(f"{where}: empty command")
    return cmds


# ---- evaluation -----------------------------------------------------------------------------


def _field(value: Any, name: str, where: str) -> Any:
    if isinstance(value, Struct):
        if name in value:
            return value[name]
        if name in value.omitted:
            return value.omitted[name]
        raise TemplateError(f"{where}: can't evaluate field {name} in type {value.type_name}")
    if isinstance(value, dict):
        return value.get(name, MISSING)
    if value is None or value is MISSING:
        raise TemplateError(f"{where}: nil value evaluating .{name}")
    raise TemplateError(f"{where}: can't evaluate field {name} in a {_type(value)}")


def _fields(value: Any, path: str, where: str) -> Any:
    for name in [p for p in path.split(".") if p]:
        value = _field(value, name, where)
    return value


def _type(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float64", str: "string", list: "slice"}.get(type(v), type(v).__name__)


def truth(v: Any) -> bool:
    return not (v is None or v is MISSING or v is False or v == 0 or v == "" or v == [] or v == {})


def show(v: Any) -> str:
    """A value as Go's fmt prints it (%v)."""
    if v is MISSING:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v).removesuffix(".0") if v.is_integer() else repr(v)
    if isinstance(v, Struct):
        return "{" + " ".join(show(x) for x in v.values()) + "}"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{show(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list | tuple):
        return "[" + " ".join(show(x) for x in v) + "]"
    return str(v)


def jsonable(v: Any) -> Any:
    """``v`` as Go's encoding/json would see it: a Struct keeps its field order and leaves out
    its ``omitted`` fields when empty; a map's keys are sorted; a missing value is null."""
    if v is MISSING:
        return None
    if isinstance(v, Struct):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, dict):
        return {str(k): jsonable(v[k]) for k in sorted(v, key=str)}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v


def to_json(v: Any) -> str:
    """Docker's ``json`` function: compact, no HTML escaping, Go's null for nil."""
    return json.dumps(jsonable(v), separators=(",", ":"), ensure_ascii=False)


class _Scope:
    def __init__(self, root: Any):
        self.vars: list[dict[str, Any]] = [{"$": root}]

    def get(self, name: str, where: str) -> Any:
        for frame in reversed(self.vars):
            if name in frame:
                return frame[name]
        raise TemplateError(f"{where}: undefined variable {name}")


def _operand(op: Any, dot: Any, scope: _Scope, where: str) -> Any:
    kind, text = op[0], op[1]
    if kind == "paren":
        return _fields(_pipe(text, dot, scope, where), op[2], where)
    if kind == "dot":
        return dot if text == "." else _fields(dot, text, where)
    if kind == "var":
        name, _, path = text.partition(".")
        return _fields(scope.get(name, where), path, where)
    if kind == "str":
        return json.loads(text) if text.startswith('"') else text[1:-1]
    if kind == "num":
        return float(text) if "." in text else int(text)
    if kind == "ident" and text in ("true", "false", "nil"):
        return {"true": True, "false": False, "nil": None}[text]
    raise TemplateError(f"{where}: {text} is a function; it cannot be a value here")


def _call(name: str, args: list[Any], where: str) -> Any:
    def need(n: int) -> None:
        if len(args) != n:
            raise TemplateError(f"{where}: {name} takes {n} argument(s), got {len(args)}")

    if name == "json":
        need(1)
        return to_json(args[0])
    if name == "len":
        need(1)
        if not isinstance(args[0], list | tuple | dict | str):
            raise TemplateError(f"{where}: len of a {_type(args[0])}")
        return len(args[0])
    if name == "index":
        if len(args) < 2:
            raise TemplateError(f"{where}: index takes a value and at least one key")
        v = args[0]
        for key in args[1:]:
            if isinstance(v, dict):
                v = v.get(key, MISSING)
            elif isinstance(v, list | tuple) and isinstance(key, int):
                if not 0 <= key < len(v):
                    raise TemplateError(f"{where}: index out of range: {key}")
                v = v[key]
            else:
                raise TemplateError(f"{where}: cannot index a {_type(v)} with {key!r}")
        return v
    if name == "join":
        need(2)
        if not isinstance(args[0], list | tuple):
            raise TemplateError(f"{where}: join needs a list, not a {_type(args[0])}")
        return str(args[1]).join(show(x) for x in args[0])
    if name in ("lower", "upper"):
        need(1)
        return str(args[0]).lower() if name == "lower" else str(args[0]).upper()
    if name in ("eq", "ne"):
        need(2)
        return (args[0] == args[1]) == (name == "eq")
    need(1)  # not
    return not truth(args[0])


def _pipe(cmds: list[list[Any]], dot: Any, scope: _Scope, where: str) -> Any:
    value: Any = None
    for n, cmd in enumerate(cmds):
        head = cmd[0]
        if head[0] == "ident" and head[1] in FUNCTIONS:
            args = [_operand(op, dot, scope, where) for op in cmd[1:]] + ([value] if n else [])
            value = _call(head[1], args, where)
        else:
            if len(cmd) > 1 or n:
                raise TemplateError(f"{where}: {head[1]} is not a function")
            value = _operand(head, dot, scope, where)
    return value


def _run(nodes: list[_Node], dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "action":
            out.append(show(_pipe(node.pipe, dot, scope, node.where)))
        elif node.kind in ("if", "with"):
            v = _pipe(node.pipe, dot, scope, node.where)
            branch = node.body if truth(v) else node.orelse
            _run(branch, v if node.kind == "with" and truth(v) else dot, scope, out)
        else:
            _range(node, dot, scope, out)


def _range(node: _Node, dot: Any, scope: _Scope, out: list[str]) -> None:
    v = _pipe(node.pipe, dot, scope, node.where)
    if v is None or v is MISSING:
        items: list[tuple[Any, Any]] = []
    elif isinstance(v, dict):
        items = [(k, v[k]) for k in sorted(v)]
    elif isinstance(v, list | tuple):
        items = list(enumerate(v))
    elif isinstance(v, int) and not isinstance(v, bool):
        items = [(i, i) for i in range(v)]
    else:
        raise TemplateError(f"{node.where}: range can't iterate over {show(v)}")
    if not items:
        _run(node.orelse, dot, scope, out)
        return
    for key, item in items:
        frame = {}
        if len(node.vars) == 1:
            frame[node.vars[0]] = item
        elif len(node.vars) == 2:
            frame[node.vars[0]], frame[node.vars[1]] = key, item
        scope.vars.append(frame)
        try:
            _run(node.body, item, scope, out)
        finally:
            scope.vars.pop()


def render(template: str, data: Any) -> str:
    """``template`` executed with ``data`` as dot (and ``$``). Raises TemplateError."""
    nodes = parse(template)
    out: list[str] = []
    _run(nodes, data, _Scope(data), out)
    return "".join(out)
