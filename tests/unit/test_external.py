"""External networks in the planner (pure): found by label in ObservedState.networks, never
created or deleted, addresses other projects' endpoints hold are never handed out, and a
missing one is an error located at the network's key."""

from __future__ import annotations

import pytest

from composenet.core.desired import Upstreams, desire
from composenet.core.resources import Bridge, Veth
from composenet.core.state import ObservedState
from composenet.errors import InputError
from tests.unit.helpers import load_text

COMPOSE = """
name: ext
services:
  web:
    networks: [shared]
networks:
  shared:
    external: true
    name: common
"""


def observed(**networks) -> ObservedState:
    return ObservedState(networks=networks)


def test_attaches_to_the_observed_bridge_with_a_free_address(tmp_path) -> None:
    project = load_text(tmp_path, COMPOSE)
    obs = observed(common={"bridge": "cnb-0e0e0e0e", "owner": "other", "cidrs": ["10.70.0.254/24"],
                           "used": ["10.70.0.1", "10.70.0.2"]})
    d = desire(project, obs, Upstreams())
    assert not [r for r in d.resources.values() if isinstance(r, Bridge)]  # not ours to create
    veth = next(r for r in d.resources.values() if isinstance(r, Veth))
    assert veth.bridge == "cnb-0e0e0e0e"
    assert d.containers[0]["endpoints"][0]["ipv4"] == "10.70.0.3"
    assert "addr:ext-web-1:eth0:10.70.0.3/24" in d.resources
    assert d.resources["route:ext-web-1:0.0.0.0/0"].gateway == "10.70.0.254"  # type: ignore[attr-defined]


@pytest.mark.parametrize("owner", [None, "ext"])
def test_missing_external_network_is_a_located_error(tmp_path, owner) -> None:
    project = load_text(tmp_path, COMPOSE)
    obs = observed(**({"common": {"bridge": "cnb-1", "owner": owner, "cidrs": [], "used": []}} if owner else {}))
    with pytest.raises(InputError) as ei:
        desire(project, obs, Upstreams())
    text = str(ei.value)
    assert f"{tmp_path / 'compose.yaml'}:7:" in text and "networks.shared.external" in text, text
    assert "external network 'common' does not exist" in text, text


def test_offline_plan_assumes_it_exists(tmp_path) -> None:
    project = load_text(tmp_path, COMPOSE)
    d = desire(project, ObservedState(offline=True), Upstreams())
    assert any("assumed to exist" in w for w in d.warnings), d.warnings


def test_own_network_never_reuses_an_address_an_external_user_holds(tmp_path) -> None:
    project = load_text(tmp_path, """
name: other
services:
  a:
    networks: [n]
networks:
  n:
    name: common
    ipam:
      config: [{subnet: 10.70.0.0/24}]
""")
    obs = observed(common={"bridge": "cnb-x", "owner": "other", "cidrs": ["10.70.0.1/24"], "used": ["10.70.0.2"]})
    d = desire(project, obs, Upstreams())
    assert d.containers[0]["endpoints"][0]["ipv4"] == "10.70.0.3"


# ---- `network connect` records (ObservedState.connections) -------------------------------

TWO = """
name: cx
services:
  x:
    networks: [a]
  y:
    networks: [b]
networks:
  a: {}
  b: {}
"""


def test_connection_adds_an_endpoint_with_aliases_and_static_address(tmp_path) -> None:
    project = load_text(tmp_path, TWO)
    obs = ObservedState(connections=[
        {"container": "cx-x-1", "network": "cx_b", "aliases": ["xalias"], "ipv4": None},
        {"container": "cx-y-1", "network": "lan", "aliases": [], "ipv4": "10.80.0.9"},
        {"container": "cx-y-1", "network": "gone", "aliases": [], "ipv4": None},
        {"container": "cx-nobody-1", "network": "cx_a", "aliases": [], "ipv4": None},
    ], networks={"lan": {"bridge": "cnb-1a", "owner": "-lan", "cidrs": ["10.80.0.1/24"], "used": []}})
    d = desire(project, obs, Upstreams())
    eps = {c["name"]: [(e["network"], e["ifname"], e["ipv4"]) for e in c["endpoints"]] for c in d.containers}
    assert eps["cx-x-1"][1][:2] == ("cx_b", "eth1")
    assert eps["cx-y-1"][1] == ("lan", "eth1", "10.80.0.9")
    assert len(eps["cx-y-1"]) == 2  # "gone" is left out, with a warning
    assert any("'gone'" in w and "does not exist any more" in w for w in d.warnings), d.warnings
    cfg = next(r for r in d.resources.values() if r.kind == "resolver").config  # type: ignore[attr-defined]
    assert '"xalias"' in cfg


# ---- composenet.netcmd argument checks -------------------------------------------------------


def test_netcmd_ipam_and_options() -> None:
    from composenet import paths
    from composenet.cli import network as netcmd
    from composenet.errors import ComposenetError

    assert netcmd._ipam(["10.9.0.0/24"], ["10.9.0.254"], []) == [
        {"subnet": "10.9.0.0/24", "gateway": "10.9.0.254", "ip_range": None}]
    with pytest.raises(ComposenetError, match="outside the subnet"):
        netcmd._ipam(["10.9.0.0/24"], ["10.8.0.1"], [])
    with pytest.raises(ComposenetError, match="ip-range"):
        netcmd._ipam(["10.9.0.0/24"], [], ["10.10.0.0/25"])
    with pytest.raises(ComposenetError, match="needs a --subnet"):
        netcmd._ipam([], ["10.9.0.1"], [])
    assert netcmd._split_opts(["parent=eth0", "a=b=c"]) == {"parent": "eth0", "a": "b=c"}
    with pytest.raises(ComposenetError, match="KEY=VALUE"):
        netcmd._split_opts(["novalue"])
    with pytest.raises(ComposenetError, match="invalid network name"):
        netcmd._check_name("-bad")
    assert paths.standalone_project("lan") == "-lan"


def test_down_warns_when_other_projects_use_the_network() -> None:
    from composenet.pipeline import make_plan

    obs = ObservedState(networks={"own_n": {"bridge": "cnb-2b", "owner": "own", "cidrs": ["10.5.0.1/24"],
                                            "used": ["10.5.0.7"]}})
    obs.add(Bridge("cnb-2b", "composenet:own/own_n", "own_n"))
    planned = make_plan(None, "own", obs, Upstreams())
    assert [w for w in planned.plan.warnings if "own_n" in w and "10.5.0.7" in w], planned.plan.warnings
