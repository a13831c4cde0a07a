"""`composenet check` with real probes (root, throwaway sandbox namespaces): a stack where every
expectation holds (exit 0, every action listed, JSON and JUnit), then one fault per stack -- a
process bound to 127.0.0.1 only, a process that exited, a rule deleted by hand, a foreign nft
table dropping one port, a name asked from the wrong network, a host port held by a host
process -- where check names the right pair and the right reason, and exits 1. Each fault test
has its positive control in the same run (the other actions of the stack hold), and checks that
no trace table is left behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from composenet.core.resources import nft_table_name
from composenet.kernel.trace import Flow, TraceSession
from composenet.paths import ProjectPaths, run_dir
from composenet.supervisor import client as supervisor_client
from tests.integration.checkrun import check, check_json, cn, env_for, write
from tests.integration.sandbox import Sandbox, proc_cmdline, processes_in, sh, wait_for
from tests.integration.stacks import ECHO

STACK = """
services:
  web:
    command: "@PY@ @ECHO@ --tcp 80 --udp 80"
    networks: [front, back]
    ports: ["8080:80", "127.0.0.1:8081:80", "5353:80/udp"]
  db:
    command: "@PY@ @ECHO@ --tcp 5432"
    networks:
      back:
        aliases: [database]
  fe:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [front]
networks:
  front: {}
  back: {internal: true}
"""


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def up_stack(sb: Sandbox, tmp: Path, text: str = STACK) -> tuple[Path, str]:
    compose = write(tmp, "compose.yaml", text)
    p = project()
    sb.up(compose, p)
    return compose, p


def ready(sb: Sandbox, p: str, *pairs: tuple[str, int]) -> None:
    for service, port in pairs:
        wait_for(f"{p}-{service}-1", "127.0.0.1", port)


def find(results: list[dict[str, Any]], **want: Any) -> list[dict[str, Any]]:
    return [r for r in results if all(r.get(k) == v for k, v in want.items())]


def one(results: list[dict[str, Any]], **want: Any) -> dict[str, Any]:
    got = find(results, **want)
    assert len(got) == 1, f"{want}: {len(got)} results\n" + json.dumps(results, indent=1)
    return got[0]


def no_trace_tables(sb: Sandbox, p: str) -> None:
    """No `cncheck_` table is left in the sandbox host namespace or in any of the project's."""
    for ns in [sb.host, *sb.namespaces(p)]:
        tables = sb.run_in(ns, "nft", "list", "tables").stdout
        assert "cncheck_" not in tables, f"trace table left in {ns}:\n{tables}"


def finish(sb: Sandbox, compose: Path, p: str) -> None:
    no_trace_tables(sb, p)
    sb.down(p, compose)
    sb.assert_clean(p)


def test_everything_holds(sandbox: Sandbox, tmp_path: Path) -> None:
    """Every expectation of a two-network stack (internal back, an alias, published TCP and UDP
    ports, one on 127.0.0.1 only) holds: exit 0, a line per action and the summary; the JSON has
    one object per action with the fields of the issue; the JUnit XML counts the same."""
    sb = sandbox
    compose, p = up_stack(sb, tmp_path)
    ready(sb, p, ("web", 80), ("db", 5432), ("fe", 80))
    r = check(sb, compose, p)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    n = len(lines) - 2
    assert lines[0] == f'composenet check — project "{p}"'
    assert lines[-1] == f"{n} checks, 0 failed, 0 warnings"
    assert all(ln.startswith("✔ ") for ln in lines[1:-1]), r.stdout
    for expected in ("✔ web → db:5432 tcp", "✔ fe → web:80 tcp", "✔ db → web:80 udp",
                     "✔ fe ↛ db:5432 tcp", "✔ fe ↛ db  dns db: NXDOMAIN", "✔ web → db  dns database = ",
                     "✔ db ↛ outside  dns example.com: REFUSED", "✔ db ↛ outside 198.51.100.53:53 tcp  blocked",
                     "✔ host → web:80 via 127.0.0.1:8080 tcp", "✔ host → web:80 via 203.0.113.1:8080 tcp",
                     "✔ host → web:80 via 127.0.0.1:8081 tcp", "✔ host ↛ web:80 via 203.0.113.1:8081 tcp  closed",
                     "✔ host → web:80 via 127.0.0.1:5353 udp", "✔ host port *:8080/tcp (web:80) held by no other"):
        assert any(ln.startswith(expected) for ln in lines), f"no line {expected!r}:\n{r.stdout}"
    # Positive control for the egress and isolation lines: the same probes reach where allowed.
    sb.start_outside_web()
    assert wait_for(f"{p}-web-1", "198.51.100.10", 80)

    code, results = check_json(sb, compose, p, "--timeout", "1")
    assert code == 0 and len(results) == n
    for res in results:
        assert {"from", "to", "network", "kind", "target", "expected", "observed", "ok", "reason"} <= set(res)
        assert res["ok"] is True
    db = one(results, **{"from": "web", "to": "db", "kind": "tcp"})
    assert db["target"].endswith(":5432") and db["expected"] == "open" and db["observed"] == "open"

    xml = check(sb, compose, p, "--format", "junit")
    assert xml.returncode == 0
    suite = ET.fromstring(xml.stdout).find("testsuite")
    assert suite is not None and suite.get("tests") == str(n) and suite.get("failures") == "0"
    finish(sb, compose, p)


