"""Write compose files into a temporary directory and load them (shared by the unit tests)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from composenet.compose.options import LoadOptions
from composenet.compose.project import load_project
from composenet.core.model import Project
from composenet.errors import InputError


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def load(d: Path, *files: str, env: dict[str, str] | None = None, **kw) -> Project:
    return load_project(LoadOptions(files=files, cwd=str(d), environ=env or {}, **kw))


def load_text(d: Path, text: str, env: dict[str, str] | None = None, **kw) -> Project:
    write(d, "compose.yaml", text)
    return load(d, "compose.yaml", env=env, **kw)


def errors(d: Path, text: str, env: dict[str, str] | None = None, **kw) -> str:
    write(d, "compose.yaml", text)
    with pytest.raises(InputError) as ei:
        load(d, "compose.yaml", env=env, **kw)
    return str(ei.value)
