"""The global options of one command line, as an object in typer's context (``ctx.obj``), and
what commands derive from them: the project (loaded from the compose files), its name, its run
context and the upstream DNS servers. Light at import: the loader and the kernel are imported
by the methods that need them."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from composenet.cli.schemacache import read_keys, store_keys
from composenet.compose.options import LoadOptions, name_problem
from composenet.errors import InputError, Problem
from composenet.paths import run_dir

if TYPE_CHECKING:
    from composenet.cluster.settings import ClusterSettings
    from composenet.core.desired import Upstreams
    from composenet.core.model import Project
    from composenet.kernel.context import Context


@dataclass
class Session:
    opts: LoadOptions = field(default_factory=LoadOptions)
    resolv_conf: str | None = None  # --resolv-conf / COMPOSENET_RESOLV_CONF
    # --store / --node / --advertise-addr (or their COMPOSENET_* variables), as given: see cluster
    cluster_opts: tuple[str | None, str | None, str | None] = (None, None, None)

    @property
    def cluster(self) -> ClusterSettings | None:
        """The host's cluster settings (composenet.cluster.settings), None without a store;
        StoreConfigError (exit 1, its hint) when they are wrong."""
        from composenet.cluster.settings import settings_from  # deferred: only commands that use it

        return settings_from(*self.cluster_opts)

    def load(self, publish_localhost_only: bool | None = None) -> Project:
        """The project of the compose files (-f, COMPOSE_FILE or the default lookup). Documents
        that passed the schema in an earlier run are not validated again (cli.schemacache).
        ``publish_localhost_only``: `up`/`plan --publish-localhost-only` (True) or
        `--no-publish-localhost-only` (False); None: COMPOSENET_PUBLISH_LOCALHOST_ONLY when set,
        else what the project's last successful `up` recorded (so that a later `up`, `plan`,
        `check` or `network connect` without the flag does not publish on every address again)."""
        from composenet.compose.project import LOCALHOST_ONLY_ENV, SchemaCache, load_project  # deferred: yaml

        where = run_dir()
        known = read_keys(where)
        cache = SchemaCache(known=frozenset(known))
        project = load_project(self.opts, cache)
        store_keys(where, known, cache.passed)
        if publish_localhost_only is None and not os.environ.get(LOCALHOST_ONLY_ENV, "").strip():
            from composenet.kernel.netinfo import project_source  # deferred: the kernel layer

            publish_localhost_only = bool((project_source(where, project.name) or {}).get("publish_localhost_only"))
        if publish_localhost_only is not None:
            project = dataclasses.replace(project, publish_localhost_only=publish_localhost_only)
        return project

    def context(self, project_name: str) -> Context:
        from composenet.kernel.context import Context  # deferred: the kernel layer

        return Context(project=project_name, run_dir=run_dir(), resolv_conf=self.resolv_conf or "/etc/resolv.conf")

    def named_project(self) -> str:
        """The project `-p NAME` names, refused if invalid (Compose does not normalise -p)."""
        name = self.opts.project_name or ""
        err = name_problem(name)
        if err:
            raise InputError([Problem(err, rule="CS-NAME-03")]) from None
        return name

    def project_context(self) -> tuple[Context, str]:
        """(ctx, project name) for commands that work from kernel labels alone (down, ps, port,
        exec, logs): `-p NAME` is enough and the compose file is not even read; without -p the
        file gives the name."""
        name = self.named_project() if self.opts.project_name else self.load().name
        return self.context(name), name

    def upstreams(self) -> Upstreams:
        from composenet.pipeline import read_upstreams  # deferred: the pipeline

        return read_upstreams(self.resolv_conf)


def cluster_options(store: str | None, node: str | None,
                    advertise: str | None) -> tuple[str | None, str | None, str | None]:
    """The cluster options of the command line, also put in the environment (COMPOSENET_STORE,
    COMPOSENET_NODE, COMPOSENET_ADVERTISE_ADDR), where the pipeline's cluster steps and the agent
    they start read them (composenet.cluster.settings.settings_from)."""
    for name, value in (("COMPOSENET_STORE", store), ("COMPOSENET_NODE", node),
                        ("COMPOSENET_ADVERTISE_ADDR", advertise)):
        if value is not None:
            os.environ[name] = value
    return (store, node, advertise)


def session() -> Session:
    """The running command's Session (set by the top-level callback)."""
    return click.get_current_context().ensure_object(Session)
