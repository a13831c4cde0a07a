"""Starting a command inside a network namespace, as `ip netns exec` would, without forking a
helper: the child enters the namespace between fork and exec (setns), gets its own UTS
namespace (hostname) and mount namespace (/sys of the namespace, the /etc/netns/<ns> files
bind-mounted over /etc), then drops to the user's credentials and changes directory. Also the
user lookup (``user:`` of a service) and the log file a started command writes to.

Used by the process handler (service commands, detached) and by `composenet exec` (in the
foreground).

Must not: know about projects, records or resources (composenet.kernel does), run `ip netns
exec` or any other helper, or leave a file descriptor open in the parent or the child.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from dataclasses import dataclass
from typing import Any

from composenet.errors import KernelError
from composenet.linux import caps, cgroup
from composenet.linux.netns import CLONE_NEWNET, MNT_DETACH, MS_BIND, MS_REC, check, libc
from composenet.paths import etc_netns_dir, netns_path

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 0x1
MS_SLAVE = 1 << 19


@dataclass(frozen=True)
class Credentials:
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_user(spec: str) -> Credentials:
    """``name``, ``uid``, ``uid:gid``, ``name:group`` -> ids, looked up in the host's passwd and
    group databases (composenet runs host processes). A numeric uid without a passwd entry gets
    gid 0, as Docker does."""
    name, _, group = spec.partition(":")
    username: str | None = None
    try:
        if name.isdigit():
            uid = int(name)
            try:
                pw = pwd.getpwuid(uid)
                gid, username = pw.pw_gid, pw.pw_name
            except KeyError:
                gid = 0
        else:
            pw = pwd.getpwnam(name)
            uid, gid, username = pw.pw_uid, pw.pw_gid, pw.pw_name
    except KeyError:
        raise KernelError(f"user {name!r} (user: {spec}) does not exist on this host") from None
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise KernelError(f"group {group!r} (user: {spec}) does not exist on this host") from None
    groups = tuple(os.getgrouplist(username, gid)) if username else (gid,)
    return Credentials(uid, gid, groups)


def etc_binds(ns: str) -> list[tuple[str, str]]:
    """(source, target) bind mounts `ip netns exec` makes: every /etc/netns/<ns>/<f> over
    /etc/<f>, for the targets that exist."""
    d = etc_netns_dir(ns)
    try:
        names = sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [(os.path.join(d, n), f"/etc/{n}") for n in names if os.path.lexists(f"/etc/{n}")]


def open_log(path: str) -> int:
    """An fd appending to log file ``path`` (created, with its directory, if missing), for a
    started command's stdout and stderr; the caller closes it once the command started."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


# ---- in the child, between fork and exec ----------------------------------------------------


@dataclass(frozen=True)
class _ChildSetup:
    """What the forked child does before exec, in order (``STEPS``). A failure's reason goes to
    the parent through ``err_w`` (the child's exec never happens; the parent raises)."""

    nsfd: int  # -1: stay in the current network namespace
    ns: str
    hostname: str | None
    binds: tuple[tuple[str, str], ...]
    creds: Credentials | None
    directory: str
    err_w: int
    cgroup_fd: int = -1  # cgroup.procs of the group to join first (-1: stay)
    privileges: caps.Privileges | None = None  # None: keep every capability (`composenet exec`)

    def join_cgroup(self) -> None:
        if self.cgroup_fd >= 0:
            cgroup.join(self.cgroup_fd)

    def enter_netns(self) -> None:
        if self.nsfd >= 0:
            check(libc.setns(self.nsfd, CLONE_NEWNET), f"enter network namespace {self.ns}")

    def unshare(self) -> None:
        flags = (CLONE_NEWNS if self.nsfd >= 0 else 0) | (CLONE_NEWUTS if self.hostname is not None else 0)
        if flags:
            check(libc.unshare(flags), "unshare")

    def mount_view(self) -> None:
        """In the new mount namespace (only when a namespace was entered): / a slave (nothing
        propagates back), /sys of the new network namespace (its /sys/class/net) and the
        /etc/netns files over /etc, as `ip netns exec`."""
        if self.nsfd < 0:
            return
        check(libc.mount(b"", b"/", b"none", MS_SLAVE | MS_REC, None), "make / a slave mount")
        ro = os.statvfs("/sys").f_flag & os.ST_RDONLY
        if libc.umount2(b"/sys", MNT_DETACH) == 0:
            libc.mount(self.ns.encode(), b"/sys", b"sysfs", MS_RDONLY if ro else 0, None)
        for src, dst in self.binds:
            check(libc.mount(src.encode(), dst.encode(), b"none", MS_BIND, None), f"bind {src} on {dst}")

    def set_hostname(self) -> None:
        if self.hostname is not None:
            b = self.hostname.encode()
            check(libc.sethostname(b, len(b)), f"set hostname {self.hostname!r}")

    def bound_capabilities(self) -> None:
        if self.privileges is not None:
            self.privileges.apply_before_user()

    def drop_privileges(self) -> None:
        if self.creds is not None:
            os.setgroups(list(self.creds.groups))
            os.setgid(self.creds.gid)
            os.setuid(self.creds.uid)

    def set_capabilities(self) -> None:
        if self.privileges is not None:
            self.privileges.apply_after_user()

    def chdir(self) -> None:
        try:
            os.chdir(self.directory)
        except OSError as e:
            raise OSError(e.errno, f"working directory {self.directory}: {e.strerror}") from None

    def __call__(self) -> None:  # subprocess's preexec_fn
        try:
            for step in (self.join_cgroup, self.enter_netns, self.unshare, self.mount_view, self.set_hostname,
                         self.bound_capabilities, self.drop_privileges, self.chdir, self.set_capabilities):
                step()
        except OSError as e:
            os.write(self.err_w, (e.strerror or str(e)).encode()[:4000])
            raise


