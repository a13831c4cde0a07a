"""Linux capability names and Docker's rules for them, without any system call: the names in
bit order, Docker's default set, how ``cap_add``/``cap_drop`` make a bounding set, and what a
service runs with in words. Pure; the loader, the planner and composenet.linux.caps share it.
"""

from __future__ import annotations

from collections.abc import Iterable

# linux/capability.h, in bit order.
NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
NUMBER = {n: i for i, n in enumerate(NAMES)}
# moby oci/caps/defaults.go DefaultCapabilities()
DOCKER_DEFAULT = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                  "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")
ALL = "ALL"


def canonical(name: str) -> str | None:
    """``net_admin``, ``CAP_NET_ADMIN`` -> ``NET_ADMIN``; ``all`` -> ``ALL``; None if unknown."""
    n = name.strip().upper()
    n = n[4:] if n.startswith("CAP_") else n
    return n if n == ALL or n in NUMBER else None


def mask(names: Iterable[str]) -> int:
    m = 0
    for n in names:
        if n in NUMBER:
            m |= 1 << NUMBER[n]
    return m


def names(m: int) -> tuple[str, ...]:
    return tuple(n for n in NAMES if m >> NUMBER[n] & 1)


def bounding_set(cap_add: Iterable[str] = (), cap_drop: Iterable[str] = ()) -> int:
    """Docker's rule (moby oci/caps TweakCapabilities): ALL in cap_add starts from every
    capability (minus cap_drop); ALL in cap_drop keeps only cap_add; else the default set plus
    cap_add minus cap_drop."""
    add, drop = set(cap_add), set(cap_drop)
    if ALL in add:
        return mask(NAMES) & ~mask(drop)
    if ALL in drop:
        return mask(add)
    return (mask(DOCKER_DEFAULT) | mask(add)) & ~mask(drop)


def describe(user: str | None, cap_add: Iterable[str] = (), cap_drop: Iterable[str] = (),
             privileged: bool = False) -> str:
    """What a service runs with, in words (for `plan` and `ps`)."""
    if privileged:
        return "privileged: every capability"
    add, drop = sorted(set(cap_add)), sorted(set(cap_drop))
    root = user is None or user.split(":", 1)[0] in ("0", "root")
    if root:
        if ALL in add:
            base = "every capability" + (f" but {','.join(d for d in drop if d != ALL)}" if drop else "")
        elif ALL in drop:
            base = "capabilities " + (",".join(add) if add else "none")
        else:
            base = "default capabilities" + "".join(
                [f" +{','.join(add)}" if add else "", f" -{','.join(drop)}" if drop else ""])
        return f"root, {base}"
    granted = [n for n in add if n != ALL] if ALL not in add else ["every capability"]
    return f"user {user}, " + (f"capabilities {','.join(granted)}" if granted else "no capabilities")
