"""Handler for the ``nft`` resource: load, read back and delete the project's nftables tables
(``inet composenet_<project>``: published ports, isolation, loopback guard; ``bridge
composenet_<project>``: anti-spoofing), and flush conntrack entries a changed DNAT would
otherwise keep alive. Also the nft primitives kernel.guard runs its shared table with.

Owns: running nft, in process through libnftables when it loads, else the ``nft`` command
(``-f -`` to load in one transaction, ``-c -f -`` to check, ``-s -j list table`` to observe),
``conntrack -D``, and the canonical rule identities read back from the kernel
(``identities``, pure; the planner's ruleset builder, composenet.ruleset, produces the same
identities from its own data).

Must not: build rulesets (composenet.core.ruleset and core.antispoof do), or touch any table but
the project's: every command names the table, and all of them run in the caller's network
namespace.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from typing import Any

from composenet.core.overlay import VTEP_SET
from composenet.core.plan import Plan
from composenet.core.resources import NftTable, Resource, nft_table_name
from composenet.core.ruleset import parse_port
from composenet.core.state import ObservedState
from composenet.errors import ComposenetError, KernelError
from composenet.kernel.context import Context, HandlerBase

NFT_TIMEOUT = 30.0
FAMILIES = ("inet", "bridge")  # the project's tables, one of each, both named nft_table_name(project)
CONNTRACK_TIMEOUT = 10.0


def _run(args: list[str], input: str | None = None, timeout: float = NFT_TIMEOUT) -> subprocess.CompletedProcess:
    if shutil.which(args[0]) is None:
        raise KernelError(f"{args[0]} is not installed", hint=f"install the {args[0]} package (nftables / conntrack)")
    try:
        return subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise KernelError(f"{' '.join(args)} did not finish within {timeout:g} s") from None


# ---- libnftables: the same parser and netlink code as the nft command, without a fork --------

NFT_CTX_OUTPUT_STATELESS, NFT_CTX_OUTPUT_JSON = 1 << 2, 1 << 4
_lib: Any = None  # the loaded library; False once loading failed (then the nft command is run)


def _libnftables() -> Any:
    """libnftables.so.1 (what `nft` itself is built on), or None if it cannot be loaded. A
    command through it costs ~0.2 ms where running `nft` costs 5-15 ms, and `up` runs 3-4."""
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
            vp, cp = ctypes.c_void_p, ctypes.c_char_p
            lib.nft_ctx_new.restype, lib.nft_ctx_new.argtypes = vp, [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [vp]
            lib.nft_ctx_buffer_output.argtypes = lib.nft_ctx_buffer_error.argtypes = [vp]
            lib.nft_ctx_get_output_buffer.argtypes = lib.nft_ctx_get_error_buffer.argtypes = [vp]
            lib.nft_ctx_get_output_buffer.restype = lib.nft_ctx_get_error_buffer.restype = cp
            lib.nft_ctx_output_set_flags.argtypes = [vp, ctypes.c_uint]
            lib.nft_ctx_set_dry_run.argtypes = [vp, ctypes.c_bool]
            lib.nft_run_cmd_from_buffer.argtypes = [vp, cp]
            _lib = lib
        except (OSError, AttributeError):
            _lib = False
    return _lib or None


def _nft(args: list[str], text: str, json_io: bool = False, stateless: bool = False,
         dry_run: bool = False) -> subprocess.CompletedProcess:
    """Run one nft command: ``text`` is the ruleset or command line (``args`` are the same as
    `nft` arguments, for the fallback and for messages). Through libnftables when it loads, in
    the calling thread's network namespace (a fresh context per call: its netlink socket is
    made where the thread is now); else the `nft` command. JSON input needs ``json_io``."""
    lib = _libnftables()
    if lib is None:
        return _run(["nft", *args], input=text if args[-1] == "-" else None)
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise KernelError("libnftables: cannot create a context")
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        lib.nft_ctx_output_set_flags(ctx, (NFT_CTX_OUTPUT_JSON if json_io else 0)
                                     | (NFT_CTX_OUTPUT_STATELESS if stateless else 0))
        if dry_run:
            lib.nft_ctx_set_dry_run(ctx, True)
        rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    finally:
        lib.nft_ctx_free(ctx)
    return subprocess.CompletedProcess(["nft", *args], 0 if rc == 0 else 1, out, err)


# ---- pure: identities ----------------------------------------------------------------------


def _strip_counters(x: Any) -> Any:
    """Counter values change with traffic; a hand-added rule must keep one identity."""
    if isinstance(x, dict):
        return {k: (None if k == "counter" else _strip_counters(v)) for k, v in x.items()}
    if isinstance(x, list):
        return [_strip_counters(v) for v in x]
    return x


def _element(e: Any, types: list[str] | None = None) -> str:
    """One set element as its identity: values as nft -j writes them, concatenations joined by
    `` . ``, prefixes and ranges as CIDR and ``lo-hi``. A value of type ``integer`` (raw bits, as
    ``typeof @th,64,128``) is written in hex whatever nft chose: it writes one that fits in 64
    bits as a signed decimal number and a longer one in hex."""
    if isinstance(e, dict):
        if "elem" in e:
            return _element(e["elem"].get("val"), types)
        if "concat" in e:
            parts = e["concat"]
            kinds = types if types and len(types) == len(parts) else [None] * len(parts)
            return " . ".join(_element(x, [k] if k else None) for x, k in zip(parts, kinds, strict=True))
        if "prefix" in e:
            return f"{_element(e['prefix'].get('addr'))}/{e['prefix'].get('len')}"
        if "range" in e:
            return "-".join(_element(x, types) for x in e["range"])
        return json.dumps(e, sort_keys=True, separators=(",", ":"))
    if types == ["integer"] and isinstance(e, int) and not isinstance(e, bool):
        return hex(e & (2**64 - 1))
    return str(e)


def identities(list_table_json: dict[str, Any]) -> tuple[str, ...]:
    """The canonical ``rules`` of a table from ``nft -j list table`` output.

    For each chain sorted by name: ``chain <name>`` (regular chain) or ``chain <name> <type>
    <hook> <priority> <policy>`` (base chain), then one entry per rule of that chain in order:
    ``<chain>: <comment>``, or ``<chain>: ?<compact JSON of its expr>`` for a rule without a
    comment (not composenet's: shows up as drift). Then for each named set sorted by name:
    ``set <name> <type>`` (a concatenation's types joined by `` . ``) and its elements sorted,
    ``set <name>: <element>`` (the project's bridge table pins ports through sets)."""
    items = list_table_json.get("nftables", [])
    chains: dict[str, str] = {}
    rules: dict[str, list[str]] = {}
    sets: dict[str, list[str]] = {}
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
        elif "set" in item:
            st = item["set"]
            types = [str(t) for t in st["type"]] if isinstance(st.get("type"), list) else [str(st.get("type", "?"))]
            # The cluster agent fills the VTEP set (core.overlay.VTEP_SET): its elements are not ours.
            elems = [] if st["name"] == VTEP_SET else sorted(f"set {st['name']}: {_element(e, types)}"
                                                             for e in st.get("elem", []))
            typ = " . ".join(types)
            sets[st["name"]] = [f"set {st['name']} {typ}", *elems]
    out: list[str] = []
    for name in sorted(chains):
        out.append(chains[name])
        out += rules.get(name, [])
    for name in sorted(sets):
        out += sets[name]
    return tuple(out)


def published(rules: tuple[str, ...] | list[str]) -> dict[str, tuple[str, int, str]]:
    """DNAT identities among ``rules``: identity -> (hostip, port, proto)."""
    out = {}
    for r in rules:
        rule = parse_port(r)
        if rule is not None:
            out[r] = (rule.host_ip, rule.host_port, rule.protocol)
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


def element_delta(family: str, name: str, before: tuple[str, ...], after: tuple[str, ...]) -> str | None:
    """The transaction that takes table ``family name`` from identities ``before`` to ``after``
    by adding and deleting named-set elements only, or None when anything else differs (a chain,
    a rule, a set's declaration: the table is then replaced whole). "" when nothing differs.

    Why not always replace: a table deleted and re-added in one transaction is not atomic for
    sets. The kernel flips the new rules live before it activates the elements of the sets they
    use, so a packet in between misses them (the bridge table's anonymous ``ether type`` map,
    now three jumps, came up empty and an IPv4 frame of a container that was not being changed
    hit the final drop: one DNS query lost in a few `up`s). Adding and deleting elements leaves every other
    container's elements, and every rule, as they are."""
    def split(idents: tuple[str, ...]) -> tuple[set[str], dict[str, set[str]]]:
        other: set[str] = set()
        elems: dict[str, set[str]] = {}
        for ident in idents:
            head, sep, elem = ident.partition(": ")
            if sep and head.startswith("set ") and " " not in head[4:]:
                elems.setdefault(head[4:], set()).add(elem)
            else:
                other.add(ident)
        return other, elems

    other_b, elems_b = split(before)
    other_a, elems_a = split(after)
    if other_b != other_a:
        return None
    types = {ident.split(" ")[1]: ident.split(" ", 2)[2].split(" . ") for ident in other_a
             if ident.startswith("set ") and len(ident.split(" ", 2)) == 3}

    def literal(set_name: str, elem: str) -> str:
        parts = elem.split(" . ")
        kinds = types.get(set_name, [])
        return " . ".join(f'"{p}"' if i < len(kinds) and kinds[i] in ("ifname", "string") else p
                          for i, p in enumerate(parts))

    lines = []
    for op, src, dst in (("add", elems_a, elems_b), ("delete", elems_b, elems_a)):  # new ones first
        for set_name in sorted(src):
            diff = sorted(src[set_name] - dst.get(set_name, set()))
            if diff:
                lines.append(f"{op} element {family} {name} {set_name} {{ "
                             + ", ".join(literal(set_name, e) for e in diff) + " }")
    return "".join(line + "\n" for line in lines)


# ---- I/O ------------------------------------------------------------------------------------


def check_if_possible(ruleset: str) -> str | None:
    """``check`` where it can run: as root with nft available (else None: nothing to say)."""
    if shutil.which("nft") is None or os.geteuid() != 0:
        return None
    return check(ruleset)


def check(ruleset: str) -> str | None:
    """``nft -c -f -``: the kernel's parser checks the ruleset without loading it. Returns the
    error text, or None when it is fine."""
    r = _nft(["-c", "-f", "-"], ruleset, dry_run=True)
    return None if r.returncode == 0 else (r.stderr.strip() or f"nft -c exited {r.returncode}")


def load(ruleset: str, what: str) -> None:
    """Load ``ruleset`` (nft syntax, or nft JSON as ``restorable`` makes) in one transaction:
    all of it or nothing."""
    json_input = ruleset.lstrip().startswith("{")
    r = _nft([*(["-j"] if json_input else []), "-f", "-"], ruleset, json_io=json_input)
    if r.returncode != 0:
        raise KernelError(f"nft could not load {what} (nothing was changed):\n{r.stderr.strip()}")


def list_table(family: str, name: str) -> dict[str, Any] | None:
    """``nft -s -j list table`` (stateless: no counter values); None if the table does not exist."""
    r = _nft(["-s", "-j", "list", "table", family, name], f"list table {family} {name}", json_io=True, stateless=True)
    if r.returncode != 0:
        if "No such file or directory" in r.stderr:
            return None
        raise KernelError(f"nft could not list table {family} {name}: {r.stderr.strip()}")
    try:
        data = json.loads(r.stdout)
    except ValueError as e:
        raise KernelError(f"nft -j list table {family} {name}: unreadable JSON: {e}") from None
    return data if isinstance(data, dict) else None


def list_chains() -> dict[str, Any] | None:
    """``nft -j list chains`` (every table's chains, with hook and policy); None when nft
    cannot list them. Read-only (kernel/firewall.py)."""
    r = _nft(["-j", "list", "chains"], "list chains", json_io=True)
    if r.returncode != 0:
        return None
    try:
        data = json.loads(r.stdout)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def restorable_text(family: str, name: str) -> str:
    """Like ``restorable``, from nft's text listing (``-s``: no counter values), for a table
    whose JSON listing cannot be loaded back: nft 1.0.6 writes a ``typeof`` set of raw bits (the
    bridge table's ND targets) as a concatenation with ``integer``, which it then refuses. ""
    when the table does not exist. I/O."""
    r = _nft(["-s", "list", "table", family, name], f"list table {family} {name}", stateless=True)
    if r.returncode != 0:
        return ""
    return f"table {family} {name}\ndelete table {family} {name}\n{r.stdout}"


def foreign_published(own: str) -> tuple[str, ...]:
    """The host ports the other composenet projects' tables publish (their DNAT rules), as
    ObservedState.ports_in_use entries: ``proto/port`` (every host address) or
    ``proto/port@hostip``. ``own`` is this project's table, left out."""
    r = _nft(["-j", "list", "tables"], "list tables", json_io=True)
    if r.returncode != 0:
        raise KernelError(f"nft could not list tables: {r.stderr.strip()}")
    try:
        items = json.loads(r.stdout).get("nftables", [])
    except (ValueError, AttributeError) as e:
        raise KernelError(f"nft -j list tables: unreadable JSON: {e}") from None
    out: set[str] = set()
    for item in items:
        t = item.get("table") if isinstance(item, dict) else None
        if not t or t.get("family") != "inet" or t.get("name") == own or not str(t.get("name")).startswith("composenet_"):
            continue
        data = list_table("inet", t["name"])
        if data is None:
            continue  # deleted meanwhile
        for hostip, port, proto in published(identities(data)).values():
            ip = hostip.strip("[]")
            out.add(f"{proto}/{port}" + ("" if ip == "*" else f"@{ip}"))
    return tuple(sorted(out))


def restorable(list_table_json: dict[str, Any]) -> str:
    """A JSON ruleset (for ``nft -j -f -``) that puts the listed table back exactly as it was, in
    one transaction: declare it, delete it (whatever is there now), re-add every object listed.
    Pure. This is the observed table's ``ruleset``, so a rollback can re-create a deleted table."""
    objs = [o for o in list_table_json.get("nftables", []) if isinstance(o, dict) and "metainfo" not in o]
    tables = [o["table"] for o in objs if "table" in o]
    if not tables:
        return ""
    t = {"family": tables[0]["family"], "name": tables[0]["name"]}
    cmds: list[dict[str, Any]] = [{"add": {"table": t}}, {"delete": {"table": t}}]
    cmds += [{"add": o} for o in objs]
    return json.dumps({"nftables": cmds}, sort_keys=True)


def flush_conntrack(family: str, port: int, proto: str) -> None:
    """Delete conntrack entries of flows to ``port``/``proto`` (original direction). No entry
    (conntrack exits 1, "0 flow entries") is fine."""
    r = _run(["conntrack", "-D", "-f", family, "-p", proto, "--orig-port-dst", str(port)], timeout=CONNTRACK_TIMEOUT)
    if r.returncode != 0 and "0 flow entries" not in r.stderr:
        raise KernelError(f"conntrack -D -f {family} -p {proto} --orig-port-dst {port} failed: {r.stderr.strip()}")


class NftHandler(HandlerBase):
    """The project's tables. The bridge table is observed without a ruleset to restore it
    (nft 1.0.6 cannot load its JSON listing back, see ``restorable_text``): ``update`` and
    ``delete`` read its text listing just before they change it, which is what a rollback needs
    and costs nothing on the runs that change nothing."""

    kinds: tuple[str, ...] = ("nft",)

    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], str] = {}  # (family, name) -> text that restores it, this run

    def check(self, ctx: Context, plan: Plan) -> None:
        """The kernel's own parser checks every table the plan loads, before anything changes
        (all of them in one dry run)."""
        texts = [c.after.ruleset for c in plan.changes if isinstance(c.after, NftTable) and c.after.ruleset]
        err = check_if_possible("".join(texts)) if texts else None
        if err:
            raise ComposenetError(f"nft rejected the generated ruleset; nothing was changed:\n{err}")

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        """The project's two tables: ``inet`` (ports, isolation, loopback guard) and ``bridge``
        (anti-spoofing), each read back as rule identities (and the inet one as a ruleset that
        restores it)."""
        name = nft_table_name(ctx.project)
        observed.ports_in_use = tuple(sorted({*observed.ports_in_use, *foreign_published(name)}))
        for family in FAMILIES:
            data = list_table(family, name)
            if data is not None:
                observed.add(NftTable(family, name, identities(data), restorable(data) if family == "inet" else ""))

    def _save(self, r: NftTable) -> None:
        if not r.ruleset:
            self.saved[(r.family, r.name)] = restorable_text(r.family, r.name)

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, NftTable)
        ruleset = r.ruleset or self.saved.get((r.family, r.name), "")
        if not ruleset:
            raise KernelError(f"table {r.family} {r.name}: no ruleset to load")
        load(ruleset, f"table {r.family} {r.name}")

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        assert isinstance(before, NftTable) and isinstance(after, NftTable)
        self._save(before)
        delta = element_delta(after.family, after.name, before.rules, after.rules)
        if delta is None:
            self.create(ctx, after)
        elif delta:
            load(delta, f"the set elements of table {after.family} {after.name}")
        # After the new table is in place: new flows already take the new path.
        for fam, port, proto in stale_ports(before.rules, after.rules):
            flush_conntrack(fam, port, proto)

    def delete(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, NftTable)
        self._save(r)
        # Declaring the table first makes the delete succeed when it is already gone.
        load(f"table {r.family} {r.name}\ndelete table {r.family} {r.name}\n", f"the deletion of table {r.family} {r.name}")
        for fam, port, proto in stale_ports(r.rules, ()):
            flush_conntrack(fam, port, proto)
