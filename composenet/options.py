"""Options that select and load a project (the global CLI flags), as plain data."""

from __future__ import annotations

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
