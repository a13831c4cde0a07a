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
