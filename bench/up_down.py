"""Benchmark `composenet up` / `down` against the kernel floor (root; not a test).

    python bench/up_down.py [--runs 3] [--sizes 20,300]

For each size N it writes a compose file of N services on 3 networks (every 4th service on 2
networks, no commands: namespaces only), like the Docker measurement in
../shared/DOCKER-BEHAVIOUR.md ("Timings"), and times, wall clock, in its own throwaway
"host" namespace (entered with nsenter --net, so the host's network is never touched):

* `composenet up -q` and `composenet down -q` (the whole CLI run, Python start-up included;
  the package is byte-compiled first, as an installed one is; its own runtime directory);
* the kernel floor: the same topology (namespaces, bridges, veths, addresses, routes) built by
  one `ip -batch` run in the host namespace (namespaces, bridges, veths with their peers moved
  into the namespaces) plus, because iproute2's batch lines cannot switch namespace, one
  `ip -n NS -batch` per namespace (lo up, addresses, default route); removed by one `ip -batch`
  run (namespaces, whose veths the kernel then destroys in the background, and bridges).

Prints times, ms per container and the ratios composenet/floor next to the targets of issue 4
(20x3: up <= 0.4 s, down <= 0.3 s; 300x3: <= 3 ms per container and <= 2x the floor). Removes
everything it created on exit, also on failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

NETWORKS = 3


def sh(*args: str, check: bool = True, input: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def topology(n: int) -> list[list[int]]:
    """Networks of each service: service i on network i % 3, every 4th also on (i + 1) % 3."""
    out = []
    for i in range(n):
        nets = [i % NETWORKS]
        if i % 4 == 3:
            nets.append((i + 1) % NETWORKS)
        out.append(nets)
    return out


def compose_text(n: int) -> str:
    lines = ["services:"]
    for i, nets in enumerate(topology(n)):
        lines.append(f"  s{i:03d}:")
        lines.append(f"    networks: [{', '.join(f'n{j}' for j in nets)}]")
    lines.append("networks:")
    lines += [f"  n{j}: {{}}" for j in range(NETWORKS)]
    return "\n".join(lines) + "\n"


class Bench:
    def __init__(self, tmp: Path):
        self.tag = uuid.uuid4().hex[:6]
        self.host = f"cnbench{self.tag}"
        self.tmp = tmp
        self.projects: list[str] = []
        self.floor_ns: list[str] = []
        self.resolv = tmp / "resolv.conf"
        self.resolv.write_text("nameserver 198.51.100.53\n")
        self.run_dir = tmp / "run"

    def setup(self) -> None:
        # Byte-compile the package first, as installing it does: with PYTHONDONTWRITEBYTECODE
        # set, every run would otherwise compile the modules that have no .pyc yet from source.
        import composenet

        sh(sys.executable, "-m", "compileall", "-q", str(Path(composenet.__file__).parent))
        sh("ip", "netns", "add", self.host)
        sh("ip", "-n", self.host, "link", "set", "lo", "up")

    def composenet(self, *args: str) -> float:
        # Its own runtime directory: the host-wide subnet lock (<run_dir>/.ipam.lock) of other
        # composenet runs on this machine (tests) must not add their waits to the timings.
        env = dict(os.environ, COMPOSENET_RESOLV_CONF=str(self.resolv), COMPOSENET_RUN_DIR=str(self.run_dir))
        t0 = time.perf_counter()
        r = subprocess.run(["nsenter", f"--net=/run/netns/{self.host}", sys.executable, "-m", "composenet", *args],
                           capture_output=True, text=True, timeout=900, env=env, cwd=str(self.tmp))
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"bench: composenet {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return dt

    def composenet_cycle(self, n: int, run: int) -> tuple[float, float]:
        project = f"bench{self.tag}n{n}r{run}"
        self.projects.append(project)
        compose = self.tmp / f"bench{n}.yaml"
        compose.write_text(compose_text(n))
        up = self.composenet("-f", str(compose), "-p", project, "up", "-q")
        got = sorted(x for x in os.listdir("/run/netns") if x.startswith(project + "-"))
        if len(got) != n:
            raise SystemExit(f"bench: `up` made {len(got)} namespaces, expected {n}")
        down = self.composenet("-p", project, "down", "-q")
        if any(x.startswith(project + "-") for x in os.listdir("/run/netns")):
            raise SystemExit(f"bench: namespaces of {project} left after `down`")
        self.projects.remove(project)
        return up, down

    def floor_cycle(self, n: int, run: int) -> tuple[float, float]:
        prefix = f"x{self.tag[:5]}{run % 10}"  # link names: prefix + "v299.1" fits IFNAMSIZ (15)
        names = [f"cnfloor{self.tag}{run}-{i}" for i in range(n)]
        host_batch: list[str] = []
        ns_batches: dict[str, list[str]] = {}
        for j in range(NETWORKS):
            br = f"{prefix}b{j}"
            host_batch += [f"link add {br} type bridge", f"addr add 10.{240 + j}.0.1/16 dev {br}", f"link set {br} up"]
        host_side: list[str] = []
        for i, nets in enumerate(topology(n)):
            ns = names[i]
            host_batch.append(f"netns add {ns}")
            cmds = ["link set lo up"]
            for k, j in enumerate(nets):
                veth = f"{prefix}v{i}.{k}"
                host_side.append(veth)
                host_batch += [f"link add {veth} type veth peer name eth{k} netns {ns}",
                               f"link set {veth} master {prefix}b{j} up"]
                cmds += [f"addr add 10.{240 + j}.{(i + 2) // 250}.{(i + 2) % 250 + 2}/16 dev eth{k}",
                         f"link set eth{k} up"]
            cmds.append(f"route add default via 10.{240 + nets[0]}.0.1")
            ns_batches[ns] = cmds
        self.floor_ns = names
        t0 = time.perf_counter()
        sh("nsenter", f"--net=/run/netns/{self.host}", "ip", "-batch", "-", input="\n".join(host_batch) + "\n")
        for ns, cmds in ns_batches.items():
            sh("ip", "-n", ns, "-batch", "-", input="\n".join(cmds) + "\n")
        up = time.perf_counter() - t0
        # Removal: deleting a namespace makes the kernel destroy its veths in the background
        # (batched); `link del` of each veth would cost one RCU grace period (~17 ms) apiece.
        down_batch = [f"netns del {ns}" for ns in names]
        down_batch += [f"link del {prefix}b{j}" for j in range(NETWORKS)]
        t0 = time.perf_counter()
        sh("nsenter", f"--net=/run/netns/{self.host}", "ip", "-batch", "-", input="\n".join(down_batch) + "\n")
        down = time.perf_counter() - t0
        self.floor_ns = []
        self.wait_links_gone(host_side)
        return up, down

    def wait_links_gone(self, names: list[str], deadline: float = 60) -> None:
        """Bounded wait until the kernel has destroyed the veths (not timed)."""
        end = time.monotonic() + deadline
        left = set(names)
        while left and time.monotonic() < end:
            out = sh("ip", "-n", self.host, "-o", "link", "show").stdout
            left = {v for v in left if f" {v}@" in out or f" {v}:" in out}
            if left:
                time.sleep(0.05)

    def teardown(self) -> None:
        for project in self.projects:
            try:
                self.composenet("-p", project, "down", "-q")
            except (SystemExit, subprocess.TimeoutExpired):
                pass
            for name in os.listdir("/run/netns"):
                if name.startswith(project + "-"):
                    sh("ip", "netns", "del", name, check=False)
            for etc in Path("/etc/netns").glob(f"{project}-*") if os.path.isdir("/etc/netns") else []:
                shutil.rmtree(etc, ignore_errors=True)
            shutil.rmtree(self.run_dir / project, ignore_errors=True)
        for ns in self.floor_ns:
            sh("ip", "netns", "del", ns, check=False)
        # Anything still running in the bench's host namespace (a resolver) goes with it.
        try:
            ino = os.stat(f"/run/netns/{self.host}").st_ino
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        if os.readlink(f"/proc/{d}/ns/net") == f"net:[{ino}]":
                            os.kill(int(d), signal.SIGKILL)
                    except OSError:
                        pass
        except OSError:
            pass
        sh("ip", "netns", "del", self.host, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per size (the median is reported)")
    ap.add_argument("--sizes", default="20,300", help="comma-separated service counts")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it builds network namespaces)")
    sizes = [int(x) for x in a.sizes.split(",")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cnbench") as tmp:
        b = Bench(Path(tmp))
        b.setup()
        try:
            for n in sizes:
                row = Row(n)
                for run in range(a.runs):
                    u, d = b.composenet_cycle(n, run)
                    row.up.append(u)
                    row.down.append(d)
                    u, d = b.floor_cycle(n, run)
                    row.floor_up.append(u)
                    row.floor_down.append(d)
                rows.append(row)
        finally:
            b.teardown()
    print(f"composenet up/down vs kernel floor (ip -batch); {NETWORKS} networks, every 4th service on 2; "
          f"median of {a.runs} run(s); {os.cpu_count()} CPUs")
    print(f"{'services':>8} | {'up s':>7} {'floor':>7} {'ratio':>6} {'ms/ctr':>7} | "
          f"{'down s':>7} {'floor':>7} {'ratio':>6} {'ms/ctr':>7}")
    for r in rows:
        cu, cd, fu, fd = (statistics.median(x) for x in (r.up, r.down, r.floor_up, r.floor_down))
        print(f"{r.n:>8} | {cu:7.3f} {fu:7.3f} {cu / fu:6.2f} {cu / r.n * 1000:7.2f} | "
              f"{cd:7.3f} {fd:7.3f} {cd / fd:6.2f} {cd / r.n * 1000:7.2f}")
    print("runs (composenet up / down ; floor up / down):")
    for r in rows:
        print(f"  {r.n}: {_fmt(r.up)} / {_fmt(r.down)} ; {_fmt(r.floor_up)} / {_fmt(r.floor_down)}")
    print("targets:")
    for r in rows:
        cu, cd, fu = statistics.median(r.up), statistics.median(r.down), statistics.median(r.floor_up)
        if r.n == 20:
            print(f"  20x3 up <= 0.4 s: {cu:.3f} s {'ok' if cu <= 0.4 else 'MISSED'}; "
                  f"down <= 0.3 s: {cd:.3f} s {'ok' if cd <= 0.3 else 'MISSED'}")
        if r.n == 300:
            per = cu / r.n * 1000
            print(f"  300x3 up <= 3 ms/container: {per:.2f} ms {'ok' if per <= 3 else 'MISSED'}; "
                  f"<= 2x floor: {cu / fu:.2f}x {'ok' if cu <= 2 * fu else 'MISSED'}")


@dataclass
class Row:
    n: int
    up: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)
    floor_up: list[float] = field(default_factory=list)
    floor_down: list[float] = field(default_factory=list)


def _fmt(xs: list[float]) -> str:
    return ",".join(f"{x:.3f}" for x in xs)


if __name__ == "__main__":
    main()
