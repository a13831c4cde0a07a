"""Help text shared by the command modules (composenet.cli, composenet.netcmd)."""

from __future__ import annotations


def examples(*lines: str) -> str:
    """A command's help epilog: one example per line, kept as written.

    typer's rich help joins single line breaks of an epilog into one paragraph and keeps
    blank-line breaks, so the lines are separated by blank lines to print one per line."""
    return "\n\n".join(("Examples:", *lines))
