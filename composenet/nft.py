"""Handler for the ``nft`` resource: load, read back and delete the project's nftables table,
and flush conntrack entries a changed DNAT would otherwise keep alive.

Owns: running ``nft`` (``-f -`` to load in one transaction, ``-c -f -`` to check, ``-j list
table`` to observe) and ``conntrack -D``, and the canonical rule identities read back from the
kernel (``identities``, pure; the planner's ruleset builder, composenet.ruleset, produces the
same identities from its own data).

Must not: build rulesets (composenet.ruleset does), or touch any table but the project's: every
command names the table, and all of them run in the caller's network namespace.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

from composenet.errors import KernelError
from composenet.handlers import Context, Handler
from composenet.resources import NftTable, Resource, nft_table_name
from composenet.state import ObservedState

NFT_TIMEOUT = 30.0
CONNTRACK_TIMEOUT = 10.0

# The identity comment of a published-port rule (ruleset.describe_port):
#   dnat <service> <hostip>:<port>/<proto> -> <addr>:<port>[,<addr>:<port>...]
# with hostip "*" (every IPv4 address), "[*]" (every IPv6 address), an IPv4 or "[v6]".
DNAT_RE = re.compile(
    r"\bdnat (?P<who>\S+) (?P<hostip>\*|\[\*\]|[0-9.]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d+)/(?P<proto>tcp|udp|sctp) -> "
)


def _run(args: list[str], input: str | None = None, timeout: float = NFT_TIMEOUT) -> subprocess.CompletedProcess:
    if shutil.which(args[0]) is None:
        raise KernelError(f"{args[0]} is not installed", hint=f"install the {args[0]} package (nftables / conntrack)")
    try:
        return subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise KernelError(f"{' '.join(args)} did not finish within {timeout:g} s") from None


# ---- pure: identities ----------------------------------------------------------------------


def _strip_counters(x: Any) -> Any:
    """Counter values change with traffic; a hand-added rule must keep one identity."""
    if isinstance(x, dict):
        return {k: (None if k == "counter" else _strip_counters(v)) for k, v in x.items()}
    if isinstance(x, list):
        return [_strip_counters(v) for v in x]
    return x


def identities(list_table_json: dict[str, Any]) -> tuple[str, ...]:
    """The canonical ``rules`` of a table from ``nft -j list table`` output.

    For each chain sorted by name: ``chain <name>`` (regular chain) or ``chain <name> <type>
    <hook> <priority> <policy>`` (base chain), then one entry per rule of that chain in order:
    ``<chain>: <comment>``, or ``<chain>: ?<compact JSON of its expr>`` for a rule without a
    comment (not composenet's: shows up as drift)."""
    items = list_table_json.get("nftables", [])
    chains: dict[str, str] = {}
    rules: dict[str, list[str]] = {}
    for item in items:
        if "chain" in item:
            c = item["chain"]
            name = c["name"]
            if "hook" in c:
                head = f"chain {name} {c.get('type', '?')} {c['hook']} {int(c.get('prio', 0))} {c.get('policy', 'accept')}"
            else:
                head = f"chain {name}"
            chains[name] = head
            rules.setdefault(name, [])
        elif "rule" in item:
            r = item["rule"]
            chain = r["chain"]
            if r.get("comment") is not None:
                ident = f"{chain}: {r['comment']}"
            else:
                expr = json.dumps(_strip_counters(r.get("expr", [])), sort_keys=True, separators=(",", ":"))
                ident = f"{chain}: ?{expr}"
            rules.setdefault(chain, []).append(ident)
            chains.setdefault(chain, f"chain {chain}")
    out: list[str] = []
    for name in sorted(chains):
        out.append(chains[name])
        out += rules.get(name, [])
    return tuple(out)


def published(rules: tuple[str, ...] | list[str]) -> dict[str, tuple[str, int, str]]:
    """DNAT identities among ``rules``: identity -> (hostip, port, proto)."""
    out = {}
    for r in rules:
        m = DNAT_RE.search(r)
        if m:
            out[r] = (m["hostip"], int(m["port"]), m["proto"])
    return out


def stale_ports(before: tuple[str, ...], after: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """(family, port, proto) of DNAT rules present in ``before`` and not in ``after``: their
    conntrack entries would keep sending packets of established flows to the old target."""
    b, a = published(before), published(after)
    out = set()
    for ident, (hostip, port, proto) in b.items():
        if ident not in a:
            out.add(("ipv6" if hostip.startswith("[") else "ipv4", port, proto))
    return sorted(out)


# ---- I/O ------------------------------------------------------------------------------------


def check(ruleset: str) -> str | None:
    """``nft -c -f -``: the kernel's parser checks the ruleset without loading it. Returns the
    error text, or None when it is fine."""
    r = _run(["nft", "-c", "-f", "-"], input=ruleset)
    return None if r.returncode == 0 else (r.stderr.strip() or f"nft -c exited {r.returncode}")


def load(ruleset: str, what: str) -> None:
    """Load ``ruleset`` in one transaction: all of it or nothing."""
    r = _run(["nft", "-f", "-"], input=ruleset)
    if r.returncode != 0:
        raise KernelError(f"nft could not load {what} (nothing was changed):\n{r.stderr.strip()}")


def list_table(family: str, name: str) -> dict[str, Any] | None:
    """``nft -j list table``; None if the table does not exist."""
    r = _run(["nft", "-j", "list", "table", family, name])
    if r.returncode != 0:
        if "No such file or directory" in r.stderr:
            return None
        raise KernelError(f"nft could not list table {family} {name}: {r.stderr.strip()}")
    try:
        data = json.loads(r.stdout)
    except ValueError as e:
        raise KernelError(f"nft -j list table {family} {name}: unreadable JSON: {e}") from None
    return data if isinstance(data, dict) else None


def flush_conntrack(family: str, port: int, proto: str) -> None:
    """Delete conntrack entries of flows to ``port``/``proto`` (original direction). No entry
    (conntrack exits 1, "0 flow entries") is fine."""
    r = _run(["conntrack", "-D", "-f", family, "-p", proto, "--orig-port-dst", str(port)], timeout=CONNTRACK_TIMEOUT)
    if r.returncode != 0 and "0 flow entries" not in r.stderr:
        raise KernelError(f"conntrack -D -f {family} -p {proto} --orig-port-dst {port} failed: {r.stderr.strip()}")


class NftHandler:
    kinds: tuple[str, ...] = ("nft",)

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        family, name = "inet", nft_table_name(ctx.project)
        data = list_table(family, name)
        if data is None:
            return
        observed.add(NftTable(family, name, identities(data), ""))

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, NftTable)
        if not r.ruleset:
            raise KernelError(f"table {r.family} {r.name}: no ruleset to load")
        load(r.ruleset, f"table {r.family} {r.name}")

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        assert isinstance(before, NftTable) and isinstance(after, NftTable)
        self.create(ctx, after)
        # After the new table is in place: new flows already take the new path.
        for fam, port, proto in stale_ports(before.rules, after.rules):
            flush_conntrack(fam, port, proto)

    def delete(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, NftTable)
        # Declaring the table first makes the delete succeed when it is already gone.
        load(f"table {r.family} {r.name}\ndelete table {r.family} {r.name}\n", f"the deletion of table {r.family} {r.name}")
        for fam, port, proto in stale_ports(r.rules, ()):
            flush_conntrack(fam, port, proto)


HANDLERS: list[Handler] = [NftHandler()]
