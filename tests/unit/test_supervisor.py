"""Pure parts of the supervisor and of what it runs with: restart policies and their backoff,
capabilities (Docker's default set, cap_add/cap_drop, what each user gets), held ports, link
intents, the words `ps` uses. No root, no kernel (holding a port binds on loopback only)."""

from __future__ import annotations

import dataclasses
import errno
import socket

import pytest

from composenet.compose.values import ValueProblem, parse_restart
from composenet.core.resources import Process
from composenet.core.status import ContainerStatus, state_text
from composenet.kernel import intents
from composenet.linux import capnames, caps
from composenet.linux.netlink import Link
from composenet.supervisor import holder, policy

# ---- restart policies -----------------------------------------------------------------------------


@pytest.mark.parametrize("text,mode,retries", [
    (None, "no", None), ("no", "no", None), ("always", "always", None), ("unless-stopped", "unless-stopped", None),
    ("on-failure", "on-failure", None), ("on-failure:3", "on-failure", 3), (" on-failure:0 ", "on-failure", 0),
])
def test_policy_forms(text: str | None, mode: str, retries: int | None):
    p = policy.parse(text)
    assert (p.mode, p.max_retries) == (mode, retries)
    if text is not None:  # the loader accepts exactly what the supervisor reads
        assert policy.parse(parse_restart(text)) == p


@pytest.mark.parametrize("text", ["yes", "on-failure:", "on-failure:-1", "always:2", "On-Failure", ""])
def test_policy_refused_forms(text: str):
    with pytest.raises(ValueError):
        policy.parse(text)
    with pytest.raises(ValueProblem, match="invalid restart policy"):
        parse_restart(text)


def test_yaml_false_is_no():
    assert parse_restart(False) == "no"


def test_policy_decisions():
    on_failure_2 = policy.parse("on-failure:2")
    assert [on_failure_2.restarts(1, n) for n in range(4)] == [True, True, False, False]  # 1 run + 2 restarts
    assert not on_failure_2.restarts(0, 0)  # a success is not a failure
    assert policy.parse("on-failure").restarts(9, 1000)
    assert policy.parse("always").restarts(0, 1000) and policy.parse("unless-stopped").restarts(3, 7)
    assert not policy.parse("no").restarts(1, 0)


def test_backoff_doubles_from_a_tenth_of_a_second_up_to_a_minute():
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]
    assert policy.delay(20) == policy.MAX_DELAY == 60.0


# ---- capabilities ---------------------------------------------------------------------------------


def test_docker_default_set():
    assert capnames.bounding_set() == 0xA80425FB  # moby's DefaultCapabilities, as `setpriv` shows it
    assert "NET_ADMIN" not in capnames.names(capnames.bounding_set())
    assert "NET_RAW" in capnames.names(capnames.bounding_set())


def test_cap_add_and_drop_as_docker_reads_them():
    assert capnames.canonical("cap_net_admin") == capnames.canonical(" NET_ADMIN") == "NET_ADMIN"
    assert capnames.canonical("all") == "ALL" and capnames.canonical("CAP_FLY") is None
    default = capnames.bounding_set()
    assert capnames.bounding_set(["NET_ADMIN"], ["NET_RAW"]) == (default | 1 << 12) & ~(1 << 13)
    assert capnames.bounding_set(["ALL"], ["SYS_ADMIN"]) == capnames.mask(capnames.NAMES) & ~(1 << 21)
    assert capnames.bounding_set(["NET_BIND_SERVICE"], ["ALL"]) == 1 << 10


def test_privileges_per_user():
    root = caps.Privileges.of(0, caps.Request())
    assert (root.privileged, root.nonroot, root.grant) == (False, False, capnames.bounding_set())
    assert 12 in root.drop and 13 not in root.drop  # NET_ADMIN dropped, NET_RAW kept
    nobody = caps.Privileges.of(65534, caps.Request())
    assert (nobody.nonroot, nobody.grant, nobody.bounding) == (True, 0, capnames.bounding_set())
    bind = caps.Privileges.of(1000, caps.Request(cap_add=("NET_BIND_SERVICE",)))
    assert bind.grant == 1 << 10  # raised as ambient: a non-root cap_add is usable (Podman; not Docker)
    priv = caps.Privileges.of(1000, caps.Request(privileged=True))
    assert priv.privileged and priv.drop == ()


@pytest.mark.parametrize("user,add,drop,privileged,text", [
    (None, (), (), False, "root, default capabilities"),
    ("0:0", ("NET_ADMIN",), ("NET_RAW",), False, "root, default capabilities +NET_ADMIN -NET_RAW"),
    (None, ("ALL",), ("SYS_ADMIN",), False, "root, every capability but SYS_ADMIN"),
    ("root", ("NET_BIND_SERVICE",), ("ALL",), False, "root, capabilities NET_BIND_SERVICE"),
    ("nobody", (), (), False, "user nobody, no capabilities"),
    ("1000:1000", ("NET_BIND_SERVICE",), (), False, "user 1000:1000, capabilities NET_BIND_SERVICE"),
    ("nobody", (), (), True, "privileged: every capability"),
])
def test_what_plan_and_ps_say(user: str | None, add: tuple, drop: tuple, privileged: bool, text: str):
    p = Process("p-a-1", "a", "p-a-1", ("x",), user=user, cap_add=add, cap_drop=drop, privileged=privileged)
    assert p.privileges() == text
    assert dataclasses.replace(p, restart="always").privileges() == text + "; restart always"


