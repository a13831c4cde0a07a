"""Validate a compose document against schemas/compose.schema.json (JSON Schema 2020-12).

Owns: loading the schema, turning jsonschema errors into located Problems with short messages,
the lists of keys composenet interprets / ignores (read from the schema itself, so one table
drives both), and ``validation_key``: the fingerprint of a document as the validator sees it,
under which a caller may remember that it passed. Must not: change the document, or import
jsonschema before a document is actually validated (`composenet --help`, and a load whose
documents all passed before, never pay for it).
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import re
from functools import lru_cache
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

import composenet
from composenet.compose.load import Path, plain, problem_at
from composenet.errors import Problem
from composenet.paths import schema_text

if TYPE_CHECKING:
    import jsonschema
    from jsonschema.exceptions import ValidationError

SCHEMA_NAME = "compose.schema.json"
# Bump when validate_paths starts checking something the schema text does not say (a format
# checker, say): a key remembered by an older composenet must then no longer match.
_KEY_FORMAT = 1


def load_schema(name: str) -> dict[str, Any]:
    """One of the JSON schemas in schemas/ (compose, plan, observed), parsed."""
    result: dict[str, Any] = json.loads(schema_text(name))
    return result


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return schema_text(SCHEMA_NAME)


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_schema_text())
    return result


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    import jsonschema  # deferred: ~60 ms to import; a load whose documents all passed before skips it

    return jsonschema.Draft202012Validator(schema())


@lru_cache(maxsize=1)
def _validator_identity() -> bytes:
    """What, besides the document, decides the outcome of validate_paths: the schema's text, this
    composenet, and the installed jsonschema and referencing (its $ref resolver), found but not
    imported: a package's modification time changes when it is upgraded."""
    installed = []
    for package in ("jsonschema", "referencing"):
        spec = find_spec(package)
        try:
            installed.append(f"{spec.origin}:{os.stat(spec.origin).st_mtime_ns}" if spec and spec.origin else "-")
        except OSError:
            installed.append("?")
    head = "\0".join((str(_KEY_FORMAT), composenet.__version__, *installed, "")).encode()
    return head + hashlib.sha256(_schema_text().encode()).digest()


def validation_key(doc: Any) -> str | None:
    """A digest of ``doc`` as validate_paths would check it, or None if ``doc`` holds a value that
    cannot be fingerprinted (then nothing may be skipped).

    validate_paths is a pure function of the document and of ``_validator_identity``; the key
    covers both, so two documents with one key get the same verdict, whatever files, variables,
    profiles or includes produced them. marshal (format 2: no back-references, so the bytes
    depend only on the values) encodes each value with its exact type (1, "1", 1.0 and True
    differ, keys included) and refuses any other type, str and dict subclasses included."""
    try:
        data = marshal.dumps(plain(doc), 2)
    except ValueError:
        return None
    return hashlib.sha256(_validator_identity() + data).hexdigest()


def _props(defn: dict[str, Any]) -> tuple[set[str], set[str]]:
    known = set(defn.get("properties", {}))
    ignored = {k for k, v in defn.get("properties", {}).items() if v.get("x-composenet-ignored")}
    return known, ignored


def top_level_keys() -> tuple[set[str], set[str]]:
    """(known, ignored) top-level keys."""
    return _props(schema())


def service_keys() -> tuple[set[str], set[str]]:
    return _props(schema()["$defs"]["service"])


def deploy_keys() -> tuple[set[str], set[str]]:
    return _props(schema()["$defs"]["deployment"])


_JSON_TYPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}
_SCHEMA_TYPES = {"object": "a mapping", "array": "a list", "string": "a string", "boolean": "a boolean",
                 "integer": "an integer", "number": "a number", "null": "null"}


def _what(v: Any) -> str:
    for t, name in _JSON_TYPES.items():
        if isinstance(v, t):
            return name
    return type(v).__name__


def _leaf(err: ValidationError) -> ValidationError:
    """For oneOf/anyOf, the most relevant error among the alternatives."""
    from jsonschema.exceptions import best_match  # deferred: jsonschema is imported only to validate

    while err.validator in ("oneOf", "anyOf") and err.context:
        # Prefer the alternative whose type matched the value (the deepest error).
        deeper = [e for e in err.context
                  if e.validator != "type" or len(e.absolute_path) > len(err.absolute_path)]
        nxt = best_match(deeper or err.context)
        if nxt is None or nxt is err:
            break
        if nxt.validator == "type" and not deeper:
            return err
        err = nxt
    return err


def _message(err: ValidationError, doc: Any) -> tuple[Path, str, str | None, bool]:
    """(path, message, hint, point at key)."""
    path: Path = tuple(err.absolute_path)
    v = err.validator
    inst = err.instance
    if v in ("oneOf", "anyOf"):
        kinds = []
        for sub in err.validator_value:
            t = sub.get("type") if isinstance(sub, dict) else None
            if isinstance(t, str):
                kinds.append(_SCHEMA_TYPES.get(t, t))
            elif isinstance(sub, dict) and "$ref" in sub:
                kinds.append(sub["$ref"].split("/")[-1].replace("_", " "))
        return path, f"invalid value ({_what(inst)})" + (f"; expected {' or '.join(kinds)}" if kinds else ""), None, False
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        return path, f"must be {' or '.join(_SCHEMA_TYPES.get(str(t), str(t)) for t in want)}, not {_what(inst)}", None, False
    if v == "additionalProperties" and isinstance(inst, dict):
        allowed = set(err.schema.get("properties", {}))
        pats = [re.compile(p) for p in err.schema.get("patternProperties", {})]
        extra = [k for k in inst if k not in allowed and not any(p.search(k) for p in pats)]
        k = extra[0] if extra else "?"
        hint = None
        if path and path[-1] in ("services", "networks") and len(path) == 1:
            hint = "names may contain only letters, digits, '.', '_' and '-'"
        elif allowed:
            hint = "allowed keys: " + ", ".join(sorted(allowed))
        return path + (k,), f"unknown key {k!r}", hint, True
    if v == "required":
        return path, err.message.replace("is a required property", "is required"), None, False
    if v == "enum":
        return path, f"must be one of {', '.join(map(str, err.validator_value))}, not {inst!r}", None, False
    if v == "uniqueItems":
        return path, "has duplicate entries", None, False
    return path, err.message, None, False


def validate(doc: Any, default_file: str | None = None) -> list[Problem]:
    """Every schema violation of ``doc`` as a located Problem (sorted by position)."""
    return [p for _, p in validate_paths(doc, default_file)]


def validate_paths(doc: Any, default_file: str | None = None) -> list[tuple[Path, Problem]]:
    """Every schema violation of ``doc``, each with the key path of the value it is about (so that
    callers can set that part of the document aside and still check the rest)."""
    out: list[tuple[Path, Problem]] = []
    seen: set[tuple[str | None, str]] = set()
    for err in _validator().iter_errors(doc):
        leaf = _leaf(err)
        path, msg, hint, key = _message(leaf, doc)
        p = problem_at(doc, path, msg, hint=hint, key=key, default_file=default_file)
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append((path, p))
    return out
