"""YAML as Compose reads it, positions, hostile input, files/env/name selection, networks forms."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The loader's fast path (libyaml) and its reference (pure Python); the fast path may move to a
# module of its own: these are the names this file needs from wherever they live.
from composenet.compose.fastyaml import HAVE_LIBYAML as _HAVE_LIBYAML
from composenet.compose.fastyaml import fast_parse as _fast_parse
from composenet.compose.load import YamlProblem, _reference_parse, parse_text
from composenet.compose.project import normalize_project_name
from composenet.compose.ytree import YList, YMap, fmt_path, locate, plain
from composenet.core.model import Attachment, IpamConfig, Network
from composenet.errors import InputError

from .helpers import errors, load, load_text, write


def test_yaml_12_resolver():
    d = parse_text("f", "a: [22:22, on, off, yes, no, 0755, 0o17, 0x1F, 1e3, ~, null, True, 2001-01-01]\n")
    assert plain(d)["a"] == ["22:22", "on", "off", "yes", "no", 755, 15, 31, 1000.0, None, None, True, "2001-01-01"]


def test_anchors_merge_keys_and_positions():
    d = parse_text("f.yaml", "x-a: &a {p: 1, q: 2}\nx-b: &b {q: 3, r: 4}\ns:\n  <<: [*a, *b]\n  q: 9\n")
    assert plain(d["s"]) == {"p": 1, "q": 9, "r": 4}
    assert str(locate(d, ("s", "q"))) == "f.yaml:5:6"
    assert str(locate(d, ("s", "r"))) == "f.yaml:2:19"  # where the merged value was written


@pytest.mark.parametrize("text,msg", [
    ("a: [" * 200 + "]" * 200, "nested deeper than"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)), "too large"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
    ("a: b: c\n", "invalid YAML"),
    ("\x00\x01\x02", "not a text file"),
    ("? [a]\n: b\n", "mapping key must be a plain value"),
    ("<<: [1]\n", "merge key"),
])
def test_hostile_yaml_is_a_located_problem(text: str, msg: str):
    with pytest.raises(YamlProblem) as ei:
        parse_text("f.yaml", text)
    assert msg in str(ei.value.problem)
    assert ei.value.problem.file == "f.yaml" and ei.value.problem.line


@pytest.mark.parametrize("data,msg", [
    (b"\xff\xfe\x00\xd8", "not valid UTF-16"), (b"services:\n  a: \xe9\n", "compose.yaml:2:6: not UTF-8"),
    (b"", "the file is empty"), (b"- a\n", "top level must be a mapping"), (b"services: {}\n" + b"#" * (17 << 20), "too large"),
    (b"web:\n  image: x\n  net: host\n", "Compose v1 format"),
])
def test_bad_files(tmp_path: Path, data: bytes, msg: str):
    (tmp_path / "compose.yaml").write_bytes(data)
    with pytest.raises(InputError) as ei:
        load(tmp_path, "compose.yaml")
    assert msg in str(ei.value)


def test_files_that_are_not_files(tmp_path: Path):
    (tmp_path / "dir.yaml").mkdir()
    cases = [("dir.yaml", "dir.yaml: is a directory, not a compose file"), (os.devnull, "not a regular file"),
             ("missing.yaml", "missing.yaml: compose file not found"), ("-", "does not read a compose file from stdin")]
    for f, msg in cases:
        with pytest.raises(InputError) as ei:
            load(tmp_path, f)
        assert msg in str(ei.value), (f, str(ei.value))


def test_default_lookup_override_and_compose_file(tmp_path: Path):
    write(tmp_path, "docker-compose.yml", "services: {old: {}}\n")
    write(tmp_path, "compose.yaml", "services: {web: {}}\n")
    write(tmp_path, "compose.override.yml", "services: {extra: {}}\n")
    p = load(tmp_path)
    assert [s.name for s in p.services] == ["extra", "web"]
    assert p.files == (str(tmp_path / "compose.yaml"), str(tmp_path / "compose.override.yml"))
    p = load(tmp_path, env={"COMPOSE_FILE": "docker-compose.yml:compose.override.yml"})
    assert [s.name for s in p.services] == ["extra", "old"]
    with pytest.raises(InputError, match="no compose file found"):
        load(tmp_path / "..")
    with pytest.raises(InputError, match="COMPOSE_FILE=':::' names no file"):
        load(tmp_path, env={"COMPOSE_FILE": ":::"})


def test_env_file_precedence(tmp_path: Path):
    write(tmp_path, ".env", "PORT=8000\nTAG=dotenv\n")
    write(tmp_path, "other.env", "PORT=9000\n")
    text = """
        services:
          web:
            ports: ["${PORT}:80"]
            environment: [TAG, "PLAIN=$${NOT}", FROM_OS]
            env_file: [vars.env]
    """
    write(tmp_path, "vars.env", "TAG=from-file\nFILE_ONLY=1\n")
    p = load_text(tmp_path, text, env={"FROM_OS": "os"})
    web = p.service("web")
    assert web.ports[0].published == "8000"
    assert dict(web.environment) == {"TAG": "dotenv", "FILE_ONLY": "1", "PLAIN": "${NOT}", "FROM_OS": "os"}
    assert load_text(tmp_path, text, env={"PORT": "7000"}).service("web").ports[0].published == "7000"
    assert load_text(tmp_path, text, env_files=("other.env",)).service("web").ports[0].published == "9000"


def test_unset_variable_warns(tmp_path: Path):
    p = load_text(tmp_path, "services:\n  web:\n    hostname: h${NOPE}\n")
    assert p.service("web").hostname == "h"
    assert any("compose.yaml:3:15: services.web.hostname: variable NOPE is not set" in w for w in p.warnings)


@pytest.mark.parametrize("opts,env,text,want", [
    ({"project_name": "cli"}, {"COMPOSE_PROJECT_NAME": "envname"}, "name: file\n", "cli"),
    ({}, {"COMPOSE_PROJECT_NAME": "envname"}, "name: file\n", "envname"),
    ({}, {"N": "fromvar"}, "name: ${N}\n", "fromvar"),
    ({}, {}, "", "my_app-1x"),  # directory name, normalised (CS-NAME-04)
])
def test_project_name_precedence(tmp_path: Path, opts, env, text, want):
    d = tmp_path / "My_App-1.x"
    write(d, "compose.yaml", text + "services: {web: {}}\n")
    p = load(d, "compose.yaml", env=env, **opts)
    assert p.name == want
    assert p.network("default").name == f"{want}_default"


def test_invalid_project_names(tmp_path: Path):
    assert "-p: invalid project name 'Bad.Name'" in errors(tmp_path, "services: {}\n", project_name="Bad.Name")
    assert "compose.yaml:1:7: name: invalid project name 'My App'" in errors(tmp_path, "name: My App\nservices: {}\n")
    assert normalize_project_name("-_My.App") == "myapp"
    with pytest.raises(InputError):
        normalize_project_name("...")


def test_networks_forms_and_default(tmp_path: Path):
    p = load_text(tmp_path, """
        name: proj
        services:
          a:
            networks: [front, back]
          b:
            networks:
              back:
              front:
                aliases: [x, y]
                ipv4_address: 10.5.0.10
                ipv6_address: "fd00::0010"
                link_local_ips: [169.254.1.1]
                mac_address: 02-42-AC-11-00-02
                priority: 10
                gw_priority: 5
                interface_name: eth7
                driver_opts: {mtu: 1400}
          c: {}
          d: {network_mode: none}
        networks:
          front:
            driver_opts: {com.docker.network.bridge.name: br-x}
            enable_ipv6: "true"
            ipam:
              config:
                - subnet: 10.5.0.0/24
                  aux_addresses: {r: 10.5.0.2}
                - subnet: fd00::/64
          back:
            name: custom
            internal: true
            labels: [a=b, c]
          ext:
            external: {name: real}
    """)
    assert [n.key for n in p.networks] == ["back", "default", "ext", "front"]
    assert p.network("back") == Network("back", "custom", internal=True, labels=(("a", "b"), ("c", "")),
                                        pos=p.network("back").pos)
    assert p.network("ext").external and p.network("ext").name == "real"
    assert any("CS-NET-15" in w for w in p.warnings)
    front = p.network("front")
    assert front.name == "proj_front" and front.enable_ipv6 and front.opt("com.docker.network.bridge.name") == "br-x"
    assert front.ipam == (IpamConfig("10.5.0.0/24", aux_addresses=(("r", "10.5.0.2"),)), IpamConfig("fd00::/64"))
    assert [a.network for a in p.service("a").networks] == ["front", "back"]
    b = p.service("b").networks
    assert [a.network for a in b] == ["front", "back"]  # priority 10 first
    assert b[0] == Attachment("front", ("x", "y"), "10.5.0.10", "fd00::10", ("169.254.1.1",), "02:42:ac:11:00:02",
                              10, 5, "eth7", (("mtu", "1400"),), pos=b[0].pos)
    assert p.service("c").networks == (Attachment("default", pos=p.service("c").networks[0].pos),)
    assert p.service("d").networks == () and p.service("d").network_mode == "none"


def test_no_implicit_default_when_unused(tmp_path: Path):
    p = load_text(tmp_path, "services:\n  a: {networks: [n]}\n  b: {network_mode: host}\nnetworks: {n: {}}\n")
    assert [n.key for n in p.networks] == ["n"]


def test_process_keys(tmp_path: Path):
    p = load_text(tmp_path, """
        services:
          web:
            entrypoint: /bin/sh -c
            command: 'echo "a b" c'
            working_dir: /srv
            user: "1000"
            stop_grace_period: 1m30s
            depends_on:
              db: {condition: service_healthy}
            links: [cache:c]
            extra_hosts: ["h1:10.0.0.1", "h2=::1", "h3=[fd00::1]", "h4:::2"]
            dns: 9.9.9.9
            dns_search: example.org
            expose: [80, "90-91/udp"]
          db:
            deploy: {replicas: 2}
          cache: {}
          side:
            network_mode: service:db
            extra_hosts: {m1: 10.0.0.9, m2: [10.0.0.7, 10.0.0.8]}
            command: [run, "1"]
    """)
    web = p.service("web")
    assert web.argv == ("/bin/sh", "-c", "echo", "a b", "c")
    assert (web.working_dir, web.user, web.stop_grace_period) == ("/srv", "1000", 90.0)
    assert web.depends_on == ("db", "cache") and web.links == (("cache", "c"),)
    assert web.extra_hosts == (("h1", "10.0.0.1"), ("h2", "::1"), ("h3", "fd00::1"), ("h4", "::2"))
    assert (web.dns, web.dns_search, web.expose) == (("9.9.9.9",), ("example.org",), ("80", "90-91/udp"))
    assert p.service("db").replicas == 2
    side = p.service("side")
    assert side.depends_on == ("db",) and side.networks == ()
    assert side.extra_hosts == (("m1", "10.0.0.9"), ("m2", "10.0.0.7"), ("m2", "10.0.0.8"))
    assert side.command == ("run", "1")


def test_ignored_and_unknown_keys(tmp_path: Path):
    p = load_text(tmp_path, """
        version: "3.8"
        services:
          web:
            image: nginx
            healthcheck: {test: [CMD, "true"]}
            deploy: {replicas: 1, resources: {}}
            colour: blue
            x-mine: 1
        volumes: {data: {}}
        x-top: 1
        bogus: 2
    """)
    assert p.ignored == ("bogus", "services.web.colour", "services.web.deploy.resources", "services.web.healthcheck",
                         "services.web.image", "volumes")
    assert any("compose.yaml:1:1: version: `version` is obsolete" in w for w in p.warnings)
    assert any("services.web.colour: unknown service key 'colour'" in w for w in p.warnings)
    assert p.document["volumes"] == {"data": {}} and p.document["x-top"] == 1


@pytest.mark.parametrize("text", [
    "services: {web: {ports: [{target: {}}]}}\n", "services: {web: {networks: {a: []}}}\n",
    "services: {web: {environment: [[1]]}}\n", "services: 5\n", "networks: {n: {ipam: {config: [5]}}}\n",
    "services: {web: {extends: {service: 5}}}\n", "include: [5]\nservices: {}\n",
])
def test_wrong_types_are_problems(tmp_path: Path, text: str):
    got = errors(tmp_path, text)
    assert "compose.yaml:1:" in got


def test_identity_dns_and_env_keys(tmp_path: Path):
    write(tmp_path, "web.env", "FROM_FILE=1\nBOTH=file\n")
    p = load_text(tmp_path, """
        services:
          web:
            hostname: www
            domainname: example.org
            mac_address: 02:42:0A:00:00:09
            container_name: the-web
            dns: [192.0.2.1, "2001:db8::1"]
            dns_search: [a.example, b.example]
            dns_opt: [ndots:2, use-vc]
            external_links: [redis_1, "project_db_1:db"]
            env_file: web.env
            environment: {BOTH: env, EMPTY: ""}
          scaled: {scale: 3}
          viahost: {network_mode: host}
          viacontainer: {network_mode: "container:abc"}
    """)
    web = p.service("web")
    assert (web.hostname, web.domainname, web.mac_address, web.container_name) == (
        "www", "example.org", "02:42:0a:00:00:09", "the-web")
    assert web.dns == ("192.0.2.1", "2001:db8::1") and web.dns_search == ("a.example", "b.example")
    assert web.dns_opt == ("ndots:2", "use-vc")
    assert web.external_links == (("redis_1", "redis_1"), ("project_db_1", "db"))
    assert dict(web.environment) == {"FROM_FILE": "1", "BOTH": "env", "EMPTY": ""}
    assert p.service("scaled").replicas == 3
    assert p.service("viahost").network_mode == "host" and p.service("viahost").networks == ()
    assert p.service("viacontainer").network_mode == "container:abc"


def test_top_level_network_keys(tmp_path: Path):
    p = load_text(tmp_path, """
        services:
          a: {networks: [lan, mesh, plain]}
        networks:
          lan:
            driver: macvlan
            driver_opts: {parent: eth0.100}
            ipam:
              driver: default
              options: {foo: bar}
              config: [{subnet: 192.0.2.0/24, gateway: 192.0.2.254, ip_range: 192.0.2.128/25}]
          mesh: {driver: overlay, attachable: true}
          plain: {driver: bridge, enable_ipv6: false}
    """)
    lan = p.network("lan")
    assert lan.driver == "macvlan" and lan.opt("parent") == "eth0.100"
    assert lan.ipam_driver == "default" and lan.ipam_options == (("foo", "bar"),)
    assert lan.ipam == (IpamConfig("192.0.2.0/24", "192.0.2.128/25", "192.0.2.254"),)
    assert p.network("mesh").driver == "overlay" and p.network("mesh").attachable
    assert p.network("plain").driver == "bridge" and not p.network("plain").enable_ipv6


def test_key_paths_quote_odd_keys_readably(tmp_path: Path):
    assert fmt_path(("services", "web", "ports", 1)) == "services.web.ports[1]"
    assert fmt_path(("networks", "n", "driver_opts", "a b")) == 'networks.n.driver_opts["a b"]'
    assert fmt_path(("services", "café")) == 'services["café"]'
    assert 'services["café"]: unknown key' in errors(tmp_path, 'services:\n  "café": {}\n')


# ---- the libyaml fast path builds exactly what the reference path builds ----------------------------

ROOT = Path(__file__).resolve().parents[2]


def _same(a: object, b: object, where: str = "$") -> str | None:
    """None when two parsed trees are equal in values, types, order, positions and tags."""
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, YMap) and isinstance(b, YMap):
        if (list(a), a.pos, a.kpos, a.vpos, a.tags) != (list(b), b.pos, b.kpos, b.vpos, b.tags):
            return f"{where}: keys, positions or tags differ"
        return next((r for k in a if (r := _same(a[k], b[k], f"{where}.{k}"))), None)
    if isinstance(a, YList) and isinstance(b, YList):
        if (len(a), a.pos, a.ipos) != (len(b), b.pos, b.ipos):
            return f"{where}: items or positions differ"
        return next((r for i, (x, y) in enumerate(zip(a, b, strict=True)) if (r := _same(x, y, f"{where}[{i}]"))),
                    None)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"


def _fast_or_none(text: str) -> object:
    try:
        return _fast_parse("f.yaml", text)
    except Exception:  # noqa: BLE001 - the fast path may refuse anything: parse_text then uses the reference
        return _REFUSED


_REFUSED = object()

TRICKY = """\
x-a: &a {p: 1, q: !reset [1, 2], r: !override {s: 22:22}}
x-s: &s 0o17
x-l: &l [{m: 1}, {n: 2}]
plain: [22:22, on, no, 0755, 0x1F, 1e3, .inf, -.inf, .nan, ~, null, "", True, 2001-01-01, 1_000, +5]
tagged: [!!str 80, !!int '7', ! 12, ! "13", !!float 1, !!null x, !reset 8, !override "9", !!bool true]
keys: {"<<": 1, '7': 2, ? k : v, ! <<: {w: 1}, !!str 8: x}
s:
  <<: [*a, {q: 3, t: 4}]
  q: 9
  u: *s
  v: *l
  w: !
  x: 'é 中 ✓'
