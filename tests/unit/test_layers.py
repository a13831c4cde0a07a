"""The layers of composenet/ stay honest: read from the syntax tree of every module, not from a run.

Checked on the real tree (one test per rule, each failure names the modules, files and lines):

- no import cycle between modules (every import counts: module level, in functions, in class
  bodies, under ``if TYPE_CHECKING:``);
- no import goes UP a layer (``LAYERS`` below, top first); inside one layer any direction is fine;
- every module belongs to exactly one layer;
- an import inside a function or method body carries ``# deferred: <reason>`` on its first line,
  or on a comment-only line just above it (module-level, class-body and TYPE_CHECKING imports
  need none);
- no module over ``MAX_MODULE_LINES`` lines; no function over ``MAX_FUNCTION_LINES`` lines (def line
  to last line) unless a ``# long: <reason>`` comment sits on a line of its def (from the def
  line to its first body statement) or on a comment-only line just above the def or its
  decorators.

``from composenet import x`` resolves to the module composenet.x when there is one (else to the
package), and relative imports are resolved against the importing module's package. An import
names its deepest module only: the parent packages Python initialises on the way are not edges
(``import composenet.core.model`` is an edge to composenet.core.model, not to composenet.core). The checker
is tested below on synthetic trees ({path: source}) so that it cannot pass by seeing nothing.
"""

from __future__ import annotations

import ast
import fnmatch
import io
import re
import textwrap
import tokenize
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

# Top to bottom: a module may import from its own layer or from a layer BELOW it (a larger index).
# A pattern names a module; "pkg.*" names every module below the package pkg.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cli", ("composenet.cli", "composenet.cli.*", "composenet.__main__")),
    ("orchestration", ("composenet.pipeline", "composenet.networks")),
    ("kernel", ("composenet.kernel", "composenet.kernel.*")),
    # The daemons (separate processes that start fast) and what they share with the kernel layer:
    # the resolver, the service supervisor, the cluster store's client and watcher.
    ("daemons", ("composenet.dns", "composenet.dns.*", "composenet.supervisor", "composenet.supervisor.*",
                 "composenet.cluster", "composenet.cluster.*")),
    ("compose", ("composenet.compose", "composenet.compose.*")),
    ("core", ("composenet.core", "composenet.core.*")),
    ("linux", ("composenet.linux", "composenet.linux.*")),
    ("leaves", ("composenet.errors", "composenet.paths", "composenet")),
)
MAX_MODULE_LINES = 650
MAX_FUNCTION_LINES = 90
DEFERRED = re.compile(r"#\s*deferred:\s*\S")  # "# deferred: <why this import waits>"
LONG = re.compile(r"#\s*long:\s*\S")  # "# long: <why this function may be long>"

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "composenet"


# ---- the checker ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Import:
    src: str  # importing module
    dst: str  # imported module of the package (already resolved)
    path: str  # importing file, relative to the repository
    line: int
    text: str  # the statement's first line, as written
    local: bool  # inside a function or method body
    type_checking: bool  # under `if TYPE_CHECKING:`
    deferred: bool  # carries "# deferred: <reason>"


@dataclass
class Tree:
    """The parsed package: module name -> (path, source, syntax tree)."""

    modules: dict[str, tuple[str, str, ast.Module]]
    imports: list[Import] | None = None  # imports(tree), once computed

    @classmethod
    def from_sources(cls, sources: Mapping[str, str]) -> Tree:
        """sources: {"composenet/core/x.py": "source", ...} (paths relative to the repository)."""
        mods = {}
        for path, src in sources.items():
            parts = path.removesuffix(".py").split("/")
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = (path, src, ast.parse(src, filename=path))
        return cls(mods)

    @classmethod
    def from_disk(cls, root: Path = ROOT) -> Tree:
        files = sorted((root / PACKAGE).rglob("*.py"))
        return cls.from_sources({f.relative_to(root).as_posix(): f.read_text(encoding="utf-8") for f in files})

    def __repr__(self) -> str:
        return f"Tree({len(self.modules)} modules)"

    def is_package(self, module: str) -> bool:
        return self.modules[module][0].endswith("/__init__.py")


