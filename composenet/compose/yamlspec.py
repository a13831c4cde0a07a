"""What YAML means to composenet: the YAML 1.2 core schema Compose reads with, the tags it knows,
the limits that keep hostile input harmless, and the dumper that writes what reads back the same.

Shared by both ways load.py parses a file (the pure-Python reference path and the libyaml fast
path in fastyaml.py) and by `composenet config` (render_config.py), so that they cannot disagree.

Why not ``yaml.safe_load``: PyYAML's default resolver is YAML 1.1, which reads an unquoted
``22:22`` as the integer 1342 and ``on``/``no`` as booleans (CS-PORT-06, CS-YAML-05). Compose's
reference loader is YAML 1.2, so we install the 1.2 core-schema resolvers instead.

Must not: read files or build trees (load.py and fastyaml.py do).
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

MAX_BYTES = 16 * 1024 * 1024  # a compose file is a few KB; refuse anything absurd
MAX_DEPTH = 64  # real files nest < 10 levels; PyYAML's composer is recursive
MAX_NODES = 1_000_000  # bounds alias expansion ("billion laughs")

CORE_TAG = "tag:yaml.org,2002:"  # prefix of the core schema's tags
STR_TAG = CORE_TAG + "str"
MERGE_TAG = CORE_TAG + "merge"
KNOWN_TAGS = {"!reset": "reset", "!override": "override"}  # Compose's merge tags (CS-MERGE-07/08)


# ---- YAML 1.2 core-schema resolver ------------------------------------------------------------

class CoreResolver(yaml.resolver.BaseResolver):
    """PyYAML's resolver with the YAML 1.2 core schema's implicit tags instead of 1.1's."""


CoreResolver.yaml_implicit_resolvers = {}
IMPLICIT = [
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
for _tag, _rx, _first in IMPLICIT:
    CoreResolver.add_implicit_resolver(_tag, _rx, _first)


def resolve_scalar(value: str, plain: bool) -> str:
    """``CoreResolver.resolve`` for a scalar, faster (no path resolvers, no wildcard resolvers)."""
    if plain:
        for tag, rx in CoreResolver.yaml_implicit_resolvers.get(value[0] if value else "", ()):
            if rx.match(value):
                return str(tag)
    return STR_TAG


def convert(tag: str, v: str) -> Any:
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


# ---- writing --------------------------------------------------------------------------------------

class Dumper(yaml.SafeDumper):
    """Quotes every string that a YAML 1.1 *or* 1.2 reader would take for something else, so
    that what `composenet config` prints reads back identically (e.g. ``"0o17"``, ``"22:22"``)."""


for _tag, _rx, _first in IMPLICIT:
    Dumper.add_implicit_resolver(_tag, _rx, _first)


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


Dumper.add_representer(str, _str_presenter)
