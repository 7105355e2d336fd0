"""Every statement in storage/queries.py is valid SQL for the migrated schema.

Postgres parses and plans a statement when it is prepared, so a misspelt column, a wrong type or
a statement left behind by a migration fails here, one test per constant, without running it.
The repository tests (test_*_repository.py) check what the statements do.
"""

from __future__ import annotations

import re

import asyncpg
import pytest

from storage import queries

STATEMENTS = {
    name: value
    for name, value in vars(queries).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str)
}


def test_queries_holds_statements() -> None:
    assert len(STATEMENTS) > 40


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_statement_prepares_on_the_migrated_schema(
    conn: asyncpg.Connection, name: str
) -> None:
    statement = await conn.prepare(STATEMENTS[name])
    # Every placeholder up to the highest is used: a gap means an argument bound to nothing.
    numbers = {int(n) for n in re.findall(r"\$(\d+)", STATEMENTS[name])}
    assert len(statement.get_parameters()) == max(numbers, default=0) == len(numbers)
