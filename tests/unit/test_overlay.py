"""driver: overlay with VXLAN peers (pure): option validation with FILE:LINE, the Vxlan
resource and MTU desire builds, the local-bridge fallback without peers, and the diff of a
drifted peer list (an in-place update)."""

from __future__ import annotations

from dataclasses import replace

from composenet.core.desired import Upstreams, desire
from composenet.core.diff import diff
from composenet.core.overlay import default_vni
from composenet.core.plan import Action
from composenet.core.render import describe
from composenet.core.resources import Bridge, Veth, Vxlan, resource_from_json
from composenet.core.state import ObservedState
from tests.unit.helpers import errors, load_text

COMPOSE = """
name: ova
services:
  a:
    networks:
      ov:
        ipv4_address: 10.77.0.10
networks:
  ov:
    driver: overlay
    driver_opts:
      com.composenet.vxlan.peers: 192.0.2.2,192.0.2.1, 192.0.2.3
      com.composenet.vxlan.id: "4242"
      com.composenet.vxlan.local: 192.0.2.1
    ipam:
      config:
        - subnet: 10.77.0.0/24
          ip_range: ${OVERLAY_RANGE}
"""


def one(d, cls):
    found = [r for r in d.resources.values() if isinstance(r, cls)]
    assert len(found) == 1, found
    return found[0]


def test_vxlan_resource_and_mtu(tmp_path):
    d = desire(load_text(tmp_path, COMPOSE, env={"OVERLAY_RANGE": "10.77.0.64/26"}), ObservedState(), Upstreams())
    vx = one(d, Vxlan)
    br = one(d, Bridge)
    assert vx.ifname == "cnx-" + br.ifname[4:]
    assert vx.label == "composenet:ova/ova_ov/vxlan"
    assert (vx.vni, vx.port, vx.local, vx.bridge, vx.mtu) == (4242, 4789, "192.0.2.1", br.ifname, 1450)
    assert vx.peers == ("192.0.2.2", "192.0.2.3")  # the local address is left out
    assert br.mtu == 1450 and one(d, Veth).mtu == 1450
    assert not any("overlay" in w for w in d.warnings)
    assert describe(vx).startswith(f"vxlan    {vx.ifname}  vni 4242 port 4789  local 192.0.2.1")
    assert resource_from_json(vx.to_json()) == vx


def test_defaults_mtu_override_and_own_addresses(tmp_path):
    text = COMPOSE.replace('      com.composenet.vxlan.id: "4242"\n', "").replace(
        "      com.composenet.vxlan.local: 192.0.2.1\n", "      com.docker.network.driver.mtu: '1400'\n")
    obs = ObservedState(host_addresses=("192.0.2.3/24",))
    d = desire(load_text(tmp_path, text, env={"OVERLAY_RANGE": "10.77.0.64/26"}), obs, Upstreams())
    vx = one(d, Vxlan)
    assert vx.vni == default_vni("ova_ov") and 1 <= vx.vni <= 16777215
    assert vx.local is None and vx.peers == ("192.0.2.1", "192.0.2.2")  # this host's address left out
    assert vx.mtu == 1400 and one(d, Bridge).mtu == 1400


def test_without_peers_stays_a_local_bridge(tmp_path):
    text = """
    services:
      a: {networks: [ov]}
    networks:
      ov: {driver: overlay}
    """
    d = desire(load_text(tmp_path, text), ObservedState(), Upstreams())
    assert not [r for r in d.resources.values() if isinstance(r, Vxlan)]
    assert one(d, Bridge).mtu == 1500
    assert any("driver overlay is built as a local bridge (single host)" in w for w in d.warnings)


def test_drifted_peer_is_an_update(tmp_path):
    d = desire(load_text(tmp_path, COMPOSE, env={"OVERLAY_RANGE": "10.77.0.64/26"}), ObservedState(), Upstreams())
    vx = one(d, Vxlan)
    obs = ObservedState()
    for r in d.resources.values():
        obs.add(replace(r, peers=("192.0.2.2",)) if r is vx else r)
    changes = [c for c in diff(d, obs) if c.kind == "vxlan"]
    assert [(c.action, c.fields) for c in changes] == [(Action.update, ("peers",))]
    obs.add(replace(vx, vni=7))
    changes = [c for c in diff(d, obs) if c.kind == "vxlan"]
    assert [c.action for c in changes] == [Action.replace]


def test_invalid_options_are_located(tmp_path):
    text = """
    services:
      a: {networks: [ov, br]}
    networks:
      ov:
        driver: overlay
        driver_opts:
          com.composenet.vxlan.peers: 192.0.2.2,host-b
          com.composenet.vxlan.id: "16777216"
          com.composenet.vxlan.port: "0"
          com.composenet.vxlan.local: nope
      br:
        driver_opts:
          com.composenet.vxlan.peers: 192.0.2.2
    """
    out = errors(tmp_path, text)
    assert "compose.yaml:7:35: " in out and "VXLAN peer 'host-b' is not an IPv4 address" in out
    assert "compose.yaml:8:32: " in out and "VXLAN id '16777216' is not a number from 1 to 16777215" in out
    assert "compose.yaml:9:34: " in out and "VXLAN port '0' is not a number from 1 to 65535" in out
    assert "compose.yaml:10:35: " in out and "VXLAN local address 'nope' is not an IPv4 address" in out
    assert "needs an explicit IPv4 subnet" in out and "ip_range" in out and "${OVERLAY_RANGE}" in out
    assert "compose.yaml:13:35: " in out and "com.composenet.vxlan.peers needs driver: overlay" in out
