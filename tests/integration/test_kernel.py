"""composenet.kernel against the real kernel, inside a throwaway "host" namespace per test.

The test thread enters the sandbox namespace with setns for the duration of a test (the
``host`` fixture) and returns to its own namespace afterwards, so the code under test runs
in process, as in composenet, and the test process's own namespace is never modified. The
namespaces the code under test creates are named with the test's random tag and removed (and
checked gone) even when a test fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from composenet.core.resources import (
    ROUTE_PROTO,
    Address,
    Bridge,
    Macvlan,
    Netns,
    Resource,
    Route,
    Sysctl,
    Veth,
    bridge_ifname,
    veth_ifname,
)
from composenet.core.state import ObservedState
from composenet.errors import ComposenetError, KernelError
from composenet.kernel import links as kernel
from composenet.kernel import netinfo, normalise, sysctls
from composenet.kernel.context import Context
from composenet.kernel.handlers import default_handlers
from composenet.linux import netlink, netns


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30).stdout


@dataclass
class Host:
    tag: str
    name: str  # the sandbox "host" namespace
    ctx: Context
    project: str

    def ip(self, *args: str, check: bool = True) -> str:
        return sh("ip", "-n", self.name, *args, check=check)

    def container(self, n: int = 1) -> str:
        return f"{self.project}-web-{n}"

    def observe(self) -> ObservedState:
        o = ObservedState()
        kernel.KernelHandler().observe(self.ctx, o)
        return o


def _leftover_netns(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))


@pytest.fixture
def host(tmp_path) -> Iterator[Host]:
    tag = uuid.uuid4().hex[:6]
    name = f"cnk{tag}h"
    project = f"k{tag}"
    sh("ip", "netns", "add", name)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    ctx = Context(project=project, run_dir=str(tmp_path / "run"))
    try:
        fd = netns.open_netns(name)
        try:
            netns.setns(fd)
        finally:
            os.close(fd)
        try:
            yield Host(tag, name, ctx, project)
        finally:
            ctx.close()
            netns.setns(home)
    finally:
        os.close(home)
        for n in _leftover_netns(project + "-"):
            netns.delete(n)
        sh("ip", "netns", "del", name, check=False)
    assert _leftover_netns(project + "-") == []
    assert not os.path.exists(f"/run/netns/{name}")


def H() -> kernel.KernelHandler:
    h = kernel.KernelHandler()
    assert isinstance(h, kernel.KernelHandler)
    return h


def stack(h: Host, n: int = 1, v6: bool = True) -> list[Resource]:
    """A network with a bridge and ``n`` containers, in creation order."""
    p = h.project
    net = f"{p}_default"
    br = bridge_ifname(p, net)
    rs: list[Resource] = [
        Sysctl("", "net.ipv4.ip_forward", "1"),
        Bridge(br, f"composenet:{p}/{net}", net, 1500, "02:42:ac:12:00:01"),
        Address("", br, "172.18.0.1/16"),
        Sysctl("", f"net.ipv4.conf.{br}.route_localnet", "1", br),
    ]
    if v6:
        rs += [Address("", br, "fd00:1::1/64"), Sysctl("", f"net.ipv6.conf.{br}.accept_dad", "0", br)]
    for i in range(1, n + 1):
        c = h.container(i)
        rs += [
            Netns(c, p, "web"),
            Veth(veth_ifname(p, c, net), f"composenet:{p}/{c}/{net}", c, "eth0", br, 1500, f"02:42:ac:12:00:{i + 1:02x}"),
            Address(c, "eth0", f"172.18.0.{i + 1}/16"),
            Route(c, "0.0.0.0/0", "172.18.0.1", "eth0"),
        ]
        if v6:
            rs += [Address(c, "eth0", f"fd00:1::{i + 1:x}/64"), Route(c, "::/0", "fd00:1::1", "eth0", 1024)]
    return rs


def create_all(h: Host, rs: list[Resource]) -> None:
    for r in rs:
        H().create(h.ctx, r)


def delete_all(h: Host, rs: list[Resource]) -> None:
    for r in reversed(rs):
        H().delete(h.ctx, r)


def owned(o: ObservedState, rs: list[Resource]) -> dict[str, Resource]:
    """Observed resources minus the sysctl registry entries the test did not set."""
    keys = {r.key for r in rs}
    return {k: v for k, v in o.resources.items() if v.kind != "sysctl" or k in keys}


def assert_round_trip(h: Host, rs: list[Resource]) -> None:
    got = owned(h.observe(), rs)
    assert got == {r.key: r for r in rs}


# ---- sockets -----------------------------------------------------------------------------------


def test_ipr_and_nl_are_bound_to_their_namespace(host: Host) -> None:
    c = host.container()
    H().create(host.ctx, Netns(c, host.project, "web"))
    sh("ip", "-n", c, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    host.ip("link", "add", "hprobe0", "type", "bridge")
    in_c = {x.get("ifname") for x in kernel.ipr(host.ctx, c).get_links()}
    in_host = {x.get("ifname") for x in kernel.ipr(host.ctx, "").get_links()}
    assert {"lo", "probe0", "probe1"} <= in_c and "hprobe0" not in in_c
    assert "hprobe0" in in_host and "probe0" not in in_host
    assert {lk.name for lk in kernel.nl(host.ctx, c).links()} == {"lo", "probe0", "probe1"}
    # lo was brought up by the netns create.
    assert "UP" in sh("ip", "-n", c, "link", "show", "lo").split(">")[0]
    H().delete(host.ctx, Netns(c, host.project, "web"))
    assert not os.path.exists(f"/run/netns/{c}")


# ---- round trip --------------------------------------------------------------------------------


def test_create_observe_delete_round_trip(host: Host) -> None:
    rs = stack(host, 2)
    create_all(host, rs)
    assert_round_trip(host, rs)
    # What the kernel really has, seen by iproute2.
    c = host.container(1)
    v = next(r for r in rs if isinstance(r, Veth))
    assert "link-netns" in host.ip("-d", "link", "show", v.ifname)
    detail = host.ip("-d", "link", "show", v.ifname)
    assert "hairpin on" in detail and "isolated off" in detail and f"alias {v.label}" in detail
    assert "02:42:ac:12:00:02" in sh("ip", "-n", c, "link", "show", "eth0")
    assert "proto 124" in sh("ip", "-n", c, "route", "show", "default")
    assert "nodad" in sh("ip", "-n", c, "-6", "addr", "show", "eth0")
    assert sh("nsenter", f"--net=/run/netns/{host.name}", "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    # Real traffic between the two containers over the bridge.
    with netns.entered(host.container(2)):
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with netns.entered(c):
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with srv, cli:
        srv.bind(("172.18.0.3", 0))
        srv.settimeout(5)
        cli.sendto(b"hello", srv.getsockname())
        data, peer = srv.recvfrom(100)
    assert (data, peer[0]) == (b"hello", "172.18.0.2")
    assert sorted(os.listdir(os.path.join(host.ctx.project_dir, "netns"))) == [host.container(1), host.container(2)]

    delete_all(host, rs)
    o = host.observe()
    assert [r for r in o.resources.values() if r.kind != "sysctl"] == []
    assert os.listdir(os.path.join(host.ctx.project_dir, "netns")) == []
    assert _leftover_netns(host.project + "-") == []
    assert "cnb-" not in host.ip("link") and "cnv-" not in host.ip("link")


def test_macvlan_round_trip(host: Host) -> None:
    host.ip("link", "add", "par0", "type", "veth", "peer", "name", "par1")
    host.ip("link", "set", "par0", "up")
    c = host.container()
    label = f"composenet:{host.project}/{c}/{host.project}_lan"
    rs: list[Resource] = [
        Netns(c, host.project, "web"),
        Macvlan(c, "eth0", label, "par0", "bridge", 1400, "02:42:c0:a8:01:05"),
        Address(c, "eth0", "192.168.1.5/24"),
        Route(c, "0.0.0.0/0", "192.168.1.1", "eth0"),
    ]
    create_all(host, rs)
    assert_round_trip(host, rs)
    m = rs[1]
    assert isinstance(m, Macvlan)
    after = replace(m, mode="private", mtu=1300)
    H().update(host.ctx, m, after)
    rs[1] = after
    assert_round_trip(host, rs)
    delete_all(host, rs)
    assert [r for r in host.observe().resources.values() if r.kind != "sysctl"] == []


# ---- update in place ---------------------------------------------------------------------------


def test_update_in_place(host: Host) -> None:
    rs = stack(host, 1, v6=False)
    create_all(host, rs)
    br = next(r for r in rs if isinstance(r, Bridge))
    v = next(r for r in rs if isinstance(r, Veth))
    rt = next(r for r in rs if isinstance(r, Route))
    c = v.ns
    idx_before = (host.ip("-o", "link", "show", v.ifname).split(":")[0], sh("ip", "-n", c, "-o", "link", "show", "eth0").split(":")[0])

    br2 = replace(br, mtu=1400, mac="02:42:ac:12:00:fe")
    v2 = replace(v, mtu=1400, mac="02:42:ac:12:00:99", hairpin=False, isolated=True)
    rt2 = replace(rt, gateway="172.18.0.254")
    rt3 = replace(rt2, metric=50)
    for before, after in ((br, br2), (v, v2), (rt, rt2), (rt2, rt3)):
        H().update(host.ctx, before, after)
    new = [br2 if r is br else v2 if r is v else rt3 if r is rt else r for r in rs]
    assert_round_trip(host, new)
    idx_after = (host.ip("-o", "link", "show", v.ifname).split(":")[0], sh("ip", "-n", c, "-o", "link", "show", "eth0").split(":")[0])
    assert idx_after == idx_before  # changed in place, not replaced
    assert "isolated on" in host.ip("-d", "link", "show", v.ifname)
    assert sh("ip", "-n", c, "route", "show", "default").count("default") == 1
    delete_all(host, new)


# ---- drift -------------------------------------------------------------------------------------


def test_drift_by_hand_is_observed(host: Host) -> None:
    rs = stack(host, 1)
    create_all(host, rs)
    br = next(r for r in rs if isinstance(r, Bridge))
    v = next(r for r in rs if isinstance(r, Veth))
    c = v.ns
    host.ip("link", "set", br.ifname, "mtu", "1280")
    host.ip("link", "set", v.ifname, "type", "bridge_slave", "hairpin", "off")
    sh("ip", "-n", c, "route", "add", "10.9.0.0/16", "via", "172.18.0.1")  # not ours: proto boot
    sh("ip", "-n", c, "addr", "del", "172.18.0.2/16", "dev", "eth0")
    sh("ip", "-n", c, "link", "set", "eth0", "mtu", "1300")
    o = host.observe()
    assert o.resources[br.key] == replace(br, mtu=1280)
    assert o.resources[v.key] == replace(v, hairpin=False, mtu=0)  # 0: the two ends disagree
    assert f"addr:{c}:eth0:172.18.0.2/16" not in o.resources
    assert f"addr:{c}:eth0:fd00:1::2/64" in o.resources
    assert not any(r.kind == "route" and "10.9.0.0" in r.key for r in o.resources.values())
    # update repairs the drift
    H().update(host.ctx, o.resources[v.key], v)
    H().update(host.ctx, o.resources[br.key], br)
    H().create(host.ctx, Address(c, "eth0", "172.18.0.2/16"))
    # Removing the address made the kernel drop the default route through it: observed as such.
    assert f"route:{c}:0.0.0.0/0" not in o.resources
    H().create(host.ctx, next(r for r in rs if isinstance(r, Route) and r.dst == "0.0.0.0/0"))
    assert_round_trip(host, rs)
    # a veth deleted by hand is gone from observe
    host.ip("link", "del", v.ifname)
    assert v.key not in host.observe().resources
    delete_all(host, rs)


# ---- foreign objects and host facts -------------------------------------------------------------


def test_foreign_objects_are_constraints_not_resources(host: Host) -> None:
    rs = stack(host, 1, v6=False)
    create_all(host, rs)
    br = next(r for r in rs if isinstance(r, Bridge))
    host.ip("link", "add", "plainbr", "type", "bridge")
    host.ip("addr", "add", "10.77.0.1/24", "dev", "plainbr")
    host.ip("link", "set", "plainbr", "up")
    host.ip("link", "add", "otherbr", "type", "bridge")
    host.ip("link", "set", "otherbr", "alias", "composenet:other/other_default")
    host.ip("addr", "add", "10.88.0.1/24", "dev", "otherbr")
    host.ip("link", "set", "otherbr", "up")
    host.ip("link", "add", "mislab", "type", "bridge")  # our prefix, wrong shape: not a bridge of ours
    host.ip("link", "set", "mislab", "alias", f"composenet:{host.project}/a/b/c")
    host.ip("route", "add", "10.66.0.0/16", "dev", "plainbr", "table", "100")
    host.ip("route", "add", "default", "dev", "plainbr")
    o = host.observe()
    netinfo.host_facts(host.ctx, o)
    assert {r.ifname for r in o.resources.values() if isinstance(r, Bridge)} == {br.ifname}
    assert "10.88.0.0/24" in o.foreign_subnets and "10.77.0.0/24" not in o.foreign_subnets
    assert {"plainbr", "otherbr", "lo"} <= set(o.foreign_links)
    assert "mislab" not in o.foreign_links  # carries this project's label prefix
    assert br.ifname not in o.foreign_links
    assert {"10.77.0.1/24", "10.88.0.1/24"} <= set(o.host_addresses)
    assert "172.18.0.1/16" not in o.host_addresses and not any(a.startswith("127.") for a in o.host_addresses)
    assert {"10.77.0.0/24", "10.88.0.0/24", "10.66.0.0/16"} <= set(o.host_routes)
    assert "172.18.0.0/16" not in o.host_routes and "0.0.0.0/0" not in o.host_routes
    delete_all(host, rs)
    assert "plainbr" in host.ip("link")  # foreign links untouched


# ---- namespaces and asynchronous veth deletion ----------------------------------------------------


def test_netns_delete_then_immediate_recreate(host: Host) -> None:
    rs = stack(host, 1, v6=False)
    create_all(host, rs)
    ns = next(r for r in rs if isinstance(r, Netns))
    # `down` deletes the namespace, which takes the veth with it (asynchronously); `up` at once.
    H().delete(host.ctx, ns)
    assert not os.path.exists(f"/run/netns/{ns.name}")
    inside = [r for r in rs if r is ns or getattr(r, "ns", None) == ns.name]
    assert [r.kind for r in inside] == ["netns", "veth", "address", "route"]
    for r in inside:
        H().create(host.ctx, r)
    assert_round_trip(host, rs)
    # Without recreating: observe waits for the dying veth, then reports nothing of it.
    H().delete(host.ctx, ns)
    o = host.observe()
    assert not any(r.kind == "veth" for r in o.resources.values())
    delete_all(host, [r for r in rs if r not in inside])


def test_veth_delete_then_immediate_recreate(host: Host) -> None:
    rs = stack(host, 1, v6=False)
    create_all(host, rs)
    v = next(r for r in rs if isinstance(r, Veth))
    for _ in range(3):
        H().delete(host.ctx, v)
        H().create(host.ctx, v)
        H().create(host.ctx, next(r for r in rs if isinstance(r, Address) and r.ns))
        H().create(host.ctx, next(r for r in rs if isinstance(r, Route)))
    assert_round_trip(host, rs)
    delete_all(host, rs)


def test_netns_records_and_errors(host: Host) -> None:
    c = host.container()
    ns = Netns(c, host.project, "web")
    H().create(host.ctx, ns)
    with pytest.raises(KernelError, match=rf"create netns {c}: .*File exists \(EEXIST\)"):
        H().create(host.ctx, ns)
    assert os.path.exists(os.path.join(host.ctx.project_dir, "netns", c))  # the first one's record stays
    # A veth to a bridge that does not exist: a clear error, and nothing half-made.
    v = Veth("cnv-nobridge01", f"composenet:{host.project}/{c}/x", c, "eth0", "cnb-missing", 1500, None)
    with pytest.raises(KernelError, match=r"create veth cnv-nobridge01 \(.* eth0\): No such device"):
        H().create(host.ctx, v)
    assert "cnv-nobridge01" not in host.ip("link")
    # A plain file left at /run/netns/<name> (crash before the mount) is reused.
    H().delete(host.ctx, ns)
    open(f"/run/netns/{c}", "w").close()
    assert [r for r in host.observe().resources.values() if r.kind == "netns"] == []
    H().create(host.ctx, ns)
    assert host.observe().resources[ns.key] == ns
    H().delete(host.ctx, ns)
    H().delete(host.ctx, ns)  # deleting what is gone succeeds
    assert not os.path.exists(f"/run/netns/{c}")
    assert os.listdir(os.path.join(host.ctx.project_dir, "netns")) == []


# ---- mount namespace check -------------------------------------------------------------------


def test_mount_namespace_check() -> None:
    code = "from composenet.kernel.links import check_mount_namespace as c; c(); print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout == "ok\n"
    r = subprocess.run(["unshare", "-m", sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "private mount namespace" in r.stderr
    env = dict(os.environ, COMPOSENET_ALLOW_PRIVATE_MOUNTNS="1")
    r = subprocess.run(["unshare", "-m", sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert r.stdout == "ok\n"
    # In process: the error is a ComposenetError with a hint, never a traceback.
    code2 = ("from composenet.kernel.links import check_mount_namespace as c\nfrom composenet.errors import ComposenetError\n"
             "try:\n    c()\nexcept ComposenetError as e:\n    print('refused', bool(e.hint))")
    r = subprocess.run(["unshare", "-m", sys.executable, "-c", code2], capture_output=True, text=True, timeout=30)
    assert r.stdout == "refused True\n"
    assert issubclass(KernelError, ComposenetError)


# ---- normalisation rules (pure) ------------------------------------------------------------------


def test_normalisation_rules() -> None:
    assert normalise.is_link_local("fe80::42:acff:fe12:2/64")
    assert not normalise.is_link_local("fd00:1::2/64") and not normalise.is_link_local("169.254.1.1/16")
    mk = netlink.Rt
    assert normalise.owned_route(mk(2, 0, 254, ROUTE_PROTO, 1, None, "172.18.0.1", 2, 0))
    assert not normalise.owned_route(mk(2, 16, 254, 2, 1, "172.18.0.0", None, 2, 0))  # proto kernel
    assert not normalise.owned_route(mk(10, 0, 254, 9, 1, None, "fe80::1", 2, 1024))  # proto ra
    lo = netlink.Link(1, "lo", netlink.IFF_LOOPBACK | netlink.IFF_UP, 65536, None, "", "", 0, 0, None)
    assert normalise.on_loopback(lo)
    assert normalise.label_parts("composenet:p/p-web-1/p_default", "p") == ["p-web-1", "p_default"]
    assert normalise.label_parts("composenet:pp/x", "p") is None
    assert sysctls.sysctl_path("net.ipv4.conf.eth0.100.rp_filter", "eth0.100") == "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"


# ---- the executor: batched link deletes --------------------------------------------------------


def _plan(h: Host, changes: list) -> object:
    from composenet.core.plan import Plan, Step

    return Plan(h.project, [Step(i, c) for i, c in enumerate(changes)])


def _links(h: Host) -> dict[str, Resource]:
    return {k: v for k, v in h.observe().resources.items() if isinstance(v, Bridge | Veth)}


def test_executor_deletes_host_links_in_one_batch_and_rolls_back(host: Host) -> None:
    """Under the executor, deleting veths and bridges marks them with the project's link group
    and deletes the group in one request at the end; a later failure first finishes those
    deletes, then re-creates what was deleted (same names, same labels)."""
    from composenet.core.plan import Action, Change, Reason
    from composenet.kernel.apply import apply

    rs = stack(host, 2, v6=False)
    create_all(host, rs)
    links = [r for r in rs if isinstance(r, Bridge | Veth)]
    netnses = [r for r in rs if isinstance(r, Netns)]
    group = kernel.doom_group(host.project)
    assert group & 0x80000000 and group == kernel.doom_group(host.project)
    # A foreign link in another group is never touched.
    host.ip("link", "add", "keep0", "type", "bridge")

    # 1. Delete the veths and the bridge, then fail: everything comes back as it was.
    deletes = [Change(Action.delete, r.key, r, None, Reason.orphan) for r in reversed(links)]
    boom = Netns(host.container(1), host.project, "web")  # exists: create fails (EEXIST)
    with pytest.raises(KernelError, match=r"rolled back 3 completed step\(s\)"):
        apply(host.ctx, _plan(host, [*deletes, Change(Action.create, boom.key, None, boom, Reason.missing)]), default_handlers())  # type: ignore[arg-type]
    assert _links(host) == {r.key: r for r in links}
    assert str(group) not in host.ip("-d", "link", "show")

    # 2. Replace a veth (its peer renamed): delete and create under the same host name.
    v1 = next(r for r in links if isinstance(r, Veth))
    v2 = replace(v1, peer="eth7")
    apply(host.ctx, _plan(host, [Change(Action.replace, v1.key, v1, v2, Reason.changed, ("peer",))]), default_handlers())  # type: ignore[arg-type]
    links2 = [v2 if r == v1 else r for r in links]
    assert _links(host) == {r.key: r for r in links2}
    assert "eth7" in sh("ip", "-n", v1.ns, "link", "show")

    # 3. Delete everything (as `down` does): no link of the project is left, the foreign one is.
    gone = [Change(Action.delete, r.key, r, None, Reason.orphan) for r in [*reversed(links2), *netnses]]
    apply(host.ctx, _plan(host, gone), default_handlers())  # type: ignore[arg-type]
    left = host.ip("-o", "link", "show")
    assert "cnv-" not in left and "cnb-" not in left and "keep0" in left
    assert _leftover_netns(host.project + "-") == []
    host.ip("link", "del", "keep0")
