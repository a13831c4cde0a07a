"""The base of every kernel resource, and the names derived for the kernel (interface names, the
nft table name, the ownership label). Pure: no I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any, ClassVar

LABEL_PREFIX = "composenet:"
ROUTE_PROTO = 0x7C  # rtm_protocol of every route composenet adds (124, unused by iproute2's table)


def short_hash(*parts: str, n: int = 8) -> str:
    """Deterministic hex digest of the parts, for derived interface names."""
    h = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return h[:n]


def bridge_ifname(project: str, network: str) -> str:
    """Bridge name: ``cnb-`` + 8 hex of (project, network): 12 bytes, within IFNAMSIZ (15)."""
    return "cnb-" + short_hash(project, network)


def vxlan_ifname(project: str, network: str) -> str:
    """VXLAN link of an overlay network: ``cnx-`` + the same 8 hex as its bridge: 12 bytes."""
    return "cnx-" + short_hash(project, network)


VXLAN_LABEL_SUFFIX = "/vxlan"  # ifalias of a vxlan link: composenet:<project>/<network>/vxlan


def veth_ifname(project: str, container: str, network: str) -> str:
    """Host end of a container's veth: ``cnv-`` + 10 hex: 14 bytes."""
    return "cnv-" + short_hash(project, container, network, n=10)


def nft_table_name(project: str) -> str:
    """One inet table per project. nft identifiers allow [A-Za-z0-9_], so '-' and '.' become '_',
    and a short hash keeps "a-b" and "a_b" apart."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in project)
    if safe != project:
        safe += "_" + short_hash(project, n=4)
    return "composenet_" + safe


@dataclass(frozen=True)
class Resource:
    kind: ClassVar[str] = "resource"
    rank: ClassVar[int] = 50  # creation order between kinds; deletes run in reverse

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def ident(self) -> tuple[str, ...]:
        """Fields that make up the key (not compared: a different value is another resource)."""
        return ()

    def compared(self) -> dict[str, Any]:
        skip = set(self.ident) | set(self.carried())
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def carried(self) -> tuple[str, ...]:
        """Fields apply needs but the diff does not compare."""
        return ()

    def deps(self) -> tuple[str, ...]:
        """Keys of resources that must exist before this one is created."""
        return ()

    def describe(self) -> str | None:
        """One line for humans, for kinds that describe themselves (None: render.describe knows
        the kind)."""
        return None

    def to_json(self) -> dict[str, Any]:
        # Fields are scalars and tuples of scalars (or of pairs): a shallow copy is what
        # dataclasses.asdict gives, at a fifth of its cost (observed states digest every resource).
        d: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d
