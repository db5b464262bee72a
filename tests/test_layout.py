"""The package's layout keeps its rules: tools above the library, no cycles, small rooms.

``shared/design.md`` draws two floors: the library the notebooks import, and the tools
(server, batch runs, benchmarks, the offline bundle, the command line) that import it.
These tests read every module's imports (lazy ones inside functions too) with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "helpers"
TOOLS = (
    "helpers.server",
    "helpers.batch",
    "helpers.bench",
    "helpers.bundle",
    "helpers.report",
    "helpers.cli",
)
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    """Return the dotted name of a module file under src/helpers."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    """Return every module of the package, parsed, by dotted name."""
    return {module_name(path): ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}


def imported(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Return the package's modules that ``name`` imports, anywhere in its code."""
    package = (
        name
        if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
        else (name.rpartition(".")[0])
    )
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                )
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target.strip(".") for target in targets if target.strip(".") in known}
    return found - {name}


def graph() -> dict[str, set[str]]:
    """Return the import graph of the package's modules."""
    trees = modules()
    return {name: imported(name, tree, set(trees)) for name, tree in trees.items()}


def is_tool(name: str) -> bool:
    """Say whether a module belongs to a tool subpackage (or is the entry point)."""
    return name == "helpers.__main__" or any(name == t or name.startswith(t + ".") for t in TOOLS)


def test_the_library_never_imports_a_tool():
    upward = {
        name: sorted(target for target in targets if is_tool(target))
        for name, targets in graph().items()
        if not is_tool(name)
    }
    assert {name: targets for name, targets in upward.items() if targets} == {}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle of the graph as a path of names, or None."""
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(edges[name]):
            if state.get(target) == "open":
                return path + [name, target]
            if target not in state and (cycle := visit(target, path + [name])):
                return cycle
        state[name] = "done"
        return None

    for name in sorted(edges):
        if name not in state and (cycle := visit(name, [])):
            return cycle
    return None


def test_no_import_cycle():
    # A module that imports its own package's __init__ (to reach a sibling) is no cycle.
    edges = {
        name: {target for target in targets if not name.startswith(target + ".")}
        for name, targets in graph().items()
    }
    assert find_cycle(edges) is None


def test_the_cycle_check_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p))
def test_rooms_stay_small(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{module_name(path)}: {len(lines)} lines"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{module_name(path)}.{node.name}: {length} lines"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    tree = ast.parse("def f():\n    from helpers.server.app import create_app\n")
    found = imported("helpers.train", tree, {"helpers.server.app", "helpers.train"})
    assert found == {"helpers.server.app"} and is_tool("helpers.server.app")
