"""AAAA (and A) answers for multi-homed containers (issue 14): per record type, the first of the
asker's networks where the target has an address of that family, as moby's resolver walks the
asker's networks and skips one whose record lacks the asked type."""

from __future__ import annotations

from composenet.dns.zone import build_zone
from tests.integration.dnstopo import container, endpoint
from tests.unit.test_dns_zone import ask

FOUR, DUAL, SIX = "p_four", "p_dual", "p_six"


def _ep(net: str, v4: str | None, v6: str | None = None, **kw) -> dict:
    e = endpoint(net, v4, **kw)
    e["ipv6"] = v6
    return e


def _zone():
    return build_zone({
        "project": "p", "ttl": 5, "pidfile": "/nonexistent/dns.pid", "upstreams": ["192.0.2.53"],
        "listeners": [{"network": FOUR, "address": "10.1.0.1", "port": 53, "internal": False},
                      {"network": DUAL, "address": "10.2.0.1", "port": 53, "internal": False}],
        "containers": [
            # b: an IPv4-only network first, then a dual-stack one, then an IPv6-only one.
            container("p-b-1", "b", [_ep(FOUR, "10.1.0.2"), _ep(DUAL, "10.2.0.2", "fd02::2"), _ep(SIX, None, "fd06::2")],
                      links=[["cl", "c"]]),
            container("p-c-1", "c", [_ep(FOUR, "10.1.0.3"), _ep(DUAL, "10.2.0.3", "fd02::3")]),
            container("p-a-1", "a", [_ep(SIX, None, "fd06::4")]),
            container("p-d-1", "d", [_ep(DUAL, "10.2.0.5", "fd02::5")]),
        ],
    })


def test_aaaa_of_a_target_sharing_an_ipv4_only_network_first() -> None:
    z = _zone()
    # Was NOERROR with no records: the IPv4-only first network hid the dual-stack one.
    assert ask(z, "10.1.0.2", "c", "AAAA", listener="10.1.0.1") == ["fd02::3"]
    assert ask(z, "10.1.0.2", "c", "A", listener="10.1.0.1") == ["10.1.0.3"]  # A still from the first network
    assert ask(z, "10.1.0.2", "cl", "AAAA", listener="10.1.0.1") == ["fd02::3"]  # a link alias too
    # A peer only on the dual-stack network got it before and still does.
    assert ask(z, "10.2.0.5", "c", "AAAA", listener="10.2.0.1") == ["fd02::3"]


def test_a_container_only_on_ipv6_only_networks_has_no_a_record() -> None:
    z = _zone()
    assert ask(z, "10.1.0.2", "a", "A", listener="10.1.0.1") == "EMPTY"
    assert ask(z, "10.1.0.2", "a", "AAAA", listener="10.1.0.1") == ["fd06::4"]
    # Not shared: still NXDOMAIN, never forwarded.
    assert ask(z, "10.2.0.5", "a", "AAAA", listener="10.2.0.1") == "NXDOMAIN"
    # From a (IPv6-only) itself: b's address there, no A.
    assert ask(z, "fd06::4", "b", "AAAA", listener="10.1.0.1") == ["fd06::2"]
    assert ask(z, "fd06::4", "b", "A", listener="10.1.0.1") == "EMPTY"
