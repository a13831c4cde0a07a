"""Service processes under the project's supervisor (root, sandboxes): one-shot commands are not
drift, a command that fails right after its start or cannot start is an error of that service
only, restart policies with exit codes in `ps`, a killed supervisor, `down` without any record,
and least privilege (issue 11 defect 7; issue 17, least privilege).

Every test ends with `down` and ``assert_clean``; the sandbox fixture removes what a failed test
leaves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import uuid
from pathlib import Path

from composenet.linux import capnames
from tests.integration.sandbox import Sandbox, proc_start, processes_in, wait_for
from tests.integration.stacks import ECHO, render

NO_CHANGES = "No changes. Kernel state matches the compose file."
PY = os.environ.get("PYTHON", "") or __import__("sys").executable


def project() -> str:
    return f"q{uuid.uuid4().hex[:6]}"


def write(tmp: Path, text: str) -> Path:
    p = tmp / "compose.yaml"
    p.write_text(text.replace("@PY@", PY).replace("@ECHO@", str(ECHO)))
    return p


def ps(sb: Sandbox, p: str) -> dict[str, dict]:
    r = sb.composenet("-p", p, "ps", "--format", "json", cwd=str(sb.empty_dir()))
    return {c["container"]: c for c in json.loads(r.stdout)}


def ps_until(sb: Sandbox, p: str, cond, what: str, deadline: float = 20.0) -> dict[str, dict]:
    """Poll `ps` (bounded in time and count) until ``cond(ps)`` holds."""
    end = time.monotonic() + deadline
    for _ in range(400):
        got = ps(sb, p)
        if cond(got):
            return got
        if time.monotonic() > end:
            break
        time.sleep(0.1)
    raise AssertionError(f"{what}: ps never got there: {json.dumps(got, indent=1)}")


def assert_no_changes(sb: Sandbox, compose: Path, p: str) -> None:
    r = sb.plan(compose, p)
    assert r.returncode == 0 and NO_CHANGES in r.stdout, f"plan:\n{r.stdout}\n{r.stderr}"


def line_of(compose: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(compose.read_text().splitlines(), 1) if needle in ln)


def test_one_shot_command_is_not_drift(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, """
services:
  once:
    command: "true"
  web:
    command: "@PY@ @ECHO@ --tcp 80"
""")
    r = sb.up(compose, p, check=False)
    assert r.returncode == 0, f"up of a one-shot service failed:\n{r.stdout}\n{r.stderr}"
    got = ps_until(sb, p, lambda s: s[f"{p}-once-1"]["state"] == "exited", "one-shot exits")
    once = got[f"{p}-once-1"]
    assert (once["exit_code"], once["pid"], once["restarts"]) == (0, None, 0), once
    text = sb.composenet("-p", p, "ps", cwd=str(sb.empty_dir())).stdout
    assert re.search(rf"{p}-once-1\s+once\s+exited \(code 0\)", text), text
    assert_no_changes(sb, compose, p)
    r = sb.up(compose, p)
    assert NO_CHANGES in r.stderr + r.stdout, r.stdout + r.stderr
    assert ps(sb, p)[f"{p}-once-1"]["state"] == "exited"  # a second up does not run it again
    sb.down(p)
    sb.assert_clean(p)


def test_command_failing_right_after_start_is_reported_and_the_rest_stays_up(sandbox: Sandbox,
                                                                              tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, """
services:
  crash:
    command: ["sh", "-c", "echo starting; echo boom-7c1 >&2; exit 3"]
  web:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [n]
  client:
    networks: [n]
networks:
  n: {}
