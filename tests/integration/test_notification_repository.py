"""storage/notification_repository.py against real Postgres: the notifier's outbox."""

from __future__ import annotations

import asyncpg

from domain.bookings import FailureReason
from domain.ids import new_id
from domain.notifications import NotificationType
from storage import booking_repository
from storage import notification_repository as repo
from tests.integration.storage_support import make_catalog


async def _finished(
    conn: asyncpg.Connection, *, fail: bool = False, request_id: str | None = "req_note"
) -> str:
    c = await make_catalog(conn)
    booking_id = new_id("bkg")
    await booking_repository.add(
        conn,
        booking_id=booking_id,
        user_id=c.user_id,
        event_id=c.event_id,
        seat_ids=list(c.seat_ids[:2]),
        saga_slot=0,
        payment_token="t",
        idempotency_key=None,
        request_hash=None,
        request_id=request_id,
    )
    if fail:
        await booking_repository.fail(conn, [(booking_id, FailureReason.SEATS_UNAVAILABLE, None)])
    else:
        await booking_repository.confirm(conn, [booking_id])
    return booking_id


async def _due_of(conn: asyncpg.Connection, booking_id: str) -> list[repo.DueNotification]:
    return [n for n in await repo.list_due(conn, limit=1000) if n.booking_id == booking_id]


async def test_a_confirmed_booking_has_one_due_notification_with_its_summary(
    conn: asyncpg.Connection,
) -> None:
    booking_id = await _finished(conn)
    [due] = await _due_of(conn, booking_id)
    assert due.type is NotificationType.BOOKING_CONFIRMED and due.attempts == 0
    assert due.request_id == "req_note"  # the notifier's log line joins the booking's request
    s = due.summary
    assert (
        s.booking_id == booking_id
        and s.event_name == "Repo Night"
        and s.seat_ids == ("seat_A1", "seat_A2")
    )
    assert (
        s.amount == 5000
        and s.currency == "GBP"
        and s.user_name == "Repo Tester"
        and s.failure_reason is None
    )


async def test_a_failed_booking_notification_carries_the_reason_and_no_request_id_is_empty(
    conn: asyncpg.Connection,
) -> None:
    booking_id = await _finished(conn, fail=True, request_id=None)
    [due] = await _due_of(conn, booking_id)
    assert (
        due.type is NotificationType.BOOKING_FAILED
        and due.summary.failure_reason == "SEATS_UNAVAILABLE"
    )
    assert due.request_id == ""


async def test_sent_notifications_leave_the_outbox_and_show_as_recent(
    conn: asyncpg.Connection,
) -> None:
    booking_id = await _finished(conn)
    [due] = await _due_of(conn, booking_id)
    await repo.mark_sent(conn, [due.id])
    assert await _due_of(conn, booking_id) == []
    user_id = await conn.fetchval("SELECT user_id FROM bookings WHERE id = $1", booking_id)
    [recent] = await repo.list_recent_sent(conn, user_id)
    assert (
        recent.id == due.id
        and recent.type is NotificationType.BOOKING_CONFIRMED
        and recent.sent_at is not None
    )


async def test_a_retry_is_scheduled_later_and_giving_up_ends_it(conn: asyncpg.Connection) -> None:
    booking_id = await _finished(conn)
    [due] = await _due_of(conn, booking_id)
    await repo.schedule_retry(conn, notification_id=due.id, error="421 try later", delay_seconds=60)
    assert await _due_of(conn, booking_id) == []
    row = await conn.fetchrow(
        "SELECT attempts, last_error, status FROM notifications WHERE id = $1", due.id
    )
    assert row is not None
    assert (row["attempts"], row["last_error"], row["status"]) == (1, "421 try later", "PENDING")
    await repo.give_up(conn, notification_id=due.id, error="x" * 600)
    row = await conn.fetchrow(
        "SELECT attempts, last_error, status FROM notifications WHERE id = $1", due.id
    )
    assert row is not None
    assert (row["attempts"], len(row["last_error"]), row["status"]) == (2, 500, "FAILED")
