"""Benchmark composenet's resolver against dnsmasq on the same path (root; not a test).

    python bench/dns.py [--seconds 5] [--latency-seconds 5] [--rounds 5]

Builds its own namespaces (a "host" ns with a bridge carrying 10.250.0.1 for composenet and
10.250.0.2 for dnsmasq, and a client ns with a veth on that bridge at 10.250.0.10), runs
composenet's daemon (``python -m composenet.dns.server``) and dnsmasq (answering the same names
from a hosts file) in the host ns, and runs dnsperf from the client ns against each:

* throughput: ``dnsperf -q 100 -l SECONDS`` (100 queries in flight): qps and mean latency;
* latency: ``dnsperf -Q 1000 -v`` (1k qps): p50/p99 computed from dnsperf's per-query lines.

Each server is measured ``--rounds`` times, alternating which goes first (this machine is
noisy: one run's ratio swings by tens of percent). Prints every round, the medians and the
median ratio composenet/dnsmasq; removes everything it created on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median

GATEWAY = "10.250.0.1"
DNSMASQ = "10.250.0.2"
CLIENT = "10.250.0.10"
NAMES = {  # name -> addresses, as the client (service "web") sees them
    "web": ["10.250.0.10"], "bench-web-1": ["10.250.0.10"],
    "api": ["10.250.0.20", "10.250.0.21", "10.250.0.22"],
    "bench-api-1": ["10.250.0.20"], "bench-api-2": ["10.250.0.21"], "bench-api-3": ["10.250.0.22"],
    "db": ["10.250.0.23"], "bench-db-1": ["10.250.0.23"], "fe": ["10.250.0.24"], "bench-fe-1": ["10.250.0.24"],
}


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def resolver_config(pidfile: str) -> dict:
    def c(name: str, service: str, ip: str) -> dict:
        return {"name": name, "service": service, "hostname": None, "register": True, "upstreams": None,
                "links": [], "endpoints": [{"network": "bench_default", "ipv4": ip, "ipv6": None,
                                            "aliases": [], "internal": False}]}
    containers = [c("bench-web-1", "web", CLIENT), c("bench-db-1", "db", "10.250.0.23"),
                  c("bench-fe-1", "fe", "10.250.0.24")]
    containers += [c(f"bench-api-{i}", "api", f"10.250.0.{19 + i}") for i in (1, 2, 3)]
    return {"project": "bench", "ttl": 5, "pidfile": pidfile, "upstreams": [],
            "listeners": [{"network": "bench_default", "address": GATEWAY, "port": 53, "internal": False}],
            "containers": containers}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (nsenter execs the server, so the Popen pid is the server)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dnsperf(client_ns: str, server: str, queries: Path, extra: list[str]) -> str:
    r = sh("nsenter", f"--net=/run/netns/{client_ns}", "dnsperf", "-s", server, "-d", str(queries), *extra)
    return r.stdout


def parse_summary(out: str) -> dict:
    def num(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")
    return {"qps": num(r"Queries per second:\s+([\d.]+)"), "mean_s": num(r"Average Latency \(s\):\s+([\d.]+)"),
            "lost": num(r"Queries lost:\s+(\d+)"), "completed": num(r"Queries completed:\s+(\d+)")}


def percentiles(out: str) -> dict:
    lat = sorted(float(m.group(1)) for m in re.finditer(r"^> \S+ \S+ \S+ ([\d.]+)$", out, re.M))
    if not lat:
        return {"p50_us": float("nan"), "p99_us": float("nan"), "n": 0}
    return {"p50_us": lat[len(lat) // 2] * 1e6, "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
            "n": len(lat)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5, help="throughput run length per server")
    ap.add_argument("--latency-seconds", type=int, default=5, help="1k qps latency run length per server")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per server, alternating; medians are reported")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (it creates network namespaces)")
    for tool in ("dnsperf", "dnsmasq", "nsenter", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} not found (Debian packages dnsperf, dnsmasq-base, util-linux, iproute2)")
    tag = uuid.uuid4().hex[:6]
    host, client = f"cnb{tag}h", f"cnb{tag}c"
    tmp = Path(tempfile.mkdtemp(prefix="cn-dnsbench-"))
    procs: list[subprocess.Popen] = []
    try:
        sh("ip", "netns", "add", host)
        sh("ip", "netns", "add", client)
        for ns in (host, client):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", host, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", host, "addr", "add", f"{GATEWAY}/24", "dev", "br0")
        sh("ip", "-n", host, "addr", "add", f"{DNSMASQ}/24", "dev", "br0")
        sh("ip", "-n", host, "link", "set", "br0", "up")
        sh("ip", "-n", host, "link", "add", "vc0", "type", "veth", "peer", "name", "eth0", "netns", client)
        sh("ip", "-n", host, "link", "set", "vc0", "master", "br0", "up")
        sh("ip", "-n", client, "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        sh("ip", "-n", client, "link", "set", "eth0", "up")

        queries = tmp / "queries.txt"
        queries.write_text("".join(f"{n} A\n" for n in NAMES))
        hosts = tmp / "hosts"
        hosts.write_text("".join(f"{ip} {n}\n" for n, ips in NAMES.items() for ip in ips))
        config = tmp / "dns.json"
        pidfile = tmp / "dns.pid"
        config.write_text(json.dumps(resolver_config(str(pidfile))))

        procs.append(subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host}", sys.executable, "-m", "composenet.dns.server", str(config)],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "composenet.log", "w"), start_new_session=True))
        procs.append(subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host}", "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
             "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", f"--listen-address={DNSMASQ}",
             "--bind-interfaces", "--port=53", "--user=root", "--pid-file=", "--cache-size=1000"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "dnsmasq.log", "w"), start_new_session=True))
        for _ in range(200):
            if pidfile.exists():
                break
            if procs[0].poll() is not None:
                raise SystemExit(f"bench: composenet resolver exited: {(tmp / 'composenet.log').read_text()}")
            time.sleep(0.05)
        time.sleep(0.5)  # dnsmasq has no readiness signal; a short settle
        for server, label in ((GATEWAY, "composenet"), (DNSMASQ, "dnsmasq")):
            check = dnsperf(client, server, queries, ["-n", "1"])
            if parse_summary(check)["completed"] != len(NAMES) or "NOERROR" not in check:
                raise SystemExit(f"bench: {label} does not answer the bench names:\n{check}")

        servers = {"composenet": (GATEWAY, procs[0]), "dnsmasq": (DNSMASQ, procs[1])}
        rounds: list[dict[str, dict]] = []
        for n in range(args.rounds):
            # Alternate who goes first: drift of this (shared, noisy) machine hits both alike.
            order = list(servers) if n % 2 == 0 else list(reversed(servers))
            results: dict[str, dict] = {}
            for label in order:
                server, proc = servers[label]
                cpu0 = cpu_seconds(proc.pid)
                thr = parse_summary(dnsperf(client, server, queries, ["-q", "100", "-l", str(args.seconds)]))
                thr["server_cpu"] = (cpu_seconds(proc.pid) - cpu0) / args.seconds
                results[label] = {"throughput": thr}
            for label in order:
                server, _ = servers[label]
                lat_out = dnsperf(client, server, queries, ["-Q", "1000", "-l", str(args.latency_seconds), "-v"])
                results[label]["latency_1k"] = {**parse_summary(lat_out), **percentiles(lat_out)}
            results["ratio"] = {"qps": results["composenet"]["throughput"]["qps"]
                                / results["dnsmasq"]["throughput"]["qps"]}
            rounds.append(results)

        print(f"DNS benchmark: dnsperf from a client namespace over veth+bridge, {len(NAMES)} local names, "
              f"{os.cpu_count()} CPUs, {args.rounds} rounds of {args.seconds} s (-q 100) + "
              f"{args.latency_seconds} s (-Q 1000) per server, alternating")
        header = (f"{'round':<6} {'server':<12} {'qps (-q 100)':>14} {'lost':>6} {'mean ms':>9} {'CPU':>5} | "
                  f"{'qps (-Q 1000)':>13} {'p50 us':>8} {'p99 us':>8}")
        print(header)
        for n, results in enumerate(rounds, 1):
            for label in servers:
                t, lt = results[label]["throughput"], results[label]["latency_1k"]
                print(f"{n:<6} {label:<12} {t['qps']:>14.0f} {t['lost']:>6.0f} {t['mean_s'] * 1e3:>9.3f} "
                      f"{t['server_cpu']:>5.2f} | {lt['qps']:>13.0f} {lt['p50_us']:>8.0f} {lt['p99_us']:>8.0f}")
            print(f"{n:<6} ratio composenet/dnsmasq (qps at 100 in flight): {results['ratio']['qps']:.2f}x")
        summary: dict[str, dict] = {}
        for label in servers:
            summary[label] = {
                "qps": median(r[label]["throughput"]["qps"] for r in rounds),
                "lost": sum(r[label]["throughput"]["lost"] for r in rounds),
                "p50_us": median(r[label]["latency_1k"]["p50_us"] for r in rounds),
                "p99_us": median(r[label]["latency_1k"]["p99_us"] for r in rounds),
            }
            s = summary[label]
            print(f"median {label:<12} {s['qps']:>14.0f} {s['lost']:>6.0f} {'':>9} {'':>5} | {'':>13} "
                  f"{s['p50_us']:>8.0f} {s['p99_us']:>8.0f}")
        ratios = [r["ratio"]["qps"] for r in rounds]
        summary["ratio"] = {"median": median(ratios), "min": min(ratios), "max": max(ratios)}
        print(f"median ratio composenet/dnsmasq (qps at 100 in flight): {median(ratios):.2f}x "
              f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x over {len(ratios)} rounds)")
        print(json.dumps({"rounds": rounds, "median": summary}))
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        for ns in (host, client):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
