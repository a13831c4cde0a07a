"""Every port form: short syntax (CS-PORT-01..08, the CS-PORT-08 spec examples), long syntax (CS-PORT-10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from composenet.compose.ports import parse_port, parse_port_short
from composenet.compose.values import ValueProblem
from composenet.core.model import Port

from .helpers import errors, load_text


def ports(spec) -> list[tuple]:
    return [(p.target, p.published, p.host_ip, p.protocol) for p in parse_port(spec)]


@pytest.mark.parametrize("spec,want", [
    ("3000", [(3000, None, None, "tcp")]),
    (3000, [(3000, None, None, "tcp")]),
    ("3000-3005", [(p, None, None, "tcp") for p in range(3000, 3006)]),
    ("8000:8000", [(8000, "8000", None, "tcp")]),
    ("9090-9091:8080-8081", [(8080, "9090", None, "tcp"), (8081, "9091", None, "tcp")]),
    ("49100:22", [(22, "49100", None, "tcp")]),
    ("8000-9000:80", [(80, "8000-9000", None, "tcp")]),
    ("127.0.0.1:8001:8001", [(8001, "8001", "127.0.0.1", "tcp")]),
    ("127.0.0.1:5000-5010:5000-5010", [(5000 + i, str(5000 + i), "127.0.0.1", "tcp") for i in range(11)]),
    ("fd00::1:6000:6000", [(6000, "6000", "fd00::1", "tcp")]),
    ("[fd00::1]:6001:6001", [(6001, "6001", "fd00::1", "tcp")]),
    ("6060:6060/udp", [(6060, "6060", None, "udp")]),
    ("127.0.0.1::80", [(80, None, "127.0.0.1", "tcp")]),
    (":80:80", [(80, "80", None, "tcp")]),  # empty host IP after interpolation (CS-PORT-14)
    ("[::]:53:53/UDP", [(53, "53", "::", "udp")]),
    ("5000/sctp", [(5000, None, None, "sctp")]),
    ("0.0.0.0:80:80", [(80, "80", "0.0.0.0", "tcp")]),
    ("[2001:DB8::0001]:80:80", [(80, "80", "2001:db8::1", "tcp")]),
])
def test_short_syntax(spec, want):
    assert ports(spec) == want


@pytest.mark.parametrize("spec,msg", [
    ("70000", "out of range"), ("0:80", "out of range"), ("80/tcpx", "unknown protocol"),
    ("80/upd", "unknown protocol 'upd'"), ("8000-8002:80-81", "different lengths"), ("90-80", "end before start"),
    ("abc", "invalid container port"), ("1.2.3:80:80", "invalid IP"), ("", "empty port"),
])
def test_short_syntax_errors(spec, msg):
    with pytest.raises(ValueProblem, match=msg):
        parse_port(spec)


def test_long_syntax():
    got = parse_port({"target": 80, "published": "8080", "host_ip": "[fd00::1]", "protocol": "udp", "mode": "host",
                      "app_protocol": "http", "name": "web"})
    assert got == [Port(80, "8080", "fd00::1", "udp", "host", "http", "web")]
    assert parse_port({"target": "80", "published": 8080}) == [Port(80, "8080")]
    assert parse_port({"target": 80, "published": "8000-8010"}) == [Port(80, "8000-8010")]
    assert parse_port({"target": 80}) == [Port(80)]
    for bad, msg in (({"published": 80}, "target"), ({"target": 80, "mode": "x"}, "unknown mode"),
                     ({"target": "80-81"}, "single port"), ({"target": 80, "protocol": "icmp"}, "protocol")):
        with pytest.raises(ValueProblem, match=msg):
            parse_port(bad)


def test_ports_in_a_file_are_expanded_and_located(tmp_path: Path):
    p = load_text(tmp_path, """
        services:
          web:
            ports:
              - 22:22
              - "8000-8001:80-81"
              - target: 443
                published: 8443
    """)
    web = p.service("web")
    assert [(x.target, x.published) for x in web.ports] == [(22, "22"), (80, "8000"), (81, "8001"), (443, "8443")]
    assert web.ports[0].pos and (web.ports[0].pos.line, web.ports[0].pos.path) == (4, "services.web.ports[0]")
    assert p.document["services"]["web"]["ports"][3] == {"target": 443, "published": "8443", "protocol": "tcp",
                                                         "mode": "ingress"}


def test_bad_port_names_file_line_and_key(tmp_path: Path):
    text = errors(tmp_path, """
        services:
          web:
            ports:
              - "80"
              - "8080:80/tcpx"
    """)
    assert "compose.yaml:5:9: services.web.ports[1]: unknown protocol 'tcpx'" in text


def test_three_ports_name_the_port_format():
    """Issue 13: `8080:80:90` is three ports, not an address and two ports: the error says which
    part stands where the address goes and how a port is written."""
    with pytest.raises(ValueProblem) as e:
        parse_port_short("8080:80:90")
    assert "'8080' stands where the host address goes" in str(e.value)
    assert e.value.hint is not None and "[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]" in e.value.hint
