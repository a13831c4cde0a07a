"""The planner's own warnings are located as the loader's are: ``FILE:LINE:COL: key.path: message``."""

from __future__ import annotations

from pathlib import Path

from composenet.core.desired import Upstreams
from composenet.core.state import ObservedState
from composenet.pipeline import make_plan
from tests.unit.helpers import load_text

UP = Upstreams(("192.0.2.53",))


def _warnings(tmp_path: Path, text: str, observed: ObservedState | None = None) -> list[str]:
    p = load_text(tmp_path, text)
    ws = make_plan(p, p.name, observed or ObservedState(offline=True), UP).plan.warnings
    return [w.replace(f"{tmp_path}/", "") for w in ws]


def test_overlay_without_peers_is_located_at_its_network(tmp_path: Path):
    ws = _warnings(tmp_path, """
        services:
          app:
            networks: [ov]
        networks:
          ov:
            driver: overlay
    """)
    assert "compose.yaml:6:5: networks.ov.driver: driver overlay is built as a local bridge (single host)" in ws, ws


def test_container_namespace_is_located_at_its_service(tmp_path: Path):
    ws = _warnings(tmp_path, """
        services:
          app:
            image: x
          side:
            network_mode: "container:elsewhere"
    """)
    assert ("compose.yaml:5:5: services.side.network_mode: network_mode container:elsewhere joins the namespace "
            "/run/netns/elsewhere, which must exist at up time") in ws, ws


def test_external_network_in_an_offline_plan_is_located(tmp_path: Path):
    ws = _warnings(tmp_path, """
        services:
          app:
            networks: [shared]
        networks:
          shared:
            external: true
    """)
    assert [w for w in ws if w.startswith("compose.yaml:6:5: networks.shared.external: external network 'shared' "
                                          "is assumed to exist (offline plan)")], ws


def test_no_free_port_is_located_at_the_port(tmp_path: Path):
    observed = ObservedState(offline=True, ports_in_use=("tcp/8000", "tcp/8001"))
    ws = _warnings(tmp_path, """
        services:
          web:
            ports:
              - "8000-8001:80"
              - "9000:90"
    """, observed)
    assert "compose.yaml:4:9: services.web.ports[0]: no free host port in 8000-8001/tcp" in ws, ws
    assert not [w for w in ws if "ports[1]" in w], ws


def test_every_planner_warning_names_a_position(tmp_path: Path):
    """None of the warnings above falls back to the unlocated ``network X:`` / ``service X:`` form."""
    ws = _warnings(tmp_path, """
        services:
          app:
            networks: [ov, shared]
            ports: ["7000-7000:70"]
          side:
            network_mode: "container:elsewhere"
        networks:
          ov:
            driver: overlay
          shared:
            external: true
    """)
    assert ws and all(w.startswith("compose.yaml:") for w in ws), ws
