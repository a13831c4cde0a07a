"""`up` converges: idempotence, drift repair, crash convergence, concurrent runs (root, sandboxes).

Each test uses a unique project name in its own sandbox, ends with `down` and
``sandbox.assert_clean`` (nothing left), and the sandbox fixture removes everything even when a
test fails. Crash convergence uses the executor's test hook COMPOSENET_TEST_KILL_AFTER_STEP=k
(it SIGKILLs itself right after step k).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import threading
import uuid
from typing import Any

from composenet.kernel import rundir
from composenet.kernel.context import Context
from tests.integration.sandbox import (
    HOST_ADDR,
    WEB_ADDR,
    Sandbox,
    proc_cmdline,
    processes_in,
    tcp,
    wait_for,
)
from tests.integration.stacks import render

NO_CHANGES = "No changes. Kernel state matches the compose file."


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def assert_no_changes(sb: Sandbox, compose, p: str) -> None:
    r = sb.plan(compose, p)
    assert r.returncode == 0, f"plan --detailed-exitcode exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert NO_CHANGES in r.stdout, r.stdout


def kernel_snapshot(sb: Sandbox, p: str) -> dict[str, Any]:
    """What a no-op `up` must not touch: link indexes, the nft table's rule handles, the
    namespaces and the processes in them."""
    from composenet.core.resources import nft_table_name

    links = {link["ifname"]: link["ifindex"] for link in sb.links()}
    table = sb.nft("-j", "-a", "list", "table", "inet", nft_table_name(p)).stdout
    handles = sorted(
        (o["rule"]["chain"], o["rule"]["handle"]) for o in json.loads(table)["nftables"] if "rule" in o
    )
    procs = {ns: processes_in(ns) for ns in sb.namespaces(p)}
    return {"links": links, "rules": handles, "procs": procs}


def test_idempotent_up(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    compose = render("small", tmp_path)
    sb.up(compose, p)
    wait_for(f"{p}-app-1", "127.0.0.1", 80)
    assert_no_changes(sb, compose, p)
    before = kernel_snapshot(sb, p)
    r = sb.up(compose, p)
    assert NO_CHANGES in r.stdout + r.stderr, r.stdout + r.stderr
    assert kernel_snapshot(sb, p) == before
    assert_no_changes(sb, compose, p)
    sb.down(p, compose)
    sb.assert_clean(p)


def nft_rule(sb: Sandbox, p: str, comment_prefix: str) -> tuple[str, int]:
    """(chain, handle) of the project's rule whose comment starts with ``comment_prefix``."""
    from composenet.core.resources import nft_table_name

    data = json.loads(sb.nft("-j", "-a", "list", "table", "inet", nft_table_name(p)).stdout)
    for o in data["nftables"]:
        rule = o.get("rule")
        if rule and str(rule.get("comment", "")).startswith(comment_prefix):
            return rule["chain"], rule["handle"]
    raise AssertionError(f"no rule with comment {comment_prefix!r} in table {nft_table_name(p)}")


def test_drift_deleted_nft_rule_is_repaired(sandbox: Sandbox, tmp_path) -> None:
    """Delete the egress masquerade rule by hand: egress breaks, `plan` shows the drift, `up`
    puts the rule back and egress works again (masqueraded)."""
    from composenet.core.resources import nft_table_name

    sb, p = sandbox, project()
    compose = render("small", tmp_path)
    sb.up(compose, p)
    sb.start_outside_web()
    app = f"{p}-app-1"
    assert wait_for(app, WEB_ADDR, 80).split()[0] == HOST_ADDR

    table = nft_table_name(p)
    chain, handle = nft_rule(sb, p, "cn:masquerade")
    sb.nft("delete", "rule", "inet", table, chain, "handle", str(handle))
    # Not masqueraded, the reply has no route back from the outside ns.
    assert tcp(app, WEB_ADDR, 80) is None

    r = sb.plan(compose, p)
    assert r.returncode == 2, f"plan --detailed-exitcode exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert "Drift" in r.stdout and table in r.stdout, r.stdout

    sb.up(compose, p)
    assert_no_changes(sb, compose, p)
    nft_rule(sb, p, "cn:masquerade")
    assert wait_for(app, WEB_ADDR, 80).split()[0] == HOST_ADDR
    sb.down(p, compose)
    sb.assert_clean(p)


