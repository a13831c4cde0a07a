"""What every stage of ``desire`` shares: planner warnings located as the loader's are, and how
Docker reads a boolean driver option. Pure.

Must not: import the other stages of the package (they all import this one).
"""

from __future__ import annotations

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