def test_process_bound_to_loopback_only(sandbox: Sandbox, tmp_path: Path) -> None:
    """srv listens on 127.0.0.1:8000 only (its `expose` says 8000): client's connect fails and
    the reason says what srv listens on; client -> ok's port (bound to every address) holds."""
    sb = sandbox
    compose, p = up_stack(sb, tmp_path, """
services:
  srv:
    command: "@PY@ @ECHO@ --bind 127.0.0.1 --tcp 8000"
    expose: ["8000"]
    networks: [net]
  ok:
    command: "@PY@ @ECHO@ --tcp 8000"
    networks: [net]
  client:
    networks: [net]
networks:
  net: {}
""")
    ready(sb, p, ("srv", 8000), ("ok", 8000))
    code, results = check_json(sb, compose, p)
    assert code == 1
    bad = one(results, **{"from": "client", "to": "srv", "kind": "tcp"})
    assert bad["ok"] is False and bad["observed"] == "refused", bad
    assert "nothing listens on" in bad["reason"] and "127.0.0.1:8000" in bad["reason"], bad
    assert one(results, **{"from": "client", "to": "ok", "kind": "tcp"})["ok"] is True
    assert [r for r in results if not r["ok"]] == find(results, to="srv", kind="tcp"), "only srv's port fails"
    text = check(sb, compose, p)
    assert text.returncode == 1
    assert re.search(r"^✘ client → srv:8000 tcp .*nothing listens on .*8000.*127\.0\.0\.1:8000 only", text.stdout,
                     re.M), text.stdout
    assert text.stdout.splitlines()[-1].endswith(f"{len(find(results, ok=False))} failed, 0 warnings")
    finish(sb, compose, p)


def test_process_that_exited(sandbox: Sandbox, tmp_path: Path) -> None:
    """boom's command exits (after `up` verified it started): connects to its port fail with
    "not running" and its last log line; the live service on the same network still answers."""
    sb = sandbox
    compose, p = up_stack(sb, tmp_path, """
services:
  boom:
    command: ["sh", "-c", "echo boom: starting; sleep 1; echo 'boom: fatal: no config' >&2; exit 3"]
    expose: ["80"]
    networks: [net]
  live:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [net]
networks:
  net: {}
""")
    ready(sb, p, ("live", 80))
    ns = f"{p}-boom-1"
    for _ in range(200):  # bounded: the command exits about a second after `up`
        if not [pid for pid in processes_in(ns) if "sleep" in proc_cmdline(pid) or "sh -c" in proc_cmdline(pid)]:
            break
        sh("sleep", "0.05")
    else:
        raise AssertionError("boom's command did not exit")
    code, results = check_json(sb, compose, p)
    assert code == 1
    bad = one(results, **{"from": "live", "to": "boom", "kind": "tcp"})
    assert bad["ok"] is False, bad
    assert "boom" in bad["reason"] and "not running" in bad["reason"], bad
    assert "boom: fatal: no config" in bad["reason"], bad
    assert one(results, **{"from": "boom", "to": "live", "kind": "tcp"})["ok"] is True
    finish(sb, compose, p)


def _rule_handle(sb: Sandbox, table: str, chain: str, comment_part: str) -> str:
    listing = sb.nft("-a", "list", "chain", "inet", table, chain).stdout
    for line in listing.splitlines():
        if comment_part in line:
            return line.rsplit("# handle ", 1)[1].strip()
    raise AssertionError(f"no rule with {comment_part!r} in {table} {chain}:\n{listing}")