""")
    r = sb.up(compose, p, check=False)
    assert r.returncode == 1, f"up must fail for the crashing service:\n{r.stdout}\n{r.stderr}"
    where = f"{compose}:{line_of(compose, 'crash:') + 1}:5: services.crash"
    assert f"{where}: service crash ({p}-crash-1) exited with code 3 right after its start" in r.stderr, r.stderr
    assert "  | boom-7c1" in r.stderr and "composenet logs crash" in r.stderr, r.stderr
    assert "Drift" not in r.stderr + r.stdout and "still differs" not in r.stderr, r.stderr
    wait_for(f"{p}-client-1", sb.ipv4(f"{p}-web-1"), 80)  # nothing rolled back
    got = ps(sb, p)
    assert (got[f"{p}-crash-1"]["state"], got[f"{p}-crash-1"]["exit_code"]) == ("exited", 3), got
    assert got[f"{p}-web-1"]["state"] == "running", got
    logs = sb.composenet("-p", p, "logs", "crash", cwd=str(sb.empty_dir())).stdout
    assert "starting" in logs and "boom-7c1" in logs, logs
    assert_no_changes(sb, compose, p)  # an exited process is not drift
    sb.down(p)
    sb.assert_clean(p)


def test_missing_binary_is_an_error_of_that_service_only(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = write(tmp_path, """
services:
  broken:
    command: ["/nonexistent/bin/server-3f2", "--port", "80"]
    networks: [n]
  web:
    command: "@PY@ @ECHO@ --tcp 80"
    networks: [n]
  client:
    networks: [n]
networks:
  n: {}
""")
    r = sb.up(compose, p, check=False)
    assert r.returncode == 1, r.stdout
    where = f"{compose}:{line_of(compose, 'broken:') + 1}:5: services.broken"
    assert (f"{where}: service broken ({p}-broken-1) cannot start: cannot execute '/nonexistent/bin/server-3f2': "
            "No such file or directory") in r.stderr, r.stderr
    assert "rolled back" not in r.stderr and "everything else is up and stays so" in r.stderr, r.stderr
    wait_for(f"{p}-client-1", sb.ipv4(f"{p}-web-1"), 80)
    got = ps(sb, p)
    assert got[f"{p}-broken-1"]["state"] == "failed" and "No such file" in got[f"{p}-broken-1"]["error"], got
    plan = sb.plan(compose, p)
    assert plan.returncode == 2 and f"+ process  {p}-broken-1" in plan.stdout, plan.stdout  # up tries again
    fixed = compose.read_text().replace('["/nonexistent/bin/server-3f2", "--port", "80"]', '"@PY@ @ECHO@ --tcp 80"')
    write(tmp_path, fixed)
    sb.up(compose, p)
    wait_for(f"{p}-client-1", sb.ipv4(f"{p}-broken-1"), 80)
    assert_no_changes(sb, compose, p)
    sb.down(p)
    sb.assert_clean(p)


def test_restart_policies_and_exit_codes(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    # Each run lasts 1 s, longer than `up` watches a new command: `up` itself succeeds.
    compose = write(tmp_path, """
services:
  flaky:
    command: ["sh", "-c", "sleep 1; exit 4"]
    restart: on-failure:2
  steady:
    command: ["sh", "-c", "sleep 1; exit 0"]
    restart: always
  clean:
    command: ["sh", "-c", "sleep 1; exit 0"]
    restart: on-failure
  never:
    command: ["sh", "-c", "sleep 1; exit 5"]
    restart: "no"
