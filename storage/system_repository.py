"""What the health routes read: a liveness probe (recent notifications are notification_repository's)."""

from __future__ import annotations

from storage import queries as q
from storage.pool import Conn


async def ping(conn: Conn, *, timeout: float) -> None:
    """One `SELECT 1`; raises if Postgres does not answer within `timeout` seconds."""
    await conn.fetchval(q.SELECT_ONE, timeout=timeout)