def test_rule_deleted_by_hand(sandbox: Sandbox, tmp_path: Path) -> None:
    """The DNAT rule of 8080 deleted by hand: the host's probes of 8080 fail naming the missing
    rule and `composenet up`; 8081 still holds; after `up`, everything holds again."""
    sb = sandbox
    compose, p = up_stack(sb, tmp_path)
    ready(sb, p, ("web", 80), ("db", 5432), ("fe", 80))
    table = nft_table_name(p)
    sb.nft("delete", "rule", "inet", table, "published", "handle", _rule_handle(sb, table, "published", "dnat web *:8080/tcp"))
    code, results = check_json(sb, compose, p, "host", "web")
    assert code == 1
    for addr in ("127.0.0.1", "203.0.113.1"):
        bad = one(results, kind="publish", target=f"{addr}:8080")
        assert bad["ok"] is False, bad
        assert "dnat web *:8080/tcp" in bad["reason"] and "composenet up" in bad["reason"], bad
    assert one(results, kind="publish", target="127.0.0.1:8081")["ok"] is True
    sb.up(compose, p)
    assert check(sb, compose, p).returncode == 0
    finish(sb, compose, p)


def test_address_deleted_by_hand(sandbox: Sandbox, tmp_path: Path) -> None:
    """db's address deleted by hand: web -> db:5432 fails as drift, naming the missing address and
    `composenet up`; web -> fe holds; after `up`, everything holds again."""
    sb = sandbox
    compose, p = up_stack(sb, tmp_path)
    ready(sb, p, ("web", 80), ("db", 5432), ("fe", 80))
    db = f"{p}-db-1"
    address, plen = sb.addrs(db)["eth0"]
    sb.ip(db, f"addr del {address}/{plen} dev eth0")
    code, results = check_json(sb, compose, p, "web")
    assert code == 1
    bad = one(results, **{"from": "web", "to": "db", "kind": "tcp"})
    assert bad["ok"] is False and bad["observed"] in ("timeout", "unreachable"), bad
    assert f"address {address}/{plen} on {db} eth0 is missing" in bad["reason"], bad
    assert "composenet up" in bad["reason"], bad
    assert one(results, **{"from": "web", "to": "fe", "kind": "tcp"})["ok"] is True
    sb.up(compose, p)
    assert check(sb, compose, p).returncode == 0
    finish(sb, compose, p)


def test_foreign_table_drops_one_port(sandbox: Sandbox, tmp_path: Path) -> None:
    """A table composenet does not own, in db's namespace, drops 5432: web -> db:5432 fails and
    the reason names that table, its chain and its rule; db still resolves, and web -> fe holds.
    The trace tables are gone afterwards."""
    sb = sandbox
    compose, p = up_stack(sb, tmp_path)
    ready(sb, p, ("web", 80), ("db", 5432), ("fe", 80))
    db = f"{p}-db-1"
    r = sh("nsenter", f"--net=/run/netns/{db}", "nft", "-f", "-", input=(
        "table inet guard {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
        "  tcp dport 5432 drop\n }\n}\n"))
    assert r.returncode == 0
    code, results = check_json(sb, compose, p, "web")
    assert code == 1
    bad = one(results, **{"from": "web", "to": "db", "kind": "tcp"})
    assert bad["ok"] is False and bad["observed"] == "timeout", bad
    assert "table inet guard, chain input" in bad["reason"] and "not composenet's" in bad["reason"], bad
    assert "tcp dport 5432 drop" in bad["reason"], bad
    assert one(results, **{"from": "web", "to": "fe", "kind": "tcp"})["ok"] is True
    assert all(r["ok"] for r in find(results, **{"from": "web", "to": "db", "kind": "dns"}))
    no_trace_tables(sb, p)
    assert "table inet guard" in sb.run_in(db, "nft", "list", "tables").stdout  # not touched
    finish(sb, compose, p)


def test_name_asked_from_the_wrong_network(sandbox: Sandbox, tmp_path: Path) -> None:
    """fe asks for db, which is only on back: `check fe db:5432` lists that pair only, says the
    name is not in fe's scope and that back would put it there, and names the composenet rule
    that blocks the connect (traced); the file says so, so it holds (exit 0). web, on back, does
    reach db:5432 (positive control)."""
    sb = sandbox
    compose, p = up_stack(sb, tmp_path)
    ready(sb, p, ("web", 80), ("db", 5432), ("fe", 80))
    r = check(sb, compose, p, "fe", "db:5432")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()[1:-1]
    assert lines and all(ln.startswith("✔ fe ↛ db") for ln in lines), r.stdout
    name = next(ln for ln in lines if "dns db: NXDOMAIN" in ln)
    assert "not in fe's scope" in name and f"attaching fe to {p}_back would put it there" in name, name
    blocked = next(ln for ln in lines if "db:5432 tcp" in ln)
    assert 'composenet rule "cn:' in blocked and nft_table_name(p) in blocked, blocked
    ok = check(sb, compose, p, "web", "db:5432")
    assert ok.returncode == 0 and "✔ web → db:5432 tcp" in ok.stdout, ok.stdout
    finish(sb, compose, p)