""")
    sb.up(compose, p)
    got = ps_until(sb, p, lambda s: s[f"{p}-flaky-1"]["state"] == "exited" and s[f"{p}-steady-1"]["restarts"] >= 2,
                   "on-failure:2 gives up after 2 restarts; always keeps restarting", deadline=30)
    flaky, steady = got[f"{p}-flaky-1"], got[f"{p}-steady-1"]
    assert (flaky["exit_code"], flaky["restarts"]) == (4, 2), flaky
    assert steady["state"] in ("running", "restarting"), steady
    assert (got[f"{p}-clean-1"]["state"], got[f"{p}-clean-1"]["exit_code"], got[f"{p}-clean-1"]["restarts"]) == (
        "exited", 0, 0), got[f"{p}-clean-1"]
    assert (got[f"{p}-never-1"]["state"], got[f"{p}-never-1"]["exit_code"], got[f"{p}-never-1"]["restarts"]) == (
        "exited", 5, 0), got[f"{p}-never-1"]
    text = sb.composenet("-p", p, "ps", cwd=str(sb.empty_dir())).stdout
    assert "exited (code 4, restarted 2 times)" in text and "restart on-failure:2" in text, text
    assert_no_changes(sb, compose, p)
    sb.down(p)
    sb.assert_clean(p)


def test_a_killed_supervisor_is_replaced_without_second_copies(sandbox: Sandbox, tmp_path: Path) -> None:
    sb, p = sandbox, project()
    compose = render("small", tmp_path)
    sb.up(compose, p)
    app = f"{p}-app-1"
    (old,) = processes_in(app)
    sup = json.loads(Path(f"/run/composenet/{p}/supervisor.json").read_text())
    os.kill(sup["pid"], signal.SIGKILL)
    r = sb.plan(compose, p)
    assert r.returncode == 2 and "supervisor of project" in r.stdout, r.stdout
    sb.up(compose, p)
    assert proc_start(old) == "", "the service started by the dead supervisor still runs"
    assert len(processes_in(app)) == 1, processes_in(app)
    wait_for(f"{p}-peer-1", sb.ipv4(app), 80)
    assert_no_changes(sb, compose, p)
    sb.down(p)
    sb.assert_clean(p)


def test_down_kills_every_process_of_the_project_without_any_record(sandbox: Sandbox, tmp_path: Path) -> None:
    """A grandchild in a session of its own escapes the service's process group, and with the
    run directory's records gone nothing names any pid: the project's cgroup still holds them."""
    sb, p = sandbox, project()
    compose = write(tmp_path, """
services:
  app:
    command: ["sh", "-c", "setsid sleep 1000 & exec @PY@ @ECHO@ --tcp 80"]
