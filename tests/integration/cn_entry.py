"""`python -m tests.integration.cn_entry ARGS`: composenet's own entry point with the commands of
composenet/cli/check.py and composenet/cli/graph.py registered, for the tests of those commands
until composenet/cli/__init__.py imports them itself (then this is `python -m composenet`)."""

from __future__ import annotations

import sys

import composenet.cli.check  # noqa: F401 -- registers `check`
import composenet.cli.graph  # noqa: F401 -- registers `graph`
from composenet.cli import main

if __name__ == "__main__":
    sys.argv[0] = "composenet"
    main()
