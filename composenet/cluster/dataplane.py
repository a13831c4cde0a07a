"""The agent's hands on the kernel: the cluster networks' VXLAN devices, their FDB and neighbour
entries, the nft sets of VTEP addresses, and the host's routes (for the node record).

Owns:

* finding a cluster network's device: a VXLAN link whose ``ifalias`` is composenet's label
  ``composenet:<project>/<network>/vxlan`` with learning off (the static-peer overlay keeps
  learning on: its devices are never touched here);
* reading and writing the entries of such a device (``mirror.DeviceWant``): unicast FDB
  entries MAC -> VTEP (``self permanent``), flood entries (all-zero MAC -> VTEP), ``static``
  bridge entries (``master``: added as a neighbour of family AF_BRIDGE with NTF_MASTER and
  NUD_NOARP; pyroute2's fdb() would add NUD_PERMANENT, which on a master entry means "local":
  frames would go to the bridge itself), and permanent neighbours IP -> MAC. On a device in
  cluster mode every such entry is the agent's: it removes those nobody wants;
* the VTEP sets: a set named ``VTEP_SET`` (type ipv4_addr) in any of composenet's nft tables
  (``inet composenet_*``); the project's ruleset declares it and drops VXLAN from any source
  not in it; the agent replaces its elements in one transaction (flush + add).

Must not: decide what the entries are (``mirror.py``), or touch a link, table or set without
composenet's label.
"""

from __future__ import annotations

import errno
import json
import socket
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import NTF_MASTER, NTF_SELF, NUD_NOARP, NUD_PERMANENT

from composenet.cluster.mirror import FLOOD_MAC, DeviceWant

LABEL_PREFIX = "composenet:"
LABEL_SUFFIX = "/vxlan"
VTEP_SET = "cluster_vteps"  # the set part B's ruleset declares in the project's table
TABLE_PREFIX = "composenet_"
NFT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Device:
    ifindex: int
    ifname: str
    project: str
    network: str
    vni: int
    port: int
    learning: bool


def _label(link) -> tuple[str, str] | None:  # type: ignore[no-untyped-def]
    alias = link.get_attr("IFLA_IFALIAS") or ""
    if not (alias.startswith(LABEL_PREFIX) and alias.endswith(LABEL_SUFFIX)):
        return None
    parts = alias[len(LABEL_PREFIX):-len(LABEL_SUFFIX)].split("/")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def vxlan_devices(ipr: IPRoute) -> dict[str, Device]:
    """composenet's VXLAN devices in this namespace, by network name."""
    out = {}
    for link in ipr.get_links():
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            continue
        label = _label(link)
        if label is None:
            continue
        data = info.get_attr("IFLA_INFO_DATA")
        learning = bool(data.get_attr("IFLA_VXLAN_LEARNING")) if data is not None else True
        out[label[1]] = Device(link["index"], link.get_attr("IFLA_IFNAME"), label[0], label[1],
                               int(data.get_attr("IFLA_VXLAN_ID") or 0) if data is not None else 0,
                               int(data.get_attr("IFLA_VXLAN_PORT") or 4789) if data is not None else 4789, learning)
    return out


