"""The package's import graph: no cycles (imports inside functions count) and no library module importing an app.

Edges come from the source (``ast``), not from running it: ``import a.b`` and ``from a import b`` (``a.b`` a module)
point at ``a.b``; ``from a import name`` points at ``a``. Imports under ``if TYPE_CHECKING:`` never run and are
left out. A package's ``__init__`` importing its own submodules is an edge like any other.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import faceclip

PACKAGE_DIR = Path(faceclip.__file__).resolve().parent
APPS = ("faceclip.cli", "faceclip.demo", "faceclip.__main__")
"""Application packages: they may import the library, never the other way round."""


@dataclass(frozen=True, order=True)
class Edge:
    """``importer`` imports ``target`` at ``path:line`` (``path`` relative to the folder holding the package)."""

    importer: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.target} ({self.path}:{self.line})"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package rooted at ``package_dir``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at any depth, except those under ``if TYPE_CHECKING:``."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict) -> list[str]:
    """The package's modules that ``node`` (in ``module``, file ``path``) imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([node.module] if node.module else []))
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        targets.append(submodule if submodule in modules else base)
    return [t for t in dict.fromkeys(targets) if t in modules]


def import_edges(package_dir: Path) -> list[Edge]:
    """All import edges between the modules of the package at ``package_dir``."""
    modules = module_files(package_dir)
    edges = []
    for module, path in modules.items():
        for node in _runtime_imports(ast.parse(path.read_text(), filename=str(path))):
            for target in _targets(module, path, node, modules):
                if target != module:
                    edges.append(Edge(module, target, path.relative_to(package_dir.parent), node.lineno))
    return edges


def import_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """The import cycles: for each strongly connected group of modules, the edges inside it."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the package is far too small for the recursion limit
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [sorted(e for e in edges if e.importer in g and e.target in g) for g in sorted(groups, key=sorted)]


def _is_app(module: str) -> bool:
    return any(module == app or module.startswith(app + ".") for app in APPS)


def _describe(cycles: list[list[Edge]]) -> str:
    return "\n".join(
        "cycle among " + ", ".join(sorted({e.importer for e in c})) + ":\n  " + "\n  ".join(map(str, c))
        for c in cycles
    )


def test_no_import_cycles():
    cycles = import_cycles(import_edges(PACKAGE_DIR))
    if cycles:
        pytest.fail(
            "Import cycles (move the shared part to a lower module):\n" + _describe(cycles), pytrace=False
        )


def test_the_library_never_imports_an_app():
    wrong = [e for e in import_edges(PACKAGE_DIR) if not _is_app(e.importer) and _is_app(e.target)]
    if wrong:
        pytest.fail("Library modules importing an app package:\n" + "\n".join(map(str, wrong)), pytrace=False)


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    """On a made-up package: a cycle hidden in a function is found, TYPE_CHECKING imports are not edges."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .low import helper\n")
    (pkg / "sub" / "low.py").write_text("def helper():\n    from pkg.top import value\n    return value\n")
    (pkg / "top.py").write_text(
        "from typing import TYPE_CHECKING\nfrom pkg.sub import low\nif TYPE_CHECKING:\n    import pkg.other\n"
    )
    (pkg / "other.py").write_text("import pkg.top\n")
    edges = {(e.importer, e.target) for e in import_edges(pkg)}
    assert edges == {
        ("pkg.sub", "pkg.sub.low"),
        ("pkg.sub.low", "pkg.top"),
        ("pkg.top", "pkg.sub.low"),
        ("pkg.other", "pkg.top"),
    }
    cycles = import_cycles(import_edges(pkg))
    assert [{e.importer for e in c} for c in cycles] == [{"pkg.sub.low", "pkg.top"}]
    assert "pkg/sub/low.py:2" in _describe(cycles)
