"""`composenet up` / `down` end to end (root, throwaway sandbox namespaces): what `up` builds,
that `down` leaves nothing (also without the compose file), `up` right after `down`, service
processes (hostname, environment, working directory, logs, depends_on order, SIGKILL after
stop_grace_period), and the refusal to run under `ip netns exec`.

Every test uses a unique project name, ends with ``sandbox.assert_clean``, and the sandbox
fixture removes everything even when a test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

from tests.integration.sandbox import (
    Sandbox,
    netns_inode,
    proc_cmdline,
    proc_start,
    processes_in,
    tcp,
    wait_for,
)
from tests.integration.stacks import render


def project() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


def test_up_builds_the_stack_and_down_leaves_nothing(sandbox: Sandbox, tmp_path) -> None:
    from composenet.core.resources import nft_table_name

    sb, p = sandbox, project()
    compose = render("small", tmp_path)
    r = sb.up(compose, p)
    assert "Traceback" not in r.stderr
    app, peer = f"{p}-app-1", f"{p}-peer-1"
    assert sb.namespaces(p) == [app, peer]
    for ns in (app, peer):
        assert os.path.isfile(f"/etc/netns/{ns}/resolv.conf"), ns
        assert os.path.isfile(f"/etc/netns/{ns}/hosts"), ns
    assert os.path.isdir(f"/run/composenet/{p}")
    names = [link["ifname"] for link in sb.links()]
    assert sum(n.startswith("cnb-") for n in names) == 1, names
    assert sum(n.startswith("cnv-") for n in names) == 2, names
    assert nft_table_name(p) in sb.nft("list", "tables").stdout
    assert wait_for(peer, sb.ipv4(app), 80)
    assert [pid for pid in processes_in(app) if "echo.py" in proc_cmdline(pid)]

    r = sb.down(p, compose)
    assert "Traceback" not in r.stderr
    sb.assert_clean(p)
    # A second `down` has nothing to do, says so, and still succeeds.
    r = sb.down(p, compose)
    assert "Nothing to remove" in r.stdout + r.stderr, r.stdout + r.stderr
    sb.assert_clean(p)


def test_down_by_project_name_without_the_compose_file(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    d = tmp_path / "gone"
    d.mkdir()
    compose = render("small", d)
    sb.up(compose, p)
    wait_for(f"{p}-app-1", "127.0.0.1", 80)
    shutil.rmtree(d)
    r = sb.down(p)  # `composenet -p NAME down`, from an empty directory
    assert r.returncode == 0
    sb.assert_clean(p)


def test_up_right_after_down(sandbox: Sandbox, tmp_path) -> None:
    """The kernel deletes veths (and namespaces) asynchronously: `up` at once after `down` must
    still work, several times in a row."""
    sb, p = sandbox, project()
    compose = render("small", tmp_path)
    for _ in range(3):
        sb.up(compose, p)
        r = sb.plan(compose, p)
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(f"{p}-peer-1", sb.ipv4(f"{p}-app-1"), 80)
        sb.down(p, compose)
        sb.assert_clean(p)


def _wait_logs(sb: Sandbox, compose, p: str, service: str, text: str, deadline: float = 10.0) -> str:
    end = time.monotonic() + deadline
    while True:
        r = sb.composenet("-f", str(compose), "-p", p, "logs", service, check=False, cwd=str(sb.tmp))
        if text in r.stdout:
            return r.stdout
        if time.monotonic() > end:
            raise AssertionError(f"`composenet logs {service}` never showed {text!r}:\n{r.stdout}\n{r.stderr}")
        time.sleep(0.1)


def _service_pid(ns: str) -> int:
    pids = [pid for pid in processes_in(ns) if "svc.py" in proc_cmdline(pid)]
    assert len(pids) == 1, [(pid, proc_cmdline(pid)) for pid in processes_in(ns)]
    return pids[0]


def test_service_processes(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    workdir = tmp_path / "wd"
    workdir.mkdir()
    compose = render("procs", tmp_path, WORKDIR=str(workdir))
    sb.up(compose, p)
    a_ns, b_ns = f"{p}-a-1", f"{p}-b-1"

    logs = _wait_logs(sb, compose, p, "a", "svc: ready")
    assert "svc: hostname=alpha-host" in logs, logs
    assert f"svc: cwd={workdir}" in logs, logs
    assert "svc: env GREETING=hello-from-a" in logs, logs
    logs_b = _wait_logs(sb, compose, p, "b", "svc: ready")
    assert f"svc: hostname={b_ns}" in logs_b, logs_b
    assert "svc: env GREETING=<unset>" in logs_b, logs_b

    a, b = _service_pid(a_ns), _service_pid(b_ns)
    # In its own namespace (processes_in matched the netns inode), with its own UTS namespace.
    assert os.readlink(f"/proc/{a}/ns/net") == f"net:[{netns_inode(a_ns)}]"
    assert os.readlink(f"/proc/{a}/ns/uts") != os.readlink("/proc/self/ns/uts")
    host = subprocess.run(["nsenter", "-t", str(a), "-u", "hostname"], capture_output=True, text=True, timeout=10)
    assert host.stdout.strip() == "alpha-host", host
    with open(f"/proc/{a}/environ", "rb") as f:
        assert b"GREETING=hello-from-a" in f.read().split(b"\0")
    assert os.readlink(f"/proc/{a}/cwd") == str(workdir)
    # It sees its namespace's hosts file as /etc/hosts.
    with open(f"/proc/{a}/root/etc/hosts") as f:
        assert "alpha-host" in f.read()
    # depends_on: b (the dependency) started no later than a.
    assert int(proc_start(b)) <= int(proc_start(a)), (proc_start(b), proc_start(a))

    # a ignores SIGTERM: `down` must SIGKILL it after its 1 s stop_grace_period.
    r = sb.down(p, compose, timeout=60)
    assert r.returncode == 0
    assert proc_start(a) == "" and proc_start(b) == ""
    sb.assert_clean(p)


def test_ip_netns_exec_is_refused(sandbox: Sandbox, tmp_path) -> None:
    sb, p = sandbox, project()
    compose = render("small", tmp_path)
    sb.projects.add(p)
    env = dict(os.environ, COMPOSENET_RESOLV_CONF=str(sb.resolv_conf))
    env.pop("COMPOSENET_ALLOW_PRIVATE_MOUNTNS", None)
    r = subprocess.run(["ip", "netns", "exec", sb.host, sys.executable, "-m", "composenet", "-f", str(compose),
                        "-p", p, "up"], capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "mount namespace" in r.stderr and "nsenter" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert sb.namespaces(p) == []
    assert tcp(sb.host, "127.0.0.1", 8080, 0.5) is None
    sb.assert_clean(p)


def test_down_when_something_else_holds_a_namespace(sandbox: Sandbox, tmp_path) -> None:
    """A namespace that something outside composenet keeps alive (here an open fd) outlives
    `down`, which only unmounts it: the veths must not stay with it (`down` deletes them, in
    one batch, rather than leave them to the namespace's destruction)."""
    sb, p = sandbox, project()
    compose = render("small", tmp_path)
    sb.up(compose, p)
    held = os.open(f"/run/netns/{p}-peer-1", os.O_RDONLY)
    try:
        r = sb.down(p, compose, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not [lk for lk in sb.links() if str(lk.get("ifalias", "")).startswith(f"composenet:{p}/")]
        # The namespace itself still lives (the fd), with only its loopback left.
        links = subprocess.run(["nsenter", f"--net=/proc/self/fd/{held}", "ip", "-o", "link", "show"],
                               capture_output=True, text=True, timeout=30, pass_fds=(held,))
        assert links.returncode == 0 and [ln.split(":")[1].strip() for ln in links.stdout.splitlines()] == ["lo"]
    finally:
        os.close(held)
    sb.assert_clean(p)
