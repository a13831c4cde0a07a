"""Help text and option types shared by the command modules (composenet.cli, composenet.netcmd).
Light: imports nothing of the pipeline."""

from __future__ import annotations

from enum import Enum


class Format(str, Enum):
    """``--format``: text for people, json for programs."""

    text = "text"
    json = "json"


def examples(*lines: str) -> str:
    """A command's help epilog: one example per line, kept as written.

    typer's rich help joins single line breaks of an epilog into one paragraph and keeps
    blank-line breaks, so the lines are separated by blank lines to print one per line."""
    return "\n\n".join(("Examples:", *lines))
