"""Read-only detection of a host firewall, for the exposure table: published ports are DNATed in
prerouting, before the input hook, so a host firewall's input rules (ufw, firewalld, any input
chain with policy drop) never see them (moby/moby#4737, #22054). composenet says so next to
each published port rather than let users believe the firewall covers them.

Owns: reading the host's nftables chains (``nft -j list chains``) and naming what it finds.
Must not: change any table (composenet's own allowlists are core/ruleset.py's), or look at
composenet's own tables (composenet_*, composenet-guard).
"""

from __future__ import annotations

from typing import Any

from composenet.kernel import nft

_OWN = ("composenet_", "composenet-")


def describe(chains_json: dict[str, Any]) -> str:
    """The firewall a ``nft -j list chains`` listing shows, in a few words; "" when none:
    firewalld's table, ufw's chains (ufw-*, through iptables-nft), else a base input chain with
    policy drop (table and chain named). Pure."""
    chains = [item["chain"] for item in chains_json.get("nftables", ())
              if isinstance(item, dict) and isinstance(item.get("chain"), dict)]
    chains = [c for c in chains if not str(c.get("table", "")).startswith(_OWN)]
    if any(c.get("table") == "firewalld" for c in chains):
        return "firewalld"
    if any(str(c.get("name", "")).startswith("ufw-") for c in chains):
        return "ufw"
    for c in sorted(chains, key=lambda c: (str(c.get("family")), str(c.get("table")), str(c.get("name")))):
        if c.get("hook") == "input" and c.get("policy") == "drop":
            return f"table {c.get('family')} {c.get('table')}, chain {c.get('name')}: input policy drop"
    return ""


def host_firewall() -> str:
    """describe() of this namespace's chains; "" when nft cannot list them (then there is
    nothing to say: the detection is advice, never a reason to fail). I/O, read-only."""
    data = nft.list_chains()
    return describe(data) if data is not None else ""
