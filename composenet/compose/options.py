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
# The name goes into namespace and container names (<project>-<service>-<n>: DNS labels of at most
# 63 characters), link labels, the nft table name and the run directory: keep it within a label.
MAX_PROJECT_NAME = 63


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid project name (CS-NAME-03), or None. Kept here, light to
    import, so commands that only need the name (`-p NAME down`) skip the loader."""
    if not name:
        return "the project name must not be empty"
    if not _PROJECT_NAME.match(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        return (f"invalid project name {shown!r}: only lower-case letters, digits, '-' and '_', starting with "
                "a letter or a digit")
    if len(name) > MAX_PROJECT_NAME:
        return (f"project name {name[:40]}... is {len(name)} characters long: at most {MAX_PROJECT_NAME} (it becomes "
                "part of container, namespace and file names)")
    return None
