"""`up` of an edited file with a cluster store (root; cluster_lab.py): what the store holds after
a failed `up`, after a network is dropped from the file, with two projects of one host on one
cluster network; and how `network ls`/`network inspect` show a cluster network.

One lab (two simulated hosts and an etcd) is shared by the module; each test brings what it ups
down again and checks that nothing is left, in the kernel or in etcd.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from composenet.core.resources.base import veth_ifname
from tests.integration.cluster_lab import Host, Lab, wait_until
from tests.integration.test_cluster_up import ask

TTL = 3
NETWORK = "shop_fabric"


def compose(services: str, mesh: bool = False) -> str:
    nets = "networks:\n  fabric:\n    driver: overlay\n    ipam: {config: [{subnet: 10.0.5.0/24}]}\n"
    return f"services:\n{services}{nets}" + ("  mesh:\n    driver: overlay\n" if mesh else "")


def sleeper(name: str, nets: str = "[fabric]") -> str:
    return f"  {name}:\n    command: \"sleep 600\"\n    networks: {nets}\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("cluster-edits")
    lab = Lab(tmp, hosts=2)
    try:
        lab.setup()
        lab.start_etcd()
        (tmp / "resolv.conf").write_text("nameserver 192.0.2.53\n")
        yield lab
    finally:
        lab.teardown()
        assert lab.leftovers() == []


def composenet(lab: Lab, h: Host, text: str | None, *args: str, project: str = "shop", check: bool = True,
               store: bool = True):
    """`composenet -p PROJECT ARGS` on ``h`` with the lab's store; ``text``: the project's file."""
    f = lab.tmp / f"{h.name}-{project}.yaml"
    if text is not None:
        f.write_text(text)
    e = {"COMPOSENET_RESOLV_CONF": str(lab.tmp / "resolv.conf"), "COMPOSENET_STORE_TTL": str(TTL)}
    if store:
        e["COMPOSENET_STORE"] = lab.store_url
    return h.run(sys.executable, "-m", "composenet", "-f", str(f), "-p", project, *args, check=check, env=e,
                 timeout=90)


def store_items(lab: Lab) -> dict[str, bytes]:
    """Every key of the cluster but the nodes' (their records carry a last-seen time)."""
    kvs = lab.store(lambda s: s.range("/composenet/v1/")[1])
    return {kv.key: kv.value for kv in kvs if not kv.key.startswith("/composenet/v1/nodes/")}


def store_keys(lab: Lab) -> list[str]:
    return [kv.key for kv in lab.store(lambda s: s.range("/composenet/v1/")[1])]


def records(h: Host, project: str = "shop") -> str | None:
    p = Path(h.path(f"/run/composenet/{project}/cluster.json"))
    return p.read_text() if p.exists() else None


def own_ip(h: Host, container: str) -> str:
    out = h.run("ip", "-n", container, "-4", "-o", "addr", "show", "dev", "eth0").stdout
    return out.split()[3].split("/")[0]