# ---- held ports -----------------------------------------------------------------------------------


def test_a_held_port_cannot_be_bound_even_with_reuseaddr():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    h = holder.Holder()
    spec = f"tcp/127.0.0.1/{port}"
    assert h.hold([spec, f"udp/127.0.0.1/{port}"]) == []
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        other = socket.socket(socket.AF_INET, kind)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError) as ei:
            other.bind(("127.0.0.1", port))
        other.close()
        assert ei.value.errno == errno.EADDRINUSE
    second = holder.Holder()
    assert second.hold([spec]) == [(spec, "address already in use")]
    h.hold([f"udp/127.0.0.1/{port}"])  # lets the TCP port go, keeps the UDP one
    assert second.hold([spec]) == [] and second.specs() == [spec]
    second.release()
    h.release()
    assert h.specs() == [] and holder.Holder().hold([spec]) == []


def test_a_held_port_moves_to_another_address_and_stays_held_when_it_cannot():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    h = holder.Holder()
    loop, anyaddr = f"tcp/127.0.0.1/{port}", f"tcp/0.0.0.0/{port}"
    assert h.hold([loop]) == []
    # --publish-localhost-only dropped: 127.0.0.1 -> 0.0.0.0, which cannot be bound beside it.
    assert h.hold([anyaddr]) == [] and h.specs() == [anyaddr]
    assert h.hold([loop]) == [] and h.specs() == [loop]
    # Another program holds the port on another address: the move fails, the old one stays held.
    other = socket.socket()
    other.bind(("127.0.0.2", port))
    try:
        assert h.hold([anyaddr]) == [(anyaddr, "address already in use")]
        assert h.specs() == [loop]
        probe = socket.socket()
        with pytest.raises(OSError) as ei:
            probe.bind(("127.0.0.1", port))
        probe.close()
        assert ei.value.errno == errno.EADDRINUSE
    finally:
        other.close()
        h.release()
    assert h.specs() == []


def test_held_port_specs():
    assert holder.parse("tcp/::/53") == ("tcp", "::", 53)
    with pytest.raises(ValueError):
        holder.parse("sctp/0.0.0.0/1")


# ---- link intents ---------------------------------------------------------------------------------


def link(index: int, name: str, alias: str = "") -> Link:
    return Link(index, name, 0, 1500, None, alias, "bridge", 0, 0, None)


def test_an_intent_makes_an_unlabelled_link_the_projects_only_by_name_and_index():
    mine = intents.Intent("bridge", "", "cnb-1", "composenet:p/p_n", 1 << 25)
    other_project = intents.Intent("bridge", "", "cnb-3", "composenet:q/q_n", 1 << 26)
    links = [link(1 << 25, "cnb-1"), link(7, "cnb-2"), link(99, "cnb-1x"), link(1 << 26, "cnb-3"),
             link(5, "cnb-4", "composenet:p/p_m")]
    got, real = intents.adopt(links, [mine, other_project], "", "p")
    assert [lk.alias for lk in got] == ["composenet:p/p_n", "", "", "", "composenet:p/p_m"]
    assert real == {1 << 25: ""}
    same_name_other_index = [link(1234, "cnb-1")]  # someone else's link with the name: stays foreign
    assert intents.adopt(same_name_other_index, [mine], "", "p") == (same_name_other_index, {})
    labelled = [link(1 << 25, "cnb-1", "composenet:p/p_n")]  # finished: nothing to adopt
    assert intents.adopt(labelled, [mine], "", "p") == (labelled, {})
    in_ns = intents.Intent("macvlan", "p-a-1", "eth0", "composenet:p/p-a-1/lan", 1 << 27)
    assert intents.adopt([link(1 << 27, "eth0")], [in_ns], "", "p")[1] == {}
    assert intents.adopt([link(1 << 27, "eth0")], [in_ns], "p-a-1", "p")[1] == {1 << 27: ""}


def test_intent_indexes_are_far_from_the_kernels(tmp_path):
    from composenet.kernel.context import Context

    ctx = Context(project="p", run_dir=str(tmp_path))
    i = intents.begin(ctx, "veth", "", "cnv-1", "composenet:p/p-a-1/p_n", "p-a-1", "eth0")
    assert intents.INDEX_FIRST <= i.index < intents.INDEX_LAST and intents.INDEX_FIRST <= i.peer_index
    assert intents.pending(ctx) == [i]
    intents.done(ctx, i)
    assert intents.pending(ctx) == []


# ---- what ps says ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fields,text", [
    ({"state": "running", "pid": 12}, "running (pid 12)"),
    ({"state": "running", "pid": 12, "restarts": 1}, "running (pid 12, restarted 1 time)"),
    ({"state": "exited", "exit_code": 0}, "exited (code 0)"),
    ({"state": "exited", "exit_code": 137, "restarts": 2}, "exited (code 137, restarted 2 times)"),
    ({"state": "restarting", "exit_code": 1, "restarts": 3}, "restarting (code 1, restarted 3 times)"),
    ({"state": "failed", "error": "cannot execute 'x': No such file or directory"},
     "failed to start: cannot execute 'x': No such file or directory"),
    ({}, "no command"),
])
def test_ps_states(fields: dict, text: str):
    assert state_text(ContainerStatus("p-a-1", "a", 1, "p-a-1", **fields)) == text
