"""A service command for the process tests: prints what it sees (hostname, working directory,
an environment variable), then waits. With --ignore-term it ignores SIGTERM, so `down` must
SIGKILL it after stop_grace_period. Exits by itself after --max-seconds (default 600).

    python svc.py [--ignore-term] [--env NAME] [--max-seconds N]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ignore-term", action="store_true")
    ap.add_argument("--env", default="GREETING")
    ap.add_argument("--max-seconds", type=float, default=600)
    a = ap.parse_args()
    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"svc: hostname={socket.gethostname()}", flush=True)
    print(f"svc: cwd={os.getcwd()}", flush=True)
    print(f"svc: env {a.env}={os.environ.get(a.env, '<unset>')}", flush=True)
    print("svc: ready", flush=True)
    time.sleep(a.max_seconds)


if __name__ == "__main__":
    main()
