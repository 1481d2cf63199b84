"""The package's import order: dependencies point one way, and the bottom stays light.

Read from the source with `ast`, without importing anything: a module-level import of
another module of the package is an edge (imports under `if TYPE_CHECKING:` and inside
functions run later, or never, and are left out); the graph has no cycle. config.py, the
bottom layer, imports nothing of the package, not even lazily; the sampling settings and
their declarations import no torch, so the CLI checks its arguments before heavy imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "diffumnist"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(body: list[ast.stmt], module_level: bool) -> Iterator[ast.stmt]:
    """The import statements of `body`; with `module_level`, those that run on import."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if module_level and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if module_level and isinstance(node, ast.If) and _is_type_checking(node):
            yield from _import_nodes(node.orelse, module_level)
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _import_nodes([child], module_level)
            elif isinstance(child, ast.excepthandler):
                yield from _import_nodes(child.body, module_level)


def imported_names(module: str, module_level: bool = True) -> set[str]:
    """Every module name `module` imports (a `from X import Y` gives X, and X.Y too)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _import_nodes(tree.body, module_level):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from . import x, from ..y import z
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports when it is imported."""
    return {module: imported_names(module) & set(MODULES) - {module} for module in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that returns to its start, or None."""
    state: dict[str, str] = {}  # "open" while on the stack, "done" after
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_reader_finds_every_module_and_its_imports():
    graph = import_graph()
    assert {"diffumnist.config", "diffumnist.models", "diffumnist.sampling.pipeline"} <= set(graph)
    assert "diffumnist.sampling.settings" in graph["diffumnist.sampling.presets"]
    assert "diffumnist.config" in graph["diffumnist.sampling.settings"]
    # the pipeline samples any model that offers what it needs: no edge back up
    assert "diffumnist.models" not in imported_names("diffumnist.sampling.pipeline", False)
    assert "diffumnist.sampling" in graph["diffumnist.models"]


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_among_the_packages_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_config_imports_nothing_of_the_package_not_even_lazily():
    names = imported_names("diffumnist.config", module_level=False)
    assert not {name for name in names if name.split(".")[0] == "diffumnist"}


@pytest.mark.parametrize(
    "module", ["diffumnist.sampling.settings", "diffumnist.sampling.declarations"]
)
def test_the_sampling_settings_import_no_torch(module):
    """Neither the module nor anything of the package it imports (at any depth) needs torch."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        seen.add(current)
        names = imported_names(current, module_level=False)
        assert not {n for n in names if n.split(".")[0] in ("torch", "numpy")}, current
        todo.extend(n for n in names & set(MODULES) if n not in seen and n != "diffumnist")
    assert "diffumnist.config" in seen
