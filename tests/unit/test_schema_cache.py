"""Schema verdicts remembered between runs: a document that passed the JSON schema is not
validated again, and nothing else is ever skipped (compose.project.SchemaCache,
compose.schema.validation_key, cli.schemacache)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from composenet.cli import schemacache
from composenet.compose import schema
from composenet.compose.options import LoadOptions
from composenet.compose.project import SchemaCache, load_project
from composenet.errors import InputError

from .helpers import write

ROOT = Path(__file__).resolve().parents[2]

COMPOSE = """
services:
  web:
    networks: [front]
    depends_on: {db: {condition: "${COND}"}}
  db:
    networks: [front]
networks:
  front: {}
"""
GOOD = {"COND": "service_started"}


@pytest.fixture
def validations(monkeypatch) -> list[str]:
    """The files the JSON-schema validator actually checks, in order."""
    seen: list[str] = []
    real = schema.validate_paths

    def counting(doc, default_file=None):
        seen.append(os.path.basename(default_file or "?"))
        return real(doc, default_file)

    monkeypatch.setattr(schema, "validate_paths", counting)
    return seen


def load(d: Path, cache: SchemaCache, env: dict[str, str], *files: str):
    return load_project(LoadOptions(files=files or ("compose.yaml",), cwd=str(d), environ=env), cache)


def test_a_document_that_passed_is_not_validated_again(tmp_path: Path, validations: list[str]):
    write(tmp_path, "compose.yaml", COMPOSE)
    first = SchemaCache()
    p1 = load(tmp_path, first, GOOD)
    assert validations == ["compose.yaml"] and len(first.passed) == 1
    second = SchemaCache(known=frozenset(first.passed))
    p2 = load(tmp_path, second, GOOD)
    assert validations == ["compose.yaml"], "validated again"
    assert p2 == p1 and second.passed == first.passed
    load_project(LoadOptions(files=("compose.yaml",), cwd=str(tmp_path), environ=GOOD))  # no cache: validated
    assert validations == ["compose.yaml"] * 2


def test_an_invalid_document_is_rejected_even_after_a_valid_one_was_remembered(tmp_path: Path,
                                                                             validations: list[str]):
    write(tmp_path, "compose.yaml", COMPOSE)
    first = SchemaCache()
    load(tmp_path, first, GOOD)
    known = frozenset(first.passed)
    # The file is edited into an invalid one: validated, rejected, nothing to remember.
    write(tmp_path, "compose.yaml", COMPOSE.replace('"${COND}"', "sometime"))
    cache = SchemaCache(known=known)
    with pytest.raises(InputError, match="must be one of service_started"):
        load(tmp_path, cache, GOOD)
    assert cache.passed == []
    # The file is fine but a variable it uses makes it invalid: validated, rejected.
    write(tmp_path, "compose.yaml", COMPOSE)
    cache = SchemaCache(known=known)
    with pytest.raises(InputError, match="must be one of service_started"):
        load(tmp_path, cache, {"COND": "whenever"})
    assert cache.passed == [] and validations == ["compose.yaml"] * 3
    # A document that passes the schema but fails a semantic check: nothing is remembered either.
    write(tmp_path, "compose.yaml", COMPOSE.replace("[front]\n    depends_on", "[nope]\n    depends_on"))
    cache = SchemaCache(known=known)
    with pytest.raises(InputError, match="network 'nope' is not defined"):
        load(tmp_path, cache, GOOD)
    assert cache.passed == []


def test_editing_a_file_or_a_variable_it_uses_validates_again(tmp_path: Path, validations: list[str]):
    write(tmp_path, "compose.yaml", COMPOSE)
    first = SchemaCache()
    load(tmp_path, first, GOOD)
    known = frozenset(first.passed)
    cache = SchemaCache(known=known)
    load(tmp_path, cache, {"COND": "service_healthy"})  # another value of a variable it uses
    assert validations == ["compose.yaml"] * 2 and cache.passed != first.passed
    write(tmp_path, "compose.yaml", COMPOSE.replace("front: {}", "front: {internal: true}"))
    cache = SchemaCache(known=known)
    load(tmp_path, cache, GOOD)
    assert validations == ["compose.yaml"] * 3 and cache.passed != first.passed
    # What does not change the document the validator sees cannot change its verdict: a comment,
    # a variable the file does not use. Those still skip.
    write(tmp_path, "compose.yaml", "# a comment\n" + COMPOSE)
    load(tmp_path, SchemaCache(known=known), {**GOOD, "UNUSED": "1"})
    assert validations == ["compose.yaml"] * 3


def test_every_document_of_a_load_is_remembered_separately(tmp_path: Path, validations: list[str]):
    write(tmp_path, "compose.yaml", COMPOSE)
    write(tmp_path, "override.yaml", "services:\n  web:\n    extends: {file: base.yaml, service: base}\n")
    write(tmp_path, "base.yaml", "services:\n  base:\n    networks: [front]\n")
    first = SchemaCache()
    load(tmp_path, first, GOOD, "compose.yaml", "override.yaml")
    assert sorted(validations) == ["base.yaml", "compose.yaml", "override.yaml"] and len(first.passed) == 3
    write(tmp_path, "base.yaml", "services:\n  base:\n    networks: [front]\n    container_name: '-x'\n")
    cache = SchemaCache(known=frozenset(first.passed))
    with pytest.raises(InputError, match="container_name"):
        load(tmp_path, cache, GOOD, "compose.yaml", "override.yaml")
    assert validations[3:] == ["base.yaml"] and cache.passed == []


def test_the_key_tells_types_apart_and_refuses_what_it_cannot_encode():
    keys = {schema.validation_key({"services": {k: {}}}) for k in ("1", 1, 1.0, True)}
    assert len(keys) == 4 and None not in keys
    assert schema.validation_key({"a": [1, "1"]}) != schema.validation_key({"a": ["1", 1]})
    assert schema.validation_key({"a": 1}) == schema.validation_key({"a": 1})
    # Only values count, not which objects hold them (one string twice, or two equal strings).
    one, other = "web server", "".join(["web ", "server"])
    assert one == other and one is not other
    assert schema.validation_key({"a": [one, one]}) == schema.validation_key({"a": [one, other]})

    class Tagged(str):
        pass

    assert schema.validation_key({"a": Tagged("x")}) is None
    assert schema.validation_key({"a": object()}) is None


def test_the_cache_file_is_best_effort(tmp_path: Path):
    run = tmp_path / "run"
    assert schemacache.read_keys(str(run)) == []
    schemacache.store_keys(str(run), [], ["a" * 64])
    assert not run.exists(), "the run directory is not created for a cache"
    run.mkdir()
    schemacache.store_keys(str(run), [], ["a" * 64, "b" * 64])
    assert schemacache.read_keys(str(run)) == ["a" * 64, "b" * 64]
    before = (run / schemacache.VALIDATED).stat().st_mtime_ns
    schemacache.store_keys(str(run), ["a" * 64, "b" * 64], ["b" * 64])  # nothing new: not rewritten
    assert (run / schemacache.VALIDATED).stat().st_mtime_ns == before
    many = [f"{i:064x}" for i in range(schemacache.KEEP + 10)]
    schemacache.store_keys(str(run), ["a" * 64], many)
    assert schemacache.read_keys(str(run)) == many[: schemacache.KEEP]
    (run / schemacache.VALIDATED).write_text("junk\n" + "c" * 64 + "\n" + "d" * 63 + "\n\xff")
    assert schemacache.read_keys(str(run)) == []  # not ASCII: unreadable, so empty
    (run / schemacache.VALIDATED).write_text("junk\n" + "c" * 64 + "\n" + "d" * 63 + "\n")
    assert schemacache.read_keys(str(run)) == ["c" * 64]
    (run / schemacache.VALIDATED).unlink()
    (run / schemacache.VALIDATED).mkdir()  # cannot be read nor replaced
    assert schemacache.read_keys(str(run)) == []
    schemacache.store_keys(str(run), [], ["e" * 64])
    assert sorted(os.listdir(run)) == [schemacache.VALIDATED], "the temporary file is removed"


def _cli(cwd: Path, run_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
         "COMPOSENET_RUN_DIR": str(run_dir), **(env or {})}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "composenet", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=60)


def test_the_cli_skips_jsonschema_for_a_document_that_passed(tmp_path: Path):
    d, run = tmp_path / "shop", tmp_path / "run"
    run.mkdir()
    write(d, "compose.yaml", COMPOSE)
    r = _cli(d, run, "validate", env=GOOD)
    assert r.returncode == 0 and " jsonschema\n" in r.stderr, r.stderr[-2000:]
    assert len(schemacache.read_keys(str(run))) == 1
    r = _cli(d, run, "plan", "--offline", env=GOOD)
    assert r.returncode == 0 and " jsonschema\n" not in r.stderr, "jsonschema imported although cached"
    r = _cli(d, run, "validate", env={"COND": "whenever"})
    assert r.returncode == 1 and "must be one of service_started" in r.stderr
    assert len(schemacache.read_keys(str(run))) == 1


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to become another user")
def test_a_user_who_cannot_write_the_run_directory_still_plans(tmp_path: Path):
    """`plan --offline` by a user without write access to the run directory: it reads the cache
    (keys are valid for everyone) and carries on without storing anything."""
    top = Path(tempfile.mkdtemp(prefix="cnschema"))  # not under pytest's private (0700) tmp_path
    try:
        top.chmod(0o755)
        d, run = top / "shop", top / "run"
        run.mkdir(mode=0o755)
        write(d, "compose.yaml", COMPOSE)
        assert _cli(d, run, "validate", env=GOOD).returncode == 0
        stored = schemacache.read_keys(str(run))
        write(d, "compose.yaml", COMPOSE.replace("front: {}", "front: {internal: true}"))
        for f in (d, d / "compose.yaml"):
            f.chmod(0o755 if f.is_dir() else 0o644)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                            "composenet", "plan", "--offline"], cwd=d, capture_output=True, text=True, timeout=60,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
                                "PYTHONDONTWRITEBYTECODE": "1", "COMPOSENET_RUN_DIR": str(run), **GOOD})
        assert r.returncode == 0 and "to add" in r.stdout, r.stderr
        assert schemacache.read_keys(str(run)) == stored and os.listdir(run) == [schemacache.VALIDATED]
    finally:
        shutil.rmtree(top)
