"""Benchmark the cluster (issue 12; root; not a test): convergence across hosts, and the cost of
an overlay `up` against a bridge `up`, in the same run.

    python bench/cluster.py [--rounds 10]

It builds two simulated hosts and an etcd on this machine (tests/integration/cluster_lab.py:
each host its own network and mount namespace; nothing touches the machine's own network) and
runs the real `composenet up` with COMPOSENET_STORE on them.

1. Convergence: host A runs a client on the overlay network. Per round, host B's compose file
   gains a service (a TCP server) and B runs `composenet up`; the clock starts when that `up`
   returns and stops when A's resolver, asked from A's container every 2 ms, answers the new
   service's name and a TCP connection from A's container to that address is accepted (the
   watch, A's agent: FDB, neighbour, VTEP set, names file; the resolver's reload; the server's
   start). Median of the rounds against the target (<= 1 s; Swarm's gossip takes seconds).
2. `up` of a 10-service project on an overlay network (with the store) against the same project
   on a bridge network, on host A, 3 times each, median against median (target <= 2x). The
   host's first overlay `up` also starts the host's cluster agent (a Python process: ~0.3 s of
   imports, registration, first listing); `up` starts it before it observes and plans, so that
   this overlaps them, and waits for it only before the cluster steps.

Removes everything it created on exit, also on failure.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnslib import QTYPE, DNSRecord  # noqa: E402

from tests.integration.cluster_lab import Host, Lab, call_in_netns  # noqa: E402

PROJECT = "p"
TARGET = 1.0
RATIO = 2.0
SERVER = ("import socket\nt=socket.socket();t.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "t.bind(('',7000));t.listen(8)\nwhile True:\n    c,a=t.accept();c.close()\n")


def compose(services: list[str], driver: str = "overlay", server: bool = False) -> str:
    cmd = json.dumps([sys.executable, "-c", SERVER]) if server else '"sleep 600"'
    body = "".join(f"  {s}:\n    command: {cmd}\n    networks: [net]\n" for s in services)
    return f"services:\n{body}networks:\n  net:\n    driver: {driver}\n"


def composenet(lab: Lab, h: Host, text: str, *args: str, project: str = PROJECT) -> float:
    """`composenet -p PROJECT ARGS` on ``h`` with the lab's store; seconds it took."""
    f = lab.tmp / f"{h.name}-{project}.yaml"
    f.write_text(text)
    env = {"COMPOSENET_RESOLV_CONF": str(lab.tmp / "resolv.conf"), "COMPOSENET_STORE": lab.store_url}
    start = time.monotonic()
    h.run(sys.executable, "-m", "composenet", "-f", str(f), "-p", project, *args, env=env, timeout=120)
    return time.monotonic() - start


def answers(sock: socket.socket, server: str, name: str) -> list[str]:
    q = DNSRecord.question(name, "A")
    sock.settimeout(0.05)
    try:
        sock.sendto(q.pack(), (server, 53))
        for _ in range(4):
            r = DNSRecord.parse(sock.recv(4096))
            if r.header.id == q.header.id:
                return [str(rr.rdata) for rr in r.rr if rr.rtype == QTYPE.A]
    except (TimeoutError, OSError):
        pass
    return []


def connects(ns_path: str, ip: str) -> bool:
    def go() -> bool:
        try:
            with socket.create_connection((ip, 7000), timeout=0.2):
                return True
        except OSError:
            return False

    return call_in_netns(ns_path, go)


def convergence(lab: Lab, rounds: int) -> list[float]:
    a, b = lab.hosts
    composenet(lab, a, compose(["client"]), "up")
    ns = a.path(f"/run/netns/{PROJECT}-client-1")
    conf = Path(a.path(f"/etc/netns/{PROJECT}-client-1/resolv.conf")).read_text()
    server = next(line.split()[1] for line in conf.splitlines() if line.startswith("nameserver"))
    sock = call_in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    times = []
    try:
        for k in range(rounds):
            name = f"svc{k}"
            composenet(lab, b, compose([f"svc{i}" for i in range(k + 1)], server=True), "up")
            start = time.monotonic()
            for _ in range(5000):  # bounded: 10 s at 2 ms
                got = answers(sock, server, name)
                if got and connects(ns, got[0]):
                    break
                time.sleep(0.002)
            else:
                raise SystemExit(f"bench: {name} never answered and connected on host A")
            times.append(time.monotonic() - start)
            print(f"  round {k + 1:2d}: {times[-1] * 1000:7.1f} ms", flush=True)
    finally:
        sock.close()
    for h in (a, b):
        composenet(lab, h, compose(["client"]), "down")
    return times


def up_cost(lab: Lab) -> dict[str, float]:
    """Median seconds of `up` of 10 services: on a bridge network; on an overlay network with the
    store, the host's first (it starts the host's agent; its `down` stops it) and with the agent
    already running (another project of the host uses the cluster)."""
    a = lab.hosts[0]
    services = [f"s{i}" for i in range(10)]
    got: dict[str, list[float]] = {"bridge": [], "overlay": [], "overlay, agent running": []}
    for _ in range(3):
        for kind, driver in (("bridge", "bridge"), ("overlay", "overlay")):
            text = compose(services, driver)
            got[kind].append(composenet(lab, a, text, "up", project="ten"))
            composenet(lab, a, text, "down", project="ten")
    composenet(lab, a, compose(["keep"]), "up", project="keep")
    for _ in range(3):
        text = compose(services)
        got["overlay, agent running"].append(composenet(lab, a, text, "up", project="ten"))
        composenet(lab, a, text, "down", project="ten")
    composenet(lab, a, compose(["keep"]), "down", project="keep")
    return {k: statistics.median(v) for k, v in got.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cn-bench-cluster-") as d:
        lab = Lab(Path(d), hosts=2)
        try:
            lab.setup()
            lab.start_etcd()
            (lab.tmp / "resolv.conf").write_text("nameserver 192.0.2.53\n")
            print(f"cluster convergence: `up` returns on host B -> host A resolves and connects ({args.rounds} rounds)")
            times = convergence(lab, args.rounds)
            costs = up_cost(lab)
        finally:
            lab.teardown()
            left = lab.leftovers()
            if left:
                print(f"bench: left behind: {left}", file=sys.stderr)
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    med = statistics.median(times)
    print(f"median {med * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
          f"(target <= {TARGET * 1000:.0f} ms: {'met' if med <= TARGET else 'MISSED'})")
    bridge = costs.pop("bridge")
    print(f"up of 10 services on a bridge network: {bridge * 1000:.0f} ms (median of 3)")
    for kind, t in costs.items():
        ratio = t / bridge
        print(f"  on an {kind}: {t * 1000:.0f} ms, {ratio:.2f}x (target <= {RATIO:g}x: "
              f"{'met' if ratio <= RATIO else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
