"""The forwarding guard (composenet/kernel/guard.py) over a fake kernel: its sysctls are files
under a temporary /proc/sys (writing a family's switch resets every interface's own value, as
the kernel does), and its nft table is a small model that reads back exactly what the guard
loaded. What the real kernel does with the table is tests/integration/test_security.py's."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from composenet.core.resources import GUARD_TABLE, ForwardingGuard
from composenet.core.state import ObservedState
from composenet.errors import KernelError
from composenet.kernel import guard
from composenet.kernel.context import Context

FAMILY_SWITCH = {"ipv4": "net/ipv4/ip_forward", "ipv6": "net/ipv6/conf/all/forwarding"}


class FakeKernel:
    """/proc/sys under ``root`` and the guard table as nft would list it."""

    def __init__(self, root: Path, interfaces: tuple[str, ...] = ("lo", "eth0", "eth1")):
        self.root = root
        self.table: dict[str, Any] | None = None  # {"elems": [(name, comment)], "drops": [family]}
        self.loads = 0
        self.fail_load = False
        self.lock = threading.Lock()
        for fam in ("ipv4", "ipv6"):
            for dev in ("all", "default", *interfaces):
                self.set(f"net/{fam}/conf/{dev}/forwarding", "0")
        self.set("net/ipv4/ip_forward", "0")

    def set(self, rel: str, value: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(value + "\n")

    def get(self, rel: str) -> str:
        return (self.root / rel).read_text().strip()

    def write(self, path: str, value: str, what: str) -> None:
        """A sysctl write: a family's switch also sets ``default`` and every interface."""
        rel = str(Path(path).relative_to(self.root))
        for fam, switch in FAMILY_SWITCH.items():
            if rel == switch:
                for d in (self.root / "net" / fam / "conf").iterdir():
                    self.set(f"net/{fam}/conf/{d.name}/forwarding", value)
                if fam == "ipv4":
                    self.set("net/ipv4/ip_forward", value)
                return
        self.set(rel, value)

    def load(self, text: str, what: str) -> None:
        with self.lock:
            if self.fail_load:
                raise KernelError(f"nft could not load {what} (nothing was changed)")
            self.loads += 1
            if f"table inet {GUARD_TABLE} {{" not in text:
                self.table = None
                return
            elems = re.search(r"elements = \{ (.*) \};", text)
            items = re.findall(r'"([^"]+)"(?: comment "([^"]*)")?', elems[1]) if elems else []
            self.table = {"elems": [(n, c or None) for n, c in items],
                          "drops": re.findall(r'comment "cn:forwarding guard (ipv[46])', text)}

    def list_table(self, family: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            if self.table is None or (family, name) != ("inet", GUARD_TABLE):
                return None
            elems = [{"elem": {"val": n, "comment": c}} if c else n for n, c in self.table["elems"]]
            items: list[dict[str, Any]] = [{"table": {"family": "inet", "name": GUARD_TABLE}},
                                           {"set": {"name": "bridges", "type": "ifname", "elem": elems}}]
            items += [{"rule": {"chain": "forward", "comment": f"cn:forwarding guard {f}: ..."}} for f in self.table["drops"]]
            return {"nftables": items}

    def members(self) -> dict[str, str | None]:
        return dict(self.table["elems"]) if self.table else {}


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    k = FakeKernel(tmp_path / "proc-sys")
    monkeypatch.setattr(guard, "PROC_SYS", str(k.root))
    monkeypatch.setattr(guard, "_write", k.write)
    monkeypatch.setattr(guard.nft, "load", k.load)
    monkeypatch.setattr(guard.nft, "list_table", k.list_table)
    monkeypatch.setattr(guard, "netns_id", lambda: "cookie:7")
    return k


def run_dir(tmp_path: Path) -> str:
    return str(tmp_path / "run")


def record(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "run" / ".forwarding.json"
    return json.loads(path.read_text()) if path.exists() else {}


def member(project: str, *bridges: str, families: tuple[str, ...] = ("ipv4",)) -> ForwardingGuard:
    return ForwardingGuard(project, tuple(bridges), families)


def observe(tmp_path: Path, project: str) -> ForwardingGuard | None:
    st = ObservedState()
    guard.GuardHandler().observe(Context(project=project, run_dir=run_dir(tmp_path)), st)
    r = st.resources.get(f"guard:{project}")
    assert r is None or isinstance(r, ForwardingGuard)
    return r


def test_join_records_turns_on_and_guards_then_the_last_leave_restores(kernel: FakeKernel, tmp_path: Path) -> None:
    rd = run_dir(tmp_path)
    guard.sync(rd, "a", member("a", "cnb-a1", "cnb-a2"))
    assert kernel.get("net/ipv4/ip_forward") == "1"
    assert record(tmp_path) == {"cookie:7": {"ipv4": {"value": "0", "conf": {}}}}
    assert kernel.members() == {"cnb-a1": "composenet:a ipv4", "cnb-a2": "composenet:a ipv4"}
    assert kernel.table is not None and kernel.table["drops"] == ["ipv4"]
    assert observe(tmp_path, "a") == ForwardingGuard("a", ("cnb-a1", "cnb-a2"), ("ipv4",), ("net.ipv4.ip_forward = 0",),
                                                      True)
    # A second project joins: nothing recorded again (forwarding is on now, but it was not).
    guard.sync(rd, "b", member("b", "cnb-b1"))
    assert record(tmp_path)["cookie:7"]["ipv4"]["value"] == "0"
    seen_a = observe(tmp_path, "a")
    assert seen_a is not None and seen_a.restores == () and not seen_a.last
    guard.sync(rd, "a", None)
    assert kernel.get("net/ipv4/ip_forward") == "1" and kernel.members() == {"cnb-b1": "composenet:b ipv4"}
    assert observe(tmp_path, "a") is None
    guard.sync(rd, "b", None)
    assert kernel.get("net/ipv4/ip_forward") == "0"
    assert kernel.table is None and record(tmp_path) == {}
    assert not (tmp_path / "run" / ".forwarding.json").exists()


def test_a_host_that_routes_gets_no_drop_rule_and_keeps_routing(kernel: FakeKernel, tmp_path: Path) -> None:
    kernel.write(str(kernel.root / "net/ipv4/ip_forward"), "1", "")
    rd = run_dir(tmp_path)
    guard.sync(rd, "a", member("a", "cnb-a1"))
    assert kernel.table is not None and kernel.table["drops"] == []
    assert record(tmp_path)["cookie:7"]["ipv4"]["value"] == "1"
    seen = observe(tmp_path, "a")
    assert seen is not None and seen.families == ("ipv4",) and seen.restores == () and seen.last
    guard.sync(rd, "a", None)
    assert kernel.get("net/ipv4/ip_forward") == "1" and kernel.table is None and record(tmp_path) == {}


def test_interfaces_with_their_own_value_are_restored_exactly(kernel: FakeKernel, tmp_path: Path) -> None:
    """Writing the switch resets every interface: those that differed are put back."""
    kernel.set("net/ipv4/conf/eth1/forwarding", "1")
    kernel.set("net/ipv6/conf/default/forwarding", "1")
    before = {p: p.read_text() for p in kernel.root.rglob("forwarding")} | {
        "switch": kernel.get("net/ipv4/ip_forward")}
    rd = run_dir(tmp_path)
    guard.sync(rd, "a", member("a", "cnb-a1", families=("ipv4", "ipv6")))
    assert record(tmp_path)["cookie:7"] == {"ipv4": {"value": "0", "conf": {"eth1": "1"}},
                                            "ipv6": {"value": "0", "conf": {"default": "1"}}}
    assert kernel.get("net/ipv4/conf/eth0/forwarding") == "1" and kernel.get("net/ipv6/conf/all/forwarding") == "1"
    guard.sync(rd, "a", None)
    after = {p: p.read_text() for p in kernel.root.rglob("forwarding")} | {"switch": kernel.get("net/ipv4/ip_forward")}
    assert after == before


def test_each_family_is_restored_by_the_last_project_that_needs_it(kernel: FakeKernel, tmp_path: Path) -> None:
    rd = run_dir(tmp_path)
    guard.sync(rd, "four", member("four", "cnb-4"))
    guard.sync(rd, "dual", member("dual", "cnb-6", families=("ipv4", "ipv6")))
    assert kernel.table is not None and kernel.table["drops"] == ["ipv4", "ipv6"]
    seen = observe(tmp_path, "dual")
    assert seen is not None and seen.restores == ("net.ipv6.conf.all.forwarding = 0",) and not seen.last
    guard.sync(rd, "dual", None)
    assert kernel.get("net/ipv6/conf/all/forwarding") == "0" and kernel.get("net/ipv4/ip_forward") == "1"
    assert kernel.table is not None and kernel.table["drops"] == ["ipv4"]
    assert set(record(tmp_path)["cookie:7"]) == {"ipv4"}
    # A project whose networks are all internal joins without needing forwarding.
    guard.sync(rd, "quiet", member("quiet", "cnb-q", families=()))
    assert kernel.members()["cnb-q"] == "composenet:quiet"
    guard.sync(rd, "four", None)
    assert kernel.get("net/ipv4/ip_forward") == "0" and record(tmp_path) == {}
    assert kernel.members() == {"cnb-q": "composenet:quiet"} and kernel.table["drops"] == []
    guard.sync(rd, "quiet", None)
    assert kernel.table is None


def test_an_element_composenet_did_not_label_is_kept(kernel: FakeKernel, tmp_path: Path) -> None:
    """An administrator's bridge (another engine started after composenet) stays in the set."""
    rd = run_dir(tmp_path)
    guard.sync(rd, "a", member("a", "cnb-a1"))
    assert kernel.table is not None
    kernel.table["elems"].append(("lxdbr0", None))
    guard.sync(rd, "b", member("b", "cnb-b1"))
    assert kernel.members()["lxdbr0"] is None
    guard.sync(rd, "a", None)
    assert "lxdbr0" in kernel.members()
    guard.sync(rd, "b", None)
    assert kernel.table is None and kernel.get("net/ipv4/ip_forward") == "0"


def test_a_long_project_name_is_labelled_by_its_hash(kernel: FakeKernel, tmp_path: Path) -> None:
    long = "p" * 130
    guard.sync(run_dir(tmp_path), long, member(long, "cnb-l"))
    comment = kernel.members()["cnb-l"]
    assert comment is not None and comment.startswith("composenet:#") and len(comment) <= 128
    seen = observe(tmp_path, long)
    assert seen is not None and seen.bridges == ("cnb-l",)
    assert observe(tmp_path, "p" * 129) is None


def test_killed_before_the_table_the_recorded_value_wins(kernel: FakeKernel, tmp_path: Path) -> None:
    """The record is written before anything changes: a run that dies after it leaves the host's
    value recorded, and the next run restores that one, not what it finds then."""
    rd = run_dir(tmp_path)
    kernel.fail_load = True
    with pytest.raises(KernelError):
        guard.sync(rd, "a", member("a", "cnb-a1"))
    assert record(tmp_path)["cookie:7"]["ipv4"]["value"] == "0"
    assert kernel.get("net/ipv4/ip_forward") == "0" and kernel.table is None  # nothing else changed
    kernel.fail_load = False
    guard.sync(rd, "a", member("a", "cnb-a1"))
    guard.sync(rd, "a", None)
    assert kernel.get("net/ipv4/ip_forward") == "0" and record(tmp_path) == {}


def test_a_guard_deleted_by_hand_is_seen_and_rebuilt_from_the_record(kernel: FakeKernel, tmp_path: Path) -> None:
    rd = run_dir(tmp_path)
    guard.sync(rd, "a", member("a", "cnb-a1"))
    kernel.table = None  # nft flush ruleset
    assert observe(tmp_path, "a") is None  # the plan shows the membership to create again
    guard.sync(rd, "a", member("a", "cnb-a1"))
    assert kernel.table is not None and kernel.table["drops"] == ["ipv4"]  # recorded 0, not today's 1
    guard.sync(rd, "a", None)
    assert kernel.get("net/ipv4/ip_forward") == "0"


def test_forwarding_turned_off_by_hand_or_a_missing_drop_rule_is_drift(kernel: FakeKernel, tmp_path: Path) -> None:
    rd = run_dir(tmp_path)
    want = member("a", "cnb-a1")
    guard.sync(rd, "a", want)
    seen = observe(tmp_path, "a")
    assert seen is not None and seen.compared() == want.compared()
    kernel.write(str(kernel.root / "net/ipv4/ip_forward"), "0", "")
    seen = observe(tmp_path, "a")
    assert seen is not None and seen.families == () and seen.compared() != want.compared()
    guard.sync(rd, "a", want)
    assert kernel.get("net/ipv4/ip_forward") == "1"
    assert kernel.table is not None
    kernel.table["drops"] = []
    seen = observe(tmp_path, "a")
    assert seen is not None and seen.families == ()
    guard.sync(rd, "a", want)
    assert kernel.table["drops"] == ["ipv4"]


def test_concurrent_changes_serialise_on_the_lock(kernel: FakeKernel, tmp_path: Path) -> None:
    """Memberships changed from many threads at once (as many `up`s and `down`s would): none is
    lost, and the record is written once."""
    rd = run_dir(tmp_path)
    errors: list[BaseException] = []

    def join(i: int) -> None:
        try:
            guard.sync(rd, f"p{i}", member(f"p{i}", f"cnb-{i}"))
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    threads = [threading.Thread(target=join, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(kernel.members()) == 8
    assert record(tmp_path)["cookie:7"]["ipv4"]["value"] == "0"
    leave = [threading.Thread(target=guard.sync, args=(rd, f"p{i}", None)) for i in range(8)]
    for t in leave:
        t.start()
    for t in leave:
        t.join(30)
    assert kernel.table is None and kernel.get("net/ipv4/ip_forward") == "0" and record(tmp_path) == {}


def test_records_of_other_namespaces_are_left_alone(kernel: FakeKernel, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    rd = run_dir(tmp_path)
    (tmp_path / "run").mkdir()
    other = {"cookie:99": {"ipv4": {"value": "1", "conf": {}}}}
    (tmp_path / "run" / ".forwarding.json").write_text(json.dumps(other))
    guard.sync(rd, "a", member("a", "cnb-a1"))
    assert record(tmp_path) == {**other, "cookie:7": {"ipv4": {"value": "0", "conf": {}}}}
    assert kernel.table is not None and kernel.table["drops"] == ["ipv4"]
    guard.sync(rd, "a", None)
    assert record(tmp_path) == other


def test_the_guard_ruleset_text() -> None:
    text = guard.guard_ruleset({"cnb-a": ("a", ("ipv4", "ipv6")), "lxdbr0": ("", ())}, ["ipv4"],
                               {"ipv4": {"value": "0"}, "ipv6": {"value": "1"}})
    assert text.startswith(f"table inet {GUARD_TABLE}\ndelete table inet {GUARD_TABLE}\n")
    assert 'elements = { "cnb-a" comment "composenet:a ipv4 ipv6", "lxdbr0" };' in text
    assert "host forwarding before: ipv4 0, ipv6 1" in text
    assert text.count(" drop ") == 1 and "meta nfproto ipv4 iifname != @bridges oifname != @bridges counter drop" in text


def test_describe_says_what_leaving_does() -> None:
    assert ForwardingGuard("a", ("cnb-1",), ("ipv4",)).describe() == (
        f"guard    forwarding (ipv4) for cnb-1: inet {GUARD_TABLE}")
    assert ForwardingGuard("a", ("cnb-1",), ("ipv4",), ("net.ipv4.ip_forward = 0",), True).describe().endswith(
        "; as the last to need it, leaving restores net.ipv4.ip_forward = 0 and removes the table")
    assert ForwardingGuard("a", ("cnb-1",), (), (), True).describe() == (
        f"guard    no forwarding for cnb-1: inet {GUARD_TABLE}; as its last member, leaving removes the table")


def test_a_replaced_membership_never_leaves_in_between(kernel: FakeKernel, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan that replaces the membership (delete, then create: a network added or removed)
    changes it in one sync: the only project never restores forwarding on the way."""
    from composenet.core.plan import Action, Change, Plan, Reason, Step

    rd = run_dir(tmp_path)
    before, after = member("a", "cnb-1"), member("a", "cnb-1", "cnb-2", families=("ipv4", "ipv6"))
    guard.sync(rd, "a", before)
    writes: list[tuple[str, str]] = []

    def write(path: str, value: str, what: str) -> None:
        writes.append((path, value))
        kernel.write(path, value, what)

    monkeypatch.setattr(guard, "_write", write)
    h = guard.GuardHandler()
    ctx = Context(project="a", run_dir=rd)
    h.check(ctx, Plan("a", [Step(0, Change(Action.replace, before.key, before, after, Reason.changed, ("bridges",)))]))
    h.delete(ctx, before)
    assert kernel.members() == {"cnb-1": "composenet:a ipv4"} and writes == []
    h.create(ctx, after)
    assert kernel.members() == {"cnb-1": "composenet:a ipv4 ipv6", "cnb-2": "composenet:a ipv4 ipv6"}
    assert not [v for _p, v in writes if v == "0"]
    # A delete that is not part of a replace leaves for real.
    h.delete(ctx, after)
    assert kernel.table is None and kernel.get("net/ipv4/ip_forward") == "0"
