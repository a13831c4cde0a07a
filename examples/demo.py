"""`make demo`: bring examples/webapp up inside a throwaway network namespace, show the
services reaching each other by name, then bring it down and remove the namespace.

Everything happens inside a namespace this script creates ("cndemo-host"), entered with
`nsenter --net` so that the namespaces composenet creates stay visible. Nothing on the real
host's network is touched, and no traffic leaves the namespaces created here.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
COMPOSE = os.path.join(HERE, "webapp", "compose.yaml")


def run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    shown = ["<script>" if "\n" in a else shlex.quote(a) for a in cmd]
    print("$ " + " ".join(shown), flush=True)
    r = subprocess.run(cmd, text=True, capture_output=True, timeout=120)
    out = (r.stdout + r.stderr).rstrip()
    if out:
        print("  " + out.replace("\n", "\n  "), flush=True)
    if check and r.returncode != 0:
        raise SystemExit(f"demo failed: {' '.join(cmd)} exited {r.returncode}")
    return r


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    tag = uuid.uuid4().hex[:4]
    host = f"cndemo{tag}"
    project = f"demo{tag}"
    resolv = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
    resolv.write("# no upstream servers: the demo never leaves its namespaces\n")
    resolv.close()
    cn = ["nsenter", f"--net=/run/netns/{host}", sys.executable, "-m", "composenet", "-f", COMPOSE, "-p", project,
          "--resolv-conf", resolv.name]
    probe = (
        "import socket, urllib.request\n"
        "for name in ('db', 'postgres', 'cache'):\n"
        "    print(f'{name:9} -> {socket.gethostbyname(name)}')\n"
        "body = urllib.request.urlopen('http://db:5432/', timeout=5).read()\n"
        "print('GET http://db:5432/ ->', len(body), 'bytes')\n"
    )
    subprocess.run(["ip", "netns", "add", host], check=True)
    try:
        subprocess.run(["ip", "-n", host, "link", "set", "lo", "up"], check=True)
        print(f"== a throwaway 'host' namespace: {host}\n")
        run(cn + ["plan"])
        run(cn + ["up"])
        run(cn + ["ps"])
        print("\n== web resolves db, its alias postgres and cache by name, and connects:")
        ok = True
        for _ in range(20):  # the service processes start in the background: bounded wait
            r = subprocess.run(cn + ["exec", "web", "--", sys.executable, "-c", probe], text=True,
                               capture_output=True, timeout=30)
            if r.returncode == 0:
                print("  " + r.stdout.rstrip().replace("\n", "\n  "))
                break
            import time

            time.sleep(0.25)
        else:
            ok = False
            print("  " + (r.stdout + r.stderr).rstrip().replace("\n", "\n  "))
        print("\n== the published port from the host namespace (127.0.0.1:8000 -> web):")
        r = run(["nsenter", f"--net=/run/netns/{host}", sys.executable, "-c",
                 "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/', timeout=5).status)"],
                check=False)
        ok = ok and r.returncode == 0
        print("\n== isolation: db sits only on the internal network and cannot reach web's front address")
        print("   (<script> tries a TCP connection to web's front address with a 1 s timeout)")
        reach = (
            "import socket, sys\n"
            "front = sys.argv[1]\n"
            "try:\n"
            "    socket.create_connection((front, 8000), timeout=1).close()\n"
            "    print(f'db -> {front}:8000 connected: isolation is broken'); sys.exit(1)\n"
            "except OSError as e:\n"
            "    print(f'db -> {front}:8000 refused by isolation ({type(e).__name__})')\n"
        )
        ps = subprocess.run(cn + ["ps", "--format", "json"], text=True, capture_output=True, timeout=30)
        front = _front_address(ps.stdout, project)
        if front is None:
            print("  `composenet ps` did not show web's front address")
            ok = False
        else:
            r = run(cn + ["exec", "db", "--", sys.executable, "-c", reach, front], check=False)
            ok = ok and r.returncode == 0
        print("\n== a second plan is empty: the kernel matches the file (exit code 0)")
        r = run(cn + ["plan", "--detailed-exitcode"], check=False)
        ok = ok and r.returncode == 0
        run(cn + ["down"])
        left = [n for n in os.listdir("/run/netns") if n.startswith(f"{project}-")]
        print("\n== after down: " + (f"LEFT BEHIND: {left}" if left else "no namespace of the project is left"))
        ok = ok and not left
        print("\ndemo " + ("passed" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        subprocess.run(cn + ["down", "-q"], capture_output=True, timeout=120)
        subprocess.run(["ip", "netns", "del", host], capture_output=True)
        os.unlink(resolv.name)


def _front_address(ps_json: str, project: str) -> str | None:
    """web's IPv4 address on the front network, from `composenet ps --format json`."""
    import json

    for c in json.loads(ps_json or "[]"):
        if c["service"] == "web":
            for cidr in c["networks"].get(f"{project}_front", []):
                if "." in cidr:
                    return str(cidr.split("/")[0])
    return None


if __name__ == "__main__":
    sys.exit(main())
