"""Throwaway network topology for integration tests (root only).

    outside ns (203.0.113.254/24 on the uplink; 198.51.100.10 web, 198.51.100.53 DNS on lo)
        |  veth uplink
    host ns (203.0.113.1/24, default via 203.0.113.254)   <- composenet runs here, via nsenter --net

composenet is run inside the host namespace with ``nsenter --net=/run/netns/<host>``: unlike
``ip netns exec`` it keeps the mount namespace, so the namespaces composenet creates under
/run/netns stay visible after it exits. Traffic goes only to addresses inside these namespaces.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

HOST_ADDR = "203.0.113.1"
OUTSIDE_ADDR = "203.0.113.254"
WEB_ADDR = "198.51.100.10"
DNS_ADDR = "198.51.100.53"


def sh(*args: str, check: bool = True, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout, input=input)


class Sandbox:
    def __init__(self, tmp: Path, tag: str | None = None):
        self.tag = tag or uuid.uuid4().hex[:6]
        self.host = f"cnt{self.tag}h"
        self.outside = f"cnt{self.tag}o"
        self.tmp = tmp
        self.resolv_conf = tmp / "resolv.conf"
        self.procs: list[subprocess.Popen] = []

    # -- topology ---------------------------------------------------------------------
    def setup(self) -> None:
        sh("ip", "netns", "add", self.host)
        sh("ip", "netns", "add", self.outside)
        sh("ip", "link", "add", "up0", "netns", self.host, "type", "veth", "peer", "name", "up0", "netns", self.outside)
        self.ip(self.host, "addr add 203.0.113.1/24 dev up0")
        self.ip(self.host, "link set up0 up")
        self.ip(self.host, "link set lo up")
        self.ip(self.host, "route add default via 203.0.113.254")
        self.ip(self.outside, "addr add 203.0.113.254/24 dev up0")
        self.ip(self.outside, "addr add 198.51.100.10/32 dev lo")
        self.ip(self.outside, "addr add 198.51.100.53/32 dev lo")
        self.ip(self.outside, "link set up0 up")
        self.ip(self.outside, "link set lo up")
        self.resolv_conf.write_text(f"nameserver {DNS_ADDR}\n")

    def ip(self, ns: str, cmd: str) -> str:
        return sh("ip", "-n", ns, *cmd.split()).stdout

    def run_in(self, ns: str, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command in a namespace (by name under /run/netns), keeping the mount namespace."""
        return sh("nsenter", f"--net=/run/netns/{ns}", *cmd, check=check, timeout=timeout)

    def spawn_in(self, ns: str, *cmd: str) -> subprocess.Popen:
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", *cmd],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        return p

    def composenet(self, *args: str, check: bool = True, timeout: float = 120, cwd: str | None = None,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        e = dict(os.environ)
        e["COMPOSENET_RESOLV_CONF"] = str(self.resolv_conf)
        if env:
            e.update(env)
        r = subprocess.run(["nsenter", f"--net=/run/netns/{self.host}", sys.executable, "-m", "composenet", *args],
                           capture_output=True, text=True, timeout=timeout, cwd=cwd, env=e)
        if check and r.returncode != 0:
            raise AssertionError(f"composenet {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    # -- teardown ---------------------------------------------------------------------
    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        for ns in (self.host, self.outside):
            sh("ip", "netns", "del", ns, check=False)


def leftovers(project: str) -> list[str]:
    """Everything composenet could leave behind for a project, outside the sandbox namespaces."""
    found = []
    prefix = project + "-"
    if os.path.isdir("/run/netns"):
        found += [f"/run/netns/{n}" for n in os.listdir("/run/netns") if n.startswith(prefix)]
    if os.path.isdir("/etc/netns"):
        found += [f"/etc/netns/{n}" for n in os.listdir("/etc/netns") if n.startswith(prefix)]
    if os.path.exists(f"/run/composenet/{project}"):
        found.append(f"/run/composenet/{project}")
    return found
