"""Every entry of ../shared/corpus/INDEX.tsv loads: accepted, or rejected with a located error.

The entries expected to be rejected are named below with the reason and the problem we expect.
A few entries reference files that are not part of the corpus (env files holding secrets or
site configuration) or variables their projects keep in an untracked ``.env``: the test copies the
entry to a temporary directory and supplies those, each listed explicitly.
"""

from __future__ import annotations

import csv
import glob
import os
import shutil
from pathlib import Path

import pytest

from composenet.compose.options import LoadOptions
from composenet.compose.project import load_project
from composenet.compose.render_config import render_config
from composenet.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"

# entry -> (substring expected in one problem, why the file really is invalid)
REJECT: dict[str, tuple[str, str]] = {
    "compose-go/extends@base.yaml": ("services.nil: must be a mapping, not null",
                                     "CS-REAL-09: a service with a null body is schema-invalid"),
    "compose-go/full-example": ("cannot have 6 replicas",
                                "a fixture of every attribute, not a runnable project: container_name with 6 "
                                "replicas (CS-NAME-10), depends_on/links to undefined services, networks with "
                                "network_mode container:"),
    "compose-spec/05-endpoint-driver_opts": ("network 'app_net' is not defined",
                                             "spec snippet: the service uses a network never declared (CS-SNET-03)"),
    "compose-spec/05-interface_name": ("network 'back-tier' is not defined",
                                       "spec snippet: the service uses a network never declared (CS-SNET-03)"),
    "compose-spec/06-name-interpolated": ("network name '' is invalid",
                                          "the spec's example names its external network ${NETWORK_ID}, unset "
                                          "here: an empty name names no network (Docker: network  not found)"),
    "compose-spec/06-advanced-example": ("driver 'custom-driver-1' is not available",
                                         "custom network drivers do not exist here (CS-NET-08)"),
    "docker-compose-v1/missing-network": ("network 'foo' is not defined", "NEGATIVE, CS-REAL-02"),
    "docker-compose-v1/networks-bridge": ("network 'bridge' is not defined",
                                          "CS-REAL-02: Docker's predefined bridge is not a project network"),
    "docker-compose-v1/net-container-legacy-v1": ("Compose v1 format", "NEGATIVE, CS-REAL-13"),
    "podman-compose/extends-w-file": ("Compose v1 format",
                                      "the extended file common-services.yml is in the v1 format (CS-REAL-13)"),
    "podman-compose/ports-as-string": ("ports: must be a list, not a string", "NEGATIVE, CS-REAL-06"),
}

# Files an entry references that are not in the corpus: created empty in the copy.
MISSING_FILES: dict[str, list[str]] = {
    "compose-go/full-example": ["example1.env", "example2.env"],
    "fabric-samples/prometheus-grafana": ["grafana/config.monitoring"],
    "mastodon/docker-compose": [".env.production"],
    "netbox-docker/docker-compose": ["env/netbox.env", "env/postgres.env", "env/redis.env", "env/redis-cache.env"],
    "netmaker/docker-compose": ["netmaker.env"],
    "nextcloud-docker/with-nginx-proxy-postgres-fpm": ["db.env"],
}

# Variables an entry's project keeps in its own (untracked) .env.
ENVIRON: dict[str, dict[str, str]] = {
    "temporal/multirole": {"POSTGRES_DEFAULT_PORT": "5432", "POSTGRESQL_VERSION": "16"},
    "temporal/docker-compose": {"POSTGRES_DEFAULT_PORT": "5432"},
    # frappe's overlays stop with ${VAR?err} / ${VAR:?err} when these are unset (by design).
    "frappe-docker/with-overrides": {"BASE_SITE": "site.example", "BENCH_NETWORK": "bench", "ROUTER": "erp",
                                     "SITES_RULE": "Host(`site.example`)", "DB_PASSWORD_SECRETS_FILE": "db.txt",
                                     "HASHED_PASSWORD": "$apr1$x$y", "TRAEFIK_DOMAIN": "traefik.example"},
}


