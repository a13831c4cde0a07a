"""What every stage of ``desire`` shares: planner warnings located as the loader's are, and how
Docker reads a boolean driver option, and config files' JSON text. Pure.

Must not: import the other stages of the package (they all import this one).
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _json_str  # type: ignore[attr-defined]
from typing import Any

from composenet.core.model import Pos


def warn(warnings: list[str], pos: Pos | None, path: str, message: str) -> None:
    """A planner warning located as the loader's are: ``FILE:LINE:COL: key.path: message``.
    ``pos`` is the best position the model keeps for ``path`` (as ``load.locate`` gives the
    deepest known one): a network's, service's or port's; None (e.g. the implicit default
    network) leaves just the key path."""
    where = f"{pos}: " if pos else ""
    warnings.append(f"{where}{path}: {message}")


def opt_bool(v: str | None, default: bool) -> bool:
    """A boolean driver option (``com.docker.network.bridge.enable_icc: "false"``), as Docker reads
    it; unset: ``default``. compose/validate.py refuses any other spelling before planning."""
    if v is None:
        return default
    return str(v).strip().lower() in ("1", "true", "yes", "on")


ENDPOINT_SYSCTLS = "com.docker.network.endpoint.sysctls"  # a service's per-network driver_opts
# Docker 28: per-interface sysctls only, the interface written IFNAME (replaced by the endpoint's).
ENDPOINT_SYSCTL_PREFIXES = ("net.ipv4.conf.IFNAME.", "net.ipv6.conf.IFNAME.", "net.mpls.conf.IFNAME.")


def endpoint_sysctls(text: str | None, ifname: str | None = None) -> list[tuple[str, str]]:
    """``com.docker.network.endpoint.sysctls`` (``name=value`` pairs, comma-separated) as
    (name, value), IFNAME replaced by ``ifname`` when given. Raises ValueError naming the first
    pair that is not ``name=value`` or not a per-interface sysctl (the validator locates it)."""
    out: list[tuple[str, str]] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name or not value or any(c.isspace() or c == "/" for c in name + value):
            raise ValueError(f"{item!r} is not name=value")
        if not name.startswith(ENDPOINT_SYSCTL_PREFIXES) or name.count("IFNAME") != 1:
            raise ValueError(f"{name!r} is not a per-interface sysctl: it must start with "
                             + ", ".join(ENDPOINT_SYSCTL_PREFIXES))
        out.append((name.replace("IFNAME", ifname) if ifname else name, value))
    return out


class _NotPlain(Exception):
    """A value json_text leaves to json.dumps."""


def json_text(obj: Any) -> str:
    """``json.dumps(obj, indent=1, sort_keys=True)``, the same text, at a third of its cost for
    the plain values config files hold (str-keyed dicts, lists, tuples, str, int, bool, None,
    float): json's indenting encoder is pure Python, and a resolver's config of 300 containers
    is ~20k values. Anything else (non-str keys, other types) goes to json.dumps itself."""
    out: list[str] = []
    try:
        _json(obj, out, "\n")
    except _NotPlain:
        return json.dumps(obj, indent=1, sort_keys=True)
    return "".join(out)


def _json(o: Any, out: list[str], nl: str) -> None:  # nl: newline and the current indent
    if isinstance(o, str):
        out.append(_json_str(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        out.append(json.dumps(o))
    elif isinstance(o, list | tuple):
        if not o:
            out.append("[]")
            return
        inner = nl + " "
        out.append("[")
        sep = inner
        for v in o:
            out.append(sep)
            sep = "," + inner
            _json(v, out, inner)
        out.append(nl + "]")
    elif isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        if not all(isinstance(k, str) for k in o):
            raise _NotPlain
        inner = nl + " "
        out.append("{")
        sep = inner
        for k, v in sorted(o.items()):
            out.append(sep)
            sep = "," + inner
            out.append(_json_str(k))
            out.append(": ")
            _json(v, out, inner)
        out.append(nl + "}")
    else:
        raise _NotPlain