def observe(ipr: IPRoute, dev: Device) -> DeviceWant:
    """The entries of ``dev`` that are the agent's (see the module doc)."""
    unicast, flood, statics, neighbours = set(), set(), set(), set()
    for m in ipr.get_neighbours(family=socket.AF_BRIDGE, ifindex=dev.ifindex):
        if m.get("ifindex") != dev.ifindex:
            continue
        mac = (m.get_attr("NDA_LLADDR") or "").lower()
        dst = m.get_attr("NDA_DST")
        if m["flags"] & NTF_SELF and dst and m["state"] & NUD_PERMANENT:
            if mac == FLOOD_MAC:
                flood.add(dst)
            else:
                unicast.add((mac, dst))
        elif m.get_attr("NDA_MASTER") and m["state"] == NUD_NOARP:
            statics.add(mac)
    for m in ipr.get_neighbours(family=socket.AF_INET, ifindex=dev.ifindex):
        if m.get("ifindex") == dev.ifindex and m["state"] & NUD_PERMANENT and m.get_attr("NDA_LLADDR"):
            neighbours.add((m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR").lower()))
    return DeviceWant(frozenset(unicast), frozenset(flood), frozenset(neighbours), frozenset(statics))


class SyncError(Exception):
    """Some entries of a device could not be changed (each line says which and why); the others
    were."""


def sync_device(ipr: IPRoute, dev: Device, want: DeviceWant) -> list[str]:
    """Make ``dev``'s entries ``want``; returns what changed, one line each. Removals first (a
    MAC that moved to another VTEP is replaced in place). Every change is tried: one that fails
    does not hold the others back (an entry already gone counts as removed); SyncError lists
    the failures after the rest is done."""
    have = observe(ipr, dev)
    i = dev.ifindex
    want_mac = dict(want.unicast)
    ops: list[tuple[str, Callable[[], object]]] = []
    for mac, dst in sorted(have.unicast - want.unicast):
        if want_mac.get(mac) is None:
            ops.append((f"- fdb {mac} dst {dst}", partial(ipr.neigh, "del", family=socket.AF_BRIDGE, ifindex=i,
                                                          lladdr=mac, dst=dst, flags=NTF_SELF)))
    for dst in sorted(have.flood - want.flood):
        ops.append((f"- flood dst {dst}", partial(ipr.fdb, "del", ifindex=i, lladdr=FLOOD_MAC, dst=dst)))
    for mac in sorted(have.statics - want.statics):
        ops.append((f"- static {mac}", partial(ipr.neigh, "del", family=socket.AF_BRIDGE, ifindex=i, lladdr=mac,
                                                flags=NTF_MASTER)))
    for ip, mac in sorted(have.neighbours - want.neighbours):
        ops.append((f"- neigh {ip} lladdr {mac}", partial(ipr.neigh, "del", ifindex=i, dst=ip, lladdr=mac)))
    for mac, dst in sorted(want.unicast - have.unicast):
        ops.append((f"+ fdb {mac} dst {dst}", partial(ipr.neigh, "replace", family=socket.AF_BRIDGE, ifindex=i,
                                                       lladdr=mac, dst=dst, flags=NTF_SELF,
                                                       state=NUD_PERMANENT | NUD_NOARP)))
    for dst in sorted(want.flood - have.flood):
        ops.append((f"+ flood dst {dst}", partial(ipr.fdb, "append", ifindex=i, lladdr=FLOOD_MAC, dst=dst)))
    for mac in sorted(want.statics - have.statics):
        ops.append((f"+ static {mac}", partial(ipr.neigh, "replace", family=socket.AF_BRIDGE, ifindex=i, lladdr=mac,
                                                flags=NTF_MASTER, state=NUD_NOARP)))
    for ip, mac in sorted(want.neighbours - have.neighbours):
        ops.append((f"+ neigh {ip} lladdr {mac}", partial(ipr.neigh, "replace", ifindex=i, dst=ip, lladdr=mac,
                                                           state=NUD_PERMANENT)))
    done, failed = [], []
    for line, op in ops:
        try:
            op()
        except NetlinkError as e:
            if line.startswith("-") and e.code == errno.ENOENT:
                continue  # gone already
            failed.append(f"{line}: {e}")
            continue
        done.append(line)
    if failed:
        raise SyncError(f"{dev.ifname}: " + "; ".join(failed) + (f" (done: {len(done)})" if done else ""))
    return done


def host_routes(ipr: IPRoute, exclude: Iterable[str] = ()) -> list[str]:
    """The IPv4 destinations of the main routing table (no default route, none of ``exclude``:
    the cluster networks' own subnets), sorted, as CIDR."""
    skip = set(exclude)
    out = set()
    for r in ipr.get_routes(family=socket.AF_INET, table=254):
        plen = r["dst_len"]
        dst = r.get_attr("RTA_DST")
        if plen == 0 or not dst:
            continue
        cidr = f"{dst}/{plen}"
        if cidr not in skip:
            out.add(cidr)
    return sorted(out, key=lambda c: (socket.inet_aton(c.split("/")[0]), int(c.split("/")[1])))


# -- the VTEP sets --------------------------------------------------------------------------------


def _nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, timeout=NFT_TIMEOUT)


def vtep_sets() -> dict[str, set[str]]:
    """The VTEP sets of composenet's tables: table name -> its elements."""
    r = _nft(["-j", "list", "sets", "inet"])
    if r.returncode != 0:
        return {}
    out: dict[str, set[str]] = {}
    for item in json.loads(r.stdout or "{}").get("nftables", []):
        s = item.get("set") if isinstance(item, dict) else None
        if not s or s.get("name") != VTEP_SET or not str(s.get("table", "")).startswith(TABLE_PREFIX):
            continue
        got = _nft(["-j", "list", "set", "inet", s["table"], VTEP_SET])
        elems: set[str] = set()
        if got.returncode == 0:
            for it in json.loads(got.stdout or "{}").get("nftables", []):
                for e in (it.get("set", {}).get("elem", []) if isinstance(it, dict) else []):
                    if isinstance(e, str):
                        elems.add(e)
        out[s["table"]] = elems
    return out


def sync_vtep_sets(vteps: set[str]) -> list[str]:
    """Make every VTEP set hold exactly ``vteps`` (one transaction per table that differs)."""
    done = []
    for table, have in sorted(vtep_sets().items()):
        if have == vteps:
            continue
        script = f"flush set inet {table} {VTEP_SET}\n"
        if vteps:
            script += f"add element inet {table} {VTEP_SET} {{ {', '.join(sorted(vteps))} }}\n"
        r = _nft(["-f", "-"], script)
        if r.returncode != 0:
            done.append(f"! {table}: {r.stderr.strip()[:200]}")
        else:
            done.append(f"~ {table} {VTEP_SET} = {{{', '.join(sorted(vteps))}}}")
    return done
