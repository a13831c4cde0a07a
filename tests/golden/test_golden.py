"""Golden plans: tests/golden/<case>/{compose.yaml | compose.from, [base.yaml|observed.json], plan.txt,
plan.json, ruleset.nft}. `make golden` (pytest --update-goldens) rewrites them; review the diff."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from composenet.core.state import ObservedState
from composenet.pipeline import make_plan
from tests.golden.harness import (
    ROOT,
    UPSTREAMS,
    base_observed,
    case_inputs,
    cases,
    compose_file,
    every_output,
    load,
    nft_check,
    outputs,
    rendered,
)

CASES = cases()
EXAMPLES = sorted(ROOT.glob("examples/*/compose.yaml"))
# Cases whose project needs no nft table (nothing published, no bridge to isolate: macvlan only).
NO_RULESET = {"macvlan", "external-macvlan"}
# Interpreters with these PYTHONHASHSEEDs must give the same bytes: set and dict orders must not leak.
HASH_SEEDS = ("0", "1", "2", "12345", "random")


def test_enough_cases():
    assert len(CASES) >= 12, [c.name for c in CASES]


def test_every_example_is_a_golden_case():
    """Each example is planned by the case that names it (compose.from), not by a copy."""
    planned = {compose_file(c) for c in CASES}
    assert EXAMPLES and set(EXAMPLES) <= planned, sorted(set(EXAMPLES) - planned)
    copies = [c.name for c in CASES if (c / "compose.yaml").exists() and any(
        (c / "compose.yaml").read_bytes() == e.read_bytes() for e in EXAMPLES)]
    assert not copies, f"copies of an example (name it in compose.from instead): {copies}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Path, update_goldens: bool):
    got = {}
    obs = base_observed(case)
    if obs is not None:  # written first: the plan below is made against it
        got["observed.json"] = obs
        if update_goldens:
            (case / "observed.json").write_text(obs)
    got.update(outputs(case))
    for name, text in got.items():
        path = case / name
        if update_goldens:
            path.write_text(text)
        assert path.exists(), f"{path} missing: run `make golden` and review the diff"
        assert path.read_text() == text, f"{case.name}/{name} differs from the golden file (make golden, then review)"


def test_golden_deterministic_across_hash_seeds():
    """Every case rendered in fresh interpreters (one per hash seed) gives the same bytes as here."""
    here = every_output()
    assert sorted(here) == [c.name for c in CASES]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    differ = []
    for seed in HASH_SEEDS:
        r = subprocess.run([sys.executable, "-m", "tests.golden.harness"], cwd=ROOT,
                           env={**env, "PYTHONHASHSEED": seed}, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"PYTHONHASHSEED={seed}: {r.stderr}"
        there = json.loads(r.stdout)
        assert sorted(there) == sorted(here), f"PYTHONHASHSEED={seed}: other cases"
        differ += [f"{case}/{name} (PYTHONHASHSEED={seed})" for case, files in sorted(here.items())
                   for name in sorted(files) if there[case].get(name) != files[name]]
    assert not differ, f"outputs depend on the hash seed: {differ}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_ruleset_accepted_by_nft(case: Path):
    ruleset = outputs(case)["ruleset.nft"]
    if case.name in NO_RULESET:
        assert ruleset == ""
    else:
        assert ruleset and nft_check(ruleset) is None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_json_matches_schema(case: Path):
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
    jsonschema.validate(json.loads(outputs(case)["plan.json"]), schema)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.parent.name for e in EXAMPLES])
def test_examples_plan(example: Path):
    project = load(example)
    planned = make_plan(project, project.name, ObservedState(offline=True), UPSTREAMS)
    assert planned.plan.steps
    assert planned.ruleset and nft_check(planned.ruleset) is None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_case_is_pure(case: Path):
    """Planning never needs the kernel and never changes its inputs: the same inputs planned twice,
    and fresh inputs planned again, give the same plan text, JSON and ruleset, and the project and
    observed state are as they were loaded."""
    project, observed = case_inputs(case)
    project_before, observed_before = copy.deepcopy(project), copy.deepcopy(observed)
    observed_json = json.dumps(observed.to_json())
    first = rendered(make_plan(project, project.name, observed, UPSTREAMS))
    assert json.dumps(observed.to_json()) == observed_json, "planning changed the observed state"
    assert observed == observed_before and list(observed.resources) == list(observed_before.resources)
    assert project == project_before and project.document == project_before.document, "planning changed the project"
    again = rendered(make_plan(project, project.name, observed, UPSTREAMS))
    project2, observed2 = case_inputs(case)
    fresh = rendered(make_plan(project2, project2.name, observed2, UPSTREAMS))
    assert first["plan.txt"].startswith("composenet plan")
    for name in first:
        assert again[name] == first[name], f"{name}: planning the same objects twice differs"
        assert fresh[name] == first[name], f"{name}: planning fresh objects differs"
