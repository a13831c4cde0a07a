"""Every host path composenet uses, and the layout of its run directory. A leaf: imports only the
standard library, so the resolver daemon, the loader and the kernel handlers all name files the
same way.

Host paths::

    /run/netns/<ns>                    network namespaces (shared with `ip netns`)
    /etc/netns/<ns>/{resolv.conf,hosts}  what a service sees as /etc/... (as `ip netns exec`)
    /run/composenet                    the run directory (COMPOSENET_RUN_DIR overrides it)

The run directory::

    <run_dir>/.ipam.lock               flock'ed by `up` while it chooses and assigns subnets
    <run_dir>/.guard.lock, .forwarding.json  the forwarding guard (host-wide)
    <run_dir>/.validated               digests of compose documents that validated (host-wide)
    <run_dir>/.cluster/                the cluster agent (config, pidfile, log, locks) and
                                       .cluster/names/<network>.json, remote endpoints' names
    <run_dir>/<project>/lock           flock'ed by every run that changes the project
    <run_dir>/<project>/applied.json   digests of what the last successful apply wrote
    <run_dir>/<project>/connections.json  endpoints added by `network connect`
    <run_dir>/<project>/network.json   a standalone network's spec (project "-NAME")
    <run_dir>/<project>/netns/<ns>     namespace records
    <run_dir>/<project>/files/<ns>     namespaces that have /etc/netns files
    <run_dir>/<project>/proc/<c>.json  service processes
    <run_dir>/<project>/dns.json, dns.pid  the resolver's config and pidfile
    <run_dir>/<project>/dns-peers.json the project's endpoints on networks others own
    <run_dir>/<project>/cluster.json   the project's records in the cluster store
    <run_dir>/<project>/intents/<link>    a link about to be created (name, label, ifindex asked for)
    <run_dir>/<project>/supervisor.json, supervisor.sock, supervisor-ports.json, states/<c>.json
                                       the supervisor of the service processes
    <run_dir>/<project>/logs/<c>.log, logs/dns.log, logs/supervisor.log

Must not: create, write or delete anything. Reading a directory listing (``list_projects``) and
the package's own schema files is all the I/O it does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RUN_DIR = "/run/composenet"
RUN_DIR_ENV = "COMPOSENET_RUN_DIR"
NETNS_DIR = "/run/netns"
ETC_NETNS_DIR = "/etc/netns"

IPAM_LOCK = ".ipam.lock"  # in the run directory, host-wide
# Host-wide, in the run directory: the forwarding guard's lock and its record of the host's own
# forwarding settings before composenet turned them on (restored by the last project's `down`).
GUARD_LOCK = ".guard.lock"
# Host-wide: digests of compose documents that validated (the schema is skipped for them).
VALIDATED = ".validated"
# Host-wide: the cluster agent's directory (composenet.cluster.files has its layout) and, inside
# it, the remote endpoints' names the resolvers merge (composenet.dns.remote).
CLUSTER_DIR = ".cluster"
CLUSTER_NAMES = os.path.join(CLUSTER_DIR, "names")
CLUSTER_RECORDS = "cluster.json"  # per project: its records in the cluster store
FORWARDING_RECORD = ".forwarding.json"
LOCK = "lock"
APPLIED = "applied.json"
CONNECTIONS = "connections.json"
NETWORK_SPEC = "network.json"
DNS_CONFIG = "dns.json"
DNS_PID = "dns.pid"
DNS_PEERS = "dns-peers.json"
DNS_LOG = "dns"  # the resolver's log is logs/dns.log
NETNS_RECORDS = "netns"
FILES_RECORDS = "files"
PROC_RECORDS = "proc"
LOGS = "logs"
INTENTS = "intents"  # links about to be created (composenet.kernel.intents)
SUPERVISOR_PIDFILE = "supervisor.json"  # the project's supervisor (composenet.supervisor)
SUPERVISOR_SOCKET = "supervisor.sock"
SUPERVISOR_PORTS = "supervisor-ports.json"
SUPERVISOR_STATES = "states"
SUPERVISOR_LOG = "supervisor"  # logs/supervisor.log
# Records that refer to kernel objects or processes: removed only when what they refer to is gone.
RECORD_DIRS = (NETNS_RECORDS, FILES_RECORDS, PROC_RECORDS)


def run_dir() -> str:
    """The run directory: $COMPOSENET_RUN_DIR, else /run/composenet."""
    return os.environ.get(RUN_DIR_ENV) or RUN_DIR


def netns_path(name: str) -> str:
    return f"{NETNS_DIR}/{name}"


def etc_netns_dir(ns: str) -> str:
    return os.path.join(ETC_NETNS_DIR, ns)


@dataclass(frozen=True)
class ProjectPaths:
    """The files of one project under ``run_dir``."""

    run_dir: str
    project: str

    @property
    def root(self) -> str:
        return os.path.join(self.run_dir, self.project)

    def __truediv__(self, name: str) -> str:
        return os.path.join(self.root, name)

    @property
    def lock(self) -> str:
        return self / LOCK

    @property
    def applied(self) -> str:
        return self / APPLIED

    @property
    def connections(self) -> str:
        return self / CONNECTIONS

    @property
    def network_spec(self) -> str:
        return self / NETWORK_SPEC

    @property
    def dns_config(self) -> str:
        return self / DNS_CONFIG

    @property
    def dns_pid(self) -> str:
        return self / DNS_PID

    @property
    def dns_peers(self) -> str:
        return self / DNS_PEERS

    @property
    def cluster_records(self) -> str:
        return self / CLUSTER_RECORDS

    @property
    def logs(self) -> str:
        return self / LOGS

    def log(self, name: str) -> str:
        """Log of a container (its name) or of the resolver (``DNS_LOG``)."""
        return os.path.join(self.logs, f"{name}.log")

    @property
    def netns_records(self) -> str:
        return self / NETNS_RECORDS

    @property
    def files_records(self) -> str:
        return self / FILES_RECORDS

    @property
    def proc_records(self) -> str:
        return self / PROC_RECORDS

    def proc_record(self, container: str) -> str:
        return os.path.join(self.proc_records, f"{container}.json")


def list_projects(run_dir: str) -> list[str]:
    """Projects that have a directory under ``run_dir`` (sorted; standalone networks' pseudo-projects
    "-NAME" included; the host-wide lock and other dot files are not projects)."""
    try:
        names = os.listdir(run_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if not n.startswith(".") and os.path.isdir(os.path.join(run_dir, n)))


def schema_text(name: str) -> str:
    """One of the JSON schemas in schemas/ (compose, plan, observed): in a checkout (and an
    editable install) they sit next to the package; an installed package carries them as
    composenet.schemas (pyproject's package-dir)."""
    here = Path(__file__).resolve().parent
    for path in (here.parent / "schemas" / name, here / "schemas" / name):
        try:
            return path.read_text()
        except (FileNotFoundError, NotADirectoryError):
            continue
    from importlib import resources  # deferred: only a non-file install needs importlib.resources

    return resources.files("composenet.schemas").joinpath(name).read_text()


def standalone_project(network: str) -> str:
    """The pseudo-project that owns standalone network ``network`` (`composenet network create`):
    project names never start with '-', so it cannot clash with one."""
    return "-" + network
