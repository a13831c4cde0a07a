"""Drivers and network modes end to end (root, throwaway sandbox namespaces), with real traffic:
``network_mode`` host / none / service:NAME, ``driver: macvlan`` on a veth parent inside the
sandbox, and IPv6 dual stack on a bridge network (addresses, AAAA answers, an IPv6 published
port reached from the outside namespace). Each test ends with ``down`` and
``sandbox.assert_clean``; the sandbox fixture removes everything even when a test fails.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

from tests.integration.sandbox import (
    HOST_ADDR,
    OUTSIDE_ADDR,
    Sandbox,
    dns,
    netns_inode,
    proc_cmdline,
    processes_in,
    tcp,
    wait_for,
)
from tests.integration.stacks import ECHO, HERE

ECHO_DUAL = HERE / "echo_dual.py"


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def write(tmp: Path, text: str) -> Path:
    """A compose file in the test's own directory; @PY@, @ECHO@ and @ECHO6@ are filled in."""
    text = text.replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO)).replace("@ECHO6@", str(ECHO_DUAL))
    path = tmp / "compose.yaml"
    path.write_text(text)
    return path


def link_names(sb: Sandbox, ns: str) -> list[str]:
    return sorted(link["ifname"] for link in json.loads(sb.ip(ns, "-j link show") or "[]"))


def addrs6(sb: Sandbox, ns: str, ifname: str) -> list[str]:
    out = []
    for link in json.loads(sb.ip(ns, f"-j -6 addr show dev {ifname}") or "[]"):
        for a in link.get("addr_info", []):
            if a.get("scope") == "global":
                out.append(a["local"])
    return out


def pids_running(ns: str, marker: str) -> list[int]:
    return [pid for pid in processes_in(ns) if marker in proc_cmdline(pid)]


# ---- network_mode: host, none, service:NAME ------------------------------------------------

MODES = """
services:
  base:
    hostname: base-host
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [n1]
  side:
    network_mode: "service:base"
    command: "@PY@ @ECHO@ --tcp 81"
  hostnet:
    network_mode: host
    command: "@PY@ @ECHO@ --bind 0.0.0.0 --tcp 8099"
  nonet:
    network_mode: none
    command: "@PY@ @ECHO@ --bind 127.0.0.1 --tcp 82"
  peer:
    networks: [n1]
  nodrv:
    networks: [nothing]
networks:
  n1: {}
  nothing:
    driver: none
"""


def test_network_modes_host_none_and_service(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, MODES)
    sb.up(compose, p)
    base, nonet, peer, nodrv = f"{p}-base-1", f"{p}-nonet-1", f"{p}-peer-1", f"{p}-nodrv-1"
    # host and service: get no namespace of their own.
    assert sb.namespaces(p) == [base, nodrv, nonet, peer]

    # host: the process lives in the sandbox host namespace, sees its interfaces (the uplink),
    # and its port answers on the host's address, from outside.
    seen = wait_for(sb.outside, HOST_ADDR, 8099)
    assert seen.split()[0] == OUTSIDE_ADDR, seen
    host_pids = pids_running(sb.host, "--tcp 8099")
    assert len(host_pids) == 1, host_pids
    with open(f"/proc/{host_pids[0]}/net/dev") as f:
        assert "up0:" in f.read()

    # service:base: side runs in base's namespace (same address, same localhost).
    base_ip = sb.ipv4(base)
    side_pids = pids_running(base, "--tcp 81")
    assert len(side_pids) == 1, processes_in(base)
    assert os.readlink(f"/proc/{side_pids[0]}/ns/net") == f"net:[{netns_inode(base)}]"
    assert wait_for(peer, base_ip, 81)  # side's server, on base's address
    assert wait_for(base, "127.0.0.1", 81)  # and on the shared localhost
    assert wait_for(base, "127.0.0.1", 80)
    # The hostname is copied from base (DOCKER-BEHAVIOUR (d)).
    assert tcp(peer, base_ip, 81).split()[1] == "base-host"

    # DNS: base and peer resolve; side (shares a namespace) and nonet (no network) do not.
    gw = sb.gateway_for(base_ip)
    assert dns(peer, gw, "base") == ("NOERROR", [base_ip])
    assert dns(peer, gw, "peer") == ("NOERROR", [sb.ipv4(peer)])
    # Names the resolver does not know are forwarded to the sandbox's upstream, which does not
    # answer: SERVFAIL (Docker's upstream said NXDOMAIN); either way no local answer.
    for name in ("side", f"{p}-side-1", "nonet", f"{p}-nonet-1", "hostnet", "nodrv"):
        assert dns(peer, gw, name) in (("NXDOMAIN", []), ("SERVFAIL", [])), name

    # none: loopback only, no routes, its own localhost works, nothing else does.
    for ns in (nonet, nodrv):  # a network with `driver: none` is the same
        assert link_names(sb, ns) == ["lo"], ns
        assert sb.ip(ns, "route show").strip() == "", ns
    assert wait_for(nonet, "127.0.0.1", 82)
    assert tcp(nonet, HOST_ADDR, 8099, 0.5) is None
    assert tcp(nonet, base_ip, 80, 0.5) is None
    with open(f"/etc/netns/{nonet}/resolv.conf") as f:
        assert "nameserver 198.51.100.53" in f.read()  # the host's copy, no composenet resolver

    # Converged: a second plan is empty.
    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr

    sb.down(p, compose)
    assert pids_running(sb.host, "--tcp 8099") == []
    sb.assert_clean(p)


