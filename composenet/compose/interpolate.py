"""Variable interpolation (CS-INT-*) and ``.env`` / ``env_file`` parsing (CS-INT-15).

Owns: ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``, ``${VAR:?e}``, ``${VAR?e}``, ``${VAR:+a}``,
``${VAR+a}``, nesting and ``$$``, applied to every value (never to keys) of one file; the dotenv
format. Must not: read the process environment itself (callers pass the mapping), or touch
anything but the env files it is asked to read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from composenet.compose.ytree import Loc, Path, YList, YMap, fmt_path
from composenet.errors import Problem

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_OPS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(Exception):
    pass


Lookup = Callable[[str], str | None]


def _braced_end(s: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` whose body starts at ``start`` (nesting aware)."""
    depth = 1
    i = start
    while i < len(s):
        c = s[i]
        if c == "$" and i + 1 < len(s) and s[i + 1] == "$":
            i += 2
            continue
        if c == "$" and i + 1 < len(s) and s[i + 1] == "{":
            depth += 1
            i += 2
            continue
        if c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError("missing closing brace '}'")


def substitute(s: str, lookup: Lookup, unset: Callable[[str], None] | None = None) -> str:
    """Interpolate ``s``. ``unset(name)`` is called for a variable with no value and no default
    (CS-INT-08: it becomes the empty string). Raises InterpolationError."""
    if "$" not in s:
        return s
    out: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c != "$":
            j = s.find("$", i)
            j = n if j < 0 else j
            out.append(s[i:j])
            i = j
            continue
        nxt = s[i + 1] if i + 1 < n else ""
        if nxt == "$":  # CS-INT-07
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = _braced_end(s, i + 2)
            out.append(_braced(s[i + 2:end], lookup, unset))
            i = end + 1
            continue
        m = _NAME.match(s, i + 1)
        if m:
            name = m.group(0)
            v = lookup(name)
            if v is None:
                if unset:
                    unset(name)
                v = ""
            out.append(v)
            i = m.end()
            continue
        out.append("$")  # CS-INT-06: any other `$` is literal
        i += 1
    return "".join(out)


def _braced(body: str, lookup: Lookup, unset: Callable[[str], None] | None) -> str:
    m = _NAME.match(body)
    if not m:
        raise InterpolationError(f"invalid variable name in '${{{body}}}'")
    name = m.group(0)
    rest = body[m.end():]
    value = lookup(name)
    if not rest:
        if value is None:
            if unset:
                unset(name)
            return ""
        return value
    op = next((o for o in _OPS if rest.startswith(o)), None)
    if op is None:
        raise InterpolationError(f"unsupported expansion '${{{body}}}' (only :- - :? ? :+ + are supported, "
                                 "CS-INT-05)")
    arg = rest[len(op):]

    def expand(text: str) -> str:
        return substitute(text, lookup, unset)

    if op == ":-":
        return value if value else expand(arg)
    if op == "-":
        return value if value is not None else expand(arg)
    if op == ":+":
        return expand(arg) if value else ""
    if op == "+":
        return expand(arg) if value is not None else ""
    # ? and :? -> required
    if (op == ":?" and not value) or (op == "?" and value is None):
        msg = expand(arg)
        raise InterpolationError(f"required variable {name} is missing a value" + (f": {msg}" if msg else ""))
    return value or ""


# Values whose schema type is not a string, but which users write as "${VAR}" (compose-go casts
# them after interpolation the same way).
_INT_KEYS = {"priority", "gw_priority"}
_BOOL_KEYS = {"required"}


