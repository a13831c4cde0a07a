"""Linux capabilities for a service's command, as Docker gives them to a container: the sets a
service runs with (``Privileges.of``; the names and Docker's rules are linux.capnames'), and the
system calls that apply them between fork and exec (``Privileges.apply_before_user`` and
``apply_after_user``).

What a command gets (moby oci/caps/defaults.go and oci.go; kernel capabilities(7)):

- root (no ``user:``, or uid 0): Docker's default set as bounding, permitted and effective set
  (no CAP_NET_ADMIN: it cannot change its namespace's addresses, routes or rules; CAP_NET_RAW
  kept, so ping works), ``cap_add`` added and ``cap_drop`` removed ("ALL" as Docker reads it),
  nothing inheritable or ambient;
- another user: the same bounding set, and no capability at all, as with Docker; ``cap_add`` is
  raised as ambient capabilities so that it survives exec (what Podman does; Docker adds them
  to the bounding set only, where a non-root process cannot use them);
- ``no_new_privs`` for both (setuid binaries and file capabilities cannot raise privileges;
  with it, a root exec keeps exactly the permitted set given here);
- ``privileged: true``: every capability and no ``no_new_privs``, as Docker.

Must not: know about services, projects or files (the caller passes the user's ids and the
lists), or run anything in the parent (``apply_*`` run in the child, which only makes calls).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from composenet.linux.capnames import ALL, NAMES, bounding_set, mask

PR_SET_KEEPCAPS, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 8, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 47, 2, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def last_cap() -> int:
    """The highest capability this kernel knows (higher ones cannot be dropped or raised)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(NAMES) - 1


class _CapHeader(ctypes.Structure):  # struct __user_cap_header_struct
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):  # struct __user_cap_data_struct (two for version 3)
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def prctl(op: int, a2: int = 0, a3: int = 0) -> None:
    _check(_libc.prctl(op, a2, a3, 0, 0), f"prctl({op}, {a2})")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


@dataclass(frozen=True)
class Request:
    """What a service asks for (its ``cap_add``, ``cap_drop``, ``privileged``), canonical names."""

    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False


@dataclass(frozen=True)
class Privileges:
    """What a command runs with: computed in the parent (``of``), applied in the child."""

    privileged: bool
    nonroot: bool
    bounding: int  # the bounding set
    grant: int  # root: permitted = effective; another user: ambient (= inheritable = permitted)
    drop: tuple[int, ...]  # capability numbers to drop from the bounding set

    @classmethod
    def of(cls, uid: int, request: Request) -> Privileges:
        top = last_cap()
        if request.privileged:
            return cls(True, uid != 0, mask(NAMES), 0, ())
        cap_add = request.cap_add
        bounding = bounding_set(cap_add, request.cap_drop)
        drop = tuple(c for c in range(top + 1) if not bounding >> c & 1)
        if uid == 0:
            return cls(False, False, bounding, bounding, drop)
        explicit = mask(NAMES) if ALL in set(cap_add) else mask(cap_add)
        return cls(False, True, bounding, explicit & bounding, drop)

    def apply_before_user(self) -> None:
        """In the child, still root with every capability: shrink the bounding set (needs
        CAP_SETPCAP, which a uid change would take away) and keep the permitted set across the
        uid change when capabilities are to be raised as ambient ones."""
        if self.privileged:
            return
        for c in self.drop:
            prctl(PR_CAPBSET_DROP, c)
        if self.nonroot and self.grant:
            prctl(PR_SET_KEEPCAPS, 1)

    def apply_after_user(self) -> None:
        """In the child, after the uid change: the capability sets, then no_new_privs."""
        if self.privileged:
            return
        if self.nonroot:
            capset(self.grant, self.grant, self.grant)
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
            for c in range(last_cap() + 1):
                if self.grant >> c & 1:
                    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c)
        else:
            capset(self.grant, self.grant, 0)  # nothing inheritable (Docker since CVE-2022-24769)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
