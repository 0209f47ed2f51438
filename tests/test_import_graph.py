"""Issue 14: no import cycle between the package's modules, type-only and function-level imports included.

Every ``import`` statement counts wherever it stands (under ``if TYPE_CHECKING:``, inside a function):
an import hidden that way still ties the two modules together, so hiding one never passes this test.
A module is one file; ``from pkg import name`` leads to the file that defines ``name`` (a package's
``__init__`` only re-exports), so a cycle through a package's face is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import flotorch_nb

ROOT = Path(flotorch_nb.__file__).parent
PACKAGE = ROOT.name


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _file_of(module: str) -> Path | None:
    base = ROOT.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> str:
    return _module_of(path) if path.name == "__init__.py" else _module_of(path).rpartition(".")[0]


def _source(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` reads from."""
    parts = package.split(".")
    base = parts[: len(parts) - node.level + 1] if node.level else []
    return ".".join([*base, *([node.module] if node.module else [])])


def _defined_in(module: str, name: str) -> Path | None:
    """The file that defines ``name`` of ``module``: a submodule, or followed through re-exports."""
    sub = _file_of(f"{module}.{name}")
    if sub is not None:
        return sub
    file = _file_of(module)
    if file is None or file.name != "__init__.py":
        return file
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = _source(node, module)
            if source.split(".")[0] == PACKAGE:
                return _defined_in(source, name)
    return file


def _imports(path: Path) -> set[Path]:
    """The package's files that ``path`` imports, by any import statement anywhere in it."""
    package = _package_of(path)
    found: set[Path | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {_file_of(a.name) for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            source = _source(node, package)
            if source.split(".")[0] == PACKAGE:
                found |= {_defined_in(source, a.name) for a in node.names}
    return {file for file in found if file is not None and file != path}


def _cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """The strongly connected groups of more than one file (Tarjan's algorithm)."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    groups: list[list[Path]] = []

    def visit(node: Path) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_no_two_modules_of_the_package_import_each_other_even_for_types() -> None:
    graph = {path: _imports(path) for path in ROOT.rglob("*.py")}
    cycles = [sorted(str(p.relative_to(ROOT.parent)) for p in group) for group in _cycles(graph)]
    assert cycles == []
