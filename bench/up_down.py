"""Benchmark composenet's start-up, `up`, no-op `plan` and `down` against the kernel floor
(root; not a test).

    python bench/up_down.py [--runs 3] [--sizes 20,300] [--plans 3] [--phases]

For each size N it writes a compose file of N services on 3 networks (every 4th service on 2
networks, no commands: namespaces only), like the Docker measurement in
../shared/DOCKER-BEHAVIOUR.md ("Timings"), and times, wall clock, in its own throwaway
"host" namespace (entered with nsenter --net, so the host's network is never touched):

* `composenet up -q` with the schema cache (<run_dir>/.validated) emptied first, so that every
  `up` validates its file as the first `up` after an edit does; then ``--plans`` no-op
  `composenet plan` (the cache warm, as after that `up`; each must print "No changes"); then
  `composenet -p NAME down -q`. Whole CLI runs, Python start-up included; the package is
  byte-compiled first, as an installed one is; its own runtime directory;
* the kernel floor: the same topology (namespaces, bridges, veths, addresses, routes) built by
  one `ip -batch` run in the host namespace (namespaces, bridges, veths with their peers moved
  into the namespaces) plus, because iproute2's batch lines cannot switch namespace, one
  `ip -n NS -batch` per namespace (lo up, addresses, default route); removed by one `ip -batch`
  run (namespaces, whose veths the kernel then destroys in the background, and bridges);
* `composenet --help`, ``--runs`` x 5 times.

Prints the medians, every run, and each target of issue 10 (--help <= 0.1 s; 20x3: up <= 0.3 s
and <= 3x the floor, down <= 0.25 s, no-op plan <= 0.15 s; 300x3: no-op plan <= 0.3 s) and of
issue 4 (300x3 up <= 3 ms per container and <= 2x the floor) with met / MISSED. For a missed
target (for every target with --phases) it prints why: the command's time split by phase
(python start-up, imports, load, validate, observe, desire, digest, diff, check, apply, render,
other, exit; see bench/phases.py) and its imports by package (-X importtime), measured in one
more cycle of each size run through bench/phases.py. Removes everything it created on exit,
also on failure.
"""

from __future__ import annotations

import argparse
import json
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
PHASES = Path(__file__).resolve().parent / "phases.py"
SCHEMA_CACHE = ".validated"  # composenet.cli.schemacache.VALIDATED, in the run directory
PHASE_ORDER = ("startup", "imports", "load", "validate", "observe", "desire", "digest", "diff", "check",
               "apply", "render", "other", "exit")


