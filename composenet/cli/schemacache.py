"""Where the CLI keeps the schema verdicts of earlier runs (``compose.project.SchemaCache``): a
small host-wide file in the run directory, ``<run_dir>/.validated``, one key per line, newest
first, at most ``KEEP`` keys.

Why host-wide and not per project: a key is a digest of a document as the JSON-schema validator
sees it (``compose.schema.validation_key``), so it does not depend on which project, file,
directory or user produced the document, and a verdict is true wherever it is read. The
project's name is only known once its files are read (``name:``, the directory), which is after
the first document must be validated or skipped: one file keyed by content needs no name.

Best effort both ways: an unreadable, damaged or missing file is an empty cache (everything is
validated), and a run that cannot write it (a user without write access to the run directory,
`plan --offline` as a non-root user) carries on without storing anything. Nothing here creates
the run directory: a machine where composenet never ran `up` keeps no cache. Must not: store a
key the loader did not report as passed in a load that succeeded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from composenet.paths import VALIDATED

KEEP = 256  # keys kept: a few per project (one per compose file), for many projects and edits
_MAX_BYTES = KEEP * 65 + 1
_KEY = re.compile(r"[0-9a-f]{64}")


def cache_path(run_dir: str) -> str:
    return os.path.join(run_dir, VALIDATED)


def read_keys(run_dir: str) -> list[str]:
    """The keys stored under ``run_dir``, newest first; [] if there is no readable cache."""
    try:
        with open(cache_path(run_dir), encoding="ascii") as f:
            text = f.read(_MAX_BYTES)
    except (OSError, UnicodeDecodeError):
        return []
    return [line for line in text.split("\n") if _KEY.fullmatch(line)]


def store_keys(run_dir: str, known: list[str], passed: Iterable[str]) -> None:
    """Add ``passed`` (keys of a load that succeeded) in front of ``known`` (what read_keys gave)
    and write the file, unless nothing is new. Atomic (a private temporary file renamed over the
    cache), so a concurrent reader sees the old or the new file; two concurrent writers may lose
    each other's new keys, which only costs a validation later."""
    old = set(known)
    new = [k for k in dict.fromkeys(passed) if k not in old]
    if not new or not os.path.isdir(run_dir):
        return
    keys = [*new, *known][:KEEP]
    tmp = f"{cache_path(run_dir)}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write("\n".join(keys) + "\n")
        os.replace(tmp, cache_path(run_dir))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