def _cast(key: str | int, value: str) -> Any:
    if key in _INT_KEYS and re.fullmatch(r"[-+]?[0-9]+", value.strip()):
        return int(value)
    if key in _BOOL_KEYS and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def interpolate_tree(doc: Any, env: Mapping[str, str], problems: list[Problem],
                     warnings: dict[str, str]) -> Any:
    """Interpolate every string value of ``doc`` in place (keys are never interpolated, CS-INT-10).

    Errors become located Problems; unset variables become one warning per variable name."""

    def lookup(name: str) -> str | None:
        return env.get(name)

    def visit(container: Any, path: Path) -> None:
        items: list[tuple[Any, Any]]
        if isinstance(container, YMap):
            items = list(container.items())
        elif isinstance(container, YList):
            items = list(enumerate(container))
        else:
            return
        for k, v in items:
            p = path + (k,)
            if isinstance(v, str) and "$" in v:
                loc = (container.vpos.get(k) if isinstance(container, YMap)
                       else container.ipos[k] if k < len(container.ipos) else None)

                def unset(name: str, loc: Loc | None = loc, p: Path = p) -> None:
                    if name not in warnings:
                        where = f"{loc}: " if loc else ""
                        warnings[name] = (f"{where}{fmt_path(p)}: variable {name} is not set; using an empty "
                                          "string [CS-INT-08]")

                try:
                    new = substitute(v, lookup, unset)
                except InterpolationError as e:
                    problems.append(Problem(f"invalid interpolation in {v!r}: {e}",
                                            file=loc.file if loc else None, line=loc.line if loc else None,
                                            col=loc.col if loc else None, path=fmt_path(p), rule="CS-INT-03"))
                    continue
                container[k] = _cast(k, new)
            elif isinstance(v, (YMap, YList)):
                visit(v, p)

    visit(doc, ())
    return doc


# ---- dotenv -------------------------------------------------------------------------------------

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-\[\]]*$")
_DQ_ESC = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$$"}


def parse_dotenv(text: str, file: str, lookup: Lookup,
                 bare: Callable[[str], str | None] | None = None) -> list[tuple[str, str]]:
    """Parse the env-file format (CS-INT-15) into (key, value) pairs in file order.

    Unquoted and double-quoted values are interpolated with earlier keys of the file, then
    ``lookup``; single-quoted values are literal. A bare ``KEY`` takes ``bare(KEY)`` or is dropped.
    Raises ValueError("LINE: message")."""
    out: list[tuple[str, str]] = []
    local: dict[str, str] = {}

    def look(name: str) -> str | None:
        return local[name] if name in local else lookup(name)

    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        lineno = i + 1
        raw = lines[i]
        i += 1
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[7:].lstrip()
        if "=" not in line:
            key = line.split("#", 1)[0].strip()
            if not _ENV_KEY.match(key):
                raise ValueError(f"{lineno}: invalid variable name {key!r}")
            if bare:
                v = bare(key)
                if v is not None:
                    out.append((key, v))
                    local[key] = v
            continue
        key, _, rest = line.partition("=")
        key = key.strip()
        if not _ENV_KEY.match(key):
            raise ValueError(f"{lineno}: invalid variable name {key!r}")
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            q = rest[0]
            body = rest[1:]
            # Quoted values may span lines.
            while True:
                j = _closing_quote(body, q)
                if j >= 0:
                    break
                if i >= len(lines):
                    raise ValueError(f"{lineno}: unterminated {q} quote")
                body += "\n" + lines[i]
                i += 1
            value = body[:j]
            if q == '"':
                value = re.sub(r"\\(.)", lambda m: _DQ_ESC.get(m.group(1), "\\" + m.group(1)), value)
                try:
                    value = substitute(value, look)
                except InterpolationError as e:
                    raise ValueError(f"{lineno}: {e}") from None
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
            try:
                value = substitute(value, look)
            except InterpolationError as e:
                raise ValueError(f"{lineno}: {e}") from None
        out.append((key, value))
        local[key] = value
    return out


def _closing_quote(body: str, q: str) -> int:
    j = 0
    while j < len(body):
        if body[j] == "\\" and q == '"':
            j += 2
            continue
        if body[j] == q:
            return j
        j += 1
    return -1
