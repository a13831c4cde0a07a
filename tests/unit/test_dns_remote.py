"""Names from other hosts (composenet/dns/remote.py) and which processes are this host's
(composenet/dns/running.py): the names files the cluster agent writes, what a resolver merges of
them (its networks only, this host namespace only, bad records skipped, clashing names
qualified with the node) and the answers its zone gives; a resolver found by command line only
when it is of this host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from composenet.cluster.client import KV
from composenet.cluster.mirror import ClusterView, name_records
from composenet.cluster.records import EndpointRecord, encode
from composenet.dns import peers, remote, running
from composenet.dns.zone import build_zone
from composenet.linux import proc


def rec(node: str, name: str, service: str, ip: str, net: str = "fab", aliases: tuple[str, ...] = ()) -> dict:
    view = ClusterView.of_kvs(1, [KV(f"/composenet/v1/endpoints/{net}/{node}/{name}",
                                     encode(EndpointRecord(net, name, service, ip, "02:42:0a:00:00:09", node,
                                                           "192.0.2.9", aliases=aliases)))])
    return name_records(view, net, "me")[0]


def config(run: Path) -> tuple[dict, str]:
    cfg = {"project": "p", "pidfile": str(run / "p" / "dns.pid"), "upstreams": [],
           "listeners": [{"network": "fab", "address": "10.0.0.1", "internal": False},
                         {"network": "p_loc", "address": "172.31.0.1", "internal": True}],
           "containers": [
               {"name": "p-web-1", "service": "web", "endpoints": [{"network": "fab", "ipv4": "10.0.0.2"}]},
               {"name": "p-c-1", "service": "c", "endpoints": [{"network": "p_loc", "ipv4": "172.31.0.2",
                                                                "internal": True}]}]}
    path = run / "p" / "dns.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return cfg, str(path)


def test_names_files_are_written_only_when_they_change(tmp_path):
    run = str(tmp_path)
    records = [rec("h2", "p-b-1", "b", "10.0.0.3")]
    assert remote.write_names(run, "fab", "h1", 4, records) is True
    assert remote.write_names(run, "fab", "h1", 5, records) is False  # same names: untouched
    assert remote.written_networks(run) == {"fab"}
    assert remote.read_names(run, "fab") == records
    assert remote.remove_names(run, "fab") and not remote.remove_names(run, "fab")
    assert remote.written_networks(run) == set() and remote.read_names(run, "fab") == []


def test_a_resolver_merges_the_remote_names_of_its_networks(tmp_path):
    run = tmp_path
    cfg, path = config(run)
    remote.write_names(str(run), "fab", "h1", 4, [
        rec("h2", "p-b-1", "b", "10.0.0.3", aliases=("alias-b",)),
        rec("h2", "p-web-1", "web", "10.0.0.4"),  # the same container name as a local one
        {**rec("h3", "p-bad-1", "bad", "10.0.0.5"), "endpoints": [{"network": "fab", "ipv4": "not-an-ip"}]},
        {**rec("h3", "p-nonode-1", "x", "10.0.0.6"), "node": ""},
    ])
    remote.write_names(str(run), "elsewhere", "h1", 4, [rec("h2", "p-e-1", "e", "10.9.0.3", net="elsewhere")])
    found = remote.gather(cfg, path)
    assert [(c["name"], c["node"]) for c in found] == [("p-b-1", "h2"), ("p-web-1", "h2")]
    merged = remote.merge(peers.merge(cfg, []), found)
    assert [c["name"] for c in merged["containers"]] == ["p-web-1", "p-c-1", "p-b-1", "p-web-1.h2"]
    zone = build_zone(merged)
    web = zone.views["10.0.0.2"]  # the local container on fab

    def answers(view, name: str) -> list[bytes] | None:
        entry = view.table.get(b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00\x00\x01\x00\x01")
        return None if entry is None else sorted(entry[2])

    assert answers(web, "b") is not None and bytes([10, 0, 0, 3]) in answers(web, "b")[0]
    assert bytes([10, 0, 0, 3]) in answers(web, "alias-b")[0]
    both = answers(web, "web")[0]
    assert bytes([10, 0, 0, 2]) in both and bytes([10, 0, 0, 4]) in both  # replicas on both hosts
    assert bytes([10, 0, 0, 4]) not in answers(web, "p-web-1")[0]  # the local container wins its name
    assert bytes([10, 0, 0, 4]) in answers(web, "p-web-1.h2")[0]
    loc = zone.views["172.31.0.2"]  # on the local network only: never sees the cluster's names
    assert answers(loc, "b") is None and b"\x01b\x00" in loc.project  # a project name: NXDOMAIN
    assert answers(web, "e") is None  # another network's file is not merged


def test_names_of_another_host_namespace_or_outside_a_run_dir_are_ignored(tmp_path):
    cfg, path = config(tmp_path)
    remote.write_names(str(tmp_path), "fab", "h1", 4, [rec("h2", "p-b-1", "b", "10.0.0.3")])
    names = Path(remote.names_path(str(tmp_path), "fab"))
    data = json.loads(names.read_text())
    data["host_netns"] += 1
    names.write_text(json.dumps(data))
    assert remote.gather(cfg, path) == []
    elsewhere = tmp_path / "dns.json"
    elsewhere.write_text(json.dumps(cfg))
    assert remote.gather(cfg, str(elsewhere)) == []


def test_a_resolver_found_by_command_line_only_when_it_is_this_hosts(tmp_path):
    cfg = tmp_path / "p" / "dns.json"
    cfg.parent.mkdir()
    # Not a resolver: a sleeper whose command line ends like one (argv[-3:-1] = module, config).
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", running.RESOLVER_MODULE, str(cfg)])
    try:
        for _ in range(500):  # bounded: until the child has exec'd (before, /proc shows our argv)
            if running.RESOLVER_MODULE in proc.cmdline(p.pid):
                break
            time.sleep(0.01)
        assert running.of_this_host(p.pid, str(cfg)) and running.of_this_host(os.getpid(), str(cfg))
        assert running.started_on(str(cfg)) == [p.pid]
        assert running.started_on(str(tmp_path / "q" / "dns.json")) == []
        # A process that sees another directory at that path is another host's (here: the path's
        # directory does not exist for it; between simulated hosts it is another tmpfs).
        assert not running.of_this_host(p.pid, "/nonexistent/dir/dns.json")
    finally:
        p.kill()
        p.wait()
    assert running.started_on(str(cfg)) == []
