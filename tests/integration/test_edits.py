"""Editing the compose file between two `up`s of a running project (root, sandboxes).

Each test uses a unique project name in its own sandbox, ends with `down` and
``sandbox.assert_clean`` (nothing left), and the sandbox fixture removes everything even when a
test fails.
"""

from __future__ import annotations

import socket
import sys
import time
import uuid
from pathlib import Path

from composenet.core.resources import veth_ifname
from tests.integration.sandbox import Sandbox, dns, in_netns, wait_for
from tests.integration.stacks import ECHO

NO_CHANGES = "No changes. Kernel state matches the compose file."


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def write(path: Path, app_networks: str) -> Path:
    """Two networks; ``peer`` on both, ``app`` (an echo server on port 80) on ``app_networks``."""
    path.write_text(f"""\
services:
  app:
    command: "{sys.executable} {ECHO} --tcp 80"
    networks: {app_networks}
  peer:
    networks: [a, b]
networks:
  a: {{}}
  b: {{}}
""")
    return path


def assert_no_changes(sb: Sandbox, compose: Path, p: str) -> None:
    r = sb.plan(compose, p)
    assert r.returncode == 0, f"plan --detailed-exitcode exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert NO_CHANGES in r.stdout, r.stdout


def test_moving_a_service_to_another_network(sandbox: Sandbox, tmp_path) -> None:
    # The new veth's end in the namespace is eth0 again: the old one (marked for a batched
    # delete) must be gone before it is created, or the kernel says EEXIST.
    sb, p = sandbox, project()
    compose = write(tmp_path / "compose.yaml", "[a]")
    sb.up(compose, p)
    app, peer = f"{p}-app-1", f"{p}-peer-1"
    old_ip = sb.ipv4(app)
    wait_for(peer, old_ip, 80)

    write(compose, "[b]")
    r = sb.up(compose, p, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_no_changes(sb, compose, p)
    new_ip = sb.ipv4(app)
    assert new_ip != old_ip
    wait_for(peer, new_ip, 80)
    assert dns(peer, sb.gateway_for(new_ip), "app") == ("NOERROR", [new_ip])
    sb.down(p, compose)
    sb.assert_clean(p)


def write_ports(path: Path, *ports: str) -> Path:
    """One service ``app`` (echo server on port 80) publishing ``ports``."""
    listed = ", ".join(f'"{p}"' for p in ports)
    path.write_text(f"""\
services:
  app:
    command: "{sys.executable} {ECHO} --tcp 80"
    networks: [a]
    ports: [{listed}]
networks:
  a: {{}}
""")
    return path


def test_a_host_port_another_project_publishes_is_refused(sandbox: Sandbox, tmp_path) -> None:
    # Two projects' DNAT rules for one host port: only one of them can get the traffic. `up`
    # refuses the second (as Docker does), and ephemeral ports avoid the other project's.
    sb, pa, pb, pc = sandbox, project(), project(), project()
    a = write_ports(tmp_path / "a.yaml", "127.0.0.1:8080:80", "80")
    b = write_ports(tmp_path / "b.yaml", "127.0.0.2:8080:80", "80")  # other address: fine
    c = write_ports(tmp_path / "c.yaml", "8080:80")  # every address: clashes with both
    sb.up(a, pa)
    sb.up(b, pb)
    port_a = sb.composenet("-f", str(a), "-p", pa, "port", "app", "80", cwd=str(sb.tmp)).stdout.split()
    port_b = sb.composenet("-f", str(b), "-p", pb, "port", "app", "80", cwd=str(sb.tmp)).stdout.split()
    eph_a = {x.rpartition(":")[2] for x in port_a if not x.startswith("127.")}
    eph_b = {x.rpartition(":")[2] for x in port_b if not x.startswith("127.")}
    assert eph_a and eph_b and not eph_a & eph_b, (port_a, port_b)

    r = sb.up(c, pc, check=False)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "8080/tcp is already published by another composenet project" in r.stderr, r.stderr
    assert sb.namespaces(pc) == []
    r = sb.plan(c, pc)
    assert r.returncode == 1 and "already published" in r.stderr, r.stdout + r.stderr

    assert_no_changes(sb, a, pa)
    assert_no_changes(sb, b, pb)
    for p, f in ((pa, a), (pb, b)):
        sb.down(p, f)
        sb.assert_clean(p)
    sb.assert_clean(pc)


def test_a_bridge_deleted_by_hand_is_repaired(sandbox: Sandbox, tmp_path) -> None:
    # The veths survive their bridge, detached: `up` re-creates the bridge and enslaves them
    # again in place. (Re-creating them instead lost their addresses and routes in the
    # namespaces: `up` failed with "the kernel still differs".)
    sb, p = sandbox, project()
    compose = write(tmp_path / "compose.yaml", "[a]")
    sb.up(compose, p)
    app, peer = f"{p}-app-1", f"{p}-peer-1"
    app_ip = sb.ipv4(app)
    wait_for(peer, app_ip, 80)
    bridge = sb.gateway_for(app_ip)
    ifname = next(lk["ifname"] for lk in sb.links() if lk["ifname"].startswith("cnb-")
                  and bridge in sb.ip(sb.host, f"-4 addr show dev {lk['ifname']}"))
    sb.ip(sb.host, f"link del {ifname}")

    r = sb.plan(compose, p)
    assert r.returncode == 2 and ifname in r.stdout.split("Drift", 1)[1], r.stdout
    r = sb.up(compose, p, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_no_changes(sb, compose, p)
    assert sb.ipv4(app) == app_ip
    wait_for(peer, app_ip, 80)
    assert dns(peer, bridge, "app") == ("NOERROR", [app_ip])
    sb.down(p, compose)
    sb.assert_clean(p)


def test_a_network_whose_bridge_is_deleted_by_hand_keeps_its_subnet(sandbox: Sandbox, tmp_path) -> None:
    # Issue 3: the subnet was remembered only through the bridge's address. A host route holds
    # 172.17.0.0/16 at the first `up`, so a gets 172.18.0.0/16 and b 172.19.0.0/16; the route
    # goes, then a's bridge: 172.17.0.0/16 is the lowest free subnet, and `up` moved a there and
    # re-addressed its containers. The addresses they still hold now keep a where it was.
    sb, p = sandbox, project()
    compose = write(tmp_path / "compose.yaml", "[a]")
    sb.ip(sb.host, "route add blackhole 172.17.0.0/16")
    sb.up(compose, p)
    app, peer = f"{p}-app-1", f"{p}-peer-1"
    before = {ns: sb.addrs(ns) for ns in (app, peer)}
    assert sb.subnet(app) == "172.18.0.0/16" and sb.subnet(peer, "eth1") == "172.19.0.0/16", before
    app_ip = before[app]["eth0"][0]
    wait_for(peer, app_ip, 80)
    gateway = sb.gateway_for(app_ip)
    ifname = next(lk["ifname"] for lk in sb.links() if lk["ifname"].startswith("cnb-")
                  and gateway in sb.ip(sb.host, f"-4 addr show dev {lk['ifname']}"))
    sb.ip(sb.host, "route del blackhole 172.17.0.0/16")
    sb.ip(sb.host, f"link del {ifname}")

    r = sb.up(compose, p, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_no_changes(sb, compose, p)
    assert {ns: sb.addrs(ns) for ns in (app, peer)} == before
    assert sb.addrs(sb.host)[ifname] == (gateway, 16)
    wait_for(peer, app_ip, 80)
    assert dns(peer, gateway, "app") == ("NOERROR", [app_ip])
    sb.down(p, compose)
    sb.assert_clean(p)


def foreign_veth(sb: Sandbox, p: str, container: str, network: str) -> str:
    """A link composenet does not own, holding the host name of the veth ``up`` will create
    for ``container`` on ``network``: that create fails in the kernel (EEXIST), a real failed
    step in the middle of a run."""
    name = veth_ifname(p, f"{p}-{container}-1", f"{p}_{network}")
    sb.ip(sb.host, f"link add {name} type veth peer name {name[:11]}x")
    return name


def default_route(sb: Sandbox, ns: str) -> str:
    return sb.ip(ns, "route show default").strip()


def test_a_failed_move_to_another_network_is_rolled_back_completely(sandbox: Sandbox, tmp_path) -> None:
    # The new veth's create fails (a foreign link holds its name) after the old veth was
    # deleted: the rollback must restore the veth, its address and the default route the kernel
    # dropped with it, read the kernel back, and say so.
    sb, p = sandbox, project()
    compose = write(tmp_path / "compose.yaml", "[a]")
    sb.up(compose, p)
    app, peer = f"{p}-app-1", f"{p}-peer-1"
    app_ip = sb.ipv4(app)
    routes = default_route(sb, app)
    assert routes.startswith("default via")
    good = compose.read_text()
    blocker = foreign_veth(sb, p, "app", "b")

    write(compose, "[b]")
    r = sb.up(compose, p, check=False)
    assert r.returncode == 1 and "rolled back" in r.stderr and "rollback failed" not in r.stderr, r.stderr
    assert f"a link named {blocker} already exists" in r.stderr, r.stderr
    assert "it is as it was before this run" in r.stderr and "nothing else was changed" in r.stderr, r.stderr

    compose.write_text(good)
    assert_no_changes(sb, compose, p)
    assert default_route(sb, app) == routes
    wait_for(peer, app_ip, 80)
    sb.ip(sb.host, f"link del {blocker}")
    sb.down(p, compose)
    sb.assert_clean(p)


def test_reordering_a_services_networks(sandbox: Sandbox, tmp_path) -> None:
    # Issue 16, defect 1: eth0 and eth1 swap networks. The kernel refuses a second eth0 in the
    # namespace: the plan frees both names first. Docker puts the first-listed network on eth0.
    sb, p = sandbox, project()
    compose = write(tmp_path / "compose.yaml", "[a, b]")
    sb.up(compose, p)
    app, peer = f"{p}-app-1", f"{p}-peer-1"
    before = sb.addrs(app)
    write(compose, "[b, a]")  # the plan's text: tests/golden/reorder-networks
    r = sb.up(compose, p, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_no_changes(sb, compose, p)
    after = sb.addrs(app)
    assert after == {"eth0": before["eth1"], "eth1": before["eth0"]}, (before, after)
    assert default_route(sb, app).startswith(f"default via {sb.gateway_for(after['eth0'][0])} dev eth0")
    for ifname in ("eth0", "eth1"):
        wait_for(peer, after[ifname][0], 80)
    sb.down(p, compose)
    sb.assert_clean(p)


def test_a_failed_reorder_keeps_the_default_route(sandbox: Sandbox, tmp_path) -> None:
    # Issue 16, defect 2: the reorder fails part-way (a new service's veth name is held by a
    # foreign link); the rollback restores both veths, their addresses and the default route the
    # kernel dropped with eth0, and `plan` against the previous file is empty.
    sb, p = sandbox, project()
    compose = write(tmp_path / "compose.yaml", "[a, b]")
    sb.up(compose, p)
    app, peer = f"{p}-app-1", f"{p}-peer-1"
    before, routes = sb.addrs(app), default_route(sb, app)
    good = compose.read_text()
    blocker = foreign_veth(sb, p, "extra", "a")
    write(compose, "[b, a]")
    compose.write_text(compose.read_text().replace("networks:\n  a:", "  extra:\n    networks: [a]\nnetworks:\n  a:"))
    r = sb.up(compose, p, check=False)
    assert r.returncode == 1 and "rolled back" in r.stderr and "rollback failed" not in r.stderr, r.stderr
    compose.write_text(good)
    assert_no_changes(sb, compose, p)
    assert sb.addrs(app) == before and default_route(sb, app) == routes
    assert f"a link named {blocker} already exists" in r.stderr, r.stderr  # the step that failed
    assert "it is as it was before this run" in r.stderr, r.stderr
    wait_for(peer, before["eth0"][0], 80)
    sb.ip(sb.host, f"link del {blocker}")
    sb.down(p, compose)
    sb.assert_clean(p)


def write_static(path: Path, address: str) -> Path:
    path.write_text(f"""\
services:
  db:
    command: "{sys.executable} {ECHO} --tcp 80"
    networks:
      back:
        ipv4_address: {address}
  web:
    networks: [back]
networks:
  back:
    ipam:
      config:
        - subnet: 198.18.2.0/24
""")
    return path


def test_changing_a_static_address_within_its_subnet(sandbox: Sandbox, tmp_path) -> None:
    # Issue 16, defect 3: the new address is added before the old one goes (the link never has
    # none, so the kernel keeps the default route), and the plan re-adds the route anyway.
    sb, p = sandbox, project()
    compose = write_static(tmp_path / "compose.yaml", "198.18.2.10")
    sb.up(compose, p)
    db, web = f"{p}-db-1", f"{p}-web-1"
    wait_for(web, "198.18.2.10", 80)
    write_static(compose, "198.18.2.20")  # the plan's text: tests/golden/change-static-address
    r = sb.up(compose, p, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_no_changes(sb, compose, p)
    assert sb.addrs(db) == {"eth0": ("198.18.2.20", 24)}
    assert default_route(sb, db).startswith("default via 198.18.2.1 dev eth0")
    wait_for(web, "198.18.2.20", 80)
    assert dns(web, "198.18.2.1", "db") == ("NOERROR", ["198.18.2.20"])
    sb.down(p, compose)
    sb.assert_clean(p)


LINES = """\
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen(8)
s.settimeout(300)
def serve(c):
    with c:
        for line in c.makefile("rb"):
            c.sendall(b"ok " + line)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def write_survival(path: Path, server: Path, *, extra: str = "", other: str = "[a]", touched: str = "[a]",
                   touched_extra: str = "") -> Path:
    """``srv`` and ``cli`` are never edited; ``tsrv`` is edited only by additions; ``other`` (and
    ``extra``) take every other kind of edit."""
    cmd = f'"{sys.executable} {server}"'
    path.write_text(f"""\
services:
  srv:
    command: {cmd}
    networks: [a]
  cli:
    networks: [a]
  tsrv:
    command: {cmd}
    networks: {touched}{touched_extra}
  other:
    networks: {other}
{extra}networks:
  a: {{}}
  b: {{}}
""")
    return path


def connect(ns: str, ip: str) -> socket.socket:
    """A TCP connection from namespace ``ns`` to the line server on ``ip`` (bounded retries
    while it starts); the socket stays in ``ns``."""
    for _ in range(100):
        try:
            return in_netns(ns, lambda: socket.create_connection((ip, 7000), timeout=5))
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing accepts on {ip}:7000 from {ns}")


def test_connections_of_untouched_services_survive_edits(sandbox: Sandbox, tmp_path) -> None:
    # Issue 16: an established TCP connection between two services the edits do not concern
    # survives every edit; so does one to a service whose edit only adds (a network, an alias,
    # a port). Each edit: `up` exits 0, the next plan is empty, both connections still answer.
    sb, p = sandbox, project()
    server = tmp_path / "lines.py"
    server.write_text(LINES)
    compose = write_survival(tmp_path / "compose.yaml", server)
    sb.up(compose, p)
    cli = f"{p}-cli-1"
    conns = {}
    for name in ("srv", "tsrv"):
        conns[name] = connect(cli, sb.ipv4(f"{p}-{name}-1"))
    edits = [
        {"extra": "  extra:\n    networks: [a, b]\n"},  # a service added
        {"extra": "  extra:\n    networks: [b, a]\n"},  # its networks reordered
        {"extra": "  extra:\n    networks: [b, a]\n", "other": "[a, b]"},  # another network joined
        {"other": "[b]", "touched": "[a, b]"},  # moved; tsrv joins a network (adds)
        {"other": "[b]", "touched": "{a: {aliases: [t1]}, b: {}}"},  # tsrv: an alias
        {"other": "[b]", "touched": "{a: {aliases: [t1]}, b: {}}", "touched_extra": '\n    ports: ["127.0.0.1::80"]'},
    ]
    try:
        for i, e in enumerate(edits):
            write_survival(compose, server, **e)
            r = sb.up(compose, p, check=False)
            assert r.returncode == 0, f"edit {i}: {r.stdout}{r.stderr}"
            assert_no_changes(sb, compose, p)
            for name, c in conns.items():
                c.sendall(f"edit {i}\n".encode())
                assert c.makefile("rb").readline() == f"ok edit {i}\n".encode(), f"{name} after edit {i}"
    finally:
        for c in conns.values():
            c.close()
    sb.down(p, compose)
    sb.assert_clean(p)


def _bridge_table(sb: Sandbox, p: str) -> tuple[int, str]:
    """(handle, elements of set ports) of the project's bridge table, as the kernel lists them."""
    import json

    out = json.loads(sb.run_in(sb.host, "nft", "-j", "-a", "list", "table", "bridge", f"composenet_{p}").stdout)
    items = out["nftables"]
    handle = next(i["table"]["handle"] for i in items if "table" in i)
    ports = next(i["set"] for i in items if "set" in i and i["set"]["name"] == "ports")
    return handle, " ".join(sorted(str(e) for e in ports.get("elem", [])))


def test_adding_and_removing_a_service_edits_the_anti_spoofing_sets_in_place(sandbox: Sandbox, tmp_path) -> None:
    # The bridge table is not deleted and re-added for a new or removed container: the kernel
    # activates a re-added table's set elements after its rules, so frames of the containers
    # that were not changed could hit the final drop in between (a DNS query was lost).
    sb, p = sandbox, project()
    compose = write(tmp_path / "compose.yaml", "[a]")
    sb.up(compose, p)
    handle, ports = _bridge_table(sb, p)
    peer_port = veth_ifname(p, f"{p}-peer-1", f"{p}_a")
    assert peer_port in ports, ports
    text = compose.read_text().replace("networks:\n  a:", "  extra:\n    networks: [a]\nnetworks:\n  a:")
    compose.write_text(text)
    plan = sb.plan(compose, p).stdout
    assert "~   nft      table bridge" in plan and "+ set ports: " in plan, plan
    sb.up(compose, p)
    handle2, ports2 = _bridge_table(sb, p)
    extra_port = veth_ifname(p, f"{p}-extra-1", f"{p}_a")
    assert handle2 == handle and extra_port in ports2 and peer_port in ports2, (handle, handle2, ports2)
    assert_no_changes(sb, compose, p)
    # The new container's frames pass the pins: it reaches app.
    assert wait_for(f"{p}-extra-1", sb.ipv4(f"{p}-app-1"), 80)
    write(compose, "[a]")
    sb.up(compose, p)
    handle3, ports3 = _bridge_table(sb, p)
    assert handle3 == handle and extra_port not in ports3 and peer_port in ports3, ports3
    assert_no_changes(sb, compose, p)
    sb.down(p, compose)
    sb.assert_clean(p)
