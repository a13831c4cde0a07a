"""Model-based transition tests (root, sandboxes): random sequences of edits of a running stack.

A hand-written, seeded state machine draws each next compose file from a stack rich enough to
matter (networks joined, left and reordered; a subnet, ``ip_range``, static IPv4 and IPv6
addresses, ``internal``, IPv6, an alias, a published port, replicas, a command, a service
renamed, ``network_mode: service:x`` switched on and off, the MTU driver option). After each `up` of project A: it
exits 0; the next ``plan --detailed-exitcode`` exits 0; the normalized kernel snapshot of A
(per service: interfaces in order with their MTU and addresses, routes; DNS answers; the
project's nft tables; the processes) equals that of a fresh `up` of the same file as project B
in a second sandbox; and real traffic flows for a sample of pairs.

Bounded for CI: COMPOSENET_TRANSITIONS="SEQUENCESxEDITS" (default 15x5, about 3 minutes on 2 cores), seed
COMPOSENET_TRANSITIONS_SEED (default 16); e.g. COMPOSENET_TRANSITIONS=200x8 for a long run.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sandbox import Sandbox, dns, proc_cmdline, processes_in, sh, wait_for
from tests.integration.stacks import ECHO

SEQUENCES, EDITS = (int(x) for x in os.environ.get("COMPOSENET_TRANSITIONS", "15x5").split("x"))
SEED = int(os.environ.get("COMPOSENET_TRANSITIONS_SEED", "16"))


def draw(rng: random.Random) -> dict[str, Any]:
    """One state of the stack: every knob the edits turn."""
    return {
        "web_nets": rng.choice([["a"], ["b"], ["a", "b"], ["b", "a"]]),
        "db_ip": rng.choice([None, "10.77.2.10", "10.77.2.20"]),
        "a_subnet": rng.choice(["10.77.1.0/24", "10.77.3.0/24"]),
        "b_internal": rng.random() < 0.3,
        "six": rng.random() < 0.3,
        "alias": rng.random() < 0.5,
        "port": rng.choice([None, "127.0.0.1:18080:80", "127.0.0.1:18081:80"]),
        "replicas": rng.choice([1, 2]),
        "api": rng.choice(["api", "api2"]),
        "web_port": rng.choice([80, 81]),
        "side": rng.random() < 0.3,  # a sidecar in web's namespace (network_mode: service:web)
        "mtu": rng.choice([None, 1400]),
        "a_range": rng.random() < 0.3,  # ip_range: the upper half of a's subnet
        "db_ip6": rng.random() < 0.5,  # a static IPv6 address for db on a (when a has IPv6)
    }


def render(s: dict[str, Any]) -> str:
    web_nets = "\n".join(f"      {n}:" + (" {aliases: [www]}" if s["alias"] else " {}") for n in s["web_nets"])
    db_b = f"\n        ipv4_address: {s['db_ip']}" if s["db_ip"] else " {}"
    a_range = f", ip_range: {s['a_subnet'].rsplit('.', 1)[0]}.128/25" if s["a_range"] else ""
    a_ipam = f"{{subnet: {s['a_subnet']}{a_range}}}" + (", {subnet: 'fd77:1::/64'}" if s["six"] else "")
    db_a = " {ipv6_address: 'fd77:1::99'}" if s["six"] and s["db_ip6"] else " {}"
    mtu = f"\n    driver_opts: {{com.docker.network.driver.mtu: '{s['mtu']}'}}" if s["mtu"] else ""
    ports = f'\n    ports: ["{s["port"]}"]' if s["port"] else ""
    side = f"  side:\n    command: \"{sys.executable} {ECHO} --tcp 90\"\n    network_mode: \"service:web\"\n" \
        if s["side"] else ""
    return f"""\
services:
  web:
    command: "{sys.executable} {ECHO} --tcp {s['web_port']}"
    networks:
{web_nets}{ports}
  db:
    command: "{sys.executable} {ECHO} --tcp 80"
    networks:
      a:{db_a}
      b:{db_b}
  {s['api']}:
    scale: {s['replicas']}
    networks: [b]
  cli:
    networks: [a, b]
{side}networks:
  a:
    enable_ipv6: {str(s['six']).lower()}
    ipam: {{config: [{a_ipam}]}}
  b:
    internal: {str(s['b_internal']).lower()}{mtu}
    ipam: {{config: [{{subnet: 10.77.2.0/24}}]}}
