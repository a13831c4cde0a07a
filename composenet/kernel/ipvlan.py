"""Handler for the ``ipvlan`` resource (``driver: ipvlan``), and the read-only check that this
kernel can make ipvlan links at all, which a plan with an ipvlan network needs before it
touches the kernel (ObservedState.ipvlan_missing).

Owns: what an ipvlan link is in the kernel (IFLA_INFO_KIND "ipvlan", IFLA_IPVLAN_MODE and
IFLA_IPVLAN_FLAGS), created directly in the container's namespace on its host parent with its
ownership label; the support check (/sys/module/ipvlan, else the kernel's build config, else a
probe in a throwaway network namespace that leaves nothing). Reading ipvlan links back is
kernel/readback.py's (with the other links inside namespaces).
Must not: create anything in the host namespace, or keep anything from the probe.
"""

from __future__ import annotations

import functools
import gzip
import os
import platform
import struct
import subprocess

from composenet.core.resources import Ipvlan, Resource
from composenet.core.state import ObservedState
from composenet.errors import KernelError
from composenet.kernel import intents
from composenet.kernel.context import Context, HandlerBase
from composenet.kernel.rtnl import dellink, fail, nl
from composenet.linux import netns
from composenet.linux.netlink import (
    IFF_UP,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINK,
    IFLA_LINKINFO,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    ifinfomsg,
    nla,
    pack_str,
    pack_u32,
)

IFLA_IPVLAN_MODE, IFLA_IPVLAN_FLAGS = 1, 2  # linux/if_link.h
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}
MISSING = "this kernel has no ipvlan support (CONFIG_IPVLAN is not set and there is no ipvlan module)"
PROBE_TIMEOUT = 5.0  # seconds


def _config_value(name: str) -> str | None:
    """``y``/``m``/``n`` for ``name`` in the kernel's build config (/proc/config.gz, else
    /boot/config-RELEASE), None when no config can be read."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        try:
            with open(f"/boot/config-{platform.release()}") as f:
                text = f.read()
        except OSError:
            return None
    for line in text.splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
        if line.strip() == f"# {name} is not set":
            return "n"
    return "n"


def _module_file() -> bool:
    """The ipvlan module is installed for this kernel (it loads on the first ipvlan link)."""
    base = f"/lib/modules/{platform.release()}/kernel/drivers/net/ipvlan"
    return any(os.path.exists(os.path.join(base, f"ipvlan.ko{ext}")) for ext in ("", ".xz", ".zst", ".gz"))


def _probe() -> bool:
    """Ask the kernel in a throwaway network namespace (a child process's own, gone with it):
    an ipvlan link on ``lo`` is refused for another reason when the type exists, with
    "Unknown device type" when it does not. Nothing is created either way."""
    try:
        r = subprocess.run(["unshare", "--net", "ip", "link", "add", "link", "lo", "name", "cnipvprobe", "type", "ipvlan"],
                           capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: let `up` try, its error names the kernel's reason
    return "Unknown device type" not in r.stderr


@functools.cache
def missing_reason() -> str:
    """Why this kernel cannot make ipvlan links; "" when it can (cached for the process).
    Read-only: /sys/module/ipvlan, the build config, the module file, else a probe."""
    if os.path.isdir("/sys/module/ipvlan"):
        return ""
    value = _config_value("CONFIG_IPVLAN")
    if value == "y" or (value == "m" and _module_file()):
        return ""
    if value == "n":
        return MISSING
    if value == "m":
        return "this kernel builds ipvlan as a module (CONFIG_IPVLAN=m), but the ipvlan module is not installed"
    return "" if _module_file() or _probe() else MISSING


class IpvlanHandler(HandlerBase):
    """Handler (kernel.context.Handler) for ``ipvlan`` links: made in the container's namespace
    on their host parent. Observed with the other links of the namespace (kernel/readback.py)."""

    kinds: tuple[str, ...] = ("ipvlan",)

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        return None  # kernel/readback.py reads them (KernelHandler.observe)

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, Ipvlan)
        what = f"create ipvlan {r.ns} {r.ifname} (parent {r.parent})"
        if r.mode not in IPVLAN_MODES or r.flag not in IPVLAN_FLAGS:
            raise KernelError(f"{what}: unknown ipvlan mode {r.mode!r} or flag {r.flag!r}")
        reason = missing_reason()
        if reason:
            raise KernelError(f"{what}: {reason}", hint="plan refuses ipvlan networks on this kernel")
        host = nl(ctx, "")
        try:
            parent, fd = host.index(r.parent), netns.open_netns(r.ns)
        except OSError as e:
            raise fail(what, e) from e
        intent = intents.begin(ctx, "ipvlan", r.ns, r.ifname, r.label)
        data = (nla(IFLA_IPVLAN_MODE, struct.pack("=H", IPVLAN_MODES[r.mode]))
                + nla(IFLA_IPVLAN_FLAGS, struct.pack("=H", IPVLAN_FLAGS[r.flag])))
        body = (ifinfomsg(index=intent.index, flags=IFF_UP, change=IFF_UP) + nla(IFLA_IFNAME, pack_str(r.ifname))
                + nla(IFLA_MTU, pack_u32(r.mtu)) + nla(IFLA_LINK, pack_u32(parent)) + nla(IFLA_NET_NS_FD, pack_u32(fd))
                + nla(IFLA_LINKINFO, nla(IFLA_INFO_KIND, pack_str("ipvlan")) + nla(IFLA_INFO_DATA, data)))
        intents.create_in_netns(ctx, intent, body, fd, what, f"create ipvlan {r.ns} {r.ifname}")

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        """Mode, flag and parent are fixed at creation: made again."""
        self.delete(ctx, before)
        self.create(ctx, after)

    def delete(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, Ipvlan)
        if not netns.is_netns(netns.netns_path(r.ns)):
            return  # gone with its namespace
        try:
            dellink(nl(ctx, r.ns), r.ifname)
        except OSError as e:
            raise fail(f"delete ipvlan {r.ns} {r.ifname}", e) from e