@dataclass
class Run:
    """One composenet command line: its wall time, and with --phases its split."""

    wall: float
    stdout: str
    phases: dict[str, float] | None = None
    imports: dict[str, float] | None = None  # seconds of import by package (-X importtime)


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
        self.run_dir.mkdir()  # as on a host where composenet ran before: the schema cache can be kept
        sh("ip", "netns", "add", self.host)
        sh("ip", "-n", self.host, "link", "set", "lo", "up")

    def env(self) -> dict[str, str]:
        # Its own runtime directory: the host-wide subnet lock (<run_dir>/.ipam.lock) of other
        # composenet runs on this machine (tests) must not add their waits to the timings.
        return dict(os.environ, COMPOSENET_RESOLV_CONF=str(self.resolv), COMPOSENET_RUN_DIR=str(self.run_dir))

    def composenet(self, *args: str, phases: bool = False, netns: bool = True) -> Run:
        """Run `composenet ARGS` (in the bench's host namespace unless not ``netns``); with
        ``phases``, through bench/phases.py with -X importtime, to split its time."""
        env = self.env()
        cmd = [sys.executable, "-m", "composenet", *args]
        out = self.tmp / "phases.json"
        if phases:
            cmd = [sys.executable, str(PHASES), *args]
            env.update(CNBENCH_PHASES=str(out), PYTHONPROFILEIMPORTTIME="1")
        if netns:
            cmd = ["nsenter", f"--net=/run/netns/{self.host}", *cmd]
        if phases:
            env["CNBENCH_T0"] = str(time.monotonic())
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=str(self.tmp))
        dt = time.perf_counter() - t0
        t_done = time.monotonic()
        if r.returncode != 0:
            raise SystemExit(f"bench: composenet {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        run = Run(dt, r.stdout)
        if phases:
            data = json.loads(out.read_text())
            run.phases = {**data["phases"], "exit": t_done - data["t_end"]}
            run.imports = import_split(r.stderr, set(data["preloaded"]))
        return run

    def composenet_cycle(self, n: int, run: int, plans: int, phases: bool = False) -> dict[str, list[Run]]:
        """`up` (schema cache emptied first), ``plans`` no-op `plan`s, `down`, checked."""
        project = f"bench{self.tag}n{n}r{run}"
        self.projects.append(project)
        compose = self.tmp / f"bench{n}.yaml"
        compose.write_text(compose_text(n))
        (self.run_dir / SCHEMA_CACHE).unlink(missing_ok=True)
        up = self.composenet("-f", str(compose), "-p", project, "up", "-q", phases=phases)
        got = sorted(x for x in os.listdir("/run/netns") if x.startswith(project + "-"))
        if len(got) != n:
            raise SystemExit(f"bench: `up` made {len(got)} namespaces, expected {n}")
        noop = []
        for _ in range(plans):
            noop.append(self.composenet("-f", str(compose), "-p", project, "plan", phases=phases))
            if "No changes." not in noop[-1].stdout:
                raise SystemExit(f"bench: `plan` after `up` is not empty:\n{noop[-1].stdout}")
        down = self.composenet("-p", project, "down", "-q", phases=phases)
        if any(x.startswith(project + "-") for x in os.listdir("/run/netns")):
            raise SystemExit(f"bench: namespaces of {project} left after `down`")
        self.projects.remove(project)
        return {"up": [up], "plan": noop, "down": [down]}

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
            except (SystemExit, subprocess.TimeoutExpired, OSError, ValueError):
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


def import_split(stderr: str, preloaded: set[str]) -> dict[str, float]:
    """Seconds of import by package, from -X importtime's self times (modules imported before
    bench/phases.py started are start-up, not counted): composenet by sub-package, the standard
    library as one."""
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:"):].split("|")
        name = fields[2].strip()
        if name in preloaded:
            continue
        top = name.split(".")[0]
        key = ".".join(name.split(".")[:2]) if top == "composenet" else (
            "stdlib" if top.lstrip("_") in sys.stdlib_module_names or top in sys.builtin_module_names else top)
        out[key] = out.get(key, 0.0) + int(fields[0]) / 1e6
    return out


@dataclass
class Row:
    n: int
    runs: list[dict[str, list[Run]]] = field(default_factory=list)
    floor_up: list[float] = field(default_factory=list)
    floor_down: list[float] = field(default_factory=list)
    split: dict[str, list[Run]] = field(default_factory=dict)  # one --phases cycle

    def walls(self, what: str) -> list[float]:
        return [r.wall for cycle in self.runs for r in cycle[what]]

    def median(self, what: str) -> float:
        return statistics.median(self.walls(what))


@dataclass
class Target:
    name: str
    value: float
    limit: float
    unit: str  # "s", "x" (ratio) or "ms" (per container)
    why: Run | None  # the --phases run of the same command

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    def line(self) -> str:
        fmt = {"s": "{:.3f} s", "x": "{:.2f}x", "ms": "{:.2f} ms"}[self.unit]
        return (f"  {self.name:<38} {fmt.format(self.value):>10}  <= {fmt.format(self.limit):<10} "
                f"{'met' if self.met else 'MISSED'}")


def split_lines(run: Run) -> list[str]:
    """Why a command takes its time: ms per phase, and the imports by package."""
    assert run.phases is not None and run.imports is not None
    p = run.phases
    total = p.get("startup", 0.0) + p["end"] + p["exit"]
    parts = [f"{k} {p[k] * 1000:.0f}" for k in PHASE_ORDER if p.get(k, 0.0) >= 0.0005]
    top = sorted(run.imports.items(), key=lambda kv: -kv[1])[:8]
    return [f"      split, ms (one --phases run, {total:.3f} s): " + " | ".join(parts),
            "      imports by package, ms: " + ", ".join(f"{k} {v * 1000:.0f}" for k, v in top)]


def targets(rows: list[Row], help_runs: list[float], help_split: Run) -> tuple[list[Target], list[Target]]:
    """(issue 10, issue 4) targets of the sizes measured."""
    issue10 = [Target("composenet --help", statistics.median(help_runs), 0.1, "s", help_split)]
    issue4 = []
    for r in rows:
        why = {k: v[0] for k, v in r.split.items()}
        up, fu = r.median("up"), statistics.median(r.floor_up)
        if r.n == 20:
            issue10 += [Target("up 20x3 (schema cache cold)", up, 0.3, "s", why["up"]),
                        Target(f"up 20x3 / floor ({fu:.3f} s)", up / fu, 3.0, "x", why["up"]),
                        Target("down 20x3", r.median("down"), 0.25, "s", why["down"]),
                        Target("no-op plan 20x3", r.median("plan"), 0.15, "s", why["plan"])]
        if r.n == 300:
            issue10.append(Target("no-op plan 300x3", r.median("plan"), 0.3, "s", why["plan"]))
            issue4 += [Target("up 300x3 per container", up / r.n * 1000, 3.0, "ms", why["up"]),
                       Target(f"up 300x3 / floor ({fu:.3f} s)", up / fu, 2.0, "x", why["up"])]
    return issue10, issue4


def report(rows: list[Row], help_runs: list[float], help_split: Run, runs: int, phases: bool) -> None:
    print(f"composenet vs kernel floor (ip -batch); {NETWORKS} networks, every 4th service on 2; "
          f"median of {runs} run(s); {os.cpu_count()} CPUs")
    print(f"{'services':>8} | {'up s':>7} {'floor':>7} {'ratio':>6} {'ms/ctr':>7} | {'plan s':>7} | "
          f"{'down s':>7} {'floor':>7} {'ratio':>6} {'ms/ctr':>7}")
    for r in rows:
        cu, cp, cd = r.median("up"), r.median("plan"), r.median("down")
        fu, fd = statistics.median(r.floor_up), statistics.median(r.floor_down)
        print(f"{r.n:>8} | {cu:7.3f} {fu:7.3f} {cu / fu:6.2f} {cu / r.n * 1000:7.2f} | {cp:7.3f} | "
              f"{cd:7.3f} {fd:7.3f} {cd / fd:6.2f} {cd / r.n * 1000:7.2f}")
    print("runs (composenet up / no-op plan / down ; floor up / down):")
    for r in rows:
        print(f"  {r.n}: {_fmt(r.walls('up'))} / {_fmt(r.walls('plan'))} / {_fmt(r.walls('down'))} ; "
              f"{_fmt(r.floor_up)} / {_fmt(r.floor_down)}")
    print(f"  --help: {_fmt(help_runs)}")
    issue10, issue4 = targets(rows, help_runs, help_split)
    for title, group in (("targets (issue 10):", issue10), ("targets (issue 4):", issue4)):
        if not group:
            continue
        print(title)
        shown: set[int] = set()
        for t in group:
            print(t.line())
            if t.why is not None and (phases or not t.met) and id(t.why) not in shown:
                shown.add(id(t.why))
                print("\n".join(split_lines(t.why)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per size (the median is reported)")
    ap.add_argument("--sizes", default="20,300", help="comma-separated service counts")
    ap.add_argument("--plans", type=int, default=3, help="no-op plans per run")
    ap.add_argument("--phases", action="store_true", help="print the split of every command, met or not")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it builds network namespaces)")
    sizes = [int(x) for x in a.sizes.split(",")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cnbench") as tmp:
        b = Bench(Path(tmp))
        b.setup()
        try:
            help_runs = [b.composenet("--help", netns=False).wall for _ in range(a.runs * 5)]
            help_split = b.composenet("--help", netns=False, phases=True)
            for n in sizes:
                row = Row(n)
                for run in range(a.runs):
                    row.runs.append(b.composenet_cycle(n, run, a.plans))
                    u, d = b.floor_cycle(n, run)
                    row.floor_up.append(u)
                    row.floor_down.append(d)
                row.split = b.composenet_cycle(n, a.runs, 1, phases=True)
                rows.append(row)
        finally:
            b.teardown()
    report(rows, help_runs, help_split, a.runs, a.phases)


def _fmt(xs: list[float]) -> str:
    return ",".join(f"{x:.3f}" for x in xs)


if __name__ == "__main__":
    main()
