"""Import rules of TicketFlow's packages, checked from the source (stdlib ``ast`` only).

Fails (exit 1, one line per violation) on:

* an import cycle among our modules. Every import counts, wherever it sits: at the top of a
  module, inside a function (a "deferred" import only hides a cycle from the interpreter, not from
  the reader), under ``if TYPE_CHECKING:``;
* an import that crosses a layer the wrong way (``RULES`` below; see the README's layout table).

Our modules are the packages (directories with ``__init__.py``) and the ``*.py`` files at the
project root, except ``tests``. Run: ``python tools/check_layers.py [root]`` (``./dev lint`` does).
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

# What a layer must not import: top-level names, ours or third-party ones.
RULES: dict[str, frozenset[str]] = {
    "domain": frozenset(
        {"ray", "asyncpg", "fastapi", "starlette", "redis", "httpx", "stripe", "jwt",
         "storage", "actors", "api", "providers", "supervision", "cli", "serve_app"}
    ),
    "config": frozenset({"domain", "storage", "actors", "api", "providers", "supervision", "cli", "serve_app"}),
    "storage": frozenset({"actors", "api", "cli", "serve_app"}),
    "providers": frozenset({"storage", "actors", "api", "supervision", "cli", "serve_app"}),
    "actors": frozenset({"api", "cli", "serve_app"}),
    "api": frozenset({"cli", "serve_app"}),
    # The embedded servers' supervisor knows processes and files, none of the application.
    "supervision": frozenset({"domain", "storage", "actors", "api", "providers", "cli", "serve_app"}),
}  # fmt: skip
EXCLUDED = frozenset({"tests"})


@dataclass(frozen=True)
class Import:
    importer: str  # dotted name of the importing module
    target: str  # dotted name of what is imported (a module of ours, or a third-party name)
    line: int
    deferred: bool  # inside a function or class body, or under `if TYPE_CHECKING:`


def discover(root: Path, excluded: frozenset[str] = EXCLUDED) -> dict[str, Path]:
    """Every module of ours under ``root``: dotted name -> file (a package is its __init__.py)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.glob("*.py")):
        modules[path.stem] = path
    for init in sorted(root.glob("*/__init__.py")):
        top = init.parent
        if top.name in excluded or top.name.startswith("."):
            continue
        for path in sorted(top.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            # Only modules reachable through packages (a directory without __init__.py is not one).
            if not all(
                (root.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts))
            ):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of ``name`` that is a module of ours, else its top-level name."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return parts[0]


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """What ``module`` imports, each resolved to a module of ours where it is one."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, _resolve(alias.name, modules), node.lineno, deferred))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                # `from pkg import name`: the submodule pkg.name when there is one.
                submodule = f"{base}.{alias.name}" if base else alias.name
                target = submodule if submodule in modules else _resolve(base, modules)
                found.append(Import(module, target, node.lineno, deferred))
        inner = deferred or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                visit(statement, True)
            for statement in node.orelse:
                visit(statement, deferred)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return [imp for imp in found if imp.target != module]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(components)


def check(root: Path, excluded: frozenset[str] = EXCLUDED) -> list[str]:
    """Every violation under ``root``, one line each (empty: the tree is clean)."""
    modules = discover(root, excluded)
    edges: list[Import] = []
    for name, path in modules.items():
        edges.extend(imports_of(name, path, modules))
    problems: list[str] = []

    for imp in edges:
        forbidden = RULES.get(imp.importer.split(".")[0], frozenset())
        if imp.target.split(".")[0] in forbidden:
            where = modules[imp.importer].relative_to(root)
            how = " (deferred)" if imp.deferred else ""
            problems.append(f"{where}:{imp.line}: layer: {imp.importer} imports {imp.target}{how}")

    graph: dict[str, set[str]] = {name: set() for name in modules}
    lines: dict[tuple[str, str], Import] = {}
    for imp in edges:
        if imp.target in modules:
            graph[imp.importer].add(imp.target)
            lines.setdefault((imp.importer, imp.target), imp)
    for component in _cycles(graph):
        members = set(component)
        links = []
        for a in component:
            for b in sorted(graph[a] & members):
                imp = lines[(a, b)]
                how = ", deferred" if imp.deferred else ""
                links.append(f"{a} -> {b} ({modules[a].relative_to(root)}:{imp.line}{how})")
        problems.append(f"cycle: {', '.join(component)}: " + "; ".join(links))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "root", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent
    )
    args = parser.parse_args(argv)
    problems = check(args.root.resolve())
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_layers: {len(problems)} violation(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
