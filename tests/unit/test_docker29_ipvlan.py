"""driver: ipvlan (issue 14): the plan (links, modes, routes, resolver), the refusal at the
driver's FILE:LINE:COL when the kernel lacks ipvlan (before anything touches the kernel), and
the read-only support check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from composenet.core.desired import Upstreams
from composenet.core.resources import Ipvlan, NetnsFile, Route
from composenet.core.state import ObservedState
from composenet.errors import InputError
from composenet.kernel import ipvlan
from composenet.pipeline import make_plan

from .helpers import errors, load_text

COMPOSE = """
name: ipv
services:
  a:
    networks: [l2net]
  b:
    networks: [l3net]
networks:
  l2net:
    driver: ipvlan
    driver_opts: {parent: eth0}
    ipam: {config: [{subnet: 192.168.60.0/24, gateway: 192.168.60.1}]}
  l3net:
    driver: ipvlan
    driver_opts: {parent: eth0, ipvlan_mode: l3, ipvlan_flag: private}
    ipam: {config: [{subnet: 192.168.61.0/24}]}
"""


def _plan(tmp_path: Path, observed: ObservedState):
    project = load_text(tmp_path, COMPOSE)
    return make_plan(project, project.name, observed, Upstreams(("192.0.2.53",)))


def test_ipvlan_links_modes_routes_and_resolver(tmp_path: Path) -> None:
    res = _plan(tmp_path, ObservedState(offline=True)).desired.resources
    links = sorted((r for r in res.values() if isinstance(r, Ipvlan)), key=lambda r: r.ns)
    assert [(r.ns, r.ifname, r.parent, r.mode, r.flag) for r in links] == [
        ("ipv-a-1", "eth0", "eth0", "l2", "bridge"), ("ipv-b-1", "eth0", "eth0", "l3", "private")]
    routes = {r.ns: r for r in res.values() if isinstance(r, Route)}
    assert routes["ipv-a-1"].gateway == "192.168.60.1"  # l2: the network's gateway
    assert routes["ipv-b-1"].gateway is None and routes["ipv-b-1"].ifname == "eth0"  # l3: the device
    resolv = {r.ns: r.content for r in res.values() if isinstance(r, NetnsFile) and r.name == "resolv.conf"}
    assert all(text.startswith("nameserver 127.0.0.11\n") for text in resolv.values()), resolv


def test_a_kernel_without_ipvlan_refuses_the_plan_at_the_driver(tmp_path: Path) -> None:
    with pytest.raises(InputError) as ei:
        _plan(tmp_path, ObservedState(ipvlan_missing=ipvlan.MISSING))
    text = str(ei.value)
    assert "compose.yaml:9:13: networks.l2net.driver: driver ipvlan: this kernel has no ipvlan support " \
           "(CONFIG_IPVLAN is not set and there is no ipvlan module)" in text, text


def test_the_refusal_through_the_cli_with_a_recorded_observed_state(tmp_path: Path) -> None:
    """`plan --observed` with a recorded kernel that lacks ipvlan: exit 1, located, no traceback
    (the same path `up` takes before it applies anything)."""
    (tmp_path / "compose.yaml").write_text(COMPOSE.lstrip("\n"))
    (tmp_path / "observed.json").write_text(json.dumps(ObservedState(ipvlan_missing=ipvlan.MISSING).to_json()))
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    r = subprocess.run([sys.executable, "-m", "composenet", "--resolv-conf", "resolv.conf", "plan", "--observed",
                        "observed.json"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "compose.yaml:9:13: networks.l2net.driver: driver ipvlan: this kernel has no ipvlan support" in r.stderr
    assert "CONFIG_IPVLAN" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("opt,value,want", [
    ("ipvlan_mode", "l4", "unknown ipvlan mode 'l4' (hint: use l2, l3, l3s)"),
    ("ipvlan_flag", "open", "unknown ipvlan flag 'open' (hint: use bridge, private, vepa)"),
])
def test_invalid_ipvlan_options_are_located_errors(tmp_path: Path, opt: str, value: str, want: str) -> None:
    got = errors(tmp_path, f"""
services: {{}}
networks:
  n:
    driver: ipvlan
    driver_opts: {{parent: eth0, {opt}: {value}}}
""")
    assert f"networks.n.driver_opts.{opt}: {want}" in got, got


def test_support_check(monkeypatch: pytest.MonkeyPatch) -> None:
    ipvlan.missing_reason.cache_clear()
    monkeypatch.setattr(os.path, "isdir", lambda p: False)
    for config, module, probe, want in (("y", False, False, ""), ("m", True, False, ""), ("n", True, True, ipvlan.MISSING),
                                        ("m", False, True, "CONFIG_IPVLAN=m"), (None, False, True, ""),
                                        (None, False, False, ipvlan.MISSING), (None, True, False, "")):
        monkeypatch.setattr(ipvlan, "_config_value", lambda name, c=config: c)
        monkeypatch.setattr(ipvlan, "_module_file", lambda m=module: m)
        monkeypatch.setattr(ipvlan, "_probe", lambda p=probe: p)
        ipvlan.missing_reason.cache_clear()
        got = ipvlan.missing_reason()
        assert (want in got) if want else got == "", (config, module, probe, got)
    ipvlan.missing_reason.cache_clear()
