"""Helpers for the integration tests of `composenet check` and `composenet graph`: run them inside
a sandbox's host namespace, and write the small stacks the tests bring up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.sandbox import Sandbox
from tests.integration.stacks import ECHO

ROOT = Path(__file__).resolve().parents[2]


def env_for(sb: Sandbox) -> dict[str, str]:
    """The environment of a composenet run in the sandbox: its upstream resolv.conf, and this
    checkout on the Python path."""
    env = dict(os.environ)
    env["COMPOSENET_RESOLV_CONF"] = str(sb.resolv_conf)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def cn(sb: Sandbox, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``composenet ARGS`` in the sandbox's host namespace; never raises on a non-zero exit (check exits 1 when an expectation fails)."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{sb.host}", sys.executable, "-m",
                           "composenet", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(sb.tmp), env=env_for(sb))


def check(sb: Sandbox, compose: Path, project: str, *args: str) -> subprocess.CompletedProcess:
    return cn(sb, "-f", str(compose), "-p", project, "check", *args)


def check_json(sb: Sandbox, compose: Path, project: str, *args: str) -> tuple[int, list[dict[str, Any]]]:
    r = check(sb, compose, project, "--format", "json", *args)
    assert r.returncode in (0, 1), f"check exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.returncode, json.loads(r.stdout)


def write(tmp: Path, name: str, text: str) -> Path:
    """A compose file: ``@PY@`` and ``@ECHO@`` filled in."""
    path = tmp / name
    path.write_text(text.replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO)))
    return path
