"""A process opens one pool however many calls arrive while it connects (real Postgres)."""

from __future__ import annotations

import asyncio

import asyncpg

from config.settings import get_settings
from storage.pool import LazyPool


async def test_concurrent_first_calls_share_one_pool(db: asyncpg.Pool) -> None:
    count_sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    before = await db.fetchval(count_sql)
    lazy = LazyPool(get_settings(), min_size=2, max_size=2)
    pools = await asyncio.gather(*(lazy.get() for _ in range(50)))
    try:
        assert len({id(p) for p in pools}) == 1
        after = await db.fetchval(count_sql)
        assert after - before <= 2, f"{after - before} new connections for a pool of 2"
    finally:
        await lazy.close()
