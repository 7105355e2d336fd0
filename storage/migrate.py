"""Forward-only SQL migrations, applied in order under a Postgres advisory lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from storage import queries as q
from storage.pool import Conn

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant will do as long as every TicketFlow process agrees on it.
MIGRATION_LOCK_KEY = 0x7469636B6574  # "ticket"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("storage.migrations").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def apply_migrations(conn: Conn) -> list[str]:
    """Applies every migration not yet recorded; returns the names applied now."""
    applied_now: list[str] = []
    await conn.execute(q.LOCK_MIGRATIONS, MIGRATION_LOCK_KEY)
    try:
        await conn.execute(q.CREATE_SCHEMA_MIGRATIONS)
        done = {row["version"] for row in await conn.fetch(q.SELECT_APPLIED_MIGRATIONS)}
        for migration in load_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(q.INSERT_MIGRATION, migration.version, migration.name)
            logger.info("applied migration %s", migration.name)
            applied_now.append(migration.name)
    finally:
        await conn.execute(q.UNLOCK_MIGRATIONS, MIGRATION_LOCK_KEY)
    return applied_now


async def migrate(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()
