"""`composenet graph` beyond the golden files (tests/golden/test_views.py): node ids that never
clash, labels escaped for Mermaid and DOT, and SVG through Graphviz with a clear message when
`dot` is missing."""

from __future__ import annotations

import shutil

import click
import pytest

from composenet.cli import graph as graph_cli
from composenet.core.graph import (
    GEdge,
    GNetwork,
    GPort,
    Graph,
    GReplica,
    GService,
    render_dot,
    render_mermaid,
)


def odd_graph() -> Graph:
    nets = (GNetwork("a-b", 'p_"a-b"', "bridge"), GNetwork("a_b", "p_a_b", "macvlan", internal=True))
    services = (GService('w"eb', (GReplica("p-web-1", "running"),)), GService("x<y>", (GReplica("p-x-1", "exited"),)))
    edges = (GEdge('w"eb', "a-b", ("10.0.0.2",)), GEdge("x<y>", "a_b"))
    return Graph("p", True, nets, services, edges, (GPort("0.0.0.0:80/tcp", 'w"eb', "80/tcp", "missing"),))


def test_ids_never_clash_and_labels_are_escaped() -> None:
    mmd = render_mermaid(odd_graph())
    assert "net_a_b{{" in mmd and "net_a_b_2{{" in mmd  # "a-b" and "a_b" stay two nodes
    assert '"w#quot;eb' in mmd and "x#lt;y#gt;" in mmd and 'p_#quot;a-b#quot;' in mmd
    assert "0.0.0.0:80/tcp (MISSING)" in mmd and "class net_a_b_2 internal" in mmd
    dot = render_dot(odd_graph())
    assert '"svc:w\\"eb" -> "net:a-b" [dir=none, label="10.0.0.2"];' in dot
    assert 'label="p_\\"a-b\\"\\np_a_b' not in dot and '"net:a_b" [shape=hexagon, label="a_b (internal)\\np_a_b · macvlan"' in dot


def test_svg_needs_graphviz(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(graph_cli.shutil, "which", lambda _name: None)
    with pytest.raises(click.exceptions.Exit):
        graph_cli.svg("digraph {}")
    err = capsys.readouterr().err
    assert "needs Graphviz's `dot`, which is not installed" in err and "apt-get install graphviz" in err


def test_svg_with_graphviz() -> None:
    assert shutil.which("dot"), "graphviz's `dot` is needed (make test installs it)"
    out = graph_cli.svg(render_dot(odd_graph()))
    assert out.lstrip().startswith("<?xml") and "<svg" in out and "1: running" in out and "80/tcp" in out


def test_a_size_request_is_drawn_as_what_it_asks_for(tmp_path) -> None:
    from composenet.core.desired import Upstreams, desire
    from composenet.core.graph import build
    from composenet.core.state import ObservedState
    from tests.golden.harness import load

    f = tmp_path / "compose.yaml"
    f.write_text("name: p\nservices:\n  web:\n    networks: [n]\nnetworks:\n  n:\n    ipam:\n"
                 "      config: [{subnet: 0.0.0.0/26}]\n")
    project = load(f)
    g = build(project, desire(project, ObservedState(), Upstreams(("192.0.2.53",))))
    assert [n.subnet for n in g.networks] == ["a free /26"]
    assert "a free /26" in render_mermaid(g) and "0.0.0.0/26" not in render_dot(g)
