"""`composenet graph` against a real kernel (root, throwaway sandbox namespaces): the file's intent
before `up`, the live state after (every container's address on every network, "running"), a
killed process shown as exited and a deleted DNAT rule as a missing port, SVG through Graphviz."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

from composenet.core.resources import nft_table_name
from tests.integration.checkrun import cn, write
from tests.integration.sandbox import Sandbox, proc_cmdline, processes_in, sh, wait_for
from tests.integration.test_check import STACK, _rule_handle


def test_graph_intent_then_live(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, f"t{uuid.uuid4().hex[:6]}"
    compose = write(tmp_path, "compose.yaml", STACK)
    before = cn(sb, "-f", str(compose), "-p", p, "graph")
    assert before.returncode == 0, before.stderr
    assert "the file's intent (the project is not up)" in before.stdout and "running" not in before.stdout
    assert f'net_back{{{{"back (internal)<br/>{p}_back"}}}}' in before.stdout

    sb.up(compose, p)
    for service, port in (("web", 80), ("db", 5432), ("fe", 80)):
        wait_for(f"{p}-{service}-1", "127.0.0.1", port)
    live = cn(sb, "-f", str(compose), "-p", p, "graph")
    assert live.returncode == 0 and "live state" in live.stdout, live.stderr
    for service, nets in (("web", ("eth0", "eth1")), ("db", ("eth0",)), ("fe", ("eth0",))):
        assert f"{p}-{service}-1: running" in live.stdout
        for ifname in nets:
            assert sb.ipv4(f"{p}-{service}-1", ifname) in live.stdout, (service, ifname, live.stdout)
    assert '(["0.0.0.0:8080/tcp"]) -->|"80/tcp"| svc_web' in live.stdout
    assert "problem" not in live.stdout.split("classDef problem", 1)[1]  # nothing is marked

    # A killed service process and a deleted DNAT rule show up as such.
    fe = f"{p}-fe-1"
    pids = [pid for pid in processes_in(fe) if "echo.py" in proc_cmdline(pid)]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for _ in range(200):  # bounded: until the kernel has reaped it
        if not [pid for pid in processes_in(fe) if "echo.py" in proc_cmdline(pid)]:
            break
        sh("sleep", "0.05")
    table = nft_table_name(p)
    sb.nft("delete", "rule", "inet", table, "published", "handle", _rule_handle(sb, table, "published", "dnat web *:8080/tcp"))
    damaged = cn(sb, "-f", str(compose), "-p", p, "graph")
    assert f"{p}-fe-1: exited" in damaged.stdout and "0.0.0.0:8080/tcp (MISSING)" in damaged.stdout, damaged.stdout
    assert f"{p}-web-1: running" in damaged.stdout
    marked = damaged.stdout.split("classDef problem", 1)[1]
    assert "svc_fe" in marked and "port_0_0_0_0_8080_tcp" in marked and "svc_web," not in marked

    out = tmp_path / "stack.svg"
    svg = cn(sb, "-f", str(compose), "-p", p, "graph", "--format", "svg", "--output", str(out))
    assert svg.returncode == 0 and svg.stdout == "", svg.stderr
    assert out.read_text().lstrip().startswith("<?xml") and "<svg" in out.read_text()
    dot = cn(sb, "-f", str(compose), "-p", p, "graph", "--format", "dot")
    assert dot.stdout.startswith(f'digraph "composenet {p}"') and "color=red" in dot.stdout
    png = subprocess.run(["dot", "-Tpng"], input=dot.stdout.encode(), capture_output=True, timeout=60)
    assert png.returncode == 0 and png.stdout.startswith(b"\x89PNG"), png.stderr
    sb.down(p, compose)
    sb.assert_clean(p)
