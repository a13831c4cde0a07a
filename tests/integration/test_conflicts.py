"""Nothing is silently taken over (root, sandboxes): a published port a host program holds, an
explicit subnet inside a host route, a host address or another composenet network, names that
cannot become kernel or file names (issue 11 defects 4, 5, 6). Each refusal comes before the
kernel is touched (the sandbox is left as it was) and names the file, line and column.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
import uuid
from pathlib import Path

from tests.integration.sandbox import HOST_ADDR, Sandbox, in_netns, udp, wait_for
from tests.integration.stacks import ECHO

LISTEN = "import socket,time;s=socket.socket(socket.{fam});{opt}s.bind(('{addr}',{port}));s.listen();time.sleep(120)"


def project() -> str:
    return f"w{uuid.uuid4().hex[:6]}"


def write(tmp: Path, text: str) -> Path:
    p = tmp / "compose.yaml"
    p.write_text(text.replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO)))
    return p


def line_of(compose: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(compose.read_text().splitlines(), 1) if needle in ln)


def untouched(sb: Sandbox, p: str) -> None:
    """Nothing of project ``p`` in the kernel or on disk: the refusal came first."""
    assert sb.problems(p) == [], sb.problems(p)
    assert not [lk for lk in sb.links() if lk["ifname"].startswith(("cnb-", "cnv-"))], sb.links()
    assert not os.path.exists(f"/run/composenet/{p}")


def listener(sb: Sandbox, addr: str, port: int, dual: bool = False) -> int:
    """A program of the sandbox host listening on addr:port; returns its pid once it listens."""
    fam = "AF_INET6" if ":" in addr else "AF_INET"
    opt = "s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0);" if dual else ""
    p = sb.spawn_in(sb.host, sys.executable, "-c", LISTEN.format(fam=fam, opt=opt, addr=addr, port=port))
    for _ in range(100):
        if f":{port:04X} " in _tcp_table(sb, six=":" in addr):
            return p.pid
        time.sleep(0.05)
    raise AssertionError(f"the listener on {addr}:{port} did not start")


def _tcp_table(sb: Sandbox, six: bool) -> str:
    return sb.run_in(sb.host, "cat", "/proc/net/tcp6" if six else "/proc/net/tcp").stdout.upper()


def bind_error(sb: Sandbox, proto: str, addr: str, port: int) -> str | None:
    """What a program of the sandbox host gets when it binds addr:port (None: it can)."""
    def go() -> str | None:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        try:
            s.bind((addr, port))
        except OSError as e:
            return e.strerror
        finally:
            s.close()
        return None
    return in_netns(sb.host, go)


PUBLISHED = """
services:
  web:
    command: "@PY@ @ECHO@ --tcp 80 --udp 80"
    ports: ["3000:80", "3000:80/udp"]
"""


def test_published_port_held_by_a_host_program_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, PUBLISHED)
    pid = listener(sb, "0.0.0.0", 3000)
    r = sb.up(compose, p, check=False)
    assert r.returncode == 1, r.stdout
    where = f"{compose}:{line_of(compose, 'ports:')}:13: services.web.ports[0]"
    assert (f"{where}: host port *:3000/tcp is already in use on this host: 0.0.0.0:3000/tcp is held by pid {pid} "
            "(python") in r.stderr, r.stderr
    untouched(sb, p)
    r = sb.plan(compose, p)  # `plan` says so too
    assert r.returncode == 1 and f"held by pid {pid}" in r.stderr, r.stderr


def test_loopback_and_dual_stack_holders_block_every_address(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, PUBLISHED)
    pid = listener(sb, "127.0.0.1", 3000)  # DNAT of every address would take 127.0.0.1:3000 too
    r = sb.up(compose, p, check=False)
    assert r.returncode == 1 and f"127.0.0.1:3000/tcp is held by pid {pid}" in r.stderr, r.stderr
    untouched(sb, p)
    sb.procs.pop().kill()
    pid = listener(sb, "::", 3000, dual=True)  # a dual-stack [::] socket takes IPv4 too
    r = sb.up(compose, p, check=False)
    assert r.returncode == 1 and f"[::]:3000/tcp is held by pid {pid}" in r.stderr, r.stderr
    untouched(sb, p)
    sb.procs.pop().kill()
    # Positive control: another address of the host, or the port free, is not in the way.
    listener(sb, HOST_ADDR, 3001)
    r = sb.up(compose, p, check=False)
    assert r.returncode == 0, r.stderr
    sb.down(p)
    sb.assert_clean(p)


def test_published_ports_are_held_while_the_project_is_up(sandbox: Sandbox, tmp_path: Path) -> None:
    """A host program started after `up` gets "address in use" instead of losing its traffic to
    the project's DNAT; after `down` the port is free again."""
    sb, p = sandbox, project()
    compose = write(tmp_path, PUBLISHED)
    assert bind_error(sb, "tcp", "0.0.0.0", 3000) is None  # positive control: free before
    sb.up(compose, p)
    wait_for(sb.outside, HOST_ADDR, 3000)
    assert udp(sb.outside, HOST_ADDR, 3000) is not None
    for proto, addr in (("tcp", "0.0.0.0"), ("tcp", "127.0.0.1"), ("tcp", HOST_ADDR), ("udp", "0.0.0.0")):
        assert bind_error(sb, proto, addr, 3000) == "Address already in use", (proto, addr)
    assert bind_error(sb, "tcp", "0.0.0.0", 3002) is None
    r = sb.plan(compose, p)
    assert r.returncode == 0, r.stdout + r.stderr  # its own holder is not in its way
    sb.down(p)
    sb.assert_clean(p)
    assert bind_error(sb, "tcp", "0.0.0.0", 3000) is None and bind_error(sb, "udp", "0.0.0.0", 3000) is None


