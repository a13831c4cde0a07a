"""What `up` prints by default (composenet/cli/upview.py): a line per network and service from
the plan's changes, and the one-line note of the keys composenet keeps without acting on."""

from __future__ import annotations

from composenet.cli.upview import ignored_note, summary_lines
from composenet.core.plan import Action, Change, Plan, Reason, Step
from composenet.core.resources.links import Address, Bridge, Netns


def step(action: Action, r) -> Step:  # type: ignore[no-untyped-def]
    before, after = (r, None) if action == Action.delete else (None, r)
    return Step(0, Change(action, r.key, before, after, Reason.missing if after else Reason.orphan))


def test_summary_groups_steps_by_network_and_service() -> None:
    br = Bridge(ifname="cnb-1", label="composenet:p/p_front", network="p_front")
    plan = Plan(project="p", steps=[
        step(Action.create, br),
        step(Action.create, Address(ns="", ifname="cnb-1", cidr="10.0.0.1/24")),
        step(Action.create, Netns(name="p-web-1", project="p", service="web")),
        step(Action.create, Address(ns="p-web-1", ifname="eth0", cidr="10.0.0.2/24")),
        step(Action.delete, Netns(name="p-old-1", project="p", service="old")),
    ], networks=[{"name": "p_front", "bridge": "cnb-1", "subnet": "10.0.0.0/24"}],
        containers=[{"name": "p-web-1", "service": "web", "ns": "p-web-1"}])
    assert [line.split() for line in summary_lines(plan)] == [
        ["network", "p_front", "created", "10.0.0.0/24"],
        ["service", "old", "removed"],
        ["service", "web", "created", "1", "container"],
    ]


def test_ignored_keys_are_named_once_grouped_by_key() -> None:
    note = ignored_note(["services.web.image", "services.db.image", "services.web.volumes", "volumes"])
    assert note is not None and note.count("\n") == 0
    assert note.endswith("image (db, web), top-level volumes, volumes (web)"), note
    assert ignored_note([]) is None
