"""What every command module shares: help text, option types, and how errors and files given on
the command line are reported. Light: imports typer and the standard library only, so that
`composenet --help` pays for nothing else.

Help is rendered by click's plain formatter (``rich_markup_mode=None`` on every Typer app):
typer would otherwise render it through rich, whose import alone costs more than the rest of
`composenet --help`. Each command gets a ``short_help`` (one line in the command lists) and an
``examples`` epilog."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, NoReturn

import typer


class Format(str, Enum):
    """``--format``: text for people, json for programs."""

    text = "text"
    json = "json"


def examples(*lines: str) -> str:
    """A command's help epilog: one example per line, kept as written.

    click rewraps each paragraph of an epilog, joining its lines, except a paragraph whose first
    line is ``\\b`` (click's no-rewrap marker, dropped from the output)."""
    return "\n".join(("\b", "Examples:", *(f"  {line}" for line in lines)))


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def echo_err(text: str) -> None:
    typer.echo(text, err=True)


def read_json(path: str, what: str) -> Any:
    """A JSON file given on the command line; a clear error (never a traceback) if it is not."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        fail(f"cannot read {what} {path}: {e.strerror or e}")
    except (UnicodeDecodeError, ValueError) as e:
        fail(f"{path}: not a JSON {what}: {e}")


def write_file(path: str, text: str, what: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        fail(f"cannot write {what} {path}: {e.strerror or e}")
