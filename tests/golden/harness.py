"""Shared by the golden tests and `make golden`: plan a case directory offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from composenet.compose.options import LoadOptions
from composenet.compose.project import load_project
from composenet.core.desired import Upstreams
from composenet.core.diff import digest
from composenet.core.render import render_json, render_text
from composenet.core.resources import NftTable
from composenet.core.state import DesiredState, ObservedState
from composenet.pipeline import make_plan

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
# Documentation addresses (RFC 5737): written into resolver configs, never contacted.
UPSTREAMS = Upstreams(("192.0.2.53",))
ENV = {"PATH": "/usr/bin:/bin"}


def load(path: Path, project_name: str | None = None):
    return load_project(LoadOptions(files=(str(path),), cwd=str(path.parent), environ=dict(ENV),
                                    project_name=project_name))


def observed_after(desired: DesiredState) -> ObservedState:
    """What observe() reads back after a successful `up` of ``desired``: the same resources
    (the ruleset text is not read back, only its rule identities) and the applied digests."""
    st = ObservedState()
    for r in desired.resources.values():
        if isinstance(r, NftTable):
            r = replace(r, ruleset="")
        st.add(r)
        st.applied[r.key] = digest(r)
    return st


def plan_case(case: Path):
    compose = case / "compose.yaml"
    project = load(compose)
    obs_file = case / "observed.json"
    observed = ObservedState.from_json(json.loads(obs_file.read_text())) if obs_file.exists() else ObservedState(offline=True)
    planned = make_plan(project, project.name, observed, UPSTREAMS)
    return planned


def outputs(case: Path) -> dict[str, str]:
    planned = plan_case(case)
    # Positions in warnings name the compose file by absolute path: keep goldens checkout-independent.
    here = str(ROOT) + os.sep
    return {
        "plan.txt": render_text(planned.plan).replace(here, ""),
        "plan.json": render_json(planned.plan, planned.ruleset).replace(here, ""),
        "ruleset.nft": planned.ruleset or "",
    }


def base_observed(case: Path) -> str | None:
    """Cases with base.yaml get observed.json = the state right after `up` of base.yaml."""
    base = case / "base.yaml"
    if not base.exists():
        return None
    project = load(base)
    planned = make_plan(project, project.name, ObservedState(offline=True), UPSTREAMS)
    return observed_after(planned.desired).dumps()


def nft_check(ruleset: str) -> str | None:
    """`nft -c` in a throwaway network namespace (never the host's)."""
    if shutil.which("nft") is None or shutil.which("unshare") is None or os.geteuid() != 0:
        raise RuntimeError("nft -c needs root, nft and unshare (make test installs them)")
    r = subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=ruleset, text=True,
                       capture_output=True, timeout=30)
    return None if r.returncode == 0 else r.stderr
