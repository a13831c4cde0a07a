"""IP address management: subnets for networks and addresses for endpoints. Pure; no I/O.

Deterministic: the same networks, the same previous allocations and the same constraints give
the same result. Previous allocations (read back from the kernel) win over fresh ones, so a
changed file keeps existing subnets and existing endpoint addresses.

Docker's rules, measured (../shared/DOCKER-BEHAVIOUR.md (b)):
- the gateway defaults to the first host of the subnet;
- dynamic addresses start at the first address of ``ip_range`` when one is given, else at the
  first free host of the subnet;
- automatic subnets come from 172.17.0.0/16 ... 172.31.0.0/16, then 192.168.0.0/16 in /20s,
  skipping anything that overlaps a host route, a host address or another project's network.

Must not: decide which network or endpoint gets what (core/desired does, in a fixed order);
this module only hands out what it is asked for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network

from composenet.core.resources import short_hash
from composenet.errors import PlanError

Net = IPv4Network | IPv6Network


def default_pools() -> list[IPv4Network]:
    pools = [IPv4Network(f"172.{i}.0.0/16") for i in range(17, 32)]
    pools += list(IPv4Network("192.168.0.0/16").subnets(new_prefix=20))
    return pools


def _nets(cidrs: Iterable[str]) -> list[Net]:
    out: list[Net] = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c, strict=False))
        except ValueError:
            continue
    return out


# A size request (Docker 29): ``0.0.0.0/N`` or ``::/N`` asks for "a /N from the default pools".
SIZE4 = (16, 30)  # a /16 is the largest default pool; a /30 is the smallest with a gateway and a host
SIZE6 = (48, 124)  # inside the network's own unique-local /48


def size_request(subnet: str | None) -> int | None:
    """The prefix length ``subnet`` asks for when it is a size request (its address is all
    zeros: ``0.0.0.0/24``, ``::/64``), else None. Only lengths in SIZE4/SIZE6 are requests:
    validation rejects the others (0.0.0.0/8 cannot carry hosts)."""
    if not subnet:
        return None
    try:
        net = ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        return None
    if int(net.network_address) != 0:
        return None
    lo, hi = SIZE4 if net.version == 4 else SIZE6
    return net.prefixlen if lo <= net.prefixlen <= hi else None


def explicit(subnet: str | None) -> bool:
    """True for a literal subnet (given and not a size request)."""
    return bool(subnet) and size_request(subnet) is None


def allocate_subnet(taken: Iterable[str], avoid: Iterable[str], prefixlen: int | None = None) -> IPv4Network:
    """First default pool (or, with ``prefixlen``, first /prefixlen inside one, in address
    order) that overlaps nothing in ``taken`` (this run's subnets) or ``avoid`` (host routes and
    addresses, other projects' subnets)."""
    blocked = [b for b in _nets(taken) + _nets(avoid) if b.version == 4 and b.prefixlen > 0]
    for pool in default_pools():
        if prefixlen is None or prefixlen == pool.prefixlen:
            if not any(pool.overlaps(b) for b in blocked):
                return pool
            continue
        if prefixlen < pool.prefixlen:
            continue  # a /18 does not fit in a /20 pool
        near = [b for b in blocked if pool.overlaps(b)]
        for cand in pool.subnets(new_prefix=prefixlen):  # bounded: at most 2**14 per pool
            if not any(cand.overlaps(b) for b in near):
                return cand
    what = "subnet" if prefixlen is None else f"/{prefixlen}"
    raise PlanError(
        f"no free {what} left in the default pools (172.17-31.0.0/16, 192.168.0.0/16 in /20s)",
        hint="give the network an explicit ipam.config subnet",
    )


def ula_subnet(project: str, network: str, prefixlen: int = 64) -> IPv6Network:
    """A deterministic unique-local /64 (or the first /``prefixlen`` of the network's own /48,
    for a size request ``::/N``) for an IPv6 network without an explicit subnet."""
    h = short_hash(project, network, n=10)
    return IPv6Network(f"fd{h[0:2]}:{h[2:6]}:{h[6:10]}::/{prefixlen}")


class Pool:
    """Addresses of one subnet: reserved ones (network, gateway, aux, statics, broadcast) and a
    cursor for dynamic ones that starts at ``ip_range``'s first address."""

    def __init__(self, subnet: Net, gateway: str, ip_range: str | None = None, reserved: Iterable[str] = ()):
        self.subnet = subnet
        self.gateway = ipaddress.ip_address(gateway)
        self.range: Net = ipaddress.ip_network(ip_range) if ip_range else subnet
        self.used = {self.gateway}
        # Every address from the search's start up to here is in ``used`` (which only grows):
        # ``next`` resumes from it instead of rescanning (300 containers: 45k lookups -> 300).
        self.scanned = 0
        for r in reserved:
            self.used.add(ipaddress.ip_address(r))

    def claim(self, addr: str) -> bool:
        """Reserve a specific address; False if taken or outside the subnet."""
        a = ipaddress.ip_address(addr)
        if a not in self.subnet or a in self.used:
            return False
        self.used.add(a)
        return True

    def next(self) -> str:
        net = self.range
        first = int(net.network_address)
        last = int(net.broadcast_address)
        sub_first = int(self.subnet.network_address)
        sub_last = int(self.subnet.broadcast_address)
        # Never the subnet's network address; never its broadcast address (IPv4).
        lo = max(first, sub_first + 1)
        hi = min(last, sub_last - 1) if self.subnet.version == 4 else min(last, sub_last)
        limit = 1 << 16  # bounded search even in a /64: at most this many addresses from lo
        for i in range(max(lo, self.scanned), min(hi, lo + limit - 1) + 1):
            a = ipaddress.ip_address(i)
            if a not in self.used:
                self.used.add(a)
                self.scanned = i + 1
                return str(a)
        raise PlanError(f"no free address left in {self.range}", hint="use a larger subnet or ip_range")


def first_host(subnet: Net) -> str:
    return str(ipaddress.ip_address(int(subnet.network_address) + 1))


def mac_for(ipv4: str | None, seed: str) -> str:
    """Docker's MAC: 02:42 + the 4 IPv4 bytes; without IPv4, 02:42 + 4 bytes of a hash."""
    if ipv4:
        b = ipaddress.IPv4Address(ipv4).packed
    else:
        b = bytes.fromhex(short_hash(seed, n=8))
    return "02:42:" + ":".join(f"{x:02x}" for x in b)
