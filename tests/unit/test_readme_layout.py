"""The README's layout table names every top-level package and module, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def layout_table_paths() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| path | what lives there |") :]
    table = table[: table.index("\n\n")]
    paths: set[str] = set()
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1]
        paths.update(re.findall(r"`([^`]+)`", first_cell))
    return paths


def test_the_layout_table_matches_the_tree() -> None:
    listed = layout_table_paths()
    packages = {f"{p.parent.name}/" for p in ROOT.glob("*/__init__.py")}
    modules = {p.name for p in ROOT.glob("*.py")}
    assert packages | modules <= listed, (
        f"missing from README.md's layout table: {sorted((packages | modules) - listed)}"
    )
    gone = sorted(path for path in listed if not (ROOT / path).exists())
    assert not gone, f"README.md's layout table names what is not in the tree: {gone}"
