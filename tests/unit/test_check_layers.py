"""tools/check_layers.py finds import cycles (deferred imports included) and layer breaches."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tools.check_layers import check, main

ROOT = Path(__file__).resolve().parents[2]


def make_tree(root: Path, files: dict[str, str]) -> Path:
    """Writes ``files`` (path -> source) under ``root``, with an __init__.py in every package dir."""
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if parent != Path("."):
                (root / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
    return root


CLEAN = {
    "domain/seats.py": "from dataclasses import dataclass\n",
    "domain/errors.py": "from domain.seats import *\n",
    "storage/pool.py": "import asyncpg\nfrom domain import errors\n",
    "actors/inventory.py": "import ray\nfrom storage.pool import *\nfrom . import names\n",
    "actors/names.py": "NAME = 'x'\n",
    "api/routes.py": "import fastapi\nfrom actors import inventory\n",
    "serve_app.py": "from api import routes\n",
    "tests/test_x.py": "import serve_app\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert check(make_tree(tmp_path, CLEAN)) == []
    assert main([str(tmp_path)]) == 0


def test_a_cycle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    make_tree(tmp_path, {
        **CLEAN,
        "actors/registry.py": "from actors.saga import Saga\n",
        "actors/saga.py": """
            class Saga:
                def start(self) -> None:
                    from actors import registry  # deferred: invisible at import time
        """,
    })  # fmt: skip
    problems = check(tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith("cycle: actors.registry, actors.saga: ")
    assert "actors.saga -> actors.registry (actors/saga.py:4, deferred)" in problems[0]
    assert main([str(tmp_path)]) == 1


def test_a_cycle_through_relative_and_type_checking_imports_is_found(tmp_path: Path) -> None:
    make_tree(tmp_path, {
        **CLEAN,
        "api/a.py": "from . import b\n",
        "api/b.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from .a import thing
        """,
    })  # fmt: skip
    assert [p.split(":")[1] for p in check(tmp_path)] == [" api.a, api.b"]


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("domain/bad.py", "import asyncpg\n", "domain.bad imports asyncpg"),
        ("domain/bad.py", "from ray.serve import handle\n", "domain.bad imports ray"),
        (
            "domain/bad.py",
            "def f():\n    from starlette import requests\n",
            "domain.bad imports starlette (deferred)",
        ),
        ("domain/bad.py", "from storage import pool\n", "domain.bad imports storage.pool"),
        ("storage/bad.py", "from actors.names import NAME\n", "storage.bad imports actors.names"),
        ("storage/bad.py", "import api.routes\n", "storage.bad imports api.routes"),
        (
            "actors/bad.py",
            "def f():\n    import api.routes\n",
            "actors.bad imports api.routes (deferred)",
        ),
        ("api/bad.py", "import serve_app\n", "api.bad imports serve_app"),
        ("config/bad.py", "from domain import seats\n", "config.bad imports domain.seats"),
    ],
)
def test_a_layer_breach_is_found(tmp_path: Path, path: str, source: str, expected: str) -> None:
    make_tree(tmp_path, {**CLEAN, path: source})
    problems = check(tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:")
    assert problems[0].endswith(f"layer: {expected}")


def test_tests_may_import_anything(tmp_path: Path) -> None:
    make_tree(tmp_path, {**CLEAN, "tests/test_y.py": "import ray\nfrom domain import seats\n"})
    assert check(tmp_path) == []


def test_our_tree_breaks_no_layer_rule() -> None:
    # Cycles the actor-wiring and benchmark work still has to remove are not asserted here; a
    # layer breach is never acceptable.
    assert [p for p in check(ROOT) if not p.startswith("cycle:")] == []