SUBNET = """
services:
  app:
    command: "@PY@ @ECHO@ --tcp 80"
networks:
  default:
    ipam:
      config:
        - subnet: {subnet}
"""


def subnet_file(tmp: Path, subnet: str) -> Path:
    return write(tmp, SUBNET.replace("{subnet}", subnet))


def test_explicit_subnet_inside_a_host_route_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    sb.ip(sb.host, "route add 198.18.40.0/24 dev up0")
    compose = subnet_file(tmp_path, "198.18.40.0/25")
    r = sb.up(compose, p, check=False)
    where = f"{compose}:{line_of(compose, 'subnet:')}:19: networks.default.ipam.config[0].subnet"
    assert r.returncode == 1 and (f"{where}: subnet 198.18.40.0/25 overlaps 198.18.40.0/24, a route of this host"
                                  in r.stderr), r.stderr
    untouched(sb, p)
    sb.ip(sb.host, "route del 198.18.40.0/24 dev up0")
    sb.ip(sb.host, "route add 198.18.41.0/24 dev up0 table 100")  # every routing table counts
    r = sb.up(subnet_file(tmp_path, "198.18.41.128/25"), p, check=False)
    assert r.returncode == 1 and "overlaps 198.18.41.0/24, a route of this host" in r.stderr, r.stderr
    untouched(sb, p)
    r = sb.up(subnet_file(tmp_path, "203.0.113.0/28"), p, check=False)  # the host's own address
    assert r.returncode == 1 and "overlaps 203.0.113.1/24, an address of this host" in r.stderr, r.stderr
    untouched(sb, p)
    sb.up(subnet_file(tmp_path, "198.18.42.0/24"), p)  # positive control: a free subnet
    sb.down(p)
    sb.assert_clean(p)


def test_explicit_subnet_inside_another_composenet_network_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p, other = sandbox, project(), project()
    net = f"n{uuid.uuid4().hex[:6]}"
    sb.composenet("network", "create", "--subnet", "10.61.0.0/16", net, cwd=str(sb.empty_dir()))
    sb.projects.add(f"-{net}")
    try:
        r = sb.up(subnet_file(tmp_path, "10.61.5.0/24"), p, check=False)
        assert r.returncode == 1 and (f"subnet 10.61.5.0/24 overlaps 10.61.0.0/16, the subnet of composenet "
                                      f"standalone network '{net}'") in r.stderr, r.stderr
        untouched_links = [lk for lk in sb.links() if lk.get("ifalias", "").startswith(f"composenet:{p}/")]
        assert untouched_links == [] and not os.path.exists(f"/run/composenet/{p}")
        (tmp_path / "o").mkdir()
        sb.up(subnet_file(tmp_path / "o", "10.62.0.0/16"), other)
        r = sb.up(subnet_file(tmp_path, "10.62.7.0/24"), p, check=False)
        assert r.returncode == 1 and re.search(rf"overlaps 10.62.0.0/16, the subnet of composenet network "
                                               rf"'{other}_default' of project '{other}'", r.stderr), r.stderr
        sb.up(subnet_file(tmp_path, "10.63.0.0/24"), p)  # positive control
        sb.down(p)
        sb.down(other)
    finally:
        sb.composenet("network", "rm", net, cwd=str(sb.empty_dir()), check=False)
    sb.assert_clean(p)
    sb.assert_clean(other)


def test_names_that_cannot_be_kernel_or_file_names(sandbox: Sandbox, tmp_path: Path) -> None:
    """Refused at their place in the file, before anything exists: a network key with '/', a
    project name too long to be part of a name (for `up` and `down`), and a project name whose
    container names are too long."""
    sb, p = sandbox, project()
    compose = write(tmp_path, """
services:
  app:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: ["a/b"]
networks:
  "a/b": {}
""")
    r = sb.up(compose, p, check=False)
    line = line_of(compose, '"a/b": {}')
    assert r.returncode == 1 and f"""{compose}:{line}:3: networks["a/b"]: network key 'a/b' is invalid""" in r.stderr, r.stderr
    untouched(sb, p)
    long = "x" * 300
    ok = write(tmp_path, "services:\n  app:\n    command: \"@PY@ @ECHO@ --tcp 80\"\n")
    r = sb.composenet("-f", str(ok), "-p", long, "up", check=False, cwd=str(tmp_path))
    assert r.returncode == 1 and "project name" in r.stderr and "is 300 characters long: at most 63" in r.stderr
    assert "internal error" not in r.stderr and not os.path.exists(f"/run/composenet/{long[:250]}")
    r = sb.composenet("-p", "y" * 250, "down", check=False, cwd=str(tmp_path))
    assert r.returncode == 1 and "at most 63" in r.stderr and not os.path.exists(f"/run/composenet/{'y' * 250}")
    # A project name that fits, whose container names do not: refused at the service.
    fits = "z" * 60
    r = sb.composenet("-f", str(ok), "-p", fits, "up", check=False, cwd=str(tmp_path))
    assert r.returncode == 1 and "container name" in r.stderr and "is 66 characters long: at most 63" in r.stderr
    assert not os.path.exists(f"/run/composenet/{fits}")
