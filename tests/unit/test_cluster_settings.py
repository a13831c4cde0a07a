"""The host's cluster settings (composenet/cluster/settings.py, pure): the store URL syntax and
every error it names, TLS files from the environment, node name, advertise address, TTL."""

from __future__ import annotations

import pytest

from composenet.cluster.errors import StoreConfigError
from composenet.cluster.settings import (
    DEFAULT_TTL,
    Endpoint,
    parse_advertise,
    parse_node,
    parse_store_url,
    route_source,
    settings_from,
)


def test_store_urls_parse_to_endpoints_in_order():
    u = parse_store_url("etcd://10.99.0.1:2379,etcd-2.example:22379,[2001:db8::1]:2379", {})
    assert not u.tls and u.endpoints == (Endpoint("10.99.0.1", 2379), Endpoint("etcd-2.example", 22379),
                                         Endpoint("2001:db8::1", 2379))
    assert u.base_urls() == ["http://10.99.0.1:2379", "http://etcd-2.example:22379", "http://[2001:db8::1]:2379"]
    assert str(u) == "etcd://10.99.0.1:2379,etcd-2.example:22379,[2001:db8::1]:2379"
    assert parse_store_url("http://h1:2379,http://h2:2379", {}).endpoints == (Endpoint("h1", 2379), Endpoint("h2", 2379))
    assert parse_store_url("ETCD://h1/", {}).endpoints == (Endpoint("h1", 2379),)  # default port, trailing slash
    assert parse_store_url(" etcd://h1:2379 , h2:2380 ", {}).endpoints == (Endpoint("h1", 2379), Endpoint("h2", 2380))


@pytest.mark.parametrize("text, why", [
    ("", "no scheme"),
    ("10.0.0.1:2379", "no scheme"),
    ("redis://h:6379", "unknown scheme 'redis'"),
    ("etcd://", "an empty endpoint"),
    ("etcd://h1:2379,", "an empty endpoint"),
    ("etcd://h1:0", "'0' is not a port (1-65535)"),
    ("etcd://h1:65536", "'65536' is not a port (1-65535)"),
    ("etcd://h1:x", "'x' is not a port (1-65535)"),
    ("etcd://h_1:2379", "'h_1' is not a host name or address"),
    ("etcd://user:pw@h1:2379", "user names and passwords in the URL are not supported"),
    ("etcd://h1:2379/v3", "a store URL has no path, query or fragment"),
    ("etcd://2001:db8::1:2379", "write an IPv6 address in brackets"),
    ("etcd://[2001:db8::1:2379", "is not [IPv6]:PORT"),
    ("etcd://[nope]:2379", "'nope' is not an IPv6 address"),
    ("etcd://h1:2379,h1:2379", "an endpoint is listed twice"),
    ("etcd://h1:2379,etcds://h2:2379", "endpoints mix schemes (etcd, etcds)"),
])
def test_bad_store_urls_say_why(text, why):
    with pytest.raises(StoreConfigError) as e:
        parse_store_url(text, {})
    assert e.value.message.startswith(f"store {text!r}: ") and why in e.value.message
    assert e.value.hint and "etcd://HOST:PORT" in e.value.hint


def test_tls_takes_its_files_from_the_environment(tmp_path):
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for p in (ca, cert, key):
        p.write_text("x")
    env = {"COMPOSENET_STORE_CA": str(ca), "COMPOSENET_STORE_CERT": str(cert), "COMPOSENET_STORE_KEY": str(key)}
    u = parse_store_url("etcds://h1:2379", env)
    assert u.tls and (u.ca, u.cert, u.key) == (str(ca), str(cert), str(key)) and u.base_urls() == ["https://h1:2379"]
    assert parse_store_url("https://h1:2379", {}).tls  # server verified against the system's CAs
    with pytest.raises(StoreConfigError, match="go together"):
        parse_store_url("etcds://h1", {"COMPOSENET_STORE_CERT": str(cert)})
    with pytest.raises(StoreConfigError, match=r"COMPOSENET_STORE_CA=/nonexistent/ca: no such file"):
        parse_store_url("etcds://h1", {"COMPOSENET_STORE_CA": "/nonexistent/ca"})
    with pytest.raises(StoreConfigError, match="are set but the URL is not TLS"):
        parse_store_url("etcd://h1", {"COMPOSENET_STORE_CA": str(ca)})


def test_settings_from_options_and_environment():
    assert settings_from(env={}) is None  # no store: static peers
    s = settings_from(env={"COMPOSENET_STORE": "etcd://h1", "COMPOSENET_NODE": "n1",
                           "COMPOSENET_ADVERTISE_ADDR": "192.0.2.1", "COMPOSENET_STORE_TTL": "4"})
    assert s is not None and (s.node, s.advertise, s.ttl, str(s.store)) == ("n1", "192.0.2.1", 4, "etcd://h1:2379")
    s = settings_from("etcd://h2:1", "n2", "192.0.2.2", env={"COMPOSENET_STORE": "etcd://h1", "COMPOSENET_NODE": "n1"})
    assert s is not None and (s.node, s.advertise, str(s.store), s.ttl) == ("n2", "192.0.2.2", "etcd://h2:1", DEFAULT_TTL)
    s = settings_from(env={"COMPOSENET_STORE": "etcd://h1"})
    assert s is not None and s.node and s.advertise is None  # hostname; advertise decided by route
    with pytest.raises(StoreConfigError, match=r"COMPOSENET_STORE_TTL='1': expected whole seconds, 2-3600"):
        settings_from(env={"COMPOSENET_STORE": "etcd://h1", "COMPOSENET_STORE_TTL": "1"})


def test_node_names_and_advertise_addresses():
    assert parse_node("h1.example-2_x") == "h1.example-2_x"
    for bad in ("", "-h1", "h/1", "h 1", "x" * 64):
        with pytest.raises(StoreConfigError, match="is not valid"):
            parse_node(bad)
    assert parse_advertise(" 192.0.2.7 ") == "192.0.2.7"
    for bad, why in (("2001:db8::1", "not an IPv4 address"), ("0.0.0.0", "cannot carry VXLAN"),
                     ("127.0.0.1", "cannot carry VXLAN"), ("224.0.0.1", "cannot carry VXLAN")):
        with pytest.raises(StoreConfigError, match=why):
            parse_advertise(bad)


def test_route_source_is_the_address_the_kernel_would_use():
    # A connected UDP socket: the kernel picks the route and the source; nothing is sent.
    assert route_source(Endpoint("127.0.0.1", 2379)) == "127.0.0.1"
