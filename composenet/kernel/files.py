"""Handler for ``file`` resources: /etc/netns/<ns>/{resolv.conf,hosts}.

These are the files `ip netns exec`, `composenet exec` and the service's process see as
/etc/resolv.conf and /etc/hosts (bind-mounted over them in a private mount namespace).

Owns: writing them atomically (a process starting at that moment reads the old or the new
file, never half of one), and a record ``<project dir>/files/<ns>`` per namespace that has
files, so files left by a crash (namespace already gone) are still found by ``observe``.

Must not: touch files other than the ones named by a resource, or /etc/netns/<ns> directories
of namespaces the project does not own.
"""

from __future__ import annotations

import os

from composenet.core.resources import NetnsFile, Resource
from composenet.core.state import ObservedState
from composenet.errors import KernelError
from composenet.kernel.context import Context, HandlerBase
from composenet.linux.fileio import atomic_write, touch
from composenet.paths import etc_netns_dir

FILE_NAMES = ("resolv.conf", "hosts")  # the only names composenet writes


def etc_dir(ns: str) -> str:
    return etc_netns_dir(ns)


def has_files(ns: str) -> bool:
    """True if /etc/netns/<ns> still holds a file composenet writes."""
    return any(os.path.exists(os.path.join(etc_dir(ns), n)) for n in FILE_NAMES)


def _records_dir(ctx: Context) -> str:
    return ctx.paths.files_records


def _namespaces(ctx: Context) -> list[str]:
    """Namespaces of the project: the netns records (composenet.kernel) and our own records."""
    out: set[str] = set()
    for d in (ctx.paths.netns_records, ctx.paths.files_records):
        try:
            out.update(n for n in os.listdir(d) if not n.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return sorted(out)


def _check_name(r: NetnsFile) -> None:
    # Names come from the planner; refuse anything that would escape /etc/netns/<ns>.
    for part in (r.ns, r.name):
        if not part or "/" in part or part in (".", ".."):
            raise KernelError(f"refusing to write /etc/netns/{r.ns}/{r.name}: not a plain file name")


class FilesHandler(HandlerBase):
    kinds: tuple[str, ...] = ("file",)

    def observe(self, ctx: Context, observed: ObservedState) -> None:
        for ns in _namespaces(ctx):
            for name in FILE_NAMES:
                path = os.path.join(etc_dir(ns), name)
                try:
                    with open(path, encoding="utf-8", errors="surrogateescape") as f:
                        content = f.read()
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError as e:
                    raise KernelError(f"cannot read {path}: {e.strerror}") from None
                observed.add(NetnsFile(ns, name, content))

    def create(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, NetnsFile)
        _check_name(r)
        # Record first: if we crash after writing, observe still finds the file.
        touch(os.path.join(_records_dir(ctx), r.ns))
        path = os.path.join(etc_dir(r.ns), r.name)
        try:
            atomic_write(path, r.content, 0o644)
        except OSError as e:
            raise KernelError(f"cannot write {path}: {e.strerror}") from None

    def update(self, ctx: Context, before: Resource, after: Resource) -> None:
        self.create(ctx, after)

    def delete(self, ctx: Context, r: Resource) -> None:
        assert isinstance(r, NetnsFile)
        _check_name(r)
        d = etc_dir(r.ns)
        path = os.path.join(d, r.name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise KernelError(f"cannot remove {path}: {e.strerror}") from None
        try:
            os.rmdir(d)  # only if empty: files someone else put there stay
        except OSError:
            pass
        if not has_files(r.ns):
            try:
                os.unlink(os.path.join(_records_dir(ctx), r.ns))
            except FileNotFoundError:
                pass

