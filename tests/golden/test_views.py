"""Golden views of a project: `composenet graph` (Mermaid and DOT) for the examples and some plan
cases, the file's intent and a live state with a stopped, a missing and a drifted object; and
`composenet network inspect --format json` of a recorded `netinfo.networks()` answer.

tests/golden/graph/<case>.{mmd,dot} and tests/golden/inspect/inspect.json; `make golden`
(pytest --update-goldens) rewrites them: review the diff.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from composenet.core.graph import Live, build, render_dot, render_mermaid
from composenet.core.netinspect import render_format, render_json
from composenet.core.state import ObservedState
from composenet.pipeline import make_plan
from tests.golden.harness import GOLDEN, UPSTREAMS, case_inputs

GRAPH_CASES = ("webapp", "microservices", "split", "network-modes", "internal", "ports", "scaled", "aliases",
               "macvlan", "ipv6", "ipam-static", "external", "overlay-vxlan")
GRAPH_DIR = GOLDEN / "graph"
INSPECT_DIR = GOLDEN / "inspect"


def intent(case: str) -> dict[str, str]:
    project, observed = case_inputs(GOLDEN / case)
    desired = make_plan(project, project.name, observed, UPSTREAMS).desired
    g = build(project, desired)
    return {f"{case}.mmd": render_mermaid(g), f"{case}.dot": render_dot(g)}


def live() -> dict[str, str]:
    """The split example as planned (its addresses), with api-2 exited, fe's namespace gone, db
    drifted, the frontend bridge missing and web's DNAT rule gone: what `graph` shows of a
    damaged stack."""
    project, _ = case_inputs(GOLDEN / "split")
    desired = make_plan(project, project.name, ObservedState(offline=True), UPSTREAMS).desired
    containers = {c["name"]: "running" for c in desired.containers}
    containers.update({"split-api-2": "exited", "split-fe-1": "missing", "split-db-1": "drifted"})
    networks = {n["name"]: "up" for n in desired.networks}
    networks["split_frontend"] = "missing"
    g = build(project, desired, Live(containers, networks, (("web", 8080, "tcp"),)))
    return {"live-split.mmd": render_mermaid(g), "live-split.dot": render_dot(g)}


def check_golden(directory: Path, outputs: dict[str, str], update: bool) -> None:
    for name, text in outputs.items():
        path = directory / name
        if update:
            path.write_text(text)
        assert path.exists(), f"{path} missing: run `make golden` and review the diff"
        assert path.read_text() == text, f"{path.name} differs from the golden file (make golden, then review)"


@pytest.mark.parametrize("case", GRAPH_CASES)
def test_graph_intent(case: str, update_goldens: bool) -> None:
    check_golden(GRAPH_DIR, intent(case), update_goldens)


def test_graph_live(update_goldens: bool) -> None:
    outputs = live()
    check_golden(GRAPH_DIR, outputs, update_goldens)
    mmd = outputs["live-split.mmd"]
    assert "split-api-2: exited" in mmd and "split-fe-1: missing" in mmd and "MISSING" in mmd
    assert "0.0.0.0:8080/tcp (MISSING)" in mmd
    assert "class net_frontend,svc_api,svc_db,svc_fe,port_0_0_0_0_8080_tcp problem" in mmd


def test_graph_renders_deterministically() -> None:
    assert intent("split") == intent("split") and live() == live()


def test_graph_dot_is_valid_graphviz() -> None:
    """Every DOT golden is drawn by Graphviz without a complaint (dot is a test dependency)."""
    dot = shutil.which("dot")
    assert dot is not None, "graphviz's `dot` is needed (make test installs it)"
    for case in (*GRAPH_CASES, "live-split"):
        text = (GRAPH_DIR / f"{case}.dot").read_text()
        r = subprocess.run([dot, "-Tsvg"], input=text, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "<svg" in r.stdout and not r.stderr, f"{case}: {r.stderr}"


def test_inspect_json(update_goldens: bool) -> None:
    nets = json.loads((INSPECT_DIR / "netinfo.json").read_text())
    got = render_json(list(nets.values()))
    check_golden(INSPECT_DIR, {"inspect.json": got}, update_goldens)
    assert render_format(list(nets.values()), "json") == got
