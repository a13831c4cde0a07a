"""The I/O of `ps`, `port`, `exec` and `logs`: observe the project, run a command inside a
container's namespace, read its log files. What the status means is ``composenet.core.status``.

Must not: change anything the project owns (these commands only read; `exec` only starts the
user's command in a container's namespace).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from composenet.core.state import ObservedState
from composenet.core.status import ContainerStatus, container_index, containers, pick, port, render_ps
from composenet.errors import ComposenetError
from composenet.kernel.context import Context
from composenet.kernel.netinfo import project_source
from composenet.kernel.observe import observe_project
from composenet.kernel.processes import read_records
from composenet.linux import caps
from composenet.linux.spawn import spawn
from composenet.paths import netns_path


def observe(ctx: Context) -> tuple[ObservedState, dict[str, dict[str, Any]]]:
    return observe_project(ctx, cluster=False), read_records(ctx)


def status(ctx: Context) -> list[ContainerStatus]:
    observed, records = observe(ctx)
    return containers(observed, ctx.project, records)


def ps(ctx: Context, fmt: str = "text") -> str:
    return render_ps(status(ctx), fmt)


def port_lines(ctx: Context, service: str, private_port: int | None, protocol: str = "tcp", index: int | None = None
               ) -> list[str]:
    observed, records = observe(ctx)
    return port(containers(observed, ctx.project, records), observed, service, private_port, protocol, index)


def exec_in(ctx: Context, service: str, argv: list[str], index: int | None = None, user: str | None = None,
            workdir: str | None = None, extra_env: dict[str, str] | None = None, privileged: bool = False) -> int:
    """Run ``argv`` in the container's namespace with its /etc/netns files and hostname, in the
    foreground with this terminal; returns its exit status (128+N when killed by signal N).
    As `docker compose exec`: with the service's environment (``environment``, ``env_file``),
    ``working_dir`` and ``user``, as its command runs (from its process record), over this
    environment (for PATH, TERM, HOME); ``user``, ``workdir`` and ``extra_env`` override them.
    With the service's capabilities and no_new_privs, as its command (linux.caps: Docker's
    default set, its ``cap_add``/``cap_drop``/``privileged``), not the caller's;
    ``privileged`` (`exec --privileged`) gives every capability, as `docker exec --privileged`."""
    if not argv:
        raise ComposenetError("no command given", hint="composenet exec SERVICE CMD [ARGS...]")
    observed, records = observe(ctx)
    c = pick(containers(observed, ctx.project, records), service, index)
    if c.namespace and not os.path.exists(netns_path(c.namespace)):
        raise ComposenetError(f"namespace {c.namespace} of {c.container} does not exist", hint="run `composenet up`")
    rec = records.get(c.container) or _exec_spec(ctx, c.service)
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in rec.get("env") or ()})
    env.update(extra_env or {})
    p = spawn(argv, ns=c.namespace, hostname=c.hostname, env=env, stdin=None, stdout=None, stderr=None,
              cwd=workdir or rec.get("cwd") or None, user=user or rec.get("user") or None,
              new_session=False, what=f"exec in {c.container}",
              capabilities=caps.Request(tuple(rec.get("cap_add") or ()), tuple(rec.get("cap_drop") or ()),
                                        privileged or bool(rec.get("privileged"))))
    # Ctrl-C goes to the command (same process group); we only wait for it.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        rc = p.wait()
    finally:
        signal.signal(signal.SIGINT, old)
    return 128 - rc if rc < 0 else rc


def _exec_spec(ctx: Context, service: str) -> dict[str, Any]:
    """A service without a command has no process record: what its last `up` recorded for
    `exec` (environment, working_dir, user, capabilities), or {} (Docker's defaults)."""
    source = project_source(ctx.run_dir, ctx.project) or {}
    spec = (source.get("exec") or {}).get(service)
    return spec if isinstance(spec, dict) else {}


def log_files(ctx: Context, service: str) -> list[tuple[str, str]]:
    """(container, log path) of the service's containers that have a log."""
    records = read_records(ctx)
    names = {n for n, rec in records.items() if rec.get("service") == service}
    try:
        for f in os.listdir(ctx.paths.logs):
            n = f[:-4] if f.endswith(".log") else ""
            if n and n not in names and n != "dns" and re.fullmatch(re.escape(f"{ctx.project}-{service}-") + r"\d+", n):
                names.add(n)
    except FileNotFoundError:
        pass
    out = [(n, ctx.paths.log(n)) for n in sorted(names, key=lambda n: (container_index(n) or 0, n))]
    return [(n, p) for n, p in out if os.path.exists(p)]


def logs(ctx: Context, service: str, follow: bool = False, write: Callable[[str], None] | None = None,
         poll: float = 0.25, max_polls: int | None = None) -> None:
    """Print the service's logs (each line prefixed with its container when there are several);
    with ``follow``, keep printing what is appended until Ctrl-C (or ``max_polls`` polls)."""
    out = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    files = log_files(ctx, service)
    if not files:
        raise ComposenetError(f"no logs for service {service!r}",
                              hint="only services with a command have logs; is the project up?")
    width = max(len(n) for n, _ in files)
    prefix = len(files) > 1
    handles = []
    partial: dict[str, str] = {}
    try:
        for n, p in files:
            handles.append((n, open(p, "rb")))

        def drain() -> None:
            for n, f in handles:
                data = f.read()
                if not data:
                    continue
                text = partial.pop(n, "") + data.decode(errors="replace")
                lines = text.split("\n")
                if lines[-1]:
                    partial[n] = lines[-1]  # incomplete line: wait for the rest
                for ln in lines[:-1]:
                    out((f"{n.ljust(width)} | " if prefix else "") + ln + "\n")

        drain()
        if not follow:
            for n, rest in partial.items():
                out((f"{n.ljust(width)} | " if prefix else "") + rest + "\n")
            return
        polls = 0
        while max_polls is None or polls < max_polls:
            time.sleep(poll)
            drain()
            polls += 1
    except KeyboardInterrupt:
        return
    finally:
        for _, f in handles:
            f.close()
