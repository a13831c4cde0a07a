"""The everyday commands end to end (root, throwaway sandbox namespaces): `exec` with the
service's environment, working_dir and user and the command taken as written after the service
name; `port` listing every mapping, PORT/PROTO, a port published as UDP only named as such;
`composenet ls` and `version`; `network prune` asking on a terminal. Each test ends with `down`
and ``sandbox.assert_clean``.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.integration.sandbox import HOST_ADDR, Sandbox, wait_for
from tests.integration.stacks import ECHO

STACK = """
services:
  web:
    command: "@PY@ @ECHO@ --tcp 8000"  # nobody: no low port
    environment:
      GREETING: hello there
    env_file: web.env
    working_dir: @WD@
    user: nobody
    ports: ["8080:8000", "127.0.0.1:8443:443"]
  dns:
    command: "@PY@ @ECHO@ --udp 53"
    ports: ["5353:53/udp"]
"""


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def write(tmp: Path) -> Path:
    (tmp / "web.env").write_text("FROM_FILE=yes\n")
    text = STACK.replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO)).replace("@WD@", "/usr")  # readable by nobody
    path = tmp / "compose.yaml"
    path.write_text(text)
    return path


def test_exec_runs_with_the_services_environment_and_port_lists_mappings(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path)
    sb.up(compose, p)
    web = f"{p}-web-1"
    assert wait_for(sb.host, sb.ipv4(web), 8000)

    def cn(*args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return sb.composenet("-p", p, *args, check=check, cwd=str(sb.empty_dir()))

    # Everything after the service name is the command, options included (no `--` needed).
    r = cn("exec", "web", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert sb.ipv4(web) in r.stdout, r.stdout + r.stderr
    code = "import os; print(os.environ['GREETING'], os.environ['FROM_FILE'], os.getcwd(), os.geteuid())"
    r = cn("exec", "web", sys.executable, "-c", code)
    assert r.stdout.split() == ["hello", "there", "yes", "/usr", "65534"], r.stdout + r.stderr
    # Options before the service override; `--` is still accepted.
    r = cn("exec", "-u", "root", "-w", "/", "-e", "GREETING=hi", "web", "--", sys.executable, "-c", code)
    assert r.stdout.split() == ["hi", "yes", "/", "0"], r.stdout + r.stderr
    r = cn("exec", "web", "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3, r.stderr

    # port: every mapping; PORT/PROTO; a UDP-only port named as such when TCP is asked.
    r = cn("port", "web")
    assert r.stdout.splitlines() == ["443/tcp -> 127.0.0.1:8443", "8000/tcp -> 0.0.0.0:8080"], r.stdout
    assert cn("port", "web", "8000").stdout.split() == ["0.0.0.0:8080"]
    assert cn("port", "dns", "53/udp").stdout.split() == ["0.0.0.0:5353"]
    r = cn("port", "dns", "53", check=False)
    assert r.returncode == 1 and "53 is published as udp only" in r.stderr and "port dns 53/udp" in r.stderr, r.stderr
    r = cn("port", "web", "81", check=False)
    assert r.returncode == 1 and "`composenet port web` lists every published port" in r.stderr, r.stderr
    r = cn("port", "web", "80/xyz", check=False)
    assert r.returncode == 1 and "PORT/PROTO" in r.stderr, r.stderr

    # With a cluster store set, `ps`, `port` and `exec` do not ask it (a store that does not
    # answer would make each wait): a listener standing for the store counts the connections.
    count = tmp_path / "store-connections"
    counter = ("import socket, sys, time\n"
               "s = socket.socket(); s.bind((sys.argv[2], 23790)); s.listen(16); s.settimeout(0.2)\n"
               "open(sys.argv[1], 'w').write('0')\n"
               "n, held, end = 0, [], time.monotonic() + 60\n"
               "while time.monotonic() < end:\n"
               "    try:\n        c, _ = s.accept()\n    except OSError:\n        continue\n"
               "    n += 1; held.append(c); open(sys.argv[1], 'w').write(str(n))\n")
    sb.spawn_in(sb.host, sys.executable, "-c", counter, str(count), HOST_ADDR)
    for _ in range(100):  # listening once it wrote its count
        if count.exists():
            break
        time.sleep(0.05)
    assert count.read_text() == "0"
    store = {"COMPOSENET_STORE": f"etcd://{HOST_ADDR}:23790"}
    for args in (("ps",), ("port", "web"), ("exec", "web", "true")):
        sb.composenet("-p", p, *args, cwd=str(sb.empty_dir()), env=store)
    assert count.read_text() == "0"
    sb.composenet("-f", str(compose), "-p", p, "plan", cwd=str(tmp_path), env=store)  # the control: plan asks it
    assert int(count.read_text()) > 0

    sb.down(p, compose)
    sb.assert_clean(p)


def on_terminal(sb: Sandbox, answer: str, *args: str) -> subprocess.CompletedProcess:
    """composenet in the sandbox with a pseudo-terminal as stdin, ``answer`` typed into it."""
    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode())
        return subprocess.run(["nsenter", f"--net=/run/netns/{sb.host}", sys.executable, "-m", "composenet", *args],
                              stdin=slave, capture_output=True, text=True, timeout=60, cwd=str(sb.empty_dir()),
                              env={**os.environ, "COMPOSENET_RESOLV_CONF": str(sb.resolv_conf)})
    finally:
        os.close(master)
        os.close(slave)


def test_ls_version_prune_and_down_without_a_file(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path)
    sb.up(compose, p)
    empty = str(sb.empty_dir())

    rows = {r["name"]: r for r in json.loads(sb.composenet("ls", "--format", "json", cwd=empty).stdout)}
    assert rows[p] == {"name": p, "status": "running(2)", "networks": [f"{p}_default"],
                       "containers": [f"{p}-dns-1", f"{p}-web-1"]}, rows
    table = sb.composenet("ls", cwd=empty).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "NETWORKS", "CONTAINERS"]
    assert [line.split() for line in table if line.startswith(p)] == [[p, "running(2)", f"{p}_default", "2"]], table
    assert p in sb.composenet("ls", "-q", cwd=empty).stdout.split()
    from composenet import __version__

    assert sb.composenet("version", cwd=empty).stdout == f"composenet {__version__}\n"
    assert sb.composenet("--version", cwd=empty).stdout == f"composenet {__version__}\n"

    # down without a compose file names the way out.
    r = sb.composenet("down", cwd=empty, check=False)
    assert r.returncode == 1 and "composenet -p NAME down" in r.stderr and "composenet ls" in r.stderr, r.stderr

    # prune asks on a terminal; "n" keeps the network, -f does not ask.
    net = f"pr{uuid.uuid4().hex[:6]}"
    sb.projects.add("-" + net)
    sb.composenet("network", "create", net, cwd=empty)
    r = on_terminal(sb, "n\n", "network", "prune")
    assert r.returncode == 1 and "Are you sure" in r.stdout and net in r.stdout, r.stdout + r.stderr
    assert net in sb.composenet("network", "ls", "-q", cwd=empty).stdout.split()
    r = on_terminal(sb, "", "network", "prune", "-f")
    assert r.returncode == 0 and "Are you sure" not in r.stdout and net in r.stdout, r.stdout + r.stderr
    assert net not in sb.composenet("network", "ls", "-q", cwd=empty).stdout.split()
    sb.assert_clean("-" + net)

    sb.down(p)
    sb.assert_clean(p)
    assert p not in sb.composenet("ls", "-q", cwd=empty).stdout.split()


LAYERED = """
services:
  web:
    image: nginx
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [front]
    volumes: [./site:/usr/share/nginx/html]
  api:
    image: api
    build: .
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [front, back]
    healthcheck: {test: ["CMD", "true"]}
  db:
    networks: [back]
