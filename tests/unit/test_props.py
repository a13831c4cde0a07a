"""Property tests: generated and mutated compose documents give a Project or an InputError, never
anything else; what `config` prints loads back to the same document."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composenet.compose.options import LoadOptions
from composenet.compose.project import load_project
from composenet.compose.render_config import render_config
from composenet.core.model import Project
from composenet.errors import InputError

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
        where = [(p.file or "", p.line or 0, p.col or 0) for p in e.problems]
        assert where == sorted(where) and len(set(e.problems)) == len(e.problems), e  # in order, each once
        return e


def _plan(p: Project) -> None:
    """An accepted project always plans (offline) and renders: the planner never crashes on it."""
    from composenet.core.desired import Upstreams
    from composenet.core.render import render_json, render_text
    from composenet.core.state import ObservedState
    from composenet.pipeline import make_plan

    planned = make_plan(p, p.name, ObservedState(offline=True), Upstreams(("192.0.2.53",)))
    assert render_text(planned.plan) and render_json(planned.plan, planned.ruleset)


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
            _plan(got)
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
            _plan(got)
            _roundtrip(got, Path(tmp))


def test_base_document_round_trips(tmp_path: Path):
    got = _load(BASE, tmp_path)
    assert isinstance(got, Project)
    _roundtrip(got, tmp_path)


# ---- wrong types on every networking key: a Project and a plan, or an InputError -------------

SWEEP_BASE = {
    "services": {
        "web": {"ports": ["8080:80"], "expose": ["80"], "dns": ["192.0.2.1"], "extra_hosts": ["a:192.0.2.4"],
                "hostname": "web", "command": "sleep 1",
                "networks": {"front": {"aliases": ["w"], "ipv4_address": "10.8.0.10"}}},
        "db": {"networks": ["back", "front"], "depends_on": ["web"]},
    },
    "networks": {
        "front": {"driver_opts": {"com.docker.network.driver.mtu": "1400"},
                  "ipam": {"config": [{"subnet": "10.8.0.0/24", "gateway": "10.8.0.1", "ip_range": "10.8.0.128/25",
                                       "aux_addresses": {"r": "10.8.0.5"}}]}},
        "back": {"internal": True},
    },
}
SERVICE_KEYS = ["networks", "ports", "expose", "network_mode", "links", "external_links", "dns", "dns_search",
                "dns_opt", "extra_hosts", "hostname", "domainname", "mac_address", "container_name", "deploy",
                "scale", "command", "entrypoint", "environment", "env_file", "working_dir", "user",
                "stop_grace_period", "depends_on", "profiles", "extends"]
NETWORK_KEYS = ["driver", "driver_opts", "attachable", "enable_ipv6", "ipam", "internal", "labels", "external", "name"]
ATTACHMENT_KEYS = ["aliases", "ipv4_address", "ipv6_address", "link_local_ips", "mac_address", "priority",
                   "gw_priority", "driver_opts", "interface_name"]
IPAM_KEYS = ["subnet", "ip_range", "gateway", "aux_addresses"]
PORT_KEYS = ["target", "published", "host_ip", "protocol", "mode", "app_protocol", "name"]
DRIVER_OPTS = ["com.docker.network.driver.mtu", "com.docker.network.bridge.enable_icc",
               "com.docker.network.bridge.enable_ip_masquerade", "com.docker.network.bridge.name",
               "com.docker.network.bridge.host_binding_ipv4", "parent"]
WRONG = [None, True, -1, 10**20, 1.5, "", "x", "10.8.0.0/33", [], [None], [[1]], {}, {"a": [1]}, "${", "1-"]


def _sweep():
    def at(*path):
        for v in WRONG:
            doc = copy.deepcopy(SWEEP_BASE)
            doc["services"]["db"]["ports"] = [{"target": 80, "published": "8081"}]  # long form, for PORT_KEYS
            node = doc
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = v
            yield f"{'.'.join(map(str, path))}={v!r}", doc
    for k in SERVICE_KEYS:
        yield from at("services", "web", k)
    for k in NETWORK_KEYS:
        yield from at("networks", "front", k)
    for k in ATTACHMENT_KEYS:
        yield from at("services", "web", "networks", "front", k)
    for k in IPAM_KEYS:
        yield from at("networks", "front", "ipam", "config", 0, k)
    for k in PORT_KEYS:
        yield from at("services", "db", "ports", 0, k)
    for k in DRIVER_OPTS:
        yield from at("networks", "front", "driver_opts", k)
    for path in (("services", "web", "ports", 0), ("services", "web", "networks", "front"), ("networks", "front"),
                 ("services", "web"), ("networks",), ("name",), ("services", "web", "deploy")):
        yield from at(*path)


def test_wrong_types_on_networking_keys_never_crash(tmp_path: Path):
    accepted = rejected = 0
    for label, doc in _sweep():
        got = _load(yaml.safe_dump(doc), tmp_path)
        if isinstance(got, InputError):
            rejected += 1
            continue
        accepted += 1
        try:
            render_config(got, "json")
            _plan(got)
        except Exception as e:  # name the case that broke
            raise AssertionError(f"{label}: {type(e).__name__}: {e}") from e
    assert accepted and rejected  # both outcomes happen: the sweep reaches the planner


# ---- labels: every name a valid file can hold parses back out of a link label ----------------------

project_names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,14}", fullmatch=True)
service_names = st.from_regex(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,8}[A-Za-z0-9_])?(\.[a-z0-9]{1,3})?", fullmatch=True)
network_keys = st.from_regex(r"[a-zA-Z0-9._-]{1,12}", fullmatch=True)
network_names = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,20}", fullmatch=True)


@SETTINGS
@given(project_names, st.lists(service_names, min_size=1, max_size=3, unique_by=str.lower),
       st.lists(st.tuples(network_keys, st.one_of(st.none(), network_names)), min_size=1, max_size=3,
                unique_by=lambda t: t[0]))
def test_labels_parse_back_for_every_valid_name(project, services, nets):
    """What the loader accepts, every label composenet writes holds, and reading the label gives
    back exactly the names (a '/' in a name would shift its parts: issue 11, defect 6)."""
    from composenet.core.desired import Upstreams
    from composenet.core.resources import LABEL_PREFIX, Bridge, Veth
    from composenet.core.state import ObservedState
    from composenet.kernel.normalise import label_parts
    from composenet.pipeline import make_plan

    doc = {"name": project, "services": {s: {"networks": [k for k, _ in nets]} for s in services},
           "networks": {k: ({"name": n} if n else {}) for k, n in nets}}
    with tempfile.TemporaryDirectory() as tmp:
        got = _load(yaml.safe_dump(doc, sort_keys=False), Path(tmp))
    if isinstance(got, InputError):  # refused names are refused with a located reason, never a crash
        return
    planned = make_plan(got, got.name, ObservedState(offline=True), Upstreams(("192.0.2.53",)))
    bridges = [r for r in planned.desired.resources.values() if isinstance(r, Bridge)]
    veths = [r for r in planned.desired.resources.values() if isinstance(r, Veth)]
    assert bridges and veths
    for b in bridges:
        assert len(b.label.encode()) <= 255 and label_parts(b.label, project) == [b.network]
        owner, _, name = b.label[len(LABEL_PREFIX):].partition("/")  # how kernel.netinfo reads it
        assert (owner, name) == (project, b.network)
    for v in veths:
        parts = label_parts(v.label, project)
        assert len(v.label.encode()) <= 255 and parts is not None and len(parts) == 2 and parts[0] == v.ns, v.label
        assert parts[1] in {b.network for b in bridges}
