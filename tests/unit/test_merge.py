"""Merging -f files (CS-MERGE-*), !reset / !override, extends (CS-EXT-*) and include (CS-INC-*)."""

from __future__ import annotations

from pathlib import Path

import pytest

from composenet.errors import InputError

from .helpers import load, write


def test_merge_rules(tmp_path: Path):
    write(tmp_path, "a.yaml", """
        services:
          web:
            command: ["a", "b"]
            ports: ["8080:80", "9000:9000"]
            environment: {A: "1", B: "2"}
            networks: [front]
            dns: 1.1.1.1
            hostname: one
        networks:
          front: {}
          back: {}
    """)
    write(tmp_path, "b.yaml", """
        services:
          web:
            command: c
            ports: ["8080:80", {target: 9000, published: 9001, host_ip: 127.0.0.1}]
            environment: [B=3, C=4]
            networks:
              back: {aliases: [api]}
            dns: [8.8.8.8]
            hostname: two
          db: {}
    """)
    p = load(tmp_path, "a.yaml", "b.yaml")
    web = p.service("web")
    assert web.command == ("c",)  # replaced, never appended (CS-MERGE-04)
    assert [(x.host_ip, x.published) for x in web.ports] == [(None, "8080"), (None, "9000"), ("127.0.0.1", "9001")]
    assert dict(web.environment) == {"A": "1", "B": "3", "C": "4"}
    assert [(a.network, a.aliases) for a in web.networks] == [("front", ()), ("back", ("api",))]
    assert web.dns == ("1.1.1.1", "8.8.8.8")
    assert web.hostname == "two"
    assert [s.name for s in p.services] == ["db", "web"]
    assert p.files == (str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))


def test_reset_and_override(tmp_path: Path):
    write(tmp_path, "a.yaml", """
        services:
          web:
            ports: ["80:80"]
            dns: [1.1.1.1]
            networks: [front]
            environment: {A: "1"}
        networks: {front: {}, back: {}}
    """)
    write(tmp_path, "b.yaml", """
        services:
          web:
            ports: !reset []
            dns: !reset null
            networks: !override [back]
            environment: !override {B: "2"}
    """)
    web = load(tmp_path, "a.yaml", "b.yaml").service("web")
    assert web.ports == () and web.dns == ()
    assert [a.network for a in web.networks] == ["back"]
    assert web.environment == (("B", "2"),)


def test_override_positions_point_at_the_later_file(tmp_path: Path):
    write(tmp_path, "a.yaml", "services:\n  web:\n    ports: ['80']\n")
    write(tmp_path, "b.yaml", "services:\n  web:\n    network_mode: host\n")
    with pytest.raises(InputError) as ei:
        load(tmp_path, "a.yaml", "b.yaml")
    assert "a.yaml:3:5: services.web.ports: ports cannot be published with network_mode host" in str(ei.value)


def test_extends_same_file_other_file_and_recursive(tmp_path: Path):
    write(tmp_path, "base/common.yaml", """
        services:
          root:
            environment: {ROOT: "1"}
            env_file: root.env
          mid:
            extends: root
            ports: ["8000:80"]
    """)
    write(tmp_path, "base/root.env", "FROM_FILE=yes\n")
    write(tmp_path, "compose.yaml", """
        services:
          web:
            extends: {file: base/common.yaml, service: mid}
            environment: {OWN: "2"}
            ports: ["9000:90"]
          twin:
            extends: web
            ports: !reset []
    """)
    p = load(tmp_path, "compose.yaml")
    for name in ("web", "twin"):
        s = p.service(name)
        assert dict(s.environment) == {"FROM_FILE": "yes", "ROOT": "1", "OWN": "2"}
    assert [x.target for x in p.service("web").ports] == [80, 90]
    assert p.service("twin").ports == ()
    assert "extends" not in p.document["services"]["web"]


def test_extends_cycle_and_missing(tmp_path: Path):
    write(tmp_path, "compose.yaml", """
        services:
          a: {extends: b}
          b: {extends: a}
          c: {extends: nope}
    """)
    with pytest.raises(InputError) as ei:
        load(tmp_path, "compose.yaml")
    text = str(ei.value)
    assert "compose.yaml:2:16: services.a.extends: extends cycle: a -> b -> a [CS-EXT-03]" in text
    assert "compose.yaml:4:16: services.c.extends: extends: service 'nope' not found" in text


def test_include_short_and_long_and_cycles(tmp_path: Path):
    write(tmp_path, "sub/compose.yaml", """
        services:
          db:
            networks: [data]
            environment: {V: "${SUBVAR}"}
        networks:
          data: {}
    """)
    write(tmp_path, "sub/.env", "SUBVAR=from-sub-env\n")
    write(tmp_path, "compose.yaml", """
        include:
          - sub/compose.yaml
        services:
          web:
            networks: [data]
    """)
    p = load(tmp_path, "compose.yaml")
    assert [s.name for s in p.services] == ["db", "web"]
    assert dict(p.service("db").environment) == {"V": "from-sub-env"}
    p = load(tmp_path, "compose.yaml", env={"SUBVAR": "outer"})  # the including env wins (CS-INT-13)
    assert dict(p.service("db").environment) == {"V": "outer"}
    write(tmp_path, "long.yaml", """
        include:
          - path: [sub/compose.yaml]
            project_directory: sub
        services: {}
    """)
    assert [s.name for s in load(tmp_path, "long.yaml").services] == ["db"]
    write(tmp_path, "loop/a.yaml", "include: [b.yaml]\nservices: {}\n")
    write(tmp_path, "loop/b.yaml", "include: [a.yaml]\nservices: {}\n")
    with pytest.raises(InputError, match=r"b.yaml:1:11: include\[0\]: include cycle: a.yaml -> b.yaml -> a.yaml"):
        load(tmp_path, "loop/a.yaml")
