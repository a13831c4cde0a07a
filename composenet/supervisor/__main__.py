"""`python -m composenet.supervisor PROJECT_DIR PROJECT READY_FD`: run a project's supervisor."""

from __future__ import annotations

import sys

from composenet.supervisor.daemon import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
