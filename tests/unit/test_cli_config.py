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
