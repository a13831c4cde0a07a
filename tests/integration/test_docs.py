"""Every command README.md shows and every example of every `--help`, run as written against
the real example stack (examples/webapp), as root, on a simulated host of its own
(tests/integration/cluster_lab.py: private network AND mount namespaces, so the fixed names the
documentation uses, `webapp`, `shared`, `lab`, cannot meet another test's). A documented
command that fails is a documentation bug: the test names it with its output.

The help examples run in the order of ``SCRIPT`` (an order that makes sense: create before
inspect, connect before disconnect); a line of ``SCRIPT`` that is not an example is a step
between examples, and every example must be in ``SCRIPT``. The README's `sh` blocks run in the
README's order (`pip install` and `make` lines aside; `cd examples/webapp` is the copy's
directory).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.integration.cluster_lab import ETCD_ADDR, ROOT, Host, Lab

WEBAPP = Path(ROOT) / "examples" / "webapp"
FOLLOW = "composenet logs -f web  # until Ctrl-C"
STORE = f"etcd://{ETCD_ADDR}:2379"  # the lab's etcd (cluster_lab.Lab.start_etcd)

# Help examples (verbatim) in a workable order; "! CMD" lines are steps between them.
SCRIPT = [
    "composenet config  # ./compose.yaml, as YAML",
    "composenet -f compose.yaml -f prod.yaml config  # several files, merged",
    "composenet --profile debug config --format json",
    "composenet config --ignored  # keys not interpreted",
    "composenet validate  # FILE:LINE:COL per problem",
    "composenet -f compose.yaml --env-file prod.env validate",
    "composenet plan --offline  # against an empty kernel, anywhere",
    "composenet plan --format json --show-ruleset",
    "composenet plan --detailed-exitcode  # exit 0 none, 1 error, 2 changes",
    "composenet plan --out plan.json && composenet up --plan plan.json",
    "composenet plan  # against this kernel (root)",
    "composenet up",
    "composenet -p webapp -f compose.yaml up -q",
    "composenet up -v --timings  # every step, then the time of each phase",
    "composenet plan --out plan.json  # review it, then:",
    "composenet up --plan plan.json  # applies it only if nothing changed since",
    "composenet ps",
    "composenet -p webapp ps --format json",
    "composenet port web  # every published port of web",
    "composenet port web 8000",
    "composenet port web 8000/tcp --index 1  # PORT/PROTO: 53/udp for a UDP port",
    "composenet exec web ip -4 addr",
    "composenet exec --index 1 db getent hosts web",
    "composenet exec -u root -w /tmp -e DEBUG=1 web env",
    "composenet exec --privileged web ip route add 10.9.0.0/24 dev eth0",
    "composenet logs web",
    FOLLOW,
    "composenet check  # everything the file implies",
    "composenet check web db:5432  # why can (or can't) web reach db on 5432?",
    "composenet check host web  # web's published ports, from the host",
    "composenet check --format junit > check.xml  # for CI",
    "composenet -p webapp check --timeout 1 --format json",
    "composenet graph  # Mermaid, live state when the project is up",
    "composenet graph --format dot | dot -Tpng > stack.png",
    "composenet graph --format svg --output stack.svg",
    "composenet ls",
    "composenet ls -q",
    "composenet ls --format json",
    "composenet version",
    "composenet --version",
    "composenet network ls",
    "composenet network ls -q",
    "composenet network ls --format json",
    "composenet network create shared",
    "composenet network create --subnet 10.40.0.0/24 --gateway 10.40.0.254 lab",
    "composenet network create --internal --ipv6 backplane",
    "composenet network create -d macvlan -o parent=eth1 --subnet 192.0.2.0/24 lan",
    "composenet network inspect shared",
    "composenet network inspect webapp_front webapp_data",
    "composenet network inspect shared --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}'",
    "composenet network inspect shared -f '{{json .Containers}}'",
    "composenet network connect shared webapp-web-1",
    "! composenet network disconnect shared webapp-web-1",
    "composenet network connect shared web  # a service with one container, from its directory",
    "composenet network connect --alias api --ip 10.40.0.10 lab webapp-web-1",
    "composenet network disconnect lab webapp-web-1",
    "! composenet network disconnect shared webapp-web-1",
    "composenet network rm shared",
    "composenet network rm lab backplane",
    "composenet network prune",
    "composenet network prune -f",
    "composenet --store etcd://10.99.0.1:2379 node ls",
    "composenet node ls --format json  # the store named by COMPOSENET_STORE",
    "composenet down",
    "composenet -p webapp down  # without the compose file",
]


def help_examples(h: Host, cwd: Path) -> list[str]:
    """Every example line of every command's --help (the top level's and `network`'s command
    lists say which commands there are)."""
    def commands(*prefix: str) -> list[str]:
        out = run(h, cwd, " ".join(["composenet", *prefix, "--help"])).stdout
        return [line.split()[0] for line in out.split("Commands:\n", 1)[1].splitlines() if line.strip()]

    found = []
    groups = ("network", "node")
    cmds = [[c] for c in commands() if c not in groups] + [[g, c] for g in groups for c in commands(g)]
    for cmd in cmds:
        text = run(h, cwd, " ".join(["COLUMNS=200 composenet", *cmd, "--help"])).stdout
        found += [line.strip() for line in text.split("Examples:", 1)[1].splitlines()
                  if line.strip().startswith("composenet ")]
    return found


def readme_commands() -> list[str]:
    text = (Path(ROOT) / "README.md").read_text()
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(("make ", "pip ", "#")):
                lines.append(line)
    return lines


def run(h: Host, cwd: Path, line: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {"PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "COMPOSENET_RESOLV_CONF": str(cwd.parent / "resolv.conf")}
    if " node " in line:  # the lab's etcd, as an example that says "COMPOSENET_STORE" expects
        env["COMPOSENET_STORE"] = STORE
    return h.run("sh", "-c", f"cd {cwd} && {line}", check=False, timeout=timeout, env=env)


def ok(h: Host, cwd: Path, line: str) -> None:
    if line.startswith("composenet logs -f"):  # follows until interrupted
        try:
            r = run(h, cwd, line, timeout=3)
        except subprocess.TimeoutExpired:
            return
        raise AssertionError(f"`{line}` ended by itself ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    r = run(h, cwd, line)
    allowed = (0, 2) if "--detailed-exitcode" in line else (0,)
    assert r.returncode in allowed, f"`{line}` exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr


def setup_stack(h: Host, tmp: Path) -> Path:
    where = tmp / "webapp"
    shutil.copytree(WEBAPP, where)
    (where / "prod.yaml").write_text("services:\n  web:\n    environment:\n      MODE: prod\n")
    (where / "prod.env").write_text("MODE=prod\n")
    (tmp / "resolv.conf").write_text("nameserver 10.99.0.254\n")  # inside the lab's underlay only
    for p in (tmp, where):
        p.chmod(0o755)
    h.run("ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p")  # the macvlan example's parent
    h.run("ip", "link", "set", "eth1", "up")
    return where


def test_every_documented_command_runs_as_written(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=1)
    try:
        lab.setup()
        lab.start_etcd()
        h = lab.hosts[0]
        cwd = setup_stack(h, tmp_path)
        examples = help_examples(h, cwd)
        missing = [e for e in examples if e not in SCRIPT]
        assert not missing, f"help examples the script does not run: {missing}"
        for line in SCRIPT:
            ok(h, cwd, line[2:] if line.startswith("! ") else line)
        assert run(h, cwd, "composenet ls -q").stdout == ""  # the examples left nothing up
        for line in readme_commands():
            if line.startswith("cd "):
                assert line == "cd examples/webapp", line
                continue
            ok(h, cwd, line)
        assert run(h, cwd, "composenet ls -q").stdout == "" and run(h, cwd, "composenet network ls -q").stdout == ""
    finally:
        lab.teardown()
    assert lab.leftovers() == []
