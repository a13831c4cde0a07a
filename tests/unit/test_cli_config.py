"""`composenet config` and `composenet validate` end to end, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from .helpers import write

ROOT = Path(__file__).resolve().parents[2]


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "composenet", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=60)


COMPOSE = """
services:
  web:
    image: nginx
    ports: ["8080:80", "127.0.0.1:53:53/udp"]
    networks: [front]
    environment: ["GREETING=$${literal}"]
  db:
    networks:
      back:
        aliases: [database]
networks:
  front: {}
  back: {internal: true}
"""


def test_config_yaml_json_and_ignored(tmp_path: Path):
    d = tmp_path / "shop"
    write(d, "compose.yaml", COMPOSE)
    r = run(d, "config")
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert doc["name"] == "shop"
    assert doc["services"]["web"]["ports"][1] == {"target": 53, "published": "53", "host_ip": "127.0.0.1",
                                                  "protocol": "udp", "mode": "ingress"}
    assert doc["services"]["web"]["environment"] == {"GREETING": "$${literal}"}  # escaped again for reloading
    assert doc["services"]["db"]["networks"] == {"back": {"aliases": ["database"]}}
    assert doc["networks"]["back"] == {"name": "shop_back", "internal": True}
    r = run(d, "config", "--format", "json")
    assert json.loads(r.stdout)["services"]["web"]["networks"] == {"front": None}
    r = run(d, "config", "--ignored", "--format", "json")
    assert json.loads(r.stdout) == ["services.web.image"]
    r = run(d, "validate")
    assert r.returncode == 0 and "shop: valid (2 services, 2 networks)" in r.stdout


def test_errors_are_located_and_exit_1(tmp_path: Path):
    write(tmp_path, "c.yaml", "services:\n  web:\n    networks: [nope]\n    ports: ['80:80/x']\n")
    r = run(tmp_path, "-f", "c.yaml", "validate")
    assert r.returncode == 1
    assert "c.yaml:3:16: services.web.networks.nope: network 'nope' is not defined" in r.stderr
    assert "c.yaml:4:13: services.web.ports[0]: unknown protocol 'x'" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "junk.yaml").write_bytes(bytes(range(256)) * 4)
    r = run(tmp_path, "-f", "junk.yaml", "config")
    assert r.returncode == 1 and "junk.yaml" in r.stderr and "Traceback" not in r.stderr


def test_project_options(tmp_path: Path):
    write(tmp_path, "compose.yaml", "services:\n  web: {ports: ['${P}:80']}\n  dbg: {profiles: [debug]}\n")
    write(tmp_path, "vars.env", "P=9999\n")
    r = run(tmp_path, "-p", "named", "--env-file", "vars.env", "--profile", "debug", "config", "--format", "json")
    doc = json.loads(r.stdout)
    assert doc["name"] == "named" and sorted(doc["services"]) == ["dbg", "web"]
    assert doc["services"]["web"]["ports"][0]["published"] == "9999"


COMMANDS = ["config", "validate", "plan", "up", "down", "ps", "port", "exec", "logs", "check", "graph",
            "ls", "version", "network ls", "network inspect", "network create", "network rm", "network prune",
            "network connect", "network disconnect", "node ls"]


def test_every_command_help_teaches_with_examples(tmp_path: Path):
    for cmd in COMMANDS:
        r = run(tmp_path, *cmd.split(), "--help", env={"COLUMNS": "100", "TERM": "dumb"})
        assert r.returncode == 0, (cmd, r.stderr)
        examples = r.stdout.split("Examples:", 1)
        assert len(examples) == 2, f"`composenet {cmd} --help` has no examples:\n{r.stdout}"
        # One example per line: each line of the section starts a command of its own.
        lines = [line.strip() for line in examples[1].splitlines() if line.strip()]
        assert lines and all(line.startswith(("composenet ", "(")) for line in lines), (cmd, r.stdout)
        assert any(f" {cmd.split()[-1]}" in line for line in lines), (cmd, r.stdout)


def test_command_lists_give_each_command_one_whole_sentence(tmp_path: Path):
    """`composenet --help` and `composenet network --help`: one line per command, a whole
    sentence (never cut short with "..." nor broken across lines), in an 80-column terminal."""
    for args, names in ((["--help"], [c for c in COMMANDS if " " not in c] + ["network", "node"]),
                        (["network", "--help"], [c.split()[1] for c in COMMANDS if c.startswith("network ")])):
        r = run(tmp_path, *args, env={"COLUMNS": "80", "TERM": "dumb"})
        assert r.returncode == 0, r.stderr
        listed = r.stdout.split("Commands:\n", 1)[1].strip("\n").splitlines()
        assert [line.split()[0] for line in listed] == names, r.stdout
        assert all(line.endswith(".") and not line.endswith("...") for line in listed), r.stdout


PLANNED = """
services:
  web:
    ports: ["8080:80", "127.0.0.1:53:53/udp"]
    networks: [front, back]
  db:
    networks: {back: {aliases: [database]}}
    deploy: {replicas: 2}
networks:
  front: {}
  back: {internal: true}
