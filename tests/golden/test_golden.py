"""Golden plans: tests/golden/<case>/{compose.yaml, [base.yaml|observed.json], plan.txt, plan.json,
ruleset.nft}. `make golden` (pytest --update-goldens) rewrites them; review the diff."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.golden.harness import GOLDEN, ROOT, base_observed, load, nft_check, outputs, plan_case

CASES = sorted(p for p in GOLDEN.iterdir() if (p / "compose.yaml").exists())
EXAMPLES = sorted(ROOT.glob("examples/*/compose.yaml"))


def test_enough_cases():
    assert len(CASES) >= 12, [c.name for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Path, update_goldens: bool):
    obs = base_observed(case)
    if obs is not None:
        target = case / "observed.json"
        if update_goldens:
            target.write_text(obs)
    got = outputs(case)
    for name, text in got.items():
        path = case / name
        if update_goldens:
            path.write_text(text)
        assert path.exists(), f"{path} missing: run `make golden` and review the diff"
        assert path.read_text() == text, f"{case.name}/{name} differs from the golden file (make golden, then review)"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_deterministic(case: Path):
    assert outputs(case) == outputs(case)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_ruleset_accepted_by_nft(case: Path):
    ruleset = outputs(case)["ruleset.nft"]
    if ruleset:
        assert nft_check(ruleset) is None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_json_matches_schema(case: Path):
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
    jsonschema.validate(json.loads(outputs(case)["plan.json"]), schema)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.parent.name for e in EXAMPLES])
def test_examples_plan(example: Path):
    from composenet.core.state import ObservedState
    from composenet.pipeline import make_plan
    from tests.golden.harness import UPSTREAMS

    project = load(example)
    planned = make_plan(project, project.name, ObservedState(offline=True), UPSTREAMS)
    assert planned.plan.steps
    assert planned.ruleset and nft_check(planned.ruleset) is None


def test_plan_case_is_pure():
    # Planning never needs the kernel: the same case twice with no observed file gives the same steps.
    a = plan_case(CASES[0]).plan
    b = plan_case(CASES[0]).plan
    assert [s.change.key for s in a.steps] == [s.change.key for s in b.steps]