def test_host_port_held_by_a_host_process(sandbox: Sandbox, tmp_path: Path) -> None:
    """A host process listens on 0.0.0.0:8080 after `up` (it could only bind once the project's
    supervisor, which holds the published ports, was killed): check names it (pid and name) on the
    host port's line and fails; 8081's line holds."""
    sb = sandbox
    compose, p = up_stack(sb, tmp_path)
    ready(sb, p, ("web", 80), ("db", 5432), ("fe", 80))
    holder = supervisor_client.live(ProjectPaths(run_dir(), p).root)
    assert holder is not None, "the project's supervisor should hold its published ports"
    os.kill(int(holder["pid"]), signal.SIGKILL)
    squatter = sb.spawn_in(sb.host, sys.executable, str(ECHO), "--tcp", "8080")
    for _ in range(200):  # bounded: until the squatter listens
        if ":8080 " in sb.run_in(sb.host, "ss", "-ltnH").stdout:
            break
        sh("sleep", "0.05")
    else:
        raise AssertionError("the host process never listened on 8080")
    code, results = check_json(sb, compose, p, "host", "web")
    assert code == 1
    bad = one(results, kind="hostport", target="*:8080/tcp")
    assert bad["ok"] is False and f"pid {squatter.pid}" in bad["observed"] and "0.0.0.0:8080" in bad["observed"], bad
    assert "also held by another process" in bad["reason"], bad
    assert one(results, kind="hostport", target="127.0.0.1:8081/tcp")["ok"] is True
    squatter.kill()
    squatter.wait(timeout=5)
    finish(sb, compose, p)


def test_not_up_and_bad_arguments(sandbox: Sandbox, tmp_path: Path) -> None:
    """A project that is not up, an unknown service, a port on the client: clear errors, exit 1."""
    sb = sandbox
    compose = write(tmp_path, "compose.yaml", STACK)
    p = project()
    r = check(sb, compose, p)
    assert r.returncode == 1 and "is not up" in r.stderr and "composenet up" in r.stderr, r.stderr
    r = check(sb, compose, p, "nosuch")
    assert r.returncode == 1 and "no service or container 'nosuch'" in r.stderr, r.stderr
    r = check(sb, compose, p, "web:80", "db")
    assert r.returncode == 1 and "give the port on the second" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert cn(sb, "check", "--help").returncode == 0


def test_trace_tables_go_on_interrupt_and_stale_ones_are_removed(sandbox: Sandbox) -> None:
    """A trace session removes its table when interrupted (Ctrl-C in its body), and removes a
    table a killed check left (its pid is gone) when it starts; another table is not touched."""
    sb = sandbox
    dead = next(pid for pid in range(4_194_000, 4_194_304) if not Path(f"/proc/{pid}").exists())
    sb.nft("add", "table", "inet", f"cncheck_{dead}")
    sb.nft("add", "table", "inet", "cncheck_other")
    try:
        with TraceSession({sb.host: [Flow("tcp", "127.0.0.1", 9)]}) as session:
            inside = sb.nft("list", "tables").stdout
            assert f"table inet {session.name}" in inside, inside  # positive control: it was there
            assert f"cncheck_{dead}" not in inside and "cncheck_other" in inside
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the interrupt was swallowed")
    tables = sb.nft("list", "tables").stdout
    assert session.name not in tables and "cncheck_other" in tables, tables


def test_sigterm_during_a_trace_removes_the_trace_tables(sandbox: Sandbox, tmp_path: Path) -> None:
    """check is stopped (SIGTERM, handled as Ctrl-C) while its trace tables are in place: it exits
    130 and leaves none behind (the foreign table it traced through is left as it was)."""
    sb = sandbox
    compose, p = up_stack(sb, tmp_path)
    ready(sb, p, ("web", 80), ("db", 5432), ("fe", 80))
    db = f"{p}-db-1"
    sh("nsenter", f"--net=/run/netns/{db}", "nft", "-f", "-", input=(
        "table inet guard {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
        "  tcp dport 5432 drop\n }\n}\n"))
    env_cmd = ["nsenter", f"--net=/run/netns/{sb.host}", sys.executable, "-m", "composenet",
               "-f", str(compose), "-p", p, "check", "web", "db:5432", "--timeout", "10"]
    proc = subprocess.Popen(env_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(sb),
                            cwd=str(tmp_path))
    try:
        for _ in range(600):  # bounded: until the trace table is in db's namespace
            if "cncheck_" in sb.run_in(db, "nft", "list", "tables").stdout:
                break
            if proc.poll() is not None:
                raise AssertionError(f"check ended before tracing:\n{proc.communicate()}")
            sh("sleep", "0.02")
        else:
            raise AssertionError("no trace table appeared")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err)
    assert "table inet guard" in sb.run_in(db, "nft", "list", "tables").stdout
    finish(sb, compose, p)