def test_ports_with_network_mode_host_are_refused_with_their_location(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, """
services:
  hostnet:
    network_mode: host
    command: "@PY@ @ECHO@ --tcp 8099"
    ports: ["8099:8099"]
""")
    r = sb.up(compose, p, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{compose}:6:" in r.stderr and "services.hostnet.ports" in r.stderr, r.stderr
    assert "network_mode host" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert pids_running(sb.host, "--tcp 8099") == []
    sb.assert_clean(p)


# ---- driver: macvlan ---------------------------------------------------------------------

MACVLAN = """
services:
  a:
    command: "@PY@ @ECHO@ --tcp 80 --udp 80"
    networks:
      lan:
        ipv4_address: 192.168.50.10
  b:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [lan]
networks:
  lan:
    driver: macvlan
    attachable: true
    labels: {com.example.team: edge}
    driver_opts:
      parent: @PARENT@
    ipam:
      config:
        - subnet: 192.168.50.0/24
          gateway: 192.168.50.1
          ip_range: 192.168.50.0/25
          aux_addresses: {router: 192.168.50.2}
"""


def test_macvlan_on_a_veth_parent(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    # The parent: one end of a veth pair inside the sandbox host namespace (the kernel may lack
    # the dummy driver; a veth works the same for macvlan).
    parent = "mvp0"
    sb.ip(sb.host, f"link add {parent} type veth peer name mvp1")
    sb.ip(sb.host, f"link set {parent} up")
    sb.ip(sb.host, "link set mvp1 up")
    # The host has an address in the subnet on the parent: still it cannot reach the macvlan
    # endpoints through it (a macvlan parent never talks to its own macvlan links).
    sb.ip(sb.host, f"addr add 192.168.50.254/24 dev {parent}")
    compose = write(tmp_path, MACVLAN.replace("@PARENT@", parent))
    sb.up(compose, p)
    a, b = f"{p}-a-1", f"{p}-b-1"
    assert sb.namespaces(p) == [a, b]
    assert sb.ipv4(a) == "192.168.50.10"
    b_ip = sb.ipv4(b)
    assert b_ip.startswith("192.168.50.") and b_ip not in ("192.168.50.1", "192.168.50.10"), b_ip
    for ns in (a, b):
        links = json.loads(sb.ip(ns, "-j -d link show dev eth0"))
        assert links[0]["linkinfo"]["info_kind"] == "macvlan", links
        assert links[0]["linkinfo"]["info_data"]["mode"] == "bridge", links
        assert "default via 192.168.50.1 dev eth0" in sb.ip(ns, "route show")
    # No bridge, no veth for a macvlan network.
    assert not [x["ifname"] for x in sb.links() if x["ifname"].startswith(("cnb-", "cnv-"))]

    # The two containers reach each other directly, both ways, with their own addresses: no NAT.
    seen = wait_for(b, "192.168.50.10", 80)
    assert seen.split()[0] == b_ip, seen
    seen = wait_for(a, b_ip, 80)
    assert seen.split()[0] == "192.168.50.10", seen
    # The host cannot reach them through the parent (by design).
    assert tcp(sb.host, "192.168.50.10", 80, 0.5) is None
    # And nothing masquerades the macvlan subnet.
    tables = sb.nft("list", "ruleset").stdout
    assert "192.168.50.0/24" not in tables, tables

    # `network ls` lists the project's macvlan network; `inspect` shows it in Docker's shape.
    def cn(*args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return sb.composenet("network", *args, check=check, cwd=str(sb.empty_dir()))

    lan = f"{p}_lan"
    listed = {n["name"]: n for n in json.loads(cn("ls", "--format", "json").stdout)}
    assert listed[lan]["driver"] == "macvlan" and listed[lan]["project"] == p, listed
    assert lan in cn("ls", "-q").stdout.split()
    info = json.loads(cn("inspect", lan).stdout)[0]
    assert (info["Name"], info["Driver"], info["Internal"], info["Attachable"]) == (lan, "macvlan", False, True), info
    assert info["Options"]["parent"] == parent and info["Labels"]["com.example.team"] == "edge", info
    assert info["Labels"]["com.docker.compose.project"] == p, info
    assert info["Created"].startswith("20"), info
    assert info["IPAM"]["Config"] == [{"Subnet": "192.168.50.0/24", "IPRange": "192.168.50.0/25",
                                       "Gateway": "192.168.50.1",
                                       "AuxiliaryAddresses": {"router": "192.168.50.2"}}], info
    eps = sorted((c["Name"], c["IPv4Address"]) for c in info["Containers"].values())
    assert eps == sorted([(a, "192.168.50.10/24"), (b, f"{b_ip}/24")]), info
    fmt = cn("inspect", lan, "--format", "{{.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}} {{len .Containers}}")
    assert fmt.stdout == "macvlan 192.168.50.0/24 2\n", fmt.stdout

    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    sb.down(p, compose)
    sb.assert_clean(p)
    # The parent is not composenet's: it is still there, untouched.
    assert parent in [x["ifname"] for x in sb.links()]


# ---- IPv6 dual stack ------------------------------------------------------------------------

DUAL = """
services:
  web:
    command: "@PY@ @ECHO6@ --tcp 80"
    ports: ["8080:80"]
    networks: [dual]
  client:
    command: "@PY@ @ECHO6@ --tcp 81"
    networks: [dual]
networks:
  dual:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 10.60.0.0/24
        - subnet: fd00:60::/64
"""

HOST6, OUTSIDE6 = "fd00:cafe::1", "fd00:cafe::fe"


def test_ipv6_dual_stack_bridge(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    # IPv6 on the sandbox uplink (no DAD: usable at once), and a dual-stack server outside.
    sb.ip(sb.host, f"addr add {HOST6}/64 dev up0 nodad")
    sb.ip(sb.outside, f"addr add {OUTSIDE6}/64 dev up0 nodad")
    sb.spawn_in(sb.outside, sys.executable, str(ECHO_DUAL), "--tcp", "80")
    wait_for(sb.outside, OUTSIDE6, 80)

    compose = write(tmp_path, DUAL)
    sb.up(compose, p)
    web, client = f"{p}-web-1", f"{p}-client-1"
    web6, client6 = addrs6(sb, web, "eth0"), addrs6(sb, client, "eth0")
    assert len(web6) == 1 and web6[0].startswith("fd00:60::"), web6
    assert len(client6) == 1 and client6[0].startswith("fd00:60::"), client6
    web4 = sb.ipv4(web)
    assert web4.startswith("10.60.0."), web4
    assert "default via fd00:60::1 dev eth0" in sb.ip(web, "-6 route show")
    bridge = next(x["ifname"] for x in sb.links() if str(x.get("ifalias", "")) == f"composenet:{p}/{p}_dual")
    assert "fd00:60::1/64" in sb.ip(sb.host, f"-6 addr show dev {bridge}")
    # Router advertisements and DAD off on the bridge.
    for knob in ("accept_ra", "accept_dad"):
        r = sb.run_in(sb.host, "cat", f"/proc/sys/net/ipv6/conf/{bridge}/{knob}")
        assert r.stdout.strip() == "0", (knob, r.stdout)

    # Inside the network: both families, no NAT.
    seen = wait_for(client, web6[0], 80)
    assert seen.split()[0] == client6[0], seen
    assert wait_for(client, web4, 80).split()[0] == sb.ipv4(client)

    # The resolver answers A and AAAA.
    assert dns(client, "10.60.0.1", "web", "AAAA") == ("NOERROR", web6)
    assert dns(client, "10.60.0.1", "web", "A") == ("NOERROR", [web4])
    assert dns(web, "10.60.0.1", "client", "AAAA") == ("NOERROR", client6)

    # The published port over IPv6 from the outside namespace: DNAT in the ip6 family; the
    # client's address is preserved. And over IPv4, as always.
    seen = wait_for(sb.outside, HOST6, 8080)
    assert seen.split() == [OUTSIDE6, web], seen
    assert wait_for(sb.outside, HOST_ADDR, 8080).split() == [OUTSIDE_ADDR, web]
    # Egress over IPv6 is masqueraded to the host's address (Docker's default).
    seen = wait_for(client, OUTSIDE6, 80)
    assert seen.split()[0] == HOST6, seen

    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    sb.down(p, compose)
    sb.assert_clean(p)


# ---- external networks -------------------------------------------------------------------

OWNER = """
services:
  srv:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [shared]
networks:
  shared:
    name: @NET@
"""

USER = """
services:
  app:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [outer]
    ports: ["8085:80"]
networks:
  outer:
    external: true
    name: @NET@
"""


def test_external_network_of_another_project(sandbox: Sandbox, tmp_path) -> None:
    sb, owner, user = sandbox, project(), project()
    net = f"shared{uuid.uuid4().hex[:6]}"
    (tmp_path / "owner").mkdir()
    (tmp_path / "user").mkdir()
    owner_file = write(tmp_path / "owner", OWNER.replace("@NET@", net))
    user_file = write(tmp_path / "user", USER.replace("@NET@", net))

    # Missing: a clear error at the network's key, and nothing is created.
    r = sb.up(user_file, user, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{user_file}:" in r.stderr and "networks.outer.external" in r.stderr, r.stderr
    assert f"external network {net!r} does not exist" in r.stderr, r.stderr
    assert sb.namespaces(user) == []

    sb.up(owner_file, owner)
    srv = f"{owner}-srv-1"
    bridge = next(x["ifname"] for x in sb.links() if x.get("ifalias") == f"composenet:{owner}/{net}")
    sb.up(user_file, user)
    app = f"{user}-app-1"
    # The user's container is on the owner's bridge, in its subnet, with an address of its own.
    assert sb.subnet(app) == sb.subnet(srv)
    assert sb.ipv4(app) != sb.ipv4(srv)
    veths = [x for x in sb.links() if str(x.get("ifalias", "")).startswith(f"composenet:{user}/")]
    assert [x.get("master") for x in veths] == [bridge], veths
    assert f"default via {sb.gateway_for(sb.ipv4(app))} dev eth0" in sb.ip(app, "route show")
    # Real traffic both ways, no NAT inside the network; the user's published port works.
    assert wait_for(app, sb.ipv4(srv), 80).split()[0] == sb.ipv4(app)
    assert wait_for(srv, sb.ipv4(app), 80).split()[0] == sb.ipv4(srv)
    assert wait_for(sb.outside, HOST_ADDR, 8085).split() == [OUTSIDE_ADDR, app]
    # Neither plan wants to change anything: the user does not own the bridge, the owner does
    # not see the user's endpoint as its own.
    for f, p in ((user_file, user), (owner_file, owner)):
        r = sb.plan(f, p)
        assert r.returncode == 0, r.stdout + r.stderr
    # A service the owner adds now never takes the address the user's endpoint holds.
    owner_file.write_text(owner_file.read_text().replace("networks:\n  shared:", (
        "  srv2:\n    networks: [shared]\nnetworks:\n  shared:")))
    sb.up(owner_file, owner)
    taken = {sb.ipv4(srv), sb.ipv4(app), sb.gateway_for(sb.ipv4(srv))}
    assert sb.ipv4(f"{owner}-srv2-1") not in taken, (sb.ipv4(f"{owner}-srv2-1"), taken)

    # The user's down leaves the network to its owner.
    sb.down(user, user_file)
    sb.assert_clean(user)
    assert bridge in [x["ifname"] for x in sb.links()]
    assert wait_for(sb.host, sb.ipv4(srv), 80)
    sb.down(owner, owner_file)
    sb.assert_clean(owner)


# ---- composenet network ls/create/inspect/rm/prune ------------------------------------------

STANDALONE_USER = """
services:
  app:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [outer]
networks:
  outer:
    external: true
    name: @NET@
"""


def test_network_commands_and_a_standalone_network_as_external(sandbox: Sandbox, tmp_path) -> None:
    sb, user, other = sandbox, project(), project()
    net, spare, mv = (f"{x}{uuid.uuid4().hex[:6]}" for x in ("sa", "sp", "mv"))
    for n in (net, spare, mv):
        sb.projects.add("-" + n)  # teardown removes what a failed test leaves
    sb.start_outside_web()
    # Foreign links that look like composenet's: never touched.
    sb.ip(sb.host, "link add fbr0 type bridge")
    sb.ip(sb.host, "link set fbr0 alias notcomposenet:x/y")
    sb.ip(sb.host, "link add cnbforeign0 type bridge")

    def cn(*args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return sb.composenet("network", *args, check=check, cwd=str(sb.empty_dir()))

    r = cn("create", "--subnet", "10.77.0.0/24", "--gateway", "10.77.0.254", "-o", "com.example.note=hi", net)
    assert r.stdout.strip() == net, r.stdout + r.stderr
    cn("create", spare)
    cn("create", "--driver", "macvlan", "-o", "parent=up0", "--subnet", "10.78.0.0/24", mv)
    again = cn("create", net, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr, again.stderr
    bad = cn("create", "--subnet", "10.77.0.128/25", "clash", check=False)
    assert bad.returncode == 1 and "overlaps 10.77.0.0/24" in bad.stderr, bad.stderr

    listed = {n["name"]: n for n in json.loads(cn("ls", "--format", "json").stdout)}
    assert set(listed) == {net, spare, mv}, listed
    assert (listed[net]["driver"], listed[net]["subnet"], listed[net]["gateway"]) == ("bridge", "10.77.0.0/24",
                                                                                       "10.77.0.254")
    assert listed[mv]["driver"] == "macvlan" and listed[mv]["subnet"] == "10.78.0.0/24"
    assert net in cn("ls").stdout
    bridge = listed[net]["bridge"]
    assert next(x for x in sb.links() if x["ifname"] == bridge)["ifalias"] == f"composenet:-{net}/{net}"
    assert "10.77.0.254/24" in sb.ip(sb.host, f"addr show dev {bridge}")

    # A project attaches to it with external: true; the network's own rules masquerade egress.
    (tmp_path / "u").mkdir()
    user_file = write(tmp_path / "u", STANDALONE_USER.replace("@NET@", net))
    sb.up(user_file, user)
    app = f"{user}-app-1"
    assert sb.subnet(app) == "10.77.0.0/24"
    assert "default via 10.77.0.254 dev eth0" in sb.ip(app, "route show")
    assert wait_for(app, "198.51.100.10", 80).split()[0] == HOST_ADDR
    assert wait_for(sb.host, sb.ipv4(app), 80)
    # Another project with a network of its own.
    (tmp_path / "o").mkdir()
    other_file = write(tmp_path / "o", "services:\n  x:\n    networks: [own]\nnetworks:\n  own: {}\n")
    sb.up(other_file, other)

    info = json.loads(cn("inspect", net).stdout)[0]
    assert info["Options"] == {"com.example.note": "hi", "com.docker.network.bridge.name": bridge}, info
    assert info["Labels"] == {} and info["Internal"] is False and info["Created"].startswith("20"), info
    assert [(c["Name"], c["IPv4Address"]) for c in info["Containers"].values()] == [(app, sb.ipv4(app) + "/24")], info
    own = json.loads(cn("inspect", f"{other}_own").stdout)[0]
    assert own["Labels"] == {"com.docker.compose.project": other}, own
    assert [c["Name"] for c in own["Containers"].values()] == [f"{other}-x-1"], own
    r = cn("inspect", net, "-f", "{{range $id, $c := .Containers}}{{$c.Name}}={{$c.IPv4Address}}{{end}}")
    assert r.stdout == f"{app}={sb.ipv4(app)}/24\n", r.stdout
    miss = cn("inspect", net[:-1] + "x", check=False)
    assert miss.returncode == 1 and f"did you mean {net!r}" in miss.stderr, miss.stderr
    bad = cn("inspect", net, "--format", "{{template \"x\"}}", check=False)
    assert bad.returncode == 1 and "--format" in bad.stderr, bad.stderr

    # rm is refused while a container is attached, and for a project's network.
    r = cn("rm", net, check=False)
    assert r.returncode == 1 and "active endpoints" in r.stderr and app in r.stderr, r.stderr
    r = cn("rm", f"{other}_own", check=False)
    assert r.returncode == 1 and f"composenet -p {other} down" in r.stderr, r.stderr

    # prune: the unused standalone networks go; the used one, the project's and foreign links stay.
    r = cn("prune", "--format", "json")
    assert sorted(json.loads(r.stdout)) == sorted([spare, mv]), r.stdout + r.stderr
    names = [x["ifname"] for x in sb.links()]
    assert bridge in names and "fbr0" in names and "cnbforeign0" in names, names
    assert set(cn("ls", "-q").stdout.split()) == {net, f"{other}_own"}
    sb.assert_clean("-" + spare)
    sb.assert_clean("-" + mv)

    sb.down(user, user_file)
    sb.assert_clean(user)
    assert cn("rm", net).stdout.strip() == net
    assert bridge not in [x["ifname"] for x in sb.links()]
    sb.assert_clean("-" + net)
    sb.down(other, other_file)
    sb.assert_clean(other)
    names = [x["ifname"] for x in sb.links()]
    assert "fbr0" in names and "cnbforeign0" in names, names


CONNECT = """
services:
  x:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [a]
  y:
    networks: [b]
networks:
  a: {}
  b: {}
"""


def test_connect_and_disconnect_on_a_live_project(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, CONNECT)
    sb.up(compose, p)
    x, y = f"{p}-x-1", f"{p}-y-1"

    def cn(*args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return sb.composenet("-f", str(compose), "-p", p, "network", *args, check=check, cwd=str(tmp_path))

    y_ip = sb.ipv4(y)
    gw_b = sb.gateway_for(y_ip)
    assert link_names(sb, x) == ["eth0", "lo"]
    assert dns(y, gw_b, "x") in (("NXDOMAIN", []), ("SERVFAIL", []))  # x is not on b: not answered locally
    assert tcp(y, sb.ipv4(x), 80, 0.5) is None  # isolation between a and b

    # Neither -f nor -p: the container name finds its project (as `docker network connect`).
    sb.composenet("network", "connect", "--alias", "xalias", f"{p}_b", x, cwd=str(sb.empty_dir()))
    assert link_names(sb, x) == ["eth0", "eth1", "lo"]
    x_b = sb.ipv4(x, "eth1")
    assert sb.subnet(x, "eth1") == sb.subnet(y)
    assert dns(y, gw_b, "x") == ("NOERROR", [x_b])
    assert dns(y, gw_b, "xalias") == ("NOERROR", [x_b])
    assert wait_for(y, x_b, 80).split()[0] == y_ip
    info = json.loads(cn("inspect", f"{p}_b").stdout)[0]
    assert sorted((c["Name"], c["IPv4Address"].split("/")[0]) for c in info["Containers"].values()) == sorted(
        [(x, x_b), (y, y_ip)]), info
    # `up` keeps what connect added; connecting twice is refused.
    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    again = cn("connect", f"{p}_b", x, check=False)
    assert again.returncode == 1 and "already connected" in again.stderr, again.stderr
    assert cn("connect", f"{p}_a", x, check=False).returncode == 1  # on it from the file
    assert cn("connect", "nosuchnet", x, check=False).returncode == 1

    sb.composenet("network", "disconnect", f"{p}_b", x, cwd=str(sb.empty_dir()))
    assert link_names(sb, x) == ["eth0", "lo"]
    twice = cn("disconnect", f"{p}_b", x, check=False)
    assert twice.returncode == 1 and "already disconnected" in twice.stderr, twice.stderr
    assert dns(y, gw_b, "x") in (("NXDOMAIN", []), ("SERVFAIL", []))
    assert tcp(y, x_b, 80, 0.5) is None
    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    r = cn("disconnect", f"{p}_a", x, check=False)
    assert r.returncode == 1 and "from the compose file" in r.stderr, r.stderr  # not connect's
    # A service with one container stands for it; misspelt names get a suggestion.
    cn("connect", f"{p}_b", "x")
    assert link_names(sb, x) == ["eth0", "eth1", "lo"]
    typo = cn("connect", f"{p}_bb", "x", check=False)
    assert typo.returncode == 1 and f"did you mean '{p}_b'" in typo.stderr, typo.stderr
    typo = cn("connect", f"{p}_a", "yy", check=False)
    assert typo.returncode == 1 and "did you mean 'y'" in typo.stderr, typo.stderr
    cn("disconnect", f"{p}_b", "x")

    sb.down(p, compose)
    sb.assert_clean(p)


# ---- bridge driver options ------------------------------------------------------------------

BRIDGE_OPTS = """
services:
  a:
    command: "@PY@ @ECHO@ --tcp 80"
    ports: ["8086:80"]
    networks: [quiet]
  b:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [quiet]
networks:
  quiet:
    driver_opts:
      com.docker.network.bridge.name: quietbr0
      com.docker.network.bridge.enable_icc: "false"
      com.docker.network.bridge.enable_ip_masquerade: "false"
      com.docker.network.bridge.host_binding_ipv4: 127.0.0.1
      com.docker.network.driver.mtu: "1400"
"""


def test_bridge_options(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    sb.start_outside_web()
    compose = write(tmp_path, BRIDGE_OPTS)
    sb.up(compose, p)
    a, b = f"{p}-a-1", f"{p}-b-1"
    a_ip, b_ip = sb.ipv4(a), sb.ipv4(b)
    # bridge.name and the MTU, on the bridge and inside the containers.
    br = next(x for x in sb.links() if x["ifname"] == "quietbr0")
    assert br["ifalias"] == f"composenet:{p}/{p}_quiet" and br["mtu"] == 1400, br
    assert json.loads(sb.ip(a, "-j link show dev eth0"))[0]["mtu"] == 1400
    gw = sb.addrs(sb.host)["quietbr0"][0]
    assert sb.subnet(a) == sb.subnet(sb.host, "quietbr0")
    # enable_icc false: the containers cannot reach each other; the host and DNS still work.
    assert wait_for(sb.host, a_ip, 80)
    assert tcp(b, a_ip, 80, 0.5) is None
    assert tcp(a, b_ip, 80, 0.5) is None
    assert dns(b, gw, "a") == ("NOERROR", [a_ip])
    # enable_ip_masquerade false: egress keeps the container's address (the outside namespace
    # routes the subnet back through the host).
    sb.ip(sb.outside, f"route add {sb.subnet(a)} via {HOST_ADDR}")
    assert wait_for(b, "198.51.100.10", 80).split()[0] == b_ip
    # host_binding_ipv4 127.0.0.1: the published port is on the host's loopback only.
    assert wait_for(sb.host, "127.0.0.1", 8086).split()[1] == a
    assert tcp(sb.outside, HOST_ADDR, 8086, 0.5) is None

    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    sb.down(p, compose)
    sb.assert_clean(p)
    assert "quietbr0" not in [x["ifname"] for x in sb.links()]


MV_USER = """
services:
  m:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [lan]
networks:
  lan:
    external: true
    name: @NET@
"""


def test_standalone_macvlan_network_shared_by_two_projects(sandbox: Sandbox, tmp_path) -> None:
    sb, p1, p2 = sandbox, project(), project()
    net = f"mv{uuid.uuid4().hex[:6]}"
    sb.projects.add("-" + net)
    sb.ip(sb.host, "link add mvp0 type veth peer name mvp1")
    sb.ip(sb.host, "link set mvp0 up")
    sb.ip(sb.host, "link set mvp1 up")

    def cn(*args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return sb.composenet("network", *args, check=check, cwd=str(sb.empty_dir()))

    cn("create", "-d", "macvlan", "-o", "parent=mvp0", "--subnet", "192.168.60.0/24", net)
    files = []
    for p in (p1, p2):
        (tmp_path / p).mkdir()
        f = write(tmp_path / p, MV_USER.replace("@NET@", net))
        files.append(f)
        sb.up(f, p)
    m1, m2 = f"{p1}-m-1", f"{p2}-m-1"
    ip1, ip2 = sb.ipv4(m1), sb.ipv4(m2)
    assert ip1 != ip2 and sb.subnet(m1) == sb.subnet(m2) == "192.168.60.0/24", (ip1, ip2)
    assert json.loads(sb.ip(m2, "-j -d link show dev eth0"))[0]["linkinfo"]["info_kind"] == "macvlan"
    assert wait_for(m1, ip2, 80).split()[0] == ip1  # across projects, no NAT
    assert wait_for(m2, ip1, 80).split()[0] == ip2
    info = json.loads(cn("inspect", net).stdout)[0]
    assert info["Driver"] == "macvlan" and info["IPAM"]["Config"][0]["Gateway"] == "192.168.60.1", info
    assert sorted(c["Name"] for c in info["Containers"].values()) == sorted([m1, m2]), info
    assert cn("rm", net, check=False).returncode == 1  # in use
    for f, p in zip(files, (p1, p2), strict=True):
        r = sb.plan(f, p)
        assert r.returncode == 0, r.stdout + r.stderr
    for f, p in zip(files, (p1, p2), strict=True):
        sb.down(p, f)
        sb.assert_clean(p)
    cn("rm", net)
    sb.assert_clean("-" + net)
    assert "mvp0" in [x["ifname"] for x in sb.links()]


def test_network_mode_container_joins_another_projects_namespace(sandbox: Sandbox, tmp_path) -> None:
    sb, owner, guest = sandbox, project(), project()
    (tmp_path / "o").mkdir()
    (tmp_path / "g").mkdir()
    owner_file = write(tmp_path / "o", "services:\n  base:\n    command: \"@PY@ @ECHO@ --tcp 80\"\n")
    sb.up(owner_file, owner)
    base = f"{owner}-base-1"
    guest_file = write(tmp_path / "g", f"""
services:
  side:
    network_mode: "container:{base}"
    command: "@PY@ @ECHO@ --tcp 81"
""")
    r = sb.up(guest_file, guest)
    assert f"/run/netns/{base}" in r.stderr  # the plan says it must exist
    assert sb.namespaces(guest) == []
    side = pids_running(base, "--tcp 81")
    assert len(side) == 1, processes_in(base)
    assert wait_for(base, "127.0.0.1", 81)  # the shared localhost
    assert wait_for(sb.host, sb.ipv4(base), 81)  # on base's address
    sb.down(guest, guest_file)
    assert pids_running(base, "--tcp 81") == []
    sb.assert_clean(guest)
    assert wait_for(sb.host, sb.ipv4(base), 80)  # the owner is untouched
    sb.down(owner, owner_file)
    sb.assert_clean(owner)
