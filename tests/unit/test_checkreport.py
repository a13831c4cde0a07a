"""The renderings of `composenet check` (composenet/core/checkreport.py): a line per action with
its mark and reason, the summary line, the exit code, one JSON object per action with the
issue's fields, and JUnit XML a CI reads."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from composenet.core.checkreport import (
    Result,
    exit_code,
    render,
    render_json,
    render_junit,
    render_text,
    summary,
)
from composenet.core.checks import Expect

TCP = Expect("tcp", "p-web-1", "p-db-1", "p_back", "10.0.0.3:5432", "open", "web", "db", "p-web-1", "p-db-1",
             address="10.0.0.3", port=5432, src_service="web", dst_service="db")
ISO = Expect("tcp", "p-fe-1", "p-db-1", "p_back", "10.0.0.3:5432", "blocked", "fe", "db", "p-fe-1", "p-db-1",
             address="10.0.0.3", port=5432, why="fe and db share no network")
NAME = Expect("dns", "p-fe-1", "p-db-1", None, "db", "NXDOMAIN", "fe", "db", name="db", why="not in fe's scope")
ADDR = Expect("dns", "p-web-1", "p-db-1", "p_back", "db", "10.0.0.3", "web", "db", name="db", want=("10.0.0.3",))
PUB = Expect("publish", "host", "p-web-1", "p_front", "127.0.0.1:8080", "open", "host", "web", address="127.0.0.1",
             port=8080, dst_port=80)
HOSTPORT = Expect("hostport", "host", "p-web-1", "p_front", "*:8080/tcp", "free", "host", "web", port=8080, dst_port=80)
UDP = Expect("udp", "p-web-1", "p-dns-1", "p_back", "10.0.0.4:53", "open", "web", "dns", address="10.0.0.4", port=53,
             proto="udp")

RESULTS = [
    Result(PUB, "open", True), Result(HOSTPORT, "held by pid 7 (nc) on 0.0.0.0:8080", False, "also held <&>"),
    Result(NAME, "NXDOMAIN", True), Result(ISO, "timeout", True),
    Result(TCP, "refused", False, "nothing listens on 5432/tcp in db"), Result(ADDR, "10.0.0.3", True),
    Result(UDP, "timeout", True, "no answer within 2 s", warning=True),
]


def test_text_lines_and_summary() -> None:
    text = render_text("p", RESULTS)
    assert text.splitlines() == [
        'composenet check — project "p"',
        "✔ host → web:80 via 127.0.0.1:8080 tcp",
        "✘ host port *:8080/tcp (web:80) held by no other process  held by pid 7 (nc) on 0.0.0.0:8080: also held <&>",
        "✔ fe ↛ db  dns db: NXDOMAIN",
        "✔ fe ↛ db:5432 tcp (p_back)  blocked",
        "✘ web → db:5432 tcp (p_back)  refused: nothing listens on 5432/tcp in db",
        "✔ web → db  dns db = 10.0.0.3 (p_back)",
        "⚠ web → dns:53 udp (p_back)  no answer within 2 s",
        "7 checks, 2 failed, 1 warning",
    ]
    explained = render_text("p", RESULTS, explain=True).splitlines()
    assert "✔ fe ↛ db  dns db: NXDOMAIN  (not in fe's scope)" in explained
    assert summary([]) == "0 checks, 0 failed, 0 warnings"


def test_exit_code() -> None:
    assert exit_code(RESULTS) == 1
    assert exit_code([r for r in RESULTS if r.ok]) == 0  # warnings do not fail
    assert exit_code([]) == 0


def test_json_one_object_per_action() -> None:
    data = json.loads(render_json(RESULTS))
    assert len(data) == len(RESULTS)
    first = data[4]
    assert first == {"from": "web", "to": "db", "network": "p_back", "kind": "tcp", "target": "10.0.0.3:5432",
                     "expected": "open", "observed": "refused", "ok": False,
                     "reason": "nothing listens on 5432/tcp in db", "warning": False,
                     "from_container": "p-web-1", "to_container": "p-db-1"}
    assert data[0]["reason"] is None and data[6]["warning"] is True
    assert render("json", "p", RESULTS) == render_json(RESULTS)


def test_junit() -> None:
    root = ET.fromstring(render_junit("p", RESULTS))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "7" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert len(cases) == 7 and cases[0].get("classname") == "p.publish"
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == 2
    failure = failures[0].find("failure")
    assert failure is not None and failure.get("message") == "held by pid 7 (nc) on 0.0.0.0:8080: also held <&>"
    warned = cases[6].find("system-out")
    assert warned is not None and warned.text == "warning: no answer within 2 s"
    assert render("junit", "p", RESULTS) == render_junit("p", RESULTS)