# ---- in the parent --------------------------------------------------------------------------


def _open_netns(ns: str, what: str) -> int:
    try:
        return os.open(netns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise KernelError(f"{what}: cannot open network namespace {netns_path(ns)}: {e.strerror}") from None


def spawn(argv: list[str] | tuple[str, ...], *, ns: str, hostname: str | None, env: dict[str, str],
          cwd: str | None = None, user: str | None = None, stdin: Any = subprocess.DEVNULL,
          stdout: Any = None, stderr: Any = None, new_session: bool = True, what: str = "",
          cgroup_dir: str | None = None, capabilities: caps.Request | None = None) -> subprocess.Popen:
    """Start ``argv`` inside namespace /run/netns/<ns> ("" = the current network namespace),
    in a new UTS namespace with ``hostname`` (if given) and, when ``ns`` is set, a new mount
    namespace where / is a slave (nothing propagates back), /sys shows the namespace's devices
    and the /etc/netns/<ns> files are bind-mounted over /etc: what `ip netns exec` does, done in
    the child between fork and exec. Then drop to ``user`` and chdir to ``cwd`` (default /).
    With ``cgroup_dir``, the child joins that cgroup first (composenet.linux.cgroup); with
    ``capabilities``, it runs with the capabilities linux.caps gives such a request (and
    no_new_privs), else with those of its parent (`composenet exec`).

    Raises KernelError naming the step when the namespace cannot be entered or the command
    cannot be executed."""
    what = what or argv[0]
    creds = resolve_user(user) if user else None
    privileges = caps.Privileges.of(creds.uid if creds else os.getuid(), capabilities) if capabilities else None
    nsfd = _open_netns(ns, what) if ns else -1
    binds = tuple(etc_binds(ns)) if ns else ()
    try:
        cgfd = cgroup.open_procs(cgroup_dir) if cgroup_dir else -1
    except OSError as e:
        if nsfd >= 0:
            os.close(nsfd)
        raise KernelError(f"{what}: cannot use cgroup {cgroup_dir}: {e.strerror}") from None
    # Child -> parent channel for the reason of a failure before exec (both ends close on exec).
    err_r, err_w = os.pipe()
    setup = _ChildSetup(nsfd, ns, hostname, binds, creds, cwd or "/", err_w, cgfd, privileges)
    full = [str(a) for a in argv]
    try:
        return subprocess.Popen(full, env=env, stdin=stdin, stdout=stdout, stderr=stderr, close_fds=True,
                                start_new_session=new_session, preexec_fn=setup)
    except subprocess.SubprocessError:
        os.close(err_w)
        reason = os.read(err_r, 4096).decode(errors="replace") or "failed before exec"
        raise KernelError(f"{what}: cannot start {full[0]!r}: {reason}") from None
    except OSError as e:
        os.close(err_w)
        raise KernelError(f"{what}: cannot execute {full[0]!r}: {e.strerror}",
                          hint="check the service's command/entrypoint and that it exists on this host") from None
    finally:
        for fd in (err_r, err_w, nsfd, cgfd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