def agent_running(h: Host) -> bool:
    """The host's agent runs (or was left behind: a process of the host runs the agent module)."""
    def cmd(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    return os.path.exists(h.path("/run/composenet/.cluster/agent.pid")) or any(
        b"composenet.cluster.agent" in cmd(pid) for pid in h.processes())


def down_everywhere(lab: Lab, projects: tuple[str, ...] = ("shop",)) -> None:
    for h in lab.hosts:
        for p in projects:
            composenet(lab, h, None, "down", project=p)
    for h in lab.hosts:
        assert os.listdir(h.path("/run/netns")) == [], h.name
        assert h.run("nft", "list", "tables").stdout.strip() == "", h.name
        assert "cnx-" not in h.run("ip", "-o", "link").stdout, h.name
        assert not agent_running(h), h.name
    assert store_keys(lab) == []


def collide(h: Host, project: str, container: str, network: str) -> str:
    """A link (not composenet's) with the name the container's veth on ``network`` gets: its
    create step fails, after the cluster phase of `up`."""
    name = veth_ifname(project, container, network)
    h.run("ip", "link", "add", name, "type", "veth", "peer", "name", name[:-1] + "x")
    return name


def test_a_failed_up_of_a_project_that_is_up_restores_the_store(lab: Lab):
    h1, h2 = lab.hosts
    first = compose(sleeper("api"))
    composenet(lab, h1, first, "up")
    composenet(lab, h2, compose(sleeper("client")), "up")
    try:
        api = own_ip(h1, "shop-api-1")
        items, recs = store_items(lab), records(h1)
        assert f"/composenet/v1/addresses/{NETWORK}/{api}" in items
        # The edit leases an address for extra, whose veth cannot be made (after the cluster
        # phase): the kernel rolls back, and so must the store and the project's cluster.json.
        link = collide(h1, "shop", "shop-extra-1", NETWORK)
        r = composenet(lab, h1, compose(sleeper("api") + sleeper("extra")), "up", check=False)
        assert r.returncode == 1 and f"a link named {link} already exists" in r.stderr, r.stderr
        assert store_items(lab) == items
        assert records(h1) == recs
        assert agent_running(h1)
        assert not os.path.exists(h1.path("/run/netns/shop-extra-1"))
        plan = composenet(lab, h1, first, "plan").stdout
        assert "No changes" in plan, plan + r.stderr
        # An edit that moves api to a static address (its lease replaced, its old address given
        # to extra) fails the same way: api's lease is back, extra's is gone.
        static = "10.0.5.200"
        edited = compose(sleeper("api", f"\n      fabric:\n        ipv4_address: {static}") + sleeper("extra"))
        r = composenet(lab, h1, edited, "up", check=False)
        assert r.returncode == 1 and f"a link named {link} already exists" in r.stderr, r.stderr
        assert store_items(lab) == items
        assert records(h1) == recs
        assert own_ip(h1, "shop-api-1") == api
        # Without the collision the edit applies: api's old lease goes to extra, none leaks.
        h1.run("ip", "link", "del", link)
        composenet(lab, h1, edited, "up")
        extra = own_ip(h1, "shop-extra-1")
        assert own_ip(h1, "shop-api-1") == static and extra == api
        leases = sorted(k.rsplit("/", 1)[1] for k in store_items(lab) if k.startswith("/composenet/v1/addresses/"))
        assert leases == sorted([static, extra, own_ip(h2, "shop-client-1")])
        plan = composenet(lab, h1, None, "plan").stdout
        assert "No changes" in plan, plan
    finally:
        down_everywhere(lab)


def test_a_failed_first_up_leaves_nothing_in_the_store(lab: Lab):
    h1, h2 = lab.hosts
    composenet(lab, h2, compose(sleeper("client")), "up")
    try:
        items = store_items(lab)
        # A plan the cluster refuses (another subnet than the record in use): `up` started the
        # host's agent before planning (to save its start-up time); it is stopped again.
        r = composenet(lab, h1, compose(sleeper("api")).replace("10.0.5.0/24", "10.0.6.0/24"), "up", check=False)
        assert r.returncode == 1 and "the cluster's record" in r.stderr, r.stderr
        assert store_items(lab) == items and not [k for k in store_keys(lab) if k.endswith("/h1")]
        assert not agent_running(h1) and records(h1) is None
        link = collide(h1, "shop", "shop-api-1", NETWORK)
        try:
            r = composenet(lab, h1, compose(sleeper("api")), "up", check=False)
            assert r.returncode == 1 and f"a link named {link} already exists" in r.stderr, r.stderr
        finally:
            h1.run("ip", "link", "del", link)
        assert store_items(lab) == items
        assert not [k for k in store_keys(lab) if k.endswith("/h1") or "/h1/" in k]  # not even its node
        assert records(h1) is None and not agent_running(h1)
        assert os.listdir(h1.path("/run/netns")) == []
    finally:
        down_everywhere(lab)


def test_a_network_dropped_from_the_file_is_left_and_its_record_goes(lab: Lab):
    h1, h2 = lab.hosts
    composenet(lab, h1, compose(sleeper("api", "[fabric, mesh]"), mesh=True), "up")
    composenet(lab, h2, compose(sleeper("client")), "up")
    try:
        assert "/composenet/v1/networks/shop_mesh" in store_items(lab)
        composenet(lab, h1, compose(sleeper("api")), "up")
        items = store_items(lab)
        assert not [k for k in items if "shop_mesh" in k], sorted(items)
        assert f"/composenet/v1/members/{NETWORK}/h1" in items
        assert f"/composenet/v1/addresses/{NETWORK}/{own_ip(h1, 'shop-api-1')}" in items
        assert "shop_mesh" not in (records(h1) or "")
        # A network still used by another host: h2 drops fabric, fabric's record stays for h1.
        composenet(lab, h2, "services:\n" + "  client:\n    command: \"sleep 600\"\n", "up")
        items = store_items(lab)
        assert f"/composenet/v1/networks/{NETWORK}" in items and not [k for k in items if "/h2" in k]
        assert records(h2) is None
    finally:
        down_everywhere(lab)


def shared(services: str, external: bool = False) -> str:
    net = "    external: true\n" if external else "    driver: overlay\n"
    return f"services:\n{services}networks:\n  fabric:\n    name: shared\n{net}"


def test_two_projects_of_one_host_on_one_cluster_network(lab: Lab):
    h1, h2 = lab.hosts
    composenet(lab, h2, shared(sleeper("client")), "up")
    composenet(lab, h1, shared(sleeper("api")), "up")
    try:
        client, api = own_ip(h2, "shop-client-1"), own_ip(h1, "shop-api-1")
        # Declared again (not external): a located error, before anything is made.
        r = composenet(lab, h1, shared(sleeper("web")), "up", project="other", check=False)
        assert r.returncode == 1 and "networks.fabric: network shared is project shop's on this host" in r.stderr, \
            r.stderr
        assert records(h1, "other") is None
        # External: other's container gets an address no host leased (h2's client's is not on
        # h1's bridge), leased and published in the cluster as shop's are.
        composenet(lab, h1, shared(sleeper("web"), external=True), "up", project="other")
        web = own_ip(h1, "other-web-1")
        assert web not in (client, api)
        items = store_items(lab)
        assert b'"container":"other-web-1"' in items[f"/composenet/v1/addresses/shared/{web}"]
        assert "/composenet/v1/endpoints/shared/h1/other-web-1" in items
        # Names across hosts, both ways: h2's client resolves web, other's web resolves client.
        wait_until(lambda: ask(h2, "shop-client-1", "web") == ("NOERROR", [web]), 5, "web on h2")
        wait_until(lambda: ask(h1, "other-web-1", "client") == ("NOERROR", [client]), 5, "client from other-web-1")
        again = composenet(lab, h1, None, "up", project="other")
        assert "No changes" in again.stdout + again.stderr
        # other's `down` withdraws its records only: h1 stays a member for shop.
        composenet(lab, h1, None, "down", project="other")
        items = store_items(lab)
        assert not [k for k in items if "other-web-1" in k] and f"/composenet/v1/addresses/shared/{web}" not in items
        assert "/composenet/v1/members/shared/h1" in items and "/composenet/v1/endpoints/shared/h1/shop-api-1" in items
    finally:
        down_everywhere(lab, ("other", "shop"))


def test_network_ls_and_inspect_of_a_cluster_network(lab: Lab):
    h1, h2 = lab.hosts
    composenet(lab, h1, compose(sleeper("api")), "up")
    composenet(lab, h2, compose(sleeper("client", "\n      fabric:\n        aliases: [front]")), "up")
    try:
        api, client = own_ip(h1, "shop-api-1"), own_ip(h2, "shop-client-1")
        table = composenet(lab, h1, None, "network", "ls").stdout.splitlines()
        assert table[0].split()[:3] == ["NAME", "DRIVER", "SCOPE"]
        assert [line.split()[:3] for line in table[1:]] == [[NETWORK, "overlay", "swarm"]]
        rows = json.loads(composenet(lab, h1, None, "network", "ls", "--format", "json").stdout)
        assert [(r["name"], r["scope"]) for r in rows] == [(NETWORK, "swarm")]
        [net] = json.loads(composenet(lab, h1, None, "network", "inspect", NETWORK).stdout)
        assert net["Scope"] == "swarm" and net["Driver"] == "overlay"
        assert net["Peers"] == [{"Name": "h1", "IP": h1.addr}, {"Name": "h2", "IP": h2.addr}]
        assert [(e["Name"], e["Node"], e["Service"], e["IPv4Address"], e["Aliases"]) for e in net["Endpoints"]] == [
            ("shop-api-1", "h1", "api", f"{api}/24", []), ("shop-client-1", "h2", "client", f"{client}/24", ["front"])]
        assert [c["Name"] for c in net["Containers"].values()] == ["shop-api-1"]  # the local ones, as Docker's
        out = composenet(lab, h1, None, "network", "inspect", NETWORK, "-f",
                         "{{range .Peers}}{{.Name}}={{.IP}} {{end}}").stdout
        assert out.split() == [f"h1={h1.addr}", f"h2={h2.addr}"]
        # Without a store: the local view (scope from this host's records), no peers.
        [net] = json.loads(composenet(lab, h1, None, "network", "inspect", NETWORK, store=False).stdout)
        assert net["Scope"] == "swarm" and "Peers" not in net and "Endpoints" not in net
    finally:
        down_everywhere(lab)


def test_an_up_that_did_not_publish_is_completed_by_the_next(lab: Lab):
    h1, _ = lab.hosts
    composenet(lab, h1, compose(sleeper("api")), "up")
    try:
        key = f"/composenet/v1/endpoints/{NETWORK}/h1/shop-api-1"
        assert key in store_items(lab)
        # As after an `up` whose kernel steps were applied but whose publishing failed (the store
        # went away): the endpoint is neither in the store nor in the project's records.
        path = Path(h1.path("/run/composenet/shop/cluster.json"))
        obj = json.loads(path.read_text())
        obj["endpoints"] = []
        path.write_text(json.dumps(obj))
        lab.store(lambda s: s.delete(key))
        assert key not in store_items(lab)
        again = composenet(lab, h1, None, "up")
        assert "No changes" in again.stdout + again.stderr  # the kernel had it all
        assert key in store_items(lab)
        assert [e["container"] for e in json.loads(path.read_text())["endpoints"]] == ["shop-api-1"]
    finally:
        down_everywhere(lab)
