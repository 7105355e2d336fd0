"""Notifications in Postgres: the outbox the notifier delivers from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from domain.notifications import BookingSummary, NotificationType
from storage import queries as q
from storage.pool import Conn


@dataclass(frozen=True)
class DueNotification:
    """A PENDING notification whose next attempt is due, with what its e-mail says."""

    id: str
    type: NotificationType
    attempts: int  # deliveries tried so far
    booking_id: str
    request_id: str  # of the HTTP request that made the booking; "" when unknown
    summary: BookingSummary


@dataclass(frozen=True)
class SentNotification:
    id: str
    type: NotificationType
    subject: str
    booking_id: str
    status: str
    sent_at: datetime | None
    created_at: datetime


def _due(r: asyncpg.Record) -> DueNotification:
    return DueNotification(
        id=r["id"],
        type=NotificationType(r["type"]),
        attempts=r["attempts"],
        booking_id=r["booking_id"],
        request_id=r["request_id"] or "",
        summary=BookingSummary(
            booking_id=r["booking_id"],
            user_name=r["user_name"],
            user_email=r["recipient"],
            event_name=r["event_name"],
            event_starts_at=r["event_date"],
            venue_name=r["venue_name"],
            seat_ids=tuple(r["seat_ids"]),
            amount=r["total_amount"],
            currency=r["currency"],
            failure_reason=r["failure_reason"],
        ),
    )


async def list_due(conn: Conn, *, limit: int) -> list[DueNotification]:
    """Up to `limit` PENDING notifications whose next attempt is due, the longest waiting first."""
    return [_due(r) for r in await conn.fetch(q.SELECT_DUE_NOTIFICATIONS, limit)]


async def mark_sent(conn: Conn, notification_ids: Sequence[str]) -> None:
    """SENT for the ones still PENDING, in one statement."""
    await conn.execute(q.UPDATE_NOTIFICATIONS_SENT, list(notification_ids))


async def schedule_retry(
    conn: Conn, *, notification_id: str, error: str, delay_seconds: float
) -> None:
    """One more attempt counted, the next one `delay_seconds` from now."""
    await conn.execute(q.UPDATE_NOTIFICATION_RETRY, notification_id, error[:500], delay_seconds)


async def give_up(conn: Conn, *, notification_id: str, error: str) -> None:
    """FAILED: no more attempts."""
    await conn.execute(q.UPDATE_NOTIFICATION_GAVE_UP, notification_id, error[:500])


async def list_recent_sent(conn: Conn, user_id: str) -> list[SentNotification]:
    """The user's last 20 sent notifications, newest first."""
    return [
        SentNotification(
            id=r["id"],
            type=NotificationType(r["type"]),
            subject=r["subject"],
            booking_id=r["booking_id"],
            status=r["status"],
            sent_at=r["sent_at"],
            created_at=r["created_at"],
        )
        for r in await conn.fetch(q.SELECT_RECENT_NOTIFICATIONS, user_id)
    ]