def test_drift_deleted_veth_is_repaired(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    compose = render("small", tmp_path)
    sb.up(compose, p)
    app, peer = f"{p}-app-1", f"{p}-peer-1"
    app_ip = sb.ipv4(app)
    wait_for(peer, app_ip, 80)

    label = f"composenet:{p}/{peer}/"
    veths = [link["ifname"] for link in sb.links() if str(link.get("ifalias", "")).startswith(label)]
    assert len(veths) == 1 and veths[0].startswith("cnv-"), [(x["ifname"], x.get("ifalias")) for x in sb.links()]
    sb.ip(sb.host, f"link del {veths[0]}")
    assert tcp(peer, app_ip, 80) is None

    r = sb.plan(compose, p)
    assert r.returncode == 2, f"plan --detailed-exitcode exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    drift = r.stdout.split("Drift", 1)[1].split("\n\n", 1)[0] if "Drift" in r.stdout else ""
    assert veths[0] in drift, r.stdout

    sb.up(compose, p)
    assert_no_changes(sb, compose, p)
    assert wait_for(peer, app_ip, 80)
    sb.down(p, compose)
    sb.assert_clean(p)


def plan_steps(sb: Sandbox, compose, p: str) -> int:
    r = sb.composenet("-f", str(compose), "-p", p, "plan", "--format", "json", cwd=str(sb.tmp))
    return len(json.loads(r.stdout)["steps"])


def test_crash_convergence(sandbox: Sandbox, tmp_path) -> None:
    """For every k: `up` killed (SIGKILL) right after step k, then `up` converges (the plan is
    empty and the service answers), then `down` leaves nothing."""
    sb, p = sandbox, project()
    compose = render("small", tmp_path)
    app, peer = f"{p}-app-1", f"{p}-peer-1"
    first = plan_steps(sb, compose, p)
    assert first > 5, first
    # The plan is taken again before each run: the host's ip_forward stays set after `down`
    # (kept on purpose), so later plans may have a step fewer than the first.
    for k in range(1, first + 1):
        steps = plan_steps(sb, compose, p)
        if k > steps:
            break
        r = sb.up(compose, p, check=False, env={"COMPOSENET_TEST_KILL_AFTER_STEP": str(k)})
        assert r.returncode == -9, f"k={k}/{steps}: expected SIGKILL, exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        r = sb.up(compose, p, check=False)
        assert r.returncode == 0, f"k={k}/{steps}: `up` after the crash failed:\n{r.stdout}\n{r.stderr}"
        assert_no_changes(sb, compose, p)
        wait_for(peer, sb.ipv4(app), 80)
        r = sb.down(p, compose, check=False)
        assert r.returncode == 0, f"k={k}/{steps}: `down` failed:\n{r.stdout}\n{r.stderr}"
        sb.assert_clean(p)


def overlaps(a: str, b: str) -> bool:
    return ipaddress.ip_network(a).overlaps(ipaddress.ip_network(b))


def test_parallel_projects_get_separate_subnets_and_are_isolated(sandbox: Sandbox, tmp_path) -> None:
    sb = sandbox
    pa, pb = project(), project()
    compose = render("pair", tmp_path)
    results: dict[str, Any] = {}

    def run(p: str) -> None:
        results[p] = sb.up(compose, p, check=False)

    threads = [threading.Thread(target=run, args=(p,)) for p in (pa, pb)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for p in (pa, pb):
        assert results[p].returncode == 0, f"up {p}:\n{results[p].stdout}\n{results[p].stderr}"
    sa, sb_ = sb.subnet(f"{pa}-app-1"), sb.subnet(f"{pb}-app-1")
    assert not overlaps(sa, sb_), (sa, sb_)
    a_ip, b_ip = sb.ipv4(f"{pa}-app-1"), sb.ipv4(f"{pb}-app-1")
    wait_for(f"{pa}-peer-1", a_ip, 80)
    wait_for(f"{pb}-peer-1", b_ip, 80)
    assert tcp(f"{pa}-peer-1", b_ip, 80) is None, "project A reached project B"
    assert tcp(f"{pb}-peer-1", a_ip, 80) is None, "project B reached project A"
    assert_no_changes(sb, compose, pa)
    assert_no_changes(sb, compose, pb)
    sb.down(pa, compose)
    sb.down(pb, compose)
    sb.assert_clean(pa)
    sb.assert_clean(pb)


def test_concurrent_up_of_one_project_serialises(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    compose = render("small", tmp_path)
    results: list[Any] = []

    def run() -> None:
        results.append(sb.up(compose, p, check=False))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert len(results) == 2
    for r in results:
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert_no_changes(sb, compose, p)
    assert sb.namespaces(p) == [f"{p}-app-1", f"{p}-peer-1"]
    wait_for(f"{p}-peer-1", sb.ipv4(f"{p}-app-1"), 80)
    servers = [pid for pid in processes_in(f"{p}-app-1") if "echo.py" in proc_cmdline(pid)]
    assert len(servers) == 1, [proc_cmdline(pid) for pid in processes_in(f"{p}-app-1")]
    sb.down(p, compose)
    sb.assert_clean(p)


def test_up_holds_the_host_wide_subnet_lock(sandbox: Sandbox, tmp_path) -> None:
    """`up` observes the host's subnets and claims one under <run_dir>/.ipam.lock: while another
    run holds it, `up` waits (saying so) before it observes or changes anything."""
    sb, p = sandbox, project()
    compose = render("pair", tmp_path)
    sb.projects.add(p)
    env = dict(os.environ, COMPOSENET_RESOLV_CONF=str(sb.resolv_conf))
    holder = Context(project=f"{p}-holder", run_dir=os.environ.get("COMPOSENET_RUN_DIR", "/run/composenet"))
    with rundir.ipam_lock(holder):
        proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{sb.host}", sys.executable, "-m", "composenet",
                                 "-f", str(compose), "-p", p, "up", "-q"], cwd=str(sb.tmp), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line: list[str] = []
            reader = threading.Thread(target=lambda: line.append(proc.stderr.readline() if proc.stderr else ""))
            reader.start()
            reader.join(60)
            assert line and "to choose its subnets" in line[0], line
            assert proc.poll() is None
            assert sb.namespaces(p) == []  # nothing was built while the lock was held
            assert not [lk for lk in sb.links() if str(lk.get("ifalias", "")).startswith(f"composenet:{p}/")]
        except BaseException:
            proc.kill()
            proc.wait(30)
            raise
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    wait_for(f"{p}-peer-1", sb.ipv4(f"{p}-app-1"), 80)
    sb.snapshot(p)
    sb.down(p, compose)
    sb.assert_clean(p)
