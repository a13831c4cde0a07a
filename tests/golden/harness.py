"""Shared by the golden tests and `make golden`: plan a case directory offline.

A case directory holds its compose file (compose.yaml), or, for a case that plans an example,
a file compose.from naming the example's compose file relative to the repository (one copy of
each example: the golden follows it). `python -m tests.golden.harness` prints every case's
outputs as JSON (the determinism test runs it under several hash seeds).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


def cases() -> list[Path]:
    """Every case directory: those with a compose file of their own or naming one."""
    return sorted(p for p in GOLDEN.iterdir() if (p / "compose.yaml").exists() or (p / "compose.from").exists())


def compose_file(case: Path) -> Path:
    """The case's compose.yaml, or the file its compose.from names (exactly one of them)."""
    own, pointer = case / "compose.yaml", case / "compose.from"
    if own.exists() == pointer.exists():
        raise ValueError(f"{case.name}: needs exactly one of compose.yaml and compose.from")
    if own.exists():
        return own
    target = ROOT / pointer.read_text().strip()
    if not target.is_file():
        raise ValueError(f"{pointer.relative_to(ROOT)} names {target.relative_to(ROOT)}, which is not a file")
    return target


def case_inputs(case: Path):
    """(project, observed) of a case, freshly loaded."""
    project = load(compose_file(case))
    obs_file = case / "observed.json"
    observed = ObservedState.from_json(json.loads(obs_file.read_text())) if obs_file.exists() else ObservedState(offline=True)
    return project, observed


def plan_case(case: Path):
    project, observed = case_inputs(case)
    return make_plan(project, project.name, observed, UPSTREAMS)


def outputs(case: Path) -> dict[str, str]:
    return rendered(plan_case(case))


def rendered(planned) -> dict[str, str]:
    """The golden files' texts of a plan."""
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
    # Positions (a process's "where") name the compose file by absolute path: made relative.
    return observed_after(planned.desired).dumps().replace(str(ROOT) + os.sep, "")


def nft_check(ruleset: str) -> str | None:
    """`nft -c` in a throwaway network namespace (never the host's)."""
    if shutil.which("nft") is None or shutil.which("unshare") is None or os.geteuid() != 0:
        raise RuntimeError("nft -c needs root, nft and unshare (make test installs them)")
    r = subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=ruleset, text=True,
                       capture_output=True, timeout=30)
    return None if r.returncode == 0 else r.stderr


def every_output() -> dict[str, dict[str, str]]:
    """case name -> {golden file name: text}, observed.json included for cases made from base.yaml."""
    out = {}
    for case in cases():
        out[case.name] = outputs(case)
        obs = base_observed(case)
        if obs is not None:
            out[case.name]["observed.json"] = obs
    return out


if __name__ == "__main__":
    json.dump(every_output(), sys.stdout)
