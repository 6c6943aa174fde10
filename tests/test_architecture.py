"""The rooms of ``docs/architecture.md`` and the arrows between them, checked.

Every module of ``leopard`` and ``ingest`` is parsed (not imported) and its imports
of project modules collected: the rules below are about the code as written, so a
rule broken in a branch no test runs is still caught.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("leopard", "ingest")

#: room -> the rooms it may import (every room may import ``errors``)
ARROWS: dict[str, set[str]] = {
    "errors": set(),
    "model": set(),
    "store": {"model"},
    "core": {"store", "model"},
    "ingest": {"core", "model"},
    "gen": {"model"},
    "api": {"core", "ingest", "model"},
    "http": {"core", "ingest", "model", "api"},
    "grpc": {"core", "ingest", "model", "api"},
    "spark": {"core", "ingest", "model", "store"},
    "cli": {"core", "ingest", "model", "api", "http", "gen", "grpc", "spark"},
    "client": {"http.schemas", "model.routing"},
    "front": set(),
}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def room(module: str) -> str:
    """The room of a project module."""
    parts = module.split(".")
    if parts[0] == "ingest":
        return "ingest"
    if len(parts) == 1:
        return "front"
    second = parts[1]
    if second in ("model", "store", "core", "http", "grpc", "cli", "gen"):
        return second
    if second == "__main__":
        return "cli"
    return second  # errors, api, client


def _resolve(name: str) -> str | None:
    """The project module an import names (a module, or the package holding a name)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str) -> Iterator[tuple[str, int, bool]]:
    """``(imported project module, line, inside a function)`` for every import."""
    path = MODULES[module]
    return imports_in(path.read_text(), module, package=path.name == "__init__.py")


def imports_in(source: str, module: str, *, package: bool) -> Iterator[tuple[str, int, bool]]:
    """The imports of project modules in ``source``, the text of ``module``."""
    tree = ast.parse(source)
    package_name = module if package else module.rpartition(".")[0]

    def visit(node: ast.AST, nested: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found = _resolve(alias.name)
                    if found:
                        yield found, child.lineno, nested
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package_name.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    found = _resolve(f"{base}.{alias.name}") or _resolve(base)
                    if found:
                        yield found, child.lineno, nested
            elif isinstance(child, ast.If) and _is_type_checking(child):
                continue  # imports for annotations only
            yield from visit(child, inner)

    yield from visit(tree, False)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


GRAPH = {m: sorted({target for target, _, _ in imports(m) if target != m}) for m in MODULES}


def test_the_modules_were_found() -> None:
    assert "leopard.store.rocks" in MODULES and "ingest.consumer" in MODULES
    assert "leopard.core.index" in GRAPH["leopard.api"]


def against_arrows(graph: dict[str, list[str]]) -> list[str]:
    """Every import that no arrow allows."""
    bad = []
    for module, targets in graph.items():
        mine = room(module)
        for target in targets:
            theirs = room(target)
            allowed = ARROWS[mine] | {"errors", mine}
            if theirs in allowed or target.removeprefix("leopard.") in allowed:
                continue
            bad.append(f"{module} ({mine}) imports {target} ({theirs})")
    return bad


def test_every_import_follows_an_arrow() -> None:
    bad = against_arrows(GRAPH)
    assert not bad, "imports against the arrows:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_project_import_hidden_in_a_function() -> None:
    hidden = [
        f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
        for m in MODULES
        for target, line, nested in imports(m)
        if nested
    ]
    assert not hidden, "\n".join(hidden)


def test_rocksdict_is_imported_in_one_place() -> None:
    users = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "rocksdict" for n in names):
                users.append(module)
    assert sorted(set(users)) == ["leopard.store.rocks"]


def test_the_core_imports_no_shell_and_no_ingest() -> None:
    for module, targets in GRAPH.items():
        if room(module) in ("core", "store", "model"):
            for target in targets:
                assert room(target) not in ("ingest", "cli", "http", "api", "client"), (
                    f"{module} imports {target}"
                )


@pytest.mark.parametrize("module", ["leopard.client", "leopard.errors", "leopard"])
def test_light_modules_load_no_heavy_dependency(module: str) -> None:
    code = (
        f"import sys, {module}; heavy = ('pyarrow', 'rocksdict', 'uvicorn', 'kafka', 'numpy');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", f"import {module} loads {out.stdout.strip()}"


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_checks_catch_what_they_look_for() -> None:
    """A core module importing the CLI, in a function, is caught twice over."""
    source = (
        "import os\nfrom leopard.model import names\ndef f():\n    from leopard.cli import query\n"
    )
    found = list(imports_in(source, "leopard.core.fake", package=False))
    assert found == [("leopard.model.names", 2, False), ("leopard.cli.query", 4, True)]
    bad = against_arrows({"leopard.core.fake": [t for t, _, _ in found]})
    assert bad == ["leopard.core.fake (core) imports leopard.cli.query (cli)"]
    relative = list(imports_in("from ..store import layout\n", "leopard.core.x", package=False))
    assert relative == [("leopard.store.layout", 1, False)]
