"""What a project asks of the host's forwarding (core/desired/resources.py): a membership in the
forwarding guard instead of ``ip_forward`` set for good, and the plan's "Host:" sentences."""

from __future__ import annotations

from pathlib import Path

from composenet.core.desired import Upstreams
from composenet.core.desired.networks import plan_networks
from composenet.core.desired.resources import add_network_resources, forwarding_sentence
from composenet.core.render import render_text
from composenet.core.resources import ForwardingGuard, Sysctl
from composenet.core.state import DesiredState, ObservedState
from composenet.pipeline import make_plan

from .helpers import load_text

UP = Upstreams(("192.0.2.53",))
STACK = """
    name: fw
    services:
      web:
        networks: [front, back, hidden]
    networks:
      front:
        enable_ipv6: true
      back: {}
      hidden:
        internal: true
"""


def desired(tmp_path: Path, text: str, observed: ObservedState | None = None) -> DesiredState:
    project = load_text(tmp_path, text)
    nets = plan_networks(project, observed or ObservedState(offline=True), [])
    d = DesiredState(project.name)
    add_network_resources(d, project.name, [np for np in nets.values() if np.kind == "bridge"], observed)
    return d


def test_a_membership_replaces_setting_forwarding_for_good(tmp_path: Path):
    planned = make_plan(load_text(tmp_path, STACK), "fw", ObservedState(offline=True), UP)
    res = planned.desired.resources
    assert not [k for k, r in res.items() if isinstance(r, Sysctl) and "forward" in r.name]
    g = res["guard:fw"]
    assert isinstance(g, ForwardingGuard)
    bridges = {r.ifname for r in res.values() if r.kind == "bridge"}
    assert set(g.bridges) == bridges and len(bridges) == 3  # the internal network's bridge too
    assert g.families == ("ipv4", "ipv6")
    text = render_text(planned.plan)
    assert "  guard    forwarding (ipv4, ipv6) for " in text
    host = text.split("Host:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split(" (")[0].strip() for line in host] == ["IPv4 forwarding", "IPv6 forwarding"]


def test_internal_networks_need_no_forwarding(tmp_path: Path):
    d = desired(tmp_path, """
        name: quiet
        services:
          db:
            networks: [hidden]
        networks:
          hidden:
            internal: true
    """)
    g = d.resources["guard:quiet"]
    assert isinstance(g, ForwardingGuard) and g.families == () and len(g.bridges) == 1
    assert d.host == []


def test_no_bridge_no_membership(tmp_path: Path):
    d = desired(tmp_path, """
        name: mv
        services:
          a:
            networks: [lan]
        networks:
          lan:
            driver: macvlan
            driver_opts: {parent: eth9}
    """)
    assert "guard:mv" not in d.resources and d.host == []


def observed_forwarding(v4: str, v6: str) -> ObservedState:
    st = ObservedState()
    st.add(Sysctl("", "net.ipv4.ip_forward", v4))
    st.add(Sysctl("", "net.ipv6.conf.all.forwarding", v6))
    return st


def test_the_host_sentences_follow_what_the_host_does_now(tmp_path: Path):
    d = desired(tmp_path, STACK, observed_forwarding("0", "1"))
    v4, v6 = d.host
    assert v4.startswith("IPv4 forwarding (net.ipv4.ip_forward), needed by fw_back, fw_front, is off on this host: "
                         "`up` records the host's value, turns it on and guards it")
    assert "restores the recorded value and removes the guard" in v4
    assert v6.startswith("IPv6 forwarding (net.ipv6.conf.all.forwarding), needed by fw_front, is already on: "
                         "composenet leaves it as it is.")
    assert "adds no guard and restores nothing" in v6


def test_no_sentence_once_the_membership_is_in_place(tmp_path: Path):
    first = desired(tmp_path, STACK, observed_forwarding("0", "0"))
    st = observed_forwarding("1", "1")
    st.add(first.resources["guard:fw"])
    assert desired(tmp_path, STACK, st).host == []


def test_offline_both_cases_are_told():
    text = forwarding_sentence("ipv4", "a", None)
    assert text.startswith("IPv4 forwarding (net.ipv4.ip_forward), needed by a, is turned on if it is off: `up` records")
    assert "If it is already on, composenet leaves it as it is and adds no guard" in text
