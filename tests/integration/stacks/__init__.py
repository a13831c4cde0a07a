"""Compose files of the `up`/`down` integration tests, and the small programs their services run.

The YAML files here are templates: ``@PY@`` is the Python interpreter, ``@ECHO@`` and ``@SVC@``
the paths of echo.py and svc.py, other ``@NAME@`` markers come from the caller. ``render`` writes
the filled-in file into a test's own directory (never into the repository).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ECHO = HERE / "echo.py"
SVC = HERE / "svc.py"


def render(name: str, dest: Path, **subst: str) -> Path:
    """Fill in stacks/<name>.yaml and write it to dest/<name>.yaml; return its path."""
    text = (HERE / f"{name}.yaml").read_text()
    values = {"PY": sys.executable, "ECHO": str(ECHO), "SVC": str(SVC), **subst}
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise ValueError(f"stacks/{name}.yaml: unfilled markers {leftover}")
    out = dest / f"{name}.yaml"
    out.write_text(text)
    return out