""")
    sb.up(compose, p)
    ns = f"{p}-app-1"
    pids: list[int] = []
    for _ in range(50):
        pids = processes_in(ns)
        if len(pids) == 2:
            break
        time.sleep(0.05)
    assert len(pids) == 2, pids  # the server and the escaped sleep
    starts = {pid: proc_start(pid) for pid in pids}
    sup = json.loads(Path(f"/run/composenet/{p}/supervisor.json").read_text())
    sup_start = proc_start(sup["pid"])
    os.kill(sup["pid"], signal.SIGKILL)
    for _ in range(200):  # its exit (the test's own kill) can take seconds on a loaded machine
        if proc_start(sup["pid"]) != sup_start:
            break
        time.sleep(0.05)
    assert proc_start(sup["pid"]) != sup_start, "the supervisor survived SIGKILL for 10 s"
    for d in ("proc", "states"):
        shutil.rmtree(f"/run/composenet/{p}/{d}")
    os.unlink(f"/run/composenet/{p}/supervisor.json")
    r = sb.down(p, check=False)
    assert r.returncode == 0, r.stderr
    left = [pid for pid, st in starts.items() if proc_start(pid) == st]
    assert left == [], f"processes of the project survived `down`: {left}"
    sb.assert_clean(p)


# What a service command may do, printed to its log ($$: a literal $ in a compose file).
CAPS = ("CE=$$(grep CapEff /proc/self/status | cut -f2); NNP=$$(grep NoNewPrivs /proc/self/status | cut -f2); "
        "echo caps $$CE nnp $$NNP; "
        "if ip route add 10.99.0.0/24 dev eth0 2>/dev/null; then echo route ok; else echo route refused; fi; "
        "if ip addr add 10.98.0.5/32 dev lo 2>/dev/null; then echo addr ok; else echo addr refused; fi; "
        "if ping -c1 -W2 $$GW >/dev/null 2>&1; then echo ping ok; else echo ping failed; fi; exec sleep 1000")


def test_commands_run_with_least_privilege(sandbox: Sandbox, tmp_path: Path) -> None:
    """Issue 17: as root, Docker's default capabilities (no CAP_NET_ADMIN: no route or address
    change; CAP_NET_RAW: ping works) and no_new_privs; a non-root user gets none; cap_add,
    cap_drop and privileged are honoured; `plan` and `ps` say so."""
    sb, p = sandbox, project()
    svc = (f'    command: ["sh", "-c", "{CAPS}"]\n    environment: {{GW: "10.55.0.1"}}\n    networks: [n]\n')
    compose = write(tmp_path, "services:\n"
                    + "  root:\n" + svc
                    + "  nobody:\n" + svc + "    user: nobody\n"
                    + "  admin:\n" + svc + "    cap_add: [NET_ADMIN]\n    cap_drop: [CAP_NET_RAW]\n"
                    + "  priv:\n" + svc + "    privileged: true\n"
                    + "  tool:\n    networks: [n]\n    cap_add: [NET_ADMIN]\n"  # no command: no process record
                    + "networks:\n  n:\n    ipam:\n      config: [{subnet: 10.55.0.0/24}]\n")
    plan = sb.plan(compose, p).stdout
    assert f"process  {p}-root-1 in {p}-root-1: sh -c" in plan and "[root, default capabilities]" in plan, plan
    assert "[user nobody, no capabilities]" in plan and "[root, default capabilities +NET_ADMIN -NET_RAW]" in plan
    assert "[privileged: every capability]" in plan, plan
    sb.up(compose, p)

    def outputs(_ps: dict[str, dict]) -> bool:
        return all("ping" in log(sb, p, svc) for svc in ("root", "nobody", "admin", "priv"))

    ps_until(sb, p, outputs, "every command printed what it may do")
    default = capnames.bounding_set()
    root, nobody, admin, priv = (log(sb, p, s) for s in ("root", "nobody", "admin", "priv"))
    assert f"caps {default:016x} nnp 1" in root and "route refused" in root and "addr refused" in root, root
    assert "ping ok" in root, root
    assert "caps 0000000000000000 nnp 1" in nobody and "route refused" in nobody, nobody
    assert "route ok" in admin and "ping failed" in admin, admin
    assert "route ok" in priv and "ping ok" in priv and "nnp 0" in priv, priv
    routes = sb.ip(f"{p}-root-1", "route show")
    assert "10.99.0.0/24" not in routes and "10.99.0.0/24" in sb.ip(f"{p}-admin-1", "route show"), routes
    got = ps(sb, p)
    assert got[f"{p}-nobody-1"]["privileges"] == "user nobody, no capabilities", got[f"{p}-nobody-1"]

    # `exec` runs with the service's capabilities, as its command, not with the caller's (all).
    def exec_caps(*args: str) -> str:
        r = sb.composenet("-p", p, "exec", *args, "grep", "-E", "CapEff|NoNewPrivs", "/proc/self/status",
                          cwd=str(sb.empty_dir()))
        return " ".join(r.stdout.split())

    every = int(next(ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("CapEff:")), 16)  # root's
    assert exec_caps("root") == f"CapEff: {default:016x} NoNewPrivs: 1"
    assert exec_caps("nobody") == "CapEff: 0000000000000000 NoNewPrivs: 1"
    net_admin, net_raw = 1 << 12, 1 << 13
    assert exec_caps("admin") == f"CapEff: {(default | net_admin) & ~net_raw:016x} NoNewPrivs: 1"
    assert exec_caps("priv") == exec_caps("--privileged", "root") == f"CapEff: {every:016x} NoNewPrivs: 0"
    assert exec_caps("tool") == f"CapEff: {default | net_admin:016x} NoNewPrivs: 1"  # as its file says
    r = sb.composenet("-p", p, "exec", "root", "ip", "route", "add", "10.97.0.0/24", "dev", "eth0", check=False,
                      cwd=str(sb.empty_dir()))
    assert r.returncode != 0 and "10.97.0.0/24" not in sb.ip(f"{p}-root-1", "route show"), r.stdout + r.stderr
    sb.composenet("-p", p, "exec", "--privileged", "root", "ip", "route", "add", "10.97.0.0/24", "dev", "eth0",
                  cwd=str(sb.empty_dir()))
    assert "10.97.0.0/24" in sb.ip(f"{p}-root-1", "route show")
    sb.down(p)
    sb.assert_clean(p)


def log(sb: Sandbox, p: str, service: str) -> str:
    r = sb.composenet("-p", p, "logs", service, check=False, cwd=str(sb.empty_dir()))
    return r.stdout
