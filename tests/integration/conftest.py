"""Fixtures of the repository tests: real Postgres (the session's database: DATABASE_URL's server,
else the embedded one), migrated once per session, and each test on one connection inside a
transaction that is rolled back afterwards. No Ray, no Serve: these start in well under a second."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from storage.migrate import migrate


@pytest_asyncio.fixture(scope="session")
async def migrated_url(database_url: str) -> str:
    """The session's database with every migration applied (once; a no-op if the server did it)."""
    await migrate(database_url)
    return database_url


@pytest_asyncio.fixture
async def conn(migrated_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction that is rolled back after the test: nothing persists."""
    connection = await asyncpg.connect(migrated_url)
    tx = connection.transaction()
    await tx.start()
    try:
        yield connection
    finally:
        await tx.rollback()
        await connection.close()
