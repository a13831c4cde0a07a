"""Recorded observed states (`plan --observed FILE`, tests/golden/<case>/observed.json) are checked
against schemas/observed.schema.json: a damaged one is an error naming the JSON path."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from composenet.core.resources import KINDS, Resource
from composenet.core.state import ObservedState, ObservedStateError, check_json

from .test_cli_config import run

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_OBSERVED = sorted((ROOT / "tests" / "golden").glob("*/observed.json"))
SCHEMA = json.loads((ROOT / "schemas" / "observed.schema.json").read_text())


def _recording() -> dict[str, Any]:
    return json.loads((ROOT / "tests" / "golden" / "rule-deleted" / "observed.json").read_text())


def _index(d: dict[str, Any], kind: str) -> int:
    return next(i for i, r in enumerate(d["resources"]) if r["kind"] == kind)


def test_the_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_there_are_recorded_golden_states():
    assert len(GOLDEN_OBSERVED) >= 5, GOLDEN_OBSERVED


@pytest.mark.parametrize("path", GOLDEN_OBSERVED, ids=[p.parent.name for p in GOLDEN_OBSERVED])
def test_every_golden_observed_state_validates(path: Path):
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert check_json(doc) == []
    assert ObservedState.from_json(doc).to_json() == doc  # a recording round-trips unchanged


def test_what_to_json_writes_validates():
    st = ObservedState.from_json(_recording())
    assert check_json(json.loads(st.dumps())) == []


# ---- damaged recordings --------------------------------------------------------------------------

def _problems(d: Any) -> list[str]:
    with pytest.raises(ObservedStateError) as ei:
        ObservedState.from_json(d)
    assert ei.value.problems == check_json(d)
    return ei.value.problems


def test_a_host_route_that_is_not_a_string():
    d = _recording()
    d["host_routes"] = [5]
    assert _problems(d) == ["$.host_routes[0]: 5 is not of type 'string'"]


def test_a_resource_with_a_missing_field():
    d = _recording()
    i = _index(d, "address")
    del d["resources"][i]["ifname"]
    assert _problems(d) == [f"$.resources[{i}]: 'ifname' is a required property"]


def test_a_resource_field_of_the_wrong_type():
    d = _recording()
    i = _index(d, "bridge")
    d["resources"][i]["mtu"] = "1500"
    j = _index(d, "veth")
    d["resources"][j]["hairpin"] = 1
    assert _problems(d) == [f"$.resources[{i}].mtu: '1500' is not of type 'integer'",
                            f"$.resources[{j}].hairpin: 1 is not of type 'boolean'"]


def test_an_unknown_kind_and_an_unknown_field():
    d = _recording()
    d["resources"][0]["kind"] = "tunnel"
    d["resources"][1]["colour"] = "red"
    got = _problems(d)
    assert len(got) == 2, got
    assert got[0].startswith("$.resources[0].kind: 'tunnel' is not one of ['address', 'bridge',"), got
    assert got[1] == "$.resources[1]: Additional properties are not allowed ('colour' was unexpected)"


def test_not_an_object_at_all():
    assert _problems([1, 2]) == ["$: [1, 2] is not of type 'object'"]
    assert _problems({"host_route": []})[0].startswith("$: Additional properties are not allowed")


def test_networks_connections_and_ports():
    d = _recording()
    d["networks"] = {"shared": {"owner": "other", "cidrs": ["10.70.0.1/24"]}}  # no bridge
    d["connections"] = [{"container": "x-1", "network": "shared", "ipv4": 7}]
    d["ports_in_use"] = ["8080"]
    assert _problems(d) == [
        "$.connections[0].ipv4: 7 is not of type 'string', 'null'",
        "$.networks.shared: 'bridge' is a required property",
        "$.ports_in_use[0]: '8080' does not match '^(tcp|udp|sctp)/[0-9]+(@[0-9A-Fa-f:.]+)?$'",
    ]


def test_addresses_the_planner_parses():
    d = _recording()
    d["host_routes"] = ["10.0.0.0/33"]
    d["networks"] = {"shared": {"bridge": "cnb-0e0e0e0e", "owner": "other", "cidrs": ["10.70.0.1"],
                                "used": ["10.70.0.999"]}}
    d["resources"][_index(d, "address")]["cidr"] = "not-an-address"
    i = _index(d, "address")
    assert _problems(d) == [
        "$.host_routes[0]: '10.0.0.0/33' is not an IP network (CIDR)",
        "$.networks.shared.used[0]: '10.70.0.999' is not an IP address",
        f"$.resources[{i}].cidr: 'not-an-address' is not an interface address (ADDRESS/PREFIX)",
    ]


def test_a_recording_damaged_throughout_lists_the_first_problems():
    d = _recording()
    d["host_routes"] = list(range(30))
    got = _problems(d)
    assert len(got) == 21 and got[-1] == "... and 10 more", got


def test_plan_with_a_damaged_recording_exits_1_naming_the_path(tmp_path: Path):
    (tmp_path / "compose.yaml").write_text((ROOT / "tests" / "golden" / "rule-deleted" / "compose.yaml").read_text())
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    d = _recording()
    d["host_routes"] = [5]
    del d["resources"][_index(d, "route")]["dst"]
    (tmp_path / "observed.json").write_text(json.dumps(d))
    r = run(tmp_path, "--resolv-conf", "resolv.conf", "plan", "--observed", "observed.json")
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr and r.stdout == "", r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "error: observed.json: not a recorded observed state (see schemas/observed.schema.json):"
    assert "  observed.json: $.host_routes[0]: 5 is not of type 'string'" in lines, lines
    assert [x for x in lines if "'dst' is a required property" in x], lines
    (tmp_path / "observed.json").write_text(json.dumps(_recording()))
    ok = run(tmp_path, "--resolv-conf", "resolv.conf", "plan", "--observed", "observed.json")
    assert ok.returncode == 0, ok.stderr


# ---- the schema stays in step with composenet/resources.py ---------------------------------------

def _json_type(t: Any) -> dict[str, Any]:
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if t in simple:
        return {"type": simple[t]}
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        s = dict(_json_type(inner))
        s["type"] = [s["type"], "null"]
        return s
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": _json_type(args[0])}
    if origin is tuple:
        return {"type": "array", "items": _json_type(args[0]), "minItems": len(args), "maxItems": len(args)}
    raise TypeError(f"no JSON type for {t!r}: extend the schema and this test")


def _resource_def(cls: type[Resource]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {"kind": {"const": cls.kind}}
    required = ["kind"]
    for f in dataclasses.fields(cls):
        props[f.name] = _json_type(hints[f.name])
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    return {"type": "object", "required": required, "additionalProperties": False, "properties": props}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schema_resource_matches_the_dataclass(kind: str):
    assert SCHEMA["$defs"][f"resource_{kind}"] == _resource_def(KINDS[kind])


def test_schema_knows_every_kind():
    assert SCHEMA["$defs"]["resource"]["properties"]["kind"]["enum"] == sorted(KINDS)
    branches = {b["if"]["properties"]["kind"]["const"]: b["then"]["$ref"] for b in SCHEMA["$defs"]["resource"]["allOf"]}
    assert branches == {k: f"#/$defs/resource_{k}" for k in KINDS}