def layer_of(module: str) -> int | None:
    hits = [i for i, (_, pats) in enumerate(LAYERS) if any(fnmatch.fnmatchcase(module, p) for p in pats)]
    return hits[0] if len(hits) == 1 else None


def layer_name(module: str) -> str:
    i = layer_of(module)
    return "no layer" if i is None else f"{LAYERS[i][0]}, layer {i + 1}"


def comments(source: str) -> dict[int, tuple[str, bool]]:
    """line -> (comment text, the line holds nothing but the comment)."""
    out: dict[int, tuple[str, bool]] = {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            out[row] = (tok.string, not lines[row - 1][:col].strip())
    return out


def _marked(notes: dict[int, tuple[str, bool]], pattern: re.Pattern[str], on: range, above: int) -> bool:
    """A marker comment on one of the lines `on`, or on a comment-only line `above`."""
    if any(pattern.search(notes[n][0]) for n in on if n in notes):
        return True
    text, alone = notes.get(above, ("", False))
    return alone and bool(pattern.search(text))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(tree: Tree, module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The package's modules an import statement names (an outside import names none)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if (hit := _existing(tree, alias.name)) is not None:
                yield hit
        return
    base = node.module or ""
    if node.level:
        pkg = module if tree.is_package(module) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{base}" if base else pkg
    for alias in node.names:
        full = f"{base}.{alias.name}"
        if alias.name != "*" and full in tree.modules:  # `from composenet.kernel import links`
            yield full
        elif (hit := _existing(tree, base)) is not None:
            yield hit


def _existing(tree: Tree, name: str) -> str | None:
    """The longest prefix of a dotted name that is a module of the tree."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in tree.modules:
            return ".".join(parts)
        parts.pop()
    return None


def imports(tree: Tree) -> list[Import]:
    """Every import statement of the tree (of any module, in or out of the package), with where it is."""
    if tree.imports is not None:
        return tree.imports
    out: list[Import] = []
    for module in sorted(tree.modules):
        _visit(tree, module, tree.modules[module][2], comments(tree.modules[module][1]), False, False, out)
    tree.imports = out
    return out


def _visit(tree: Tree, module: str, node: ast.AST, notes: dict[int, tuple[str, bool]], local: bool, tc: bool,
           out: list[Import]) -> None:
    path, source, _ = tree.modules[module]
    if isinstance(node, ast.Import | ast.ImportFrom):
        deferred = _marked(notes, DEFERRED, range(node.lineno, node.lineno + 1), node.lineno - 1)
        text = source.splitlines()[node.lineno - 1].strip()
        for dst in list(dict.fromkeys(_resolve(tree, module, node))) or [""]:  # "": outside the package
            out.append(Import(module, dst, path, node.lineno, text, local, tc, deferred))
        return
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        local = True
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for stmt in node.body:
            _visit(tree, module, stmt, notes, local, True, out)
        for stmt in node.orelse:
            _visit(tree, module, stmt, notes, local, tc, out)
        return
    for child in ast.iter_child_nodes(node):
        _visit(tree, module, child, notes, local, tc, out)


def edges(tree: Tree) -> dict[tuple[str, str], list[Import]]:
    """(importer, imported) -> the import statements that make the edge, between modules of the package."""
    out: dict[tuple[str, str], list[Import]] = {}
    for imp in imports(tree):
        if imp.dst and imp.dst != imp.src:
            out.setdefault((imp.src, imp.dst), []).append(imp)
    return out


def _where(imps: list[Import]) -> str:
    return f"{imps[0].path}:" + ",".join(str(i.line) for i in imps)


def cycle_problems(tree: Tree) -> list[str]:
    """One message per strongly connected group of modules: its members and one shortest cycle."""
    graph: dict[str, list[str]] = {m: [] for m in tree.modules}
    es = edges(tree)
    for src, dst in sorted(es):
        graph[src].append(dst)
    out = []
    for scc in _sccs(graph):
        if len(scc) < 2:
            continue
        start = min(scc)
        path = _shortest_cycle(graph, start, set(scc))
        steps = " -> ".join(f"{b} ({_where(es[(a, b)])})" for a, b in zip(path, path[1:], strict=False))
        msg = f"import cycle among {', '.join(sorted(scc))}: {start} -> {steps}"
        if len(scc) > 2:  # every import inside the group: one cycle broken may leave another
            inside = sorted((a, b) for a, b in es if a in scc and b in scc)
            msg += "".join(f"\n      {a} -> {b} ({_where(es[(a, b)])})" for a, b in inside)
        out.append(msg)
    return sorted(out)


def _sccs(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative: no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                out.append(comp)
    return out


def _shortest_cycle(graph: dict[str, list[str]], start: str, within: set[str]) -> list[str]:
    """start -> ... -> start, fewest edges, through modules of `within` (breadth first)."""
    parent: dict[str, str] = {}
    queue = [start]
    for node in queue:
        for nxt in graph[node]:
            if nxt not in within:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is on no cycle of {sorted(within)}")


def upward_problems(tree: Tree) -> list[str]:
    out = []
    for (src, dst), imps in sorted(edges(tree).items()):
        a, b = layer_of(src), layer_of(dst)
        if a is not None and b is not None and b < a:
            kind = " (under TYPE_CHECKING)" if all(i.type_checking for i in imps) else ""
            out.append(f"{_where(imps)}: {src} ({layer_name(src)}) imports {dst} ({layer_name(dst)}), "
                       f"a higher layer{kind}")
    return out


def unassigned_problems(tree: Tree) -> list[str]:
    out = []
    for module, (path, _, _) in sorted(tree.modules.items()):
        n = sum(any(fnmatch.fnmatchcase(module, p) for p in pats) for _, pats in LAYERS)
        if n != 1:
            out.append(f"{path}: {module} is in {n} layers of LAYERS (must be in exactly one)")
    return out


def local_import_problems(tree: Tree) -> list[str]:
    bad = {(i.path, i.line, i.text) for i in imports(tree) if i.local and not i.type_checking and not i.deferred}
    return [f"{path}:{line}: import inside a function without '# deferred: <reason>': {text}"
            for path, line, text in sorted(bad)]


def size_problems(tree: Tree) -> list[str]:
    out: list[tuple[str, int, str]] = []
    for _, (path, source, root) in sorted(tree.modules.items()):
        n = len(source.splitlines())
        if n > MAX_MODULE_LINES:
            out.append((path, 0, f"{path}: module of {n} lines (over {MAX_MODULE_LINES})"))
        notes = comments(source)
        for node in ast.walk(root):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length <= MAX_FUNCTION_LINES:
                continue
            top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if _marked(notes, LONG, range(node.lineno, node.body[0].lineno + 1), top - 1):
                continue
            out.append((path, node.lineno, f"{path}:{node.lineno}: function {node.name} of {length} lines "
                                           f"(over {MAX_FUNCTION_LINES}, and no '# long: <reason>')"))
    return [msg for _, _, msg in sorted(out)]


# ---- the real tree ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree.from_disk()


def _fail_on(title: str, problems: list[str]) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {title}:\n  " + "\n  ".join(problems), pytrace=False)


def test_the_tree_is_read(tree: Tree):
    """Guards the checks below against seeing nothing: every layer has modules, and they import."""
    assert len(tree.modules) > 40 and len(edges(tree)) > 100
    assert {layer_of(m) for m in tree.modules} == set(range(len(LAYERS)))


def test_every_module_has_one_layer(tree: Tree):
    problems = unassigned_problems(tree)
    _fail_on("modules outside the layer table", problems)


def test_no_import_cycles(tree: Tree):
    problems = cycle_problems(tree)
    _fail_on("import cycles", problems)


def test_no_import_goes_up_a_layer(tree: Tree):
    problems = upward_problems(tree)
    _fail_on("imports up a layer", problems)


def test_imports_in_functions_say_why_they_wait(tree: Tree):
    problems = local_import_problems(tree)
    _fail_on("imports in functions without '# deferred: <reason>'", problems)


def test_modules_and_functions_are_not_too_long(tree: Tree):
    problems = size_problems(tree)
    _fail_on("modules or functions too long", problems)


# ---- the checker on synthetic trees -----------------------------------------------------------------

def _tree(**sources: str) -> Tree:
    """_tree(core__a="...") is composenet/core/a.py; "__init__" names a package; "_" separates nothing else."""
    out = {}
    for name, src in sources.items():
        parts = name.split("__")
        if parts[-1] == "":  # trailing "__": a package's __init__
            parts[-1] = "__init__"
        out["/".join([PACKAGE, *parts]) + ".py"] = textwrap.dedent(src)
    return Tree.from_sources(out)


def test_layer_table_places_modules():
    assert layer_of("composenet.cli") == 0 and layer_of("composenet.cli.network") == 0
    assert layer_of("composenet.__main__") == 0
    assert layer_of("composenet.pipeline") == layer_of("composenet.networks") == 1
    assert layer_of("composenet.kernel.links") == 2
    assert layer_of("composenet.dns.__main__") == 3
    assert layer_of("composenet.compose.load") == 4
    assert layer_of("composenet.core.desired") == 5
    assert layer_of("composenet.linux.netns") == 6
    assert layer_of("composenet") == layer_of("composenet.errors") == layer_of("composenet.paths") == 7
    assert layer_of("composenet.elsewhere") is None and layer_of("composenetx") is None


def test_checker_finds_a_cycle_and_names_its_lines():
    t = _tree(kernel__a="import os\nfrom composenet.kernel import b\n",
              kernel__b="def f():\n    from composenet.kernel.c import x  # deferred: test\n",
              kernel__c="\n\nfrom composenet.kernel.a import y\n",
              kernel__d="from composenet.kernel import a\n")
    (msg,) = cycle_problems(t)
    assert msg.splitlines() == [
        "import cycle among composenet.kernel.a, composenet.kernel.b, composenet.kernel.c: "
        "composenet.kernel.a -> composenet.kernel.b (composenet/kernel/a.py:2) -> "
        "composenet.kernel.c (composenet/kernel/b.py:2) -> composenet.kernel.a (composenet/kernel/c.py:3)",
        # the whole group's imports: breaking one cycle may leave another
        "      composenet.kernel.a -> composenet.kernel.b (composenet/kernel/a.py:2)",
        "      composenet.kernel.b -> composenet.kernel.c (composenet/kernel/b.py:2)",
        "      composenet.kernel.c -> composenet.kernel.a (composenet/kernel/c.py:3)",
    ]
    assert not upward_problems(t) and not local_import_problems(t)
    assert cycle_problems(_tree(kernel__a="from composenet.kernel import b\n", kernel__b="x = 1\n")) == []
    two = cycle_problems(_tree(core__a="from composenet.core import b\n", core__b="import composenet.core.a\n",
                               linux__x="from composenet.linux import y\n", linux__y="from . import x\n"))
    assert two == [
        "import cycle among composenet.core.a, composenet.core.b: composenet.core.a -> composenet.core.b "
        "(composenet/core/a.py:1) -> composenet.core.a (composenet/core/b.py:1)",
        "import cycle among composenet.linux.x, composenet.linux.y: composenet.linux.x -> composenet.linux.y "
        "(composenet/linux/x.py:1) -> composenet.linux.x (composenet/linux/y.py:1)",
    ]


def test_checker_finds_cycles_through_a_package_init_and_type_checking():
    t = _tree(core__="from composenet.core.m import M\n",
              core__m="from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from composenet.core import M2\n")
    (msg,) = cycle_problems(t)
    assert "composenet.core -> composenet.core.m (composenet/core/__init__.py:1) -> composenet.core " in msg
    assert not local_import_problems(t)


def test_checker_finds_upward_edges_everywhere():
    t = _tree(core__a="""
                  import typing
                  from composenet.kernel.links import x
                  class C:
                      def m(self):
                          import composenet.cli.app  # deferred: heavy
                  if typing.TYPE_CHECKING:
                      from composenet.compose import load
                  from composenet import errors, pipeline
                  from composenet.linux import netns
              """,
              kernel__links="", cli__="", cli__app="", compose__="", compose__load="", linux__netns="",
              errors="", pipeline="")
    got = upward_problems(t)
    assert got == [
        "composenet/core/a.py:6: composenet.core.a (core, layer 6) imports composenet.cli.app (cli, layer 1), "
        "a higher layer",
        "composenet/core/a.py:8: composenet.core.a (core, layer 6) imports composenet.compose.load "
        "(compose, layer 5), a higher layer (under TYPE_CHECKING)",
        "composenet/core/a.py:3: composenet.core.a (core, layer 6) imports composenet.kernel.links "
        "(kernel, layer 3), a higher layer",
        "composenet/core/a.py:9: composenet.core.a (core, layer 6) imports composenet.pipeline "
        "(orchestration, layer 2), a higher layer",
    ]
    # composenet.errors and composenet.linux.netns are below core: allowed; inside one layer too.
    assert not upward_problems(_tree(kernel__a="from composenet.kernel import b\n", kernel__b="from . import a\n"))


def test_checker_resolves_relative_imports():
    t = _tree(core__="", core__a="from . import b\nfrom .c import z\nfrom .. import errors\n", core__b="",
              core__c="", errors="", kernel__="from .links import L\nfrom ..cli import app\n", kernel__links="",
              cli__="", cli__app="")
    got = {(i.src, i.dst) for i in imports(t)}
    assert {("composenet.core.a", "composenet.core.b"), ("composenet.core.a", "composenet.core.c"),
            ("composenet.core.a", "composenet.errors"), ("composenet.kernel", "composenet.kernel.links"),
            ("composenet.kernel", "composenet.cli.app")} <= got
    assert [m.split(":")[0] for m in upward_problems(t)] == ["composenet/kernel/__init__.py"]


def test_checker_wants_a_reason_on_imports_in_functions():
    src = """\
        import json
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from composenet.errors import E
        class K:
            import re
            def m(self):
                import zlib
        def f():
            import yaml  # deferred: start-up time of the CLI
            # deferred: the loader is heavy
            from composenet.compose import (
                load,
            )
            from composenet.errors import (  # deferred: reason on the first line
                E,
            )
            import a  # deferred:
            s = "# deferred: not a comment"; import b
            import c  # deferred: on c's line
            import d
            def g():
                import shlex
            if TYPE_CHECKING:
                from composenet.errors import F
            return lambda: None
        async def h():
            from composenet.errors import (
                E,  # deferred: not on the first line
            )
    """
    t = _tree(core__a=src, compose__="", compose__load="", errors="")
    got = local_import_problems(t)
    assert [int(m.split(":")[1]) for m in got] == [8, 18, 19, 21, 23, 28], got
    assert got[0] == "composenet/core/a.py:8: import inside a function without '# deferred: <reason>': import zlib"
    assert got[-1].endswith(": from composenet.errors import (")


def test_checker_finds_long_modules_and_functions():
    body = "    x = 1\n" * (MAX_FUNCTION_LINES - 1)
    src = (f"def short():\n{body}"  # exactly the limit
           f"def long():\n{body}    x = 2\n"
           f"# long: a table of cases\ndef excused_above():\n{body}    x = 2\n"
           f"@decorator\ndef decorated(a,\n        b):  # long: reason on the def\n{body}    x = 2\n"
           f"# long: above the decorators\n@decorator\ndef decorated2():\n{body}    x = 2\n"
           f"def excused_inside():\n    # long: first line of the body\n{body}    x = 2\n"
           f"x = 1  # long: on a code line above, not alone\ndef not_excused():\n{body}    x = 2\n"
           f"class C:\n    async def method(self):  # long:\n{textwrap.indent(body, '    ')}        x = 2\n")
    got = size_problems(_tree(core__a=src))
    lines = src.splitlines()
    assert len(lines) > MAX_MODULE_LINES
    names = [m.split("function ")[1].split(" ")[0] for m in got if "function" in m]
    assert names == ["long", "not_excused", "method"], got
    assert f"composenet/core/a.py: module of {len(lines)} lines (over {MAX_MODULE_LINES})" in got
    short = "\n".join(lines[:MAX_MODULE_LINES])
    assert not [m for m in size_problems(_tree(core__a=short + "\n")) if "module of" in m]
