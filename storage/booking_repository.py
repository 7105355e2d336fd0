"""Bookings, saga progress and seat sales in Postgres."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from domain.bookings import Booking, BookingStatus, FailureReason, SagaStep
from domain.ids import new_id
from domain.notifications import SUBJECTS, NotificationType
from domain.saga import SagaBooking
from storage import queries as q
from storage.pool import Conn


def _booking(r: asyncpg.Record) -> Booking:
    return Booking(
        id=r["id"], user_id=r["user_id"], event_id=r["event_id"], event_name=r["event_name"],
        event_date=r["event_date"], venue_name=r["venue_name"], seat_ids=tuple(r["seat_ids"]),
        status=BookingStatus(r["status"]), saga_step=SagaStep(r["saga_step"]), saga_slot=r["saga_slot"],
        failure_reason=FailureReason(r["failure_reason"]) if r["failure_reason"] else None,
        total_amount=r["total_amount"], currency=r["currency"], payment_token=r["payment_token"],
        payment_id=r["payment_id"], lock_expires_at=r["lock_expires_at"], created_at=r["created_at"],
        updated_at=r["updated_at"], confirmed_at=r["confirmed_at"], failed_at=r["failed_at"],
        cancelled_at=r["cancelled_at"],
    )


def to_saga(b: Booking) -> SagaBooking:
    return SagaBooking(
        id=b.id, user_id=b.user_id, event_id=b.event_id, seat_ids=b.seat_ids, amount=b.total_amount,
        currency=b.currency, payment_token=b.payment_token, status=b.status, step=b.saga_step,
        payment_id=b.payment_id, lock_expires_at=b.lock_expires_at, created_at=b.created_at,
    )


async def add(
    conn: Conn, *, booking_id: str, user_id: str, event_id: str, seat_ids: list[str],
    saga_slot: int, total_amount: int, currency: str, payment_token: str, idempotency_key: str | None,
) -> str | None:
    """The new booking's id, or None when this user used the idempotency key in the last 24 h."""
    args = (booking_id, user_id, event_id, seat_ids, saga_slot, total_amount, currency, payment_token, idempotency_key)
    created: str | None = await conn.fetchval(q.INSERT_BOOKING, *args)
    # Only a conflict costs the extra statements: a key older than 24 h is freed and reused.
    if created is None and idempotency_key is not None:
        if await conn.execute(q.EXPIRE_IDEMPOTENCY_KEY, user_id, idempotency_key) != "UPDATE 0":
            created = await conn.fetchval(q.INSERT_BOOKING, *args)
    return created


async def get_by_idempotency_key(conn: Conn, *, user_id: str, key: str) -> str | None:
    row = await conn.fetchrow(q.SELECT_BOOKING_BY_IDEMPOTENCY_KEY, user_id, key)
    return row["id"] if row else None


async def get(conn: Conn, booking_id: str) -> Booking | None:
    row = await conn.fetchrow(q.SELECT_BOOKING_BY_ID, booking_id)
    return _booking(row) if row else None


async def list_by_user(
    conn: Conn, *, user_id: str, status: str | None, limit: int, offset: int
) -> tuple[list[Booking], int]:
    rows = await conn.fetch(q.SELECT_BOOKINGS_OF_USER, user_id, status, limit, offset)
    total = await conn.fetchval(q.COUNT_BOOKINGS_OF_USER, user_id, status)
    return [_booking(r) for r in rows], int(total)


async def mark_charging(conn: Conn, booking_id: str, lock_expires_at: datetime) -> bool:
    return await conn.fetchval(q.UPDATE_BOOKING_CHARGING, booking_id, lock_expires_at) is not None


async def mark_charged(conn: Conn, booking_id: str, payment_id: str) -> bool:
    return await conn.fetchval(q.UPDATE_BOOKING_CHARGED, booking_id, payment_id) is not None


async def add_notification(conn: Conn, booking_id: str, kind: NotificationType) -> None:
    await conn.execute(q.INSERT_NOTIFICATION, new_id("notif"), booking_id, kind.value, SUBJECTS[kind])


async def confirm(conn: Conn, booking_id: str) -> bool:
    """CONFIRMED and its notification, atomically; False when the booking was not PENDING."""
    subject = SUBJECTS[NotificationType.BOOKING_CONFIRMED]
    return bool(await conn.fetchval(q.CONFIRM_BOOKING, booking_id, new_id("notif"), subject))


async def fail(conn: Conn, booking_id: str, reason: FailureReason) -> bool:
    """FAILED with its reason, any sale released and its notification, atomically."""
    subject = SUBJECTS[NotificationType.BOOKING_FAILED]
    return bool(await conn.fetchval(q.FAIL_BOOKING, booking_id, new_id("notif"), subject, reason.value))


async def cancel(conn: Conn, booking_id: str) -> datetime | None:
    """CANCELLED, its sale released and its notification, in one transaction."""
    async with conn.transaction():
        cancelled_at: datetime | None = await conn.fetchval(q.UPDATE_BOOKING_CANCELLED, booking_id)
        if cancelled_at is not None:
            await conn.execute(q.RELEASE_SEAT_SALES, booking_id)
            await add_notification(conn, booking_id, NotificationType.BOOKING_CANCELLED)
    return cancelled_at


async def record_sale(conn: Conn, *, event_id: str, booking_id: str, seat_ids: list[str]) -> None:
    """Writes the sale; the partial unique index refuses a seat another active sale holds."""
    await conn.execute(q.INSERT_SEAT_SALES, event_id, seat_ids, booking_id)


async def has_sale(conn: Conn, booking_id: str) -> bool:
    return bool(await conn.fetchval(q.BOOKING_HAS_SALE, booking_id))


async def stale_pending(
    conn: Conn, *, slot: int, pool_size: int, updated_before: datetime, limit: int
) -> list[str]:
    return [r["id"] for r in await conn.fetch(q.SELECT_STALE_PENDING_BOOKINGS, slot, pool_size, updated_before, limit)]
