"""The source tree's layering, read with Python's own parser: no import loops, no import
against the data flow (common -> pipeline -> embedding -> trainer), and a trainer entry point
that stays an outline.

Every `import` and `from ... import` counts, at module level or inside a function: an import
deferred into a function is still a dependency, and a loop through one still means neither
module can be read, tested or moved without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Lower layers first: a module may import its own package and the packages before it.
LAYERS = ("common", "pipeline", "embedding", "trainer")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in LAYERS
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imported(node: ast.AST, importer: str, modules: dict[str, Path]) -> list[str]:
    """The modules of the tree that one import statement names (a `from package import
    module` names the module; a name that is no module names the package it comes from)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = importer.split(".")
            if modules[importer].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" for alias in node.names]
        names = [name if name in modules else base for name in names]
    found = []
    for name in names:
        # `import a.b.c` imports a, a.b and a.b.c; the deepest one of the tree is the edge.
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != importer and name not in found:
            found.append(name)
    return found


def _graph() -> dict[str, dict[str, int]]:
    """module -> {imported module of the tree: line of the first import of it}."""
    modules = _sources()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(node, name, modules):
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def _path(graph: dict[str, dict[str, int]], start: str, goal: str) -> list[str] | None:
    """The modules from `start` to `goal` along imports (breadth first), or None."""
    previous = {start: None}
    queue = [start]
    while queue:
        current = queue.pop(0)
        if current == goal:
            path = []
            while current is not None:
                path.append(current)
                current = previous[current]
            return path[::-1]
        for target in graph[current]:
            if target not in previous:
                previous[target] = current
                queue.append(target)
    return None


def test_the_graph_sees_imports_inside_functions():
    # What the loop check rests on: an import deferred into a function is an edge too.
    graph = _graph()
    assert "pipeline.report" in graph["embedding.planner"]  # imported inside a function
    assert "common.artifacts" in graph["common.config"]  # likewise
    assert "trainer.inputs" in graph["trainer.checks"]  # likewise


def test_no_module_imports_a_module_that_imports_it_back():
    graph = _graph()
    loops = []
    for importer, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            back = _path(graph, target, importer)
            if back:
                loops.append(f"{importer} (line {line}) -> {' -> '.join(back)}")
    assert not loops, "import loops:\n" + "\n".join(loops)


def test_no_module_imports_against_the_data_flow():
    against = []
    for importer, edges in sorted(_graph().items()):
        layer = LAYERS.index(importer.split(".")[0])
        for target, line in sorted(edges.items()):
            if LAYERS.index(target.split(".")[0]) > layer:
                against.append(f"{_sources()[importer].relative_to(ROOT)}:{line} imports {target}")
    assert not against, f"imports against the layers {' -> '.join(LAYERS)}:\n" + "\n".join(against)


@pytest.mark.parametrize("module", ["trainer/task.py"])
def test_the_entry_point_reads_as_an_outline(module):
    path = ROOT / module
    source = path.read_text()
    lines = source.count("\n") + (not source.endswith("\n"))
    assert lines < 250, f"{module} has {lines} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, from line {node.lineno})"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, f"functions over 60 lines in {module}: {', '.join(long)}"
