"""`plan --offline` on every corpus entry that loads (../shared/corpus, as test_corpus.py iterates it).

Each plan is made without an exception, is deterministic (two runs give the same bytes, also
in fresh interpreters with other hash seeds) and its JSON validates against
schemas/plan.schema.json. Entries that are rejected on load are test_corpus.py's business.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from composenet.compose.options import LoadOptions
from composenet.compose.project import load_project
from composenet.core.render import render_json, render_text
from composenet.core.state import ObservedState
from composenet.pipeline import make_plan
from tests.golden.harness import UPSTREAMS
from tests.unit.test_corpus import CASES, CORPUS, ENVIRON, MISSING_FILES, REJECT

ROOT = Path(__file__).resolve().parents[2]
PLANNED = [c for c in CASES if c[0] not in REJECT and c[1] not in REJECT]


def copy_entry(entry: str, dest: Path) -> Path:
    """The entry's directory copied to dest/p, with the files it references but the corpus lacks."""
    src = CORPUS / entry if (CORPUS / entry).is_dir() else CORPUS / entry.split("/")[0]
    work = dest / "p"
    shutil.copytree(src, work)
    for extra in MISSING_FILES.get(entry, []):
        (work / extra).parent.mkdir(parents=True, exist_ok=True)
        (work / extra).write_text("")
    return work


def plan_offline(entry: str, files: tuple[str, ...], work: Path) -> tuple[str, str]:
    """(text, json) of `plan --offline` (the CLI's pipeline: load, make_plan against an empty
    kernel, render). Positions in warnings name the copy: made relative to it."""
    project = load_project(LoadOptions(files=files, cwd=str(work), environ=ENVIRON.get(entry, {})))
    planned = make_plan(project, project.name, ObservedState(offline=True), UPSTREAMS)
    here = str(work) + os.sep
    return (render_text(planned.plan).replace(here, ""),
            render_json(planned.plan, planned.ruleset).replace(here, ""))


@pytest.fixture(scope="module")
def plan_schema() -> dict:
    return json.loads((ROOT / "schemas" / "plan.schema.json").read_text())


def test_corpus_has_plannable_entries():
    assert len(PLANNED) >= 50, len(PLANNED)


@pytest.mark.parametrize("cid,entry,files", PLANNED, ids=[c[0] for c in PLANNED])
def test_corpus_plan_offline(cid: str, entry: str, files: tuple[str, ...], tmp_path: Path, plan_schema: dict):
    work = copy_entry(entry, tmp_path)
    text, js = plan_offline(entry, files, work)
    assert (text, js) == plan_offline(entry, files, work), f"{cid}: two plans of the same input differ"
    doc = json.loads(js)
    jsonschema.validate(doc, plan_schema)
    assert text.startswith("composenet plan") and doc["project"] in text


def digests(dest: Path) -> dict[str, str]:
    """sha256 of (text, json) per plannable case, each planned in its own copy under dest."""
    out = {}
    for i, (cid, entry, files) in enumerate(PLANNED):
        work = copy_entry(entry, dest / str(i))
        text, js = plan_offline(entry, files, work)
        out[cid] = hashlib.sha256((text + "\0" + js).encode()).hexdigest()
    return out


def test_corpus_plans_do_not_depend_on_hash_seed(tmp_path: Path):
    """Set and dict orders must not leak into plans: interpreters with different
    PYTHONHASHSEEDs give the same bytes for every entry."""
    code = ("import json, sys; from pathlib import Path; from tests.unit.test_plan_corpus import digests; "
            "print(json.dumps(digests(Path(sys.argv[1]))))")
    runs = []
    for seed in ("1", "4242"):
        env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / seed)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout))
    mine = digests(tmp_path / "here")
    assert len(mine) == len(PLANNED) >= 50 and all(sorted(r) == sorted(mine) for r in runs)
    differ = sorted(cid for cid in mine if not runs[0][cid] == runs[1][cid] == mine[cid])
    assert not differ, f"plans differ between interpreters: {differ}"


def test_cli_plan_offline_is_the_pipeline(tmp_path: Path):
    """`composenet plan --offline --format json` prints what plan_offline() computes."""
    cid, entry, files = next(c for c in PLANNED if c[0] == "docker-compose/bridge")
    work = copy_entry(entry, tmp_path)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("".join(f"nameserver {s}\n" for s in UPSTREAMS.servers))
    args = [a for f in files for a in ("-f", f)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "COMPOSENET_RESOLV_CONF": str(resolv)}
    r = subprocess.run([sys.executable, "-m", "composenet", *args, "plan", "--offline", "--format", "json"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.replace(str(work) + os.sep, "") == plan_offline(entry, files, work)[1], cid
