"""Names across projects on shared networks (root, throwaway sandbox namespaces), with real DNS
queries from inside the namespaces and TCP connections by name (glibc, the container's own
resolv.conf, through `composenet exec`).

Docker's behaviour: every container on a network resolves every other container on it, whatever
its project. A network is served by its owner's resolver (a project's, or a standalone network's
own), which merges the records other projects publish for their endpoints on it
(composenet/dns/peers.py); scoping stays per network.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.integration import dnstopo
from tests.integration.sandbox import DNS_ADDR, WEB_ADDR, Sandbox, wait_for
from tests.integration.sandbox import dns as query
from tests.integration.stacks import ECHO


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def write(d: Path, text: str) -> Path:
    d.mkdir(exist_ok=True)
    path = d / "compose.yaml"
    path.write_text(text.replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO)))
    return path


def dns(ns: str, server: str, name: str) -> tuple[str, list[str]]:
    """One A query from inside namespace ``ns`` to ``server``: (rcode name, addresses)."""
    return query(ns, server, name, timeout=3.0)


def nameserver(ns: str) -> str:
    """The first nameserver of the container's resolv.conf."""
    for line in Path(f"/etc/netns/{ns}/resolv.conf").read_text().splitlines():
        if line.startswith("nameserver "):
            return line.split()[1]
    raise AssertionError(f"no nameserver in the resolv.conf of {ns}")


CONNECT = ("import socket,sys; s=socket.create_connection((sys.argv[1], 80), timeout=3); "
           "print(s.recv(4096).decode().strip())")


def connect_by_name(sb: Sandbox, p: str, service: str, name: str) -> str:
    """`composenet exec SERVICE` a TCP connection to NAME:80 (glibc resolves with the container's
    resolv.conf); the echo server's reply ``<peer seen> <hostname>``."""
    r = sb.composenet("-p", p, "exec", service, "--", sys.executable, "-c", CONNECT, name,
                      cwd=str(sb.empty_dir()))
    return r.stdout.strip()


