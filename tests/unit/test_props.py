"""Property tests: generated and mutated compose documents give a Project or an InputError, never
anything else; what `config` prints loads back to the same document."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composenet.errors import InputError
from composenet.model import Project
from composenet.options import LoadOptions
from composenet.project import load_project
from composenet.render_config import render_config

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

names = st.sampled_from(["web", "db", "api", "a.b", "x_y", "Bad Name", "-x", "default", "front", "back"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12),
                    st.sampled_from(["80", "8080:80", "127.0.0.1::53/udp", "[::1]:1-2:1-2", "10.1.0.5", "$X",
                                     "${X:-1}", "${X?}", "10.1.0.0/24", "on", "22:22", "host", "service:db"]))
port_item = st.one_of(scalars, st.fixed_dictionaries({"target": scalars}, optional={
    "published": scalars, "host_ip": scalars, "protocol": st.sampled_from(["tcp", "udp", "x"]), "mode": scalars}))
attachment = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "aliases": st.lists(st.text(max_size=6), max_size=2), "ipv4_address": scalars, "priority": scalars,
    "mac_address": scalars}))
service = st.fixed_dictionaries({}, optional={
    "ports": st.one_of(st.lists(port_item, max_size=3), scalars),
    "networks": st.one_of(st.lists(names, max_size=3), st.dictionaries(names, attachment, max_size=3)),
    "network_mode": scalars, "links": st.lists(scalars, max_size=2), "container_name": scalars,
    "hostname": scalars, "command": st.one_of(scalars, st.lists(st.text(max_size=5), max_size=3)),
    "environment": st.one_of(st.lists(st.text(max_size=8), max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=3)),
    "extra_hosts": st.one_of(st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=4), scalars, max_size=2)),
    "scale": scalars, "deploy": st.one_of(scalars, st.fixed_dictionaries({}, optional={"replicas": scalars})),
    "stop_grace_period": scalars, "depends_on": st.one_of(st.lists(names, max_size=2), scalars),
    "expose": st.lists(scalars, max_size=2), "dns": st.one_of(scalars, st.lists(scalars, max_size=2)),
    "image": scalars, "profiles": st.lists(names, max_size=1),
})
network = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "driver": st.sampled_from(["bridge", "macvlan", "weird", 5]), "internal": scalars, "external": scalars,
    "name": scalars, "ipam": st.fixed_dictionaries({}, optional={"config": st.lists(st.fixed_dictionaries({}, optional={
        "subnet": scalars, "gateway": scalars, "ip_range": scalars}), max_size=2)}),
    "driver_opts": st.dictionaries(st.text(max_size=4), scalars, max_size=2)}))
documents = st.fixed_dictionaries({"services": st.dictionaries(names, service, max_size=4)}, optional={
    "networks": st.dictionaries(names, network, max_size=3), "name": scalars, "version": scalars,
    "x-any": scalars})


def _load(text: str, d: Path) -> Project | InputError:
    (d / "compose.yaml").write_text(text)
    try:
        return load_project(LoadOptions(files=("compose.yaml",), cwd=str(d), environ={"X": "1"}))
    except InputError as e:
        assert e.problems and all(p.message for p in e.problems)
        return e


def _roundtrip(p: Project, d: Path) -> None:
    out = render_config(p, "yaml")
    (d / "again.yaml").write_text(out)
    again = load_project(LoadOptions(files=("again.yaml",), cwd=str(d), environ={}))
    assert again.document == p.document
    assert [s.name for s in again.services] == [s.name for s in p.services]
    strip = [(s.name, [(a.network, a.aliases, a.ipv4_address) for a in s.networks],
              [(x.target, x.published, x.host_ip, x.protocol) for x in s.ports], s.environment, s.command)
             for s in p.services]
    assert strip == [(s.name, [(a.network, a.aliases, a.ipv4_address) for a in s.networks],
                      [(x.target, x.published, x.host_ip, x.protocol) for x in s.ports], s.environment, s.command)
                     for s in again.services]


@SETTINGS
@given(documents)
def test_generated_documents(doc):
    with tempfile.TemporaryDirectory() as tmp:
        got = _load(yaml.safe_dump(doc, sort_keys=False), Path(tmp))
        if isinstance(got, Project):
            _roundtrip(got, Path(tmp))


BASE = """\
name: demo
x-common: &common
  environment: {A: "1"}
services:
  web:
    <<: *common
    ports: ["8080:80", "127.0.0.1:5000-5001:5000-5001/udp"]
    networks:
      front: {aliases: [www], ipv4_address: 10.8.0.10}
  db:
    networks: [back]
    command: postgres -c "x=1"
networks:
  front: {ipam: {config: [{subnet: 10.8.0.0/24}]}}
  back: {internal: true}
"""


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(BASE)), st.integers(0, 3), st.sampled_from(
    list(":-[]{}&*!|>'\"#%@`, \n\t\x00\xff$") + ["\n  ", "<<: *common\n", "!reset ", "${X", "{{", "- "])),
    min_size=1, max_size=4))
def test_mutated_documents(edits):
    text = BASE
    for pos, delete, ins in edits:
        pos = min(pos, len(text))
        text = text[:pos] + ins + text[pos + delete:]
    with tempfile.TemporaryDirectory() as tmp:
        got = _load(text, Path(tmp))
        if isinstance(got, Project):
            _roundtrip(got, Path(tmp))


def test_base_document_round_trips(tmp_path: Path):
    got = _load(BASE, tmp_path)
    assert isinstance(got, Project)
    _roundtrip(got, tmp_path)
