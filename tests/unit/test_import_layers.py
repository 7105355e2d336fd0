"""The import layers of issue 13: no cycles among actors, storage and domain (deferred imports
count: they hide a cycle, they do not remove it), and dependencies point inward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("actors", "api", "config", "domain", "providers", "storage", "serve_app", "benchmarks")
LAYERED = ("actors", "storage", "domain")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module of ours that `path` imports, at any depth of the file (TYPE_CHECKING blocks
    excepted: they never run)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in OURS:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)  # `from actors import x`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in OURS)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for package in LAYERED for p in (ROOT / package).rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_cycle_among_actors_storage_and_domain() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(dep):], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


@pytest.mark.parametrize(("package", "forbidden"), [
    ("domain", ("ray", "asyncpg", "fastapi", "redis", "stripe", "jwt", "actors", "storage", "api")),
    ("storage", ("actors", "api")),
    ("actors", ("api",)),
])
def test_dependencies_point_inward(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{_module(path)} imports {n}" for n in names if n.split(".")[0] in forbidden]
    assert offenders == []


def test_actor_names_import_nothing_of_ours() -> None:
    assert _imports(ROOT / "actors" / "names.py") == set()
