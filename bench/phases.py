"""Run one composenet command line and split its wall time by phase (a bench tool; not a test,
not part of the CLI: issue 13 will give `up` a user-facing `--timings`).

    CNBENCH_PHASES=OUT.json [CNBENCH_T0=<time.monotonic() before spawning>] \\
        python bench/phases.py [composenet arguments...]

It runs ``composenet.cli.main`` as `python -m composenet` does, with a few pipeline functions
wrapped by timers, and writes OUT.json: seconds per phase, each counted exclusively (time spent
in a nested phase, an import inside `load` say, is counted once, in the nested one):

    startup   interpreter start-up until this file's first line (from CNBENCH_T0, which the
              caller sets just before it spawns the process; absent: not measured)
    imports   every `import` executed while the command runs (composenet, typer, yaml,
              jsonschema, pyroute2 ...), wherever it happens
    load      reading, interpolating, merging and modelling the compose files (compose.project)
    validate  the JSON-schema validation inside load (compose.schema.validate_paths)
    observe   reading the kernel (kernel.observe.observe_project)
    desire    Project -> DesiredState (core.desired.desire)
    digest    ObservedState.digest (the observed-state fingerprint every plan carries)
    diff      desired x observed -> ordered steps (core.diff.diff, core.plan.order)
    check     `nft -c` of the generated ruleset (pipeline.check_ruleset)
    apply     the executor (kernel.apply.apply)
    render    plan -> text / json (core.render)
    other     the rest of the command: argument parsing, locks, upstream servers, glue
    end       the wall time of the run, from this file's first line to the end of main

The caller adds ``exit`` (the process's end: its wall clock minus ``end``). composenet's main
ends the process with os._exit; it is wrapped too, to write the split first. The wrappers
are installed when the module that defines a function is first imported (through a wrapped
``builtins.__import__``), so the command imports exactly what it would without this file.
"""

from __future__ import annotations

import builtins
import os
import sys
import time
from typing import NoReturn

T_FIRST_LINE = time.monotonic()
PRELOADED = sorted(sys.modules)  # imported by the interpreter's start-up (site ...)

# module -> {attribute ("Class.method" for a method): phase}
WRAP: dict[str, dict[str, str]] = {
    "composenet.compose.project": {"load_project": "load"},
    "composenet.compose.schema": {"validate_paths": "validate"},
    "composenet.kernel.observe": {"observe_project": "observe"},
    "composenet.core.desired": {"desire": "desire"},
    "composenet.core.state": {"ObservedState.digest": "digest"},
    "composenet.core.diff": {"diff": "diff"},
    "composenet.core.plan": {"order": "diff"},
    "composenet.pipeline": {"check_ruleset": "check"},
    "composenet.kernel.apply": {"apply": "apply"},
    "composenet.core.render": {"render_text": "render", "render_json": "render"},
}

totals: dict[str, float] = {}
calls: dict[str, int] = {}
_stack: list[list] = []  # [phase, start, time of nested phases]


def _enter(phase: str) -> None:
    _stack.append([phase, time.monotonic(), 0.0])


def _leave() -> None:
    phase, t0, nested = _stack.pop()
    dt = time.monotonic() - t0
    totals[phase] = totals.get(phase, 0.0) + dt - nested
    calls[phase] = calls.get(phase, 0) + 1
    if _stack:
        _stack[-1][2] += dt


def _timed(phase: str, fn):  # type: ignore[no-untyped-def]
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        _enter(phase)
        try:
            return fn(*args, **kwargs)
        finally:
            _leave()

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


_pending = {m: dict(fns) for m, fns in WRAP.items()}


def _install() -> None:
    """Wrap what the modules imported so far define (a module is wrapped once, when complete)."""
    for modname in list(_pending):
        mod = sys.modules.get(modname)
        if mod is None:
            continue
        fns = _pending[modname]
        for attr, phase in list(fns.items()):
            owner_name, _, name = attr.rpartition(".")
            owner = getattr(mod, owner_name, None) if owner_name else mod
            if owner is None or not hasattr(owner, name):
                continue  # the module is still being executed: later
            setattr(owner, name, _timed(phase, getattr(owner, name)))
            del fns[attr]
        if not fns:
            del _pending[modname]


_real_import = builtins.__import__


def _import(name, globals=None, locals=None, fromlist=(), level=0):  # type: ignore[no-untyped-def]
    if _stack and _stack[-1][0] == "imports":  # nested: the outer import times it
        mod = _real_import(name, globals, locals, fromlist, level)
    else:
        _enter("imports")
        try:
            mod = _real_import(name, globals, locals, fromlist, level)
        finally:
            _leave()
    if _pending:
        _install()  # before `from X import f` reads f
    return mod


def main() -> None:
    out = os.environ.pop("CNBENCH_PHASES")
    t0 = os.environ.pop("CNBENCH_T0", None)
    os.environ.pop("PYTHONPROFILEIMPORTTIME", None)  # not for the processes composenet starts
    t_main = time.monotonic()

    def finish() -> None:
        """Write the split, once main is done (as it ends the process, or returns)."""
        t_end = time.monotonic()
        builtins.__import__ = _real_import
        result = dict(totals)
        result["other"] = (t_end - t_main) - sum(totals.values())
        result["end"] = t_end - T_FIRST_LINE
        if t0 is not None:
            result["startup"] = T_FIRST_LINE - float(t0)
        import json

        with open(out, "w") as f:
            json.dump({"phases": result, "calls": calls, "t_end": t_end, "preloaded": PRELOADED}, f)

    real_exit = os._exit

    def exit_now(status: int) -> NoReturn:  # composenet.cli.main ends the process this way
        finish()
        real_exit(status)

    os._exit = exit_now
    builtins.__import__ = _import
    sys.argv = ["composenet", *sys.argv[1:]]
    code: str | int | None = 0
    try:
        import composenet.cli

        composenet.cli.main()
    except SystemExit as e:
        code = e.code
    finish()
    sys.exit(code)


if __name__ == "__main__":
    main()