def start_upstream(sb: Sandbox) -> None:
    """The fake upstream DNS at 198.51.100.53 in the outside namespace: NXDOMAIN for any name
    outside .example, so a name no resolver knows any more gets a real NXDOMAIN."""
    log = sb.tmp / "upstream.log"
    p = subprocess.Popen(["nsenter", f"--net=/run/netns/{sb.outside}", sys.executable, dnstopo.__file__,
                          "upstream", str(log), DNS_ADDR, WEB_ADDR],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sb.procs.append(p)
    ready = sb.tmp / f"upstream-{DNS_ADDR}.ready"
    for _ in range(200):
        if ready.exists():
            return
        assert p.poll() is None, "the fake upstream exited"
        time.sleep(0.05)
    raise AssertionError("the fake upstream did not start")


OWNER = """
services:
  srv:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [shared]
networks:
  shared: @SHARED@
"""

JOINER = """
services:
  app:
    command: "@PY@ @ECHO@ --tcp 80"
    networks:
      shared:
        aliases: [app-alias]
      priv: {}
  solo:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [shared]
  hidden:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [priv]
networks:
  shared:
    external: true
    name: @NET@
  priv: {}
"""


def check_names_across(sb: Sandbox, a: str, b: str, net: str) -> None:
    """A's srv and B's app/solo/hidden: names across the shared network ``net``, both ways,
    scoped per network, then gone after B's down."""
    srv, app, solo, hidden = f"{a}-srv-1", f"{b}-app-1", f"{b}-solo-1", f"{b}-hidden-1"
    srv_ip, app_ip, solo_ip = sb.ipv4(srv), sb.ipv4(app, "eth0"), sb.ipv4(solo)
    hidden_ip, app_priv = sb.ipv4(hidden), sb.ipv4(app, "eth1")
    shared_gw, priv_gw = sb.gateway_for(srv_ip), sb.gateway_for(hidden_ip)
    assert sb.gateway_for(app_ip) == shared_gw
    # Resolvers: the network's owner serves it; B's app keeps B's own resolver first; B's solo,
    # on the shared network only, asks the network's owner.
    assert nameserver(srv) == shared_gw
    assert nameserver(app) == priv_gw
    assert nameserver(solo) == shared_gw

    # A's side (the owner's resolver): B's containers on the shared network, by service name,
    # container name and alias, with their address there; never B's private service.
    assert dns(srv, shared_gw, "app") == ("NOERROR", [app_ip])
    assert dns(srv, shared_gw, app) == ("NOERROR", [app_ip])
    assert dns(srv, shared_gw, "app-alias") == ("NOERROR", [app_ip])
    assert dns(srv, shared_gw, "solo") == ("NOERROR", [solo_ip])
    assert dns(srv, shared_gw, "hidden") == ("NXDOMAIN", [])
    assert dns(srv, shared_gw, hidden) == ("NXDOMAIN", [])
    # B's solo asks the owner too: both projects on the shared network, nothing of priv.
    assert dns(solo, shared_gw, "srv") == ("NOERROR", [srv_ip])
    assert dns(solo, shared_gw, "app") == ("NOERROR", [app_ip])
    assert dns(solo, shared_gw, "hidden") == ("NXDOMAIN", [])
    # B's side (B's own resolver, which app asks first): A's srv on the shared network, and B's
    # own names on both networks, each with its address on the network shared with the asker.
    assert dns(app, priv_gw, "srv") == ("NOERROR", [srv_ip])
    assert dns(app, priv_gw, srv) == ("NOERROR", [srv_ip])
    assert dns(app, priv_gw, "hidden") == ("NOERROR", [hidden_ip])
    assert dns(app, priv_gw, "solo") == ("NOERROR", [solo_ip])
    assert dns(hidden, priv_gw, "srv") == ("NXDOMAIN", [])  # hidden is not on the shared network
    assert dns(hidden, priv_gw, "app") == ("NOERROR", [app_priv])

    # TCP by name, with glibc and each container's own resolv.conf, both ways.
    wait_for(app, srv_ip, 80)
    wait_for(srv, app_ip, 80)
    wait_for(srv, solo_ip, 80)
    assert connect_by_name(sb, b, "app", "srv").split() == [app_ip, srv]
    assert connect_by_name(sb, b, "solo", "srv").split() == [solo_ip, srv]
    assert connect_by_name(sb, a, "srv", "app").split() == [srv_ip, app]
    assert connect_by_name(sb, a, "srv", "solo").split() == [srv_ip, solo]


def check_gone_after_down(sb: Sandbox, a: str, b: str, joiner: Path) -> None:
    srv = f"{a}-srv-1"
    srv_ip = sb.ipv4(srv)
    shared_gw = sb.gateway_for(srv_ip)
    sb.down(b, joiner)
    sb.assert_clean(b)
    for name in ("app", "solo", "app-alias", f"{b}-app-1"):
        assert dns(srv, shared_gw, name) == ("NXDOMAIN", []), name
    assert dns(srv, shared_gw, "srv") == ("NOERROR", [srv_ip])


def test_names_across_a_network_of_another_project(sandbox: Sandbox, tmp_path) -> None:
    sb, a, b = sandbox, project(), project()
    net = f"{a}_shared"
    start_upstream(sb)
    owner = write(tmp_path / "a", OWNER.replace("@SHARED@", "{}"))
    joiner = write(tmp_path / "b", JOINER.replace("@NET@", net))
    sb.up(owner, a)
    sb.up(joiner, b)
    check_names_across(sb, a, b, net)
    # The owner's own plan is untouched by the joiner's records (they are not its config).
    assert sb.plan(owner, a).returncode == 0
    assert sb.plan(joiner, b).returncode == 0
    # `network connect` of B's private service to A's network: A's resolver follows at once.
    srv, hidden = f"{a}-srv-1", f"{b}-hidden-1"
    shared_gw = sb.gateway_for(sb.ipv4(srv))
    sb.composenet("-p", b, "network", "connect", "--alias", "hid", net, hidden, cwd=str(tmp_path / "b"))
    hidden_shared = sb.ipv4(hidden, "eth1")
    assert dns(srv, shared_gw, "hidden") == ("NOERROR", [hidden_shared])
    assert dns(srv, shared_gw, "hid") == ("NOERROR", [hidden_shared])
    assert connect_by_name(sb, a, "srv", "hid").split() == [sb.ipv4(srv), hidden]
    sb.composenet("-p", b, "network", "disconnect", net, hidden, cwd=str(tmp_path / "b"))
    assert dns(srv, shared_gw, "hidden") == ("NXDOMAIN", [])
    check_gone_after_down(sb, a, b, joiner)
    sb.down(a, owner)
    sb.assert_clean(a)


def test_names_across_a_standalone_network(sandbox: Sandbox, tmp_path) -> None:
    sb, a, b = sandbox, project(), project()
    net = f"sa{uuid.uuid4().hex[:6]}"
    sb.projects.add("-" + net)  # teardown removes what a failed test leaves
    start_upstream(sb)
    sb.composenet("network", "create", net, cwd=str(sb.empty_dir()))
    sb.snapshot("-" + net)  # its resolver: assert_clean checks it is gone after rm
    owner = write(tmp_path / "a", OWNER.replace("@SHARED@", f"{{external: true, name: {net}}}"))
    joiner = write(tmp_path / "b", JOINER.replace("@NET@", net))
    sb.up(owner, a)
    sb.up(joiner, b)
    check_names_across(sb, a, b, net)
    check_gone_after_down(sb, a, b, joiner)
    sb.down(a, owner)
    sb.composenet("network", "rm", net, cwd=str(sb.empty_dir()))
    sb.assert_clean(a)  # the network's bridge and resolver count as leftovers until it is removed
    sb.assert_clean("-" + net)
