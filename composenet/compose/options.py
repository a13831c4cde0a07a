"""Options that select and load a project (the global CLI flags), as plain data, and the
check of a project name. Must not: import the loader (the CLI imports this module on every
command; loading is deferred until a command needs it)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadOptions:
    files: tuple[str, ...] = ()  # -f, in order; empty = COMPOSE_FILE or default lookup
    project_name: str | None = None  # -p
    env_files: tuple[str, ...] = ()  # --env-file (replaces the default .env)
    profiles: tuple[str, ...] = ()  # --profile (added to COMPOSE_PROFILES)
    cwd: str | None = None  # default: os.getcwd()
    environ: Mapping[str, str] | None = None  # default: os.environ


_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid project name (CS-NAME-03), or None. Kept here, light to
    import, so commands that only need the name (`-p NAME down`) skip the loader."""
    if not name:
        return "the project name must not be empty"
    if not _PROJECT_NAME.match(name):
        return (f"invalid project name {name!r}: only lower-case letters, digits, '-' and '_', starting with "
                "a letter or a digit")
    return None
