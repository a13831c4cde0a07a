"""The Go-template subset of `network inspect --format` (composenet/core/gotemplate.py): Docker's
common idioms on the real inspect shape give what Docker prints, and anything outside the subset
is a clear error, never a wrong output."""

from __future__ import annotations

import json

import pytest

from composenet.core.gotemplate import Struct, TemplateError, render, show, to_json
from composenet.core.netinspect import docker_network

NET = {
    "name": "webapp_front", "driver": "bridge", "scope": "local", "project": "webapp", "bridge": "cnb-1f2e3d4c",
    "subnet": "172.25.0.0/16", "gateway": "172.25.0.1", "ip_range": None, "subnet6": None, "gateway6": None,
    "internal": False, "ipv6": False, "options": {"com.docker.network.driver.mtu": "1400"},
    "containers": [
        {"name": "webapp-web-2", "project": "webapp", "ifname": "eth0", "mac": "02:42:ac:19:00:03", "ipv4": "172.25.0.3",
         "ipv6": None},
        {"name": "webapp-web-1", "project": "webapp", "ifname": "eth0", "mac": "02:42:ac:19:00:02", "ipv4": "172.25.0.2",
         "ipv6": None},
    ],
}


def fmt(template: str, net: dict | None = None) -> str:
    return render(template, docker_network(net or NET))


@pytest.mark.parametrize(("template", "want"), [
    ("{{.Name}}", "webapp_front"),
    ("{{.Driver}} {{.Scope}}", "bridge local"),
    ("{{range .IPAM.Config}}{{.Subnet}}{{end}}", "172.25.0.0/16"),
    ("{{range .IPAM.Config}}{{.Gateway}}{{end}}", "172.25.0.1"),
    ("{{(index .IPAM.Config 0).Subnet}}", "172.25.0.0/16"),
    ("{{range .IPAM.Config}}[{{.IPRange}}]{{end}}", "[]"),  # a Go struct field left out of the JSON: ""
    ("{{index .Options \"com.docker.network.driver.mtu\"}}", "1400"),
    ("{{index .Options \"com.docker.network.bridge.name\"}}", "cnb-1f2e3d4c"),
    ("{{index .Options \"nope\"}}", "<no value>"),  # a missing map key, as Go prints it
    ("{{.Internal}} {{.EnableIPv6}}", "false false"),
    ("{{range .Containers}}{{.Name}} {{.IPv4Address}}\n{{end}}",
     "webapp-web-1 172.25.0.2/16\nwebapp-web-2 172.25.0.3/16\n"),
    ("{{range $id, $c := .Containers}}{{$c.Name}},{{end}}", "webapp-web-1,webapp-web-2,"),
    ("{{range $c := .Containers}}{{$c.MacAddress}} {{end}}", "02:42:ac:19:00:02 02:42:ac:19:00:03 "),
    ("{{len .Containers}}", "2"),
    ("{{.Name | upper}}", "WEBAPP_FRONT"),
    ("{{if .Internal}}internal{{else}}external{{end}}", "external"),
    ("{{if eq .Driver \"bridge\"}}yes{{end}}", "yes"),
    ("{{with .Labels}}{{index . \"com.docker.compose.project\"}}{{end}}", "webapp"),
    ("{{range .Labels}}{{.}}{{end}}", "webapp"),
    ("{{range .NoSuchMap}}x{{else}}none{{end}}", None),  # an unknown struct field: error
    ("  {{- .Name -}}  !", "webapp_front!"),
    ("{{/* a comment */}}{{.Name}}", "webapp_front"),
    ("{{join (index .IPAM.Config 0).Subnet \",\"}}", None),  # join needs a list: a string is an error
])
def test_docker_idioms(template: str, want: str | None) -> None:
    if want is None:
        with pytest.raises(TemplateError):
            fmt(template)
    else:
        assert fmt(template) == want


def test_json_function_is_compact_go_json() -> None:
    containers = json.loads(fmt("{{json .Containers}}"))
    assert [c["Name"] for c in containers.values()] == ["webapp-web-1", "webapp-web-2"]
    assert list(containers) == sorted(containers)  # a Go map: keys sorted
    assert fmt("{{json .IPAM.Config}}") == '[{"Subnet":"172.25.0.0/16","Gateway":"172.25.0.1"}]'
    assert fmt("{{json .Name}}") == '"webapp_front"'
    assert fmt("{{json .Internal}}") == "false"
    whole = json.loads(fmt("{{json .}}"))
    assert list(whole)[:6] == ["Name", "Id", "Created", "Scope", "Driver", "EnableIPv4"]
    assert to_json({"b": 1, "a": "<&>"}) == '{"a":"<&>","b":1}'  # no HTML escaping (Docker's json)


def test_values_print_as_go_prints_them() -> None:
    assert show(True) == "true" and show(None) == "<nil>" and show(3) == "3" and show(1.5) == "1.5"
    assert show(["a", "b"]) == "[a b]"
    assert show({"b": 1, "a": 2}) == "map[a:2 b:1]"
    assert show(Struct("T", {"X": 1, "Y": "s"})) == "{1 s}"
    assert fmt("{{.ConfigFrom}}") == "{}"
    assert fmt("{{.IPAM.Options}}") == "map[]"


@pytest.mark.parametrize(("template", "message"), [
    ("{{.Nope}}", "can't evaluate field Nope in type network.Inspect"),
    ("{{.Name.Length}}", "can't evaluate field Length in a string"),
    ("{{printf \"%s\" .Name}}", "function 'printf' is not supported"),
    ("{{template \"x\"}}", "{{template}} is not supported"),
    ("{{range .Containers}}", "missing {{end}}"),
    ("{{end}}", "{{end}} without range, if or with"),
    ("{{.Name", "unclosed action"),
    ("{{range .Name}}x{{end}}", "range can't iterate over webapp_front"),
    ("{{index .IPAM.Config 5}}", "index out of range: 5"),
    ("{{$x}}", "undefined variable $x"),
    ("{{if}}x{{end}}", "needs a value"),
    ("{{.Name | }}", "empty command"),
    ("{{json}}", "json takes 1 argument(s), got 0"),
    ("{{(.Name}}", "unclosed parenthesis"),
    ("{{.Name @}}", "cannot parse"),
])
def test_clear_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        fmt(template)
    assert message in str(e.value)


def test_plain_text_and_no_actions() -> None:
    assert render("plain text, no actions", {}) == "plain text, no actions"
    assert render("", {}) == ""
    assert render("{{.}}", "x") == "x"