def _rows() -> list[dict[str, str]]:
    with open(CORPUS / "INDEX.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _cases() -> list[tuple[str, str, tuple[str, ...]]]:
    """(case id, entry, files relative to the entry's directory) for every way INDEX says to load."""
    by_entry: dict[str, list[dict[str, str]]] = {}
    for r in _rows():
        by_entry.setdefault(r["entry"], []).append(r)
    cases = []
    for entry, rows in sorted(by_entry.items()):
        load = rows[0]["load"].strip()
        if not load:
            assert len(rows) == 1, entry
            rel = os.path.relpath(rows[0]["file"], entry.split("/")[0])
            cases.append((entry, entry, (rel,)))
            continue
        members = [os.path.relpath(r["file"], entry) for r in rows if r["role"] in ("member", "companion")]
        for alt in load.split("|"):
            alt = alt.strip()
            other_overlay = "(or another overlay)" in alt
            alt = alt.replace("(or another overlay)", "")
            optional = None
            if "[" in alt:
                alt, _, rest = alt.partition("[")
                optional = rest.rstrip("]").replace("-f", "").replace("one ", "").strip()
            toks = [t for t in alt.split() if t != "-f"]
            placeholder = [t for t in toks if t.startswith("<")]
            fixed = [t for t in toks if not t.startswith("<") and not t.endswith(">") and t not in ("one", "test")]
            variants = [fixed]
            if placeholder or "<one" in alt:
                variants = [fixed + [m] for m in members if m not in fixed]
            if optional:
                pattern = str(CORPUS / entry / optional.replace("...", "**"))
                variants += [fixed + [os.path.relpath(p, CORPUS / entry)] for p in sorted(glob.glob(pattern, recursive=True))]
            if other_overlay:
                variants += [fixed[:1] + [m] for m in members if m not in fixed and m.startswith("overrides/")]
            for v in variants:
                cid = entry if len(variants) == 1 and "|" not in load else f"{entry}@{'+'.join(v)}"
                cases.append((cid, entry, tuple(v)))
    return cases


CASES = _cases()


def test_every_index_row_is_covered():
    files = {r["file"] for r in _rows()}
    used = set()
    for _cid, entry, fs in CASES:
        base = entry if len(fs) > 1 or any("/" in f for f in fs) or (CORPUS / entry).is_dir() else entry.split("/")[0]
        used |= {os.path.normpath(os.path.join(base, f)) for f in fs}
    # Files reached only through extends/include are loaded by their entry's main file.
    indirect = {r["file"] for r in _rows() if r["role"] == "member" and r["entry"] in (
        "compose-go/extends", "podman-compose/extends-w-file", "podman-compose/include")}
    assert files - used - indirect == set()
    assert set(REJECT) <= {c[0] for c in CASES} | {c[1] for c in CASES}


@pytest.mark.parametrize("cid,entry,files", CASES, ids=[c[0] for c in CASES])
def test_corpus_entry(cid: str, entry: str, files: tuple[str, ...], tmp_path: Path):
    src = CORPUS / entry if (CORPUS / entry).is_dir() else CORPUS / entry.split("/")[0]
    work = tmp_path / "p"
    shutil.copytree(src, work)
    for extra in MISSING_FILES.get(entry, []):
        (work / extra).parent.mkdir(parents=True, exist_ok=True)
        (work / extra).write_text("")
    opts = LoadOptions(files=files, cwd=str(work), environ=ENVIRON.get(entry, {}))
    expected = REJECT.get(cid) or REJECT.get(entry)
    if expected:
        with pytest.raises(InputError) as ei:
            load_project(opts)
        text = str(ei.value)
        assert expected[0] in text, text
        for p in ei.value.problems:  # every problem is located: FILE:LINE:COL
            assert p.file and p.line and p.col, str(p)
        return
    project = load_project(opts)
    assert project.name
    # What `config` prints loads again to the same document (networking in long form).
    out = tmp_path / "out.yaml"
    out.write_text(render_config(project, "yaml", ignored=False))
    again = load_project(LoadOptions(files=(str(out),), cwd=str(work), environ=ENVIRON.get(entry, {})))
    assert again.document == project.document
    assert [s.name for s in again.services] == [s.name for s in project.services]
