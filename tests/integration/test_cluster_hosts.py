"""One project name on three simulated hosts (root; cluster_lab.py): composenet on one host never
touches another host's processes.

Each host runs `composenet up` of the same project (same name, same paths, same command lines,
one pid namespace): every host's resolver survives the others' `up`s and answers its own
containers, and each `down` removes only its own host's objects. Also: composenet keeps
refusing a private mount namespace unless COMPOSENET_ALLOW_PRIVATE_MOUNTNS=1 says it is meant.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tests.integration.cluster_lab import Host, Lab, call_in_netns

COMPOSE = """
services:
  web:
    command: "sleep 600"
    networks: [front]
networks:
  front:
    ipam:
      config:
        - subnet: 172.30.5.0/24
"""


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path, hosts=3)
    lab.setup()
    try:
        yield lab
    finally:
        lab.teardown()
        assert lab.leftovers() == []


def composenet(h: Host, tmp: Path, *args: str, check: bool = True, env: dict[str, str] | None = None):
    e = {"COMPOSENET_RESOLV_CONF": str(tmp / "resolv.conf"), **(env or {})}
    return h.run(sys.executable, "-m", "composenet", "-f", str(tmp / "compose.yaml"), "-p", "same", *args,
                 check=check, env=e)


def resolver(h: Host) -> tuple[int, str] | None:
    """(pid, start time) of the resolver the host's pidfile names, if it runs."""
    try:
        pid = int(Path(h.path("/run/composenet/same/dns.pid")).read_text())
        with open(f"/proc/{pid}/stat") as f:
            return pid, f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, ValueError):
        return None


def ask(h: Host, name: str) -> tuple[str, list[str]]:
    def go() -> tuple[str, list[str]]:
        q = DNSRecord.question(name, "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            for _ in range(3):
                try:
                    s.sendto(q.pack(), ("172.30.5.1", 53))
                    r = DNSRecord.parse(s.recvfrom(4096)[0])
                except TimeoutError:
                    continue
                return RCODE[r.header.rcode], [str(rr.rdata) for rr in r.rr if rr.rtype == QTYPE.A]
        return "TIMEOUT", []

    return call_in_netns(h.path("/run/netns/same-web-1"), go)


def test_one_project_on_three_hosts_keeps_every_hosts_resolver(lab: Lab, tmp_path):
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    # The guard stays: a private mount namespace is refused unless it is declared meant to stay.
    h1 = lab.hosts[0]
    r = composenet(h1, tmp_path, "up", check=False, env={"COMPOSENET_ALLOW_PRIVATE_MOUNTNS": "0"})
    assert r.returncode == 1 and "private mount namespace" in r.stderr
    assert resolver(h1) is None and not os.path.exists(h1.path("/run/netns/same-web-1"))
    started: dict[str, tuple[int, str]] = {}
    for h in lab.hosts:
        composenet(h, tmp_path, "up")
        started[h.name] = resolver(h)  # type: ignore[assignment]
        assert started[h.name] is not None, h.name
        for name, ident in started.items():  # every resolver started so far still runs
            assert resolver(next(x for x in lab.hosts if x.name == name)) == ident, f"{h.name}'s up stopped {name}'s"
    assert len({pid for pid, _ in started.values()}) == 3
    for h in lab.hosts:
        assert ask(h, "web") == ("NOERROR", ["172.30.5.2"])
    # `down` on h2 leaves h1's and h3's resolvers and containers alone.
    composenet(lab.hosts[1], tmp_path, "down")
    assert resolver(lab.hosts[1]) is None
    assert resolver(lab.hosts[0]) == started["h1"] and resolver(lab.hosts[2]) == started["h3"]
    assert ask(lab.hosts[0], "web") == ("NOERROR", ["172.30.5.2"])
    for h in (lab.hosts[0], lab.hosts[2]):
        composenet(h, tmp_path, "down")
    for h in lab.hosts:
        assert os.listdir(h.path("/run/netns")) == [] and not os.path.exists(h.path("/run/composenet/same"))
        assert h.run("nft", "list", "tables").stdout.strip() == ""


# Run on h2: the supervisor pidfile of project "same" names a process of h1 (pid and start time
# right, command line a supervisor's on the same project directory): the supervisor client alone
# would take it for h2's own; composenet.kernel.processes must not (it sees h1's directory there).
SUPERVISOR_PROBE = """
import json, os, sys
from composenet.kernel import processes
from composenet.kernel.context import Context
from composenet.linux import proc
from composenet.supervisor import client
pid = int(sys.argv[1])
root = "/run/composenet/same"
os.makedirs(root, exist_ok=True)
with open(client.pidfile(root), "w") as f:
    json.dump({"pid": pid, "starttime": proc.start_time(pid)}, f)
ctx = Context(project="same", run_dir="/run/composenet")
processes.SupervisorHandler()._kill_stale(ctx)
print(json.dumps({"client": client.live(root) is not None, "processes": processes._live(root) is not None,
                  "alive": proc.alive(pid)}))
"""


def test_a_supervisor_pidfile_naming_another_hosts_process_is_not_this_hosts(lab: Lab, tmp_path):
    from composenet.linux import proc
    from composenet.supervisor import MODULE

    h1, h2 = lab.hosts[0], lab.hosts[1]
    h1.run("mkdir", "-p", "/run/composenet/same")
    other = h1.popen(sys.executable, "-c", "import time; time.sleep(60)", MODULE, "/run/composenet/same", "same")
    try:
        for _ in range(500):  # bounded: until it has exec'd (before, /proc shows nsenter's argv)
            if MODULE in proc.cmdline(other.pid):
                break
            time.sleep(0.01)
        got = json.loads(h2.python("-c", SUPERVISOR_PROBE, str(other.pid)).stdout)
        assert got == {"client": True, "processes": False, "alive": True}
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
        h2.run("rm", "-rf", "/run/composenet/same")
        h1.run("rm", "-rf", "/run/composenet/same")
