"""Resources of the firewall: the project's nftables tables and its membership in the host's
forwarding guard. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from composenet.core.resources.base import Resource


@dataclass(frozen=True)
class NftTable(Resource):
    """One of the project's two nftables tables (``inet``: ports, isolation, loopback guard;
    ``bridge``: anti-spoofing), each replaced whole in one atomic transaction.

    ``rules`` is what the diff compares: one entry per chain (``chain <name> <hook spec>``) and
    per rule (``<chain>: <comment>``); every rule's comment states what it does completely
    (``cn:dnat web-1 0.0.0.0:8080/tcp -> 172.18.0.2:80``), so a changed target is a changed
    rule; a named set adds ``set <name> <type>`` and one entry per element. ``ruleset`` is the
    nft text that creates the table."""

    kind: ClassVar[str] = "nft"
    rank: ClassVar[int] = 60
    family: str
    name: str
    rules: tuple[str, ...] = ()
    ruleset: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return f"nft:{self.family} {self.name}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("family", "name")

    def carried(self) -> tuple[str, ...]:
        return ("ruleset",)


GUARD_TABLE = "composenet-guard"  # inet; the '-' keeps it apart from every project's table (nft_table_name)


@dataclass(frozen=True)
class ForwardingGuard(Resource):
    """The project's membership in the host's forwarding guard: the host-wide ``inet
    composenet-guard`` table every composenet project shares (kernel/guard.py).

    Every bridge of a project is a member (under br_netfilter, frames bridged on an internal
    network cross the forward hook too). A project whose networks route (a bridge that is not
    internal) needs the host to forward ``families`` ("ipv4", "ipv6"). Joining records the host's own forwarding settings of a family
    the first time any project needs it, turns forwarding on and, when it was off, guards it:
    forwarded packets that touch none of the guard's ``bridges`` (every member's) are dropped,
    so nothing the host did not route before becomes routable. The last member to leave a family
    restores what was recorded; the last one to leave removes the table.

    ``bridges`` and ``families`` are compared. Observe also fills what leaving would do, for the
    plan's text: ``restores`` (sysctl assignments, e.g. ``net.ipv4.ip_forward = 0``) and
    ``last`` (the table goes with this project)."""

    kind: ClassVar[str] = "guard"
    rank: ClassVar[int] = 45  # after the bridges (their names join the set), before the project's tables
    project: str
    bridges: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    restores: tuple[str, ...] = ()
    last: bool = False

    @property
    def key(self) -> str:
        return f"guard:{self.project}"

    @property
    def ident(self) -> tuple[str, ...]:
        return ("project",)

    def carried(self) -> tuple[str, ...]:
        return ("restores", "last")

    def describe(self) -> str:
        needs = f"forwarding ({', '.join(self.families)})" if self.families else "no forwarding"
        text = f"guard    {needs} for {', '.join(self.bridges)}: inet {GUARD_TABLE}"
        if self.restores:
            text += "; as the last to need it, leaving restores " + ", ".join(self.restores)
        if self.last:
            text += " and removes the table" if self.restores else "; as its last member, leaving removes the table"
        return text