"""


def sequences() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    rng = random.Random(SEED)
    for i in range(SEQUENCES):
        yield i, [draw(rng) for _ in range(EDITS)]


HEX = re.compile(r"\bcn[bvx]-[0-9a-f]{8,10}\b")
# Addresses handed out in order: an edited project keeps the ones its containers hold (by
# design; also one that was static and no longer is), a fresh one counts from the start. Compared by subnet only (static ones exactly),
# and so are the MACs and ND identities derived from them.
DYNAMIC = [(re.compile(r"\b10\.77\.(\d)\.(\d+)\b"), r"10.77.\1.N"), (re.compile(r"\bfd77:1::[0-9a-f]+\b"), "fd77:1::N"),
           (re.compile(r"\b02:42:0a:4d:0\d:[0-9a-f]{2}\b"), "02:42:MAC"), (re.compile(r"\b0xfe80[0-9a-f]{28}\b"), "0xND"),
           (re.compile(r"\b0xfd770001[0-9a-f]{24}\b"), "0xfd77N"),
           (re.compile(r"\bfe80::[0-9a-f:]+\b"), "fe80::N"), (re.compile(r"packets \d+ bytes \d+"), "packets - bytes -")]


def norm(text: str, static: str | None, static6: bool = False) -> str:
    if static:
        text = text.replace(static, "STATIC")
    if static6:
        text = text.replace("fd77:1::99", "STATIC6").replace("0xfd770001000000000000000000000099", "0xSTATIC6")
    for rx, to in DYNAMIC:
        text = rx.sub(to, text)
    return text


def snapshot(sb: Sandbox, p: str, static: str | None, static6: bool) -> dict[str, Any]:
    """What the kernel holds for project ``p``, with everything named after the project
    normalized away (P), so two projects of the same file compare equal."""
    out: dict[str, Any] = {}
    for ns in sb.namespaces(p):
        links = json.loads(sh("ip", "-n", ns, "-j", "addr", "show").stdout or "[]")
        ifs = [(lk["ifname"], lk.get("mtu"), sorted(f"{a['local']}/{a['prefixlen']}" for a in lk.get("addr_info", [])
                                                    if not a["local"].startswith("fe80:")))
               for lk in links if lk["ifname"] != "lo"]
        routes = []
        for fam in ("-4", "-6"):
            for r in json.loads(sh("ip", "-n", ns, "-j", fam, "route", "show").stdout or "[]"):
                if not r["dst"].startswith("fe80:"):
                    routes.append((r["dst"], r.get("gateway"), r.get("dev")))
        procs = sorted(proc_cmdline(pid) for pid in processes_in(ns))
        entry = {"interfaces": sorted(ifs), "routes": sorted(routes), "processes": procs}
        out[ns.removeprefix(p)] = json.loads(norm(json.dumps(entry), static, static6))
    tables = sb.nft("list", "tables").stdout.split("\n")
    for t in sorted(x for x in tables if p in x):
        fam, name = t.split()[1:3]
        # One item per rule or set element: the order of a set's elements is the kernel's.
        text = sb.nft("list", "table", fam, name).stdout.replace(p, "P")
        out[f"nft {fam} {name.replace(p, 'P')}"] = sorted(norm(HEX.sub("cnX", line).strip(), static, static6)
                                                           for line in re.split(r"[{},\n]", text) if line.strip())
    return out


def dns_answers(sb: Sandbox, p: str, names: list[str]) -> dict[str, Any]:
    """What cli's resolvers answer for each service name, per network (cli is on both)."""
    cli = f"{p}-cli-1"
    out = {}
    for gw in ("10.77.2.1", sb_gateway_a(sb, cli)):
        for n in names:
            out[f"{gw} {n}"] = dns(cli, gw, n)
    return out


def sb_gateway_a(sb: Sandbox, cli: str) -> str:
    return next(ip for ifname, (ip, _plen) in sb.addrs(cli).items() if not ip.startswith("10.77.2."))\
        .rsplit(".", 1)[0] + ".1"


def check_state(sb: Sandbox, p: str, compose: Path, s: dict[str, Any]) -> dict[str, Any]:
    r = sb.plan(compose, p)
    assert r.returncode == 0, f"plan after up exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    static6 = s["six"] and s["db_ip6"]
    snap = snapshot(sb, p, s["db_ip"], static6)
    names = ["web", "db", s["api"], "www"]
    snap["dns"] = json.loads(norm(json.dumps(dns_answers(sb, p, names)), s["db_ip"], static6))
    cli = f"{p}-cli-1"
    db_b = sb.addrs(f"{p}-db-1")["eth1"][0]
    wait_for(cli, db_b, 80)  # traffic: cli -> db on b, and -> web on its first network
    wait_for(cli, sb.addrs(f"{p}-web-1")["eth0"][0], s["web_port"])
    return snap


def differences(got: dict[str, Any], want: dict[str, Any]) -> str:
    lines = []
    for key in sorted({*got, *want}):
        g, w = got.get(key), want.get(key)
        if g == w:
            continue
        if isinstance(g, list) and isinstance(w, list):
            lines += [f"  {key}: only edited: {x}" for x in g if x not in w]
            lines += [f"  {key}: only fresh:  {x}" for x in w if x not in g]
            if sorted(map(str, g)) == sorted(map(str, w)):
                lines.append(f"  {key}: the same items, counted differently")
        else:
            lines.append(f"  {key}: edited {g}\n  {key}: fresh  {w}")
    return "\n".join(lines)


@pytest.mark.parametrize("seq", list(sequences()), ids=lambda x: f"seq{x[0]}")
def test_edit_sequences_converge_like_a_fresh_up(sandbox: Sandbox, tmp_path, seq) -> None:
    _i, states = seq
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    fresh = Sandbox(fresh_dir)
    fresh.setup()
    pa = f"ta{uuid.uuid4().hex[:5]}"
    compose = tmp_path / "compose.yaml"
    try:
        for k, s in enumerate(states):
            compose.write_text(render(s))
            r = sandbox.up(compose, pa, check=False)
            assert r.returncode == 0, f"edit {k} ({s}):\n{r.stdout}\n{r.stderr}"
            got = check_state(sandbox, pa, compose, s)
            pb = f"tb{uuid.uuid4().hex[:5]}"
            fresh_file = fresh_dir / "compose.yaml"
            fresh_file.write_text(compose.read_text())
            fresh.up(fresh_file, pb)
            want = check_state(fresh, pb, fresh_file, s)
            fresh.down(pb, fresh_file)
            assert got == want, f"edit {k} ({s}): the edited project differs from a fresh up:\n" + differences(got, want)
        sandbox.down(pa, compose)
        sandbox.assert_clean(pa)
    finally:
        fresh.teardown()
