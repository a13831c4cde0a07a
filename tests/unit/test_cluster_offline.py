"""`plan --offline` with a cluster store: the cluster network is planned from an empty cluster
(the record the first host would create), without asking the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from composenet.cluster.ipam import propose_network
from composenet.core.desired import Upstreams, desire
from composenet.core.state import ObservedState
from composenet.kernel.cluster import offline_cluster
from tests.golden.harness import load

FABRIC = """name: shop
services:
  client:
    command: "sleep 600"
    networks: [fabric]
networks:
  fabric:
    driver: overlay
"""


def offline_plan(tmp_path: Path):
    f = tmp_path / "compose.yaml"
    f.write_text(FABRIC)
    return desire(load(f), ObservedState(offline=True, cluster=offline_cluster()), Upstreams(("192.0.2.53",)))


def test_offline_with_a_store_plans_the_record_up_would_create(tmp_path, monkeypatch):
    # A store nobody listens on: nothing may be asked (the plan would fail on it).
    monkeypatch.setenv("COMPOSENET_STORE", "etcd://192.0.2.1:9")
    monkeypatch.setenv("COMPOSENET_NODE", "h1")
    monkeypatch.setenv("COMPOSENET_ADVERTISE_ADDR", "192.0.2.11")
    d = offline_plan(tmp_path)
    row = next(r for r in d.networks if r["name"] == "shop_fabric")
    want = propose_network("shop_fabric", {}, [], None, None, None, 4789, "h1")
    assert (row["subnet"], row["gateway"], row["vxlan"]["vni"], row["vxlan"]["cluster"]) == (
        want.subnet, want.gateway, want.vni, True)
    vx = next(r for r in d.resources.values() if r.kind == "vxlan")
    assert (vx.learning, vx.peers, vx.local) == (False, (), "192.0.2.11")
    assert {"op": "+", "kind": "record", "network": "shop_fabric",
            "what": f"network shop_fabric  subnet {want.subnet}  gw {want.gateway}  vni {want.vni}"} in d.cluster
    assert not [w for w in d.warnings if "local bridge" in w]


def test_offline_without_a_store_keeps_the_static_overlay(tmp_path, monkeypatch):
    monkeypatch.delenv("COMPOSENET_STORE", raising=False)
    assert offline_cluster() == {}
    d = offline_plan(tmp_path)
    row = next(r for r in d.networks if r["name"] == "shop_fabric")
    assert "cluster" not in row.get("vxlan", {})
    assert [w for w in d.warnings if "driver overlay is built as a local bridge" in w]


def test_offline_with_a_bad_store_url_fails_the_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPOSENET_STORE", "ftp://nowhere")
    with pytest.raises(Exception, match="store"):
        offline_plan(tmp_path)
