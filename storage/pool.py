"""One asyncpg pool per process, and what counts as "the database is down".

`LazyPool` is the one way to open it: a replica or an actor makes one at start-up and awaits
`get()` where it needs a connection; the first call opens the pool, concurrent first calls share
that one opening.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from config.settings import Settings

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # What a repository function accepts: a plain connection or one borrowed from the pool.
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Conn = Any

# Errors that mean Postgres is unreachable or refusing work right now (503, not 500).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    # A connection caught mid-operation by a server shutdown ends up in this state.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.QueryCanceledError,
)


def require_database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise RuntimeError(
            "DATABASE_URL is not set: start TicketFlow with `ticketflow serve` (which starts an "
            "embedded Postgres) or set DATABASE_URL"
        )
    return settings.database_url


async def _keep_session(_conn: Any) -> None:
    """TicketFlow leaves no session state behind (no SET, LISTEN or advisory lock on pooled
    connections), so the pool's reset query, a round trip on every release, is skipped."""


async def _open_pool(
    settings: Settings, *, min_size: int | None = None, max_size: int | None = None
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        require_database_url(settings),
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max if max_size is None else max_size,
        command_timeout=settings.db_command_timeout,
        timeout=settings.db_command_timeout,
        # Statements are prepared once per connection and reused (asyncpg's statement cache).
        statement_cache_size=256,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def connect_alone(settings: Settings) -> asyncpg.Connection[asyncpg.Record]:
    """A connection of its own, outside any pool: for LISTEN, which holds session state that a
    pooled connection must not keep."""
    conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
        require_database_url(settings), timeout=settings.db_command_timeout
    )
    return conn


class LazyPool:
    """A process's pool, created on first use by exactly one caller.

    Actors start taking calls before any pool exists; without the lock every call that arrives
    during the first connect would open a pool of its own (seen: 65 connections from one actor).
    Sizes default to the settings' `db_pool_min`/`db_pool_max` (the gateway's).
    """

    def __init__(
        self, settings: Settings, *, min_size: int | None = None, max_size: int | None = None
    ) -> None:
        self._settings = settings
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await _open_pool(
                        self._settings, min_size=self._min_size, max_size=self._max_size
                    )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