"""


def test_plan_detailed_exitcode(tmp_path: Path):
    from composenet.compose.project import load_project
    from composenet.core.desired import Upstreams
    from composenet.core.state import ObservedState
    from composenet.pipeline import make_plan
    from tests.golden.harness import observed_after

    d = tmp_path / "shop"
    write(d, "compose.yaml", PLANNED)
    r = run(d, "plan", "--offline", "--detailed-exitcode")
    assert r.returncode == 2 and "to add" in r.stdout, r.stderr
    assert run(d, "plan", "--offline").returncode == 0  # changes, but no --detailed-exitcode
    from composenet.compose.options import LoadOptions

    p = load_project(LoadOptions(files=("compose.yaml",), cwd=str(d), environ={}))
    # The state right after `up`: nothing to do. --resolv-conf: the same upstreams as here.
    write(d, "resolv.conf", "nameserver 192.0.2.53\n")
    planned = make_plan(p, p.name, ObservedState(offline=True), Upstreams(("192.0.2.53",)))
    (d / "observed.json").write_text(observed_after(planned.desired).dumps())
    r = run(d, "--resolv-conf", "resolv.conf", "plan", "--observed", "observed.json", "--detailed-exitcode")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No changes." in r.stdout
    write(d, "compose.yaml", PLANNED.replace("[front, back]", "[front, nope]"))
    r = run(d, "plan", "--offline", "--detailed-exitcode")
    assert r.returncode == 1 and "network 'nope' is not defined" in r.stderr and "Traceback" not in r.stderr


def test_plan_output_is_byte_identical(tmp_path: Path):
    d = tmp_path / "shop"
    write(d, "compose.yaml", PLANNED)
    outs = set()
    for seed in ("0", "1", "12345"):
        for fmt in ("text", "json"):
            r = run(d, "plan", "--offline", "--show-ruleset", "--format", fmt, env={"PYTHONHASHSEED": seed})
            assert r.returncode == 0, r.stderr
            outs.add((fmt, r.stdout))
    assert len(outs) == 2


def test_saved_plan_and_observed_files_are_checked(tmp_path: Path):
    d = tmp_path / "shop"
    write(d, "compose.yaml", PLANNED)
    (d / "junk.json").write_bytes(b"\xff\xfe{")
    write(d, "list.json", "[1, 2]")
    write(d, "conn.json", '{"connections": [5]}')  # the schema catches it before planning
    write(d, "kind.json", '{"resources": [{"kind": "bogus"}]}')
    write(d, "steps.json", '{"project": "shop", "observed_digest": "", "steps": [{"action": 1}]}')
    cases = [
        (("up", "--plan", "missing.json"), "cannot read saved plan missing.json"),
        (("up", "--plan", "junk.json"), "junk.json: not a JSON saved plan"),
        (("up", "--plan", "list.json"), "list.json: it is not a plan saved by `composenet plan --out`"),
        (("up", "--plan", "steps.json"), "steps.json: its steps are damaged"),
        (("plan", "--observed", "missing.json"), "cannot read observed state missing.json"),
        (("plan", "--observed", "list.json"), "list.json: $: [1, 2] is not of type 'object'"),
        (("plan", "--observed", "conn.json"), "conn.json: $.connections[0]: 5 is not of type 'object'"),
        (("plan", "--observed", "kind.json"), "kind.json: $.resources[0].kind: 'bogus' is not one of"),
        (("plan", "--offline", "--out", "no/such/dir/plan.json"), "cannot write the plan to no/such/dir/plan.json"),
    ]
    for args, message in cases:
        r = run(d, *args)
        assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, (args, r.stderr)
    assert run(d, "plan", "--offline", "--out", "plan.json").returncode == 0
    saved = json.loads((d / "plan.json").read_text())
    saved["project"] = "other"
    (d / "plan.json").write_text(json.dumps(saved))
    r = run(d, "up", "--plan", "plan.json")
    assert r.returncode == 1 and "the saved plan is for project 'other', not 'shop'" in r.stderr


def test_saved_plan_difference_names_the_steps(tmp_path: Path):
    from composenet.compose.options import LoadOptions
    from composenet.compose.project import load_project
    from composenet.core.desired import Upstreams
    from composenet.core.plan import saved_plan_difference, saved_plan_problem
    from composenet.core.render import plan_to_json
    from composenet.core.state import ObservedState
    from composenet.pipeline import make_plan

    def planned(text: str):
        write(tmp_path, "compose.yaml", text)
        p = load_project(LoadOptions(files=("compose.yaml",), cwd=str(tmp_path), environ={}))
        return make_plan(p, p.name, ObservedState(offline=True), Upstreams(("192.0.2.53",))).plan

    before = planned(PLANNED)
    saved = json.loads(json.dumps(plan_to_json(before, None)))
    assert saved_plan_problem(saved) is None
    assert saved_plan_difference(saved, before) == []
    after = planned(PLANNED.replace("replicas: 2", "replicas: 1"))
    diff = saved_plan_difference(saved, after)
    assert "in the saved plan, no longer needed: create netns:" in "\n".join(diff) and "-db-2" in "\n".join(diff)
    assert all(x.startswith(("in the saved plan, no longer needed: ", "needed now, not in the saved plan: "))
               for x in diff), diff
    saved["steps"].reverse()
    assert saved_plan_difference(saved, before) == ["the same steps, in another order"]
