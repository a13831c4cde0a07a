"""Resources of the firewall: the project's nftables table. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from composenet.core.resources.base import Resource


@dataclass(frozen=True)
class NftTable(Resource):
    """The project's whole nftables table, replaced in one atomic transaction.

    ``rules`` is what the diff compares: one entry per chain (``chain <name> <hook spec>``) and
    per rule (``<chain>: <comment>``); every rule's comment states what it does completely
    (``cn:dnat web-1 0.0.0.0:8080/tcp -> 172.18.0.2:80``), so a changed target is a changed
    rule. ``ruleset`` is the nft text that creates the table."""

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