networks:
  front: {}
  back: {internal: true}
"""


def test_up_prints_a_line_per_network_and_service_steps_with_v_and_timings(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    compose = tmp_path / "compose.yaml"
    compose.write_text(LAYERED.replace("@PY@", sys.executable).replace("@ECHO@", str(ECHO)))
    r = sb.up(compose, p)
    lines = r.stderr.splitlines()
    # The keys composenet keeps without acting on them: said once, in one line.
    notes = [x for x in lines if x.startswith("note: kept but not acted on")]
    assert len(notes) == 1, r.stderr
    for part in ("build (api)", "healthcheck (api)", "image (api, web)", "volumes (web)"):
        assert part in notes[0], notes
    body = [x.split() for x in lines if x.startswith("  ")]
    assert [x[:3] for x in body] == [
        ["network", f"{p}_back", "created"], ["network", f"{p}_front", "created"],
        ["service", "api", "created"], ["service", "db", "created"], ["service", "web", "created"]], r.stderr
    assert not [x for x in lines if x.startswith("[")], r.stderr  # no step lines by default
    assert f'Project "{p}" is up' in r.stdout

    # -v: every step, numbered in the order they run; --timings: each phase.
    (tmp_path / "more.yaml").write_text("services:\n  extra:\n    networks: [front]\n")
    r = sb.composenet("-f", str(compose), "-f", str(tmp_path / "more.yaml"), "-p", p, "up", "-v", "--timings",
                      cwd=str(sb.tmp))
    steps = [x for x in r.stderr.splitlines() if x.startswith("[")]
    assert steps and [int(x[1:].split("/")[0]) for x in steps] == list(range(1, len(steps) + 1)), r.stderr
    assert any("netns" in x and f"{p}-extra-1" in x for x in steps), r.stderr
    timing = r.stderr.split("Timings:\n", 1)[1].splitlines()
    names = [x.split()[0] for x in timing]
    assert names[:4] == ["load", "observe", "plan", "apply"] and names[-1] == "verify", r.stderr
    assert "netns" in names and all(float(x.split()[1]) >= 0 for x in timing), r.stderr
    # Nothing to do: no summary lines, the note still once.
    r = sb.composenet("-f", str(compose), "-f", str(tmp_path / "more.yaml"), "-p", p, "up", cwd=str(sb.tmp))
    assert "No changes" in r.stderr and r.stderr.count("note: kept") == 1, r.stderr
    # An edit that removes a service: its line says so.
    r = sb.up(compose, p)
    assert ["service", "extra", "removed"] in [x.split()[:3] for x in r.stderr.splitlines()], r.stderr

    sb.down(p)
    sb.assert_clean(p)