m: {<<: *a, p: 2}
deep: &d [[[[[[1]]]]]]
again: [*d, *d]
block: |
  two
  lines
folded: >-
  one
  line
"""


# What every path must build (plain values, in document order), libyaml or not.
PARSED = [
    (TRICKY, {
        "x-a": {"p": 1, "q": [1, 2], "r": {"s": "22:22"}}, "x-s": 15, "x-l": [{"m": 1}, {"n": 2}],
        "plain": ["22:22", "on", "no", 755, 31, 1000.0, math.inf, -math.inf, math.nan, None, None, "", True,
                  "2001-01-01", "1_000", 5],
        "tagged": ["80", 7, 12, 13, 1.0, None, 8, "9", True],
        "keys": {"w": 1, "<<": 1, "7": 2, "k": "v", "8": "x"},
        "s": {"p": 1, "r": {"s": "22:22"}, "t": 4, "q": 9, "u": 15, "v": [{"m": 1}, {"n": 2}], "w": None,
              "x": "é 中 ✓"},
        "m": {"q": [1, 2], "r": {"s": "22:22"}, "p": 2},
        "deep": [[[[[[1]]]]]], "again": [[[[[[[1]]]]]], [[[[[[1]]]]]]],
        "block": "two\nlines\n", "folded": "one line"}),
    ("", None), ("# only a comment\n", None), ("---\na: 1\n...\n", {"a": 1}), ("- 1\n- [2]\n", [1, [2]]),
    ("x\n", "x"), ("a:\n  - b: 1\n    c: 2\n  -\n  - - d\n", {"a": [{"b": 1, "c": 2}, None, ["d"]]}),
    ("a: {b: }\n", {"a": {"b": None}}), ("? a\n", {"a": None}),
]
# The fast path may refuse these (parse_text then uses the reference); it must build every other.
FAST_MAY_REFUSE = ("a: {b: }\n", "? a\n")
needs_libyaml = pytest.mark.skipif(not _HAVE_LIBYAML, reason="PyYAML without libyaml: there is no fast path to test")


@pytest.mark.parametrize("text,want", PARSED, ids=range(len(PARSED)))
def test_parse_text_builds_the_documents(text: str, want: object):
    got = parse_text("f.yaml", text)
    assert repr(plain(got)) == repr(want)  # repr: nan equals nan, 1 differs from 1.0 and True, order counts
    assert _same(got, _reference_parse("f.yaml", text)) is None


@needs_libyaml
@pytest.mark.parametrize("text", [t for t, _ in PARSED], ids=range(len(PARSED)))
def test_fast_path_builds_what_the_reference_builds(text: str):
    fast = _fast_or_none(text)
    if text in FAST_MAY_REFUSE and fast is _REFUSED:
        return
    assert fast is not _REFUSED
    assert _same(fast, _reference_parse("f.yaml", text)) is None


def _compose_files_we_have() -> list[Path]:
    return sorted({*ROOT.glob("examples/**/*.y*ml"), *ROOT.glob("tests/**/*.y*ml"),
                   *(ROOT.parent / "shared" / "corpus").glob("**/*.y*ml")})


@needs_libyaml
def test_fast_path_on_every_compose_file_we_have():
    files = _compose_files_we_have()
    assert len(files) > 50
    for f in files:
        text = f.read_text(encoding="utf-8")
        fast = _fast_or_none(text)
        assert fast is not _REFUSED or "\t" in text, f
        if fast is not _REFUSED:
            assert _same(fast, _reference_parse("f.yaml", text)) is None, f


@pytest.mark.parametrize("text,msg", [
    ("a: &a " + "[" * 60 + "]" * 60 + "\nb: [[[[[[*a]]]]]]\n", "nested deeper than 64"),  # deep only once aliased
    ("a: &a 1\nb: &a 2\n", "duplicate anchor"),
    ("a: *nope\n", "undefined alias"),
    ("a: &a [*a]\n", "nested deeper than 64"),
    ("a: 1\n---\nb: 2\n", "single document"),
    ("a: !!int x\n", "invalid integer"),
    ("a: !!bool yes\n", "invalid boolean"),
    ("a: {b? c: 1}\n", "invalid YAML"),  # libyaml reads `b? c` as a key; the reference refuses it
    ("a: [!!str,1]\n", "invalid YAML"),
    ("a:\tb\n", "invalid YAML"),
])
def test_what_the_fast_path_refuses_is_worded_by_the_reference(text: str, msg: str):
    with pytest.raises(YamlProblem) as ei:
        parse_text("f.yaml", text)
    assert msg in str(ei.value.problem) and ei.value.problem.line


_MUTATIONS = list(":-[]{}&*!|>'\"#?,\n\t$é") + ["\n  ", "<<: *a\n", "!reset ", "!override ", "&b ", "*b", "- ",
                                                "---\n", "? ", "!!merge ", "! ", "!x ", "\ufeff", "\r\n"]


@needs_libyaml  # without it parse_text is the reference: the test would compare it with itself
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, len(TRICKY)), st.integers(0, 3), st.sampled_from(_MUTATIONS)),
                min_size=1, max_size=4))
def test_fast_path_never_disagrees_on_mutated_yaml(edits):
    text = TRICKY
    for at, cut, ins in edits:
        text = text[:at] + ins + text[at + cut:]
    try:
        want = _reference_parse("f.yaml", text)
    except YamlProblem as e:
        with pytest.raises(YamlProblem) as ei:
            parse_text("f.yaml", text)
        assert ei.value.problem == e.problem
        return
    assert _same(parse_text("f.yaml", text), want) is None


@pytest.mark.parametrize("header", ["|#", "|# c", ">-#", "|2#x"])
def test_a_comment_glued_to_a_block_scalar_header_is_refused_by_both_paths(header):
    """libyaml takes `key: |#`, PyYAML and the YAML spec refuse it (a comment needs a space
    before it): the fast path must not accept what the reference refuses (found by hypothesis)."""
    text = f"block: {header}\n  two\n  lines\n"
    with pytest.raises(YamlProblem) as ref:
        _reference_parse("f.yaml", text)
    with pytest.raises(YamlProblem) as fast:
        parse_text("f.yaml", text)
    assert fast.value.problem == ref.value.problem
