"""What the system routes read: a liveness probe and a user's recent notifications."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage import queries as q
from storage.pool import Conn


@dataclass(frozen=True)
class SentNotification:
    id: str
    type: str  # BOOKING_CONFIRMED | BOOKING_FAILED | BOOKING_CANCELLED
    subject: str
    sent_at: datetime
    booking_id: str | None
    status: str  # SENT
    created_at: datetime


async def ping(conn: Conn, *, timeout: float) -> None:
    """One `SELECT 1`; raises if Postgres does not answer within `timeout` seconds."""
    await conn.fetchval(q.SELECT_ONE, timeout=timeout)


async def list_recent_notifications(conn: Conn, user_id: str) -> list[SentNotification]:
    """The user's 20 most recently sent notifications, newest first (unsent ones are not listed)."""
    rows = await conn.fetch(q.SELECT_RECENT_NOTIFICATIONS, user_id)
    return [
        SentNotification(
            id=r["id"], type=r["type"], subject=r["subject"], sent_at=r["sent_at"], booking_id=r["booking_id"],
            status=r["status"], created_at=r["created_at"],
        )
        for r in rows
    ]
