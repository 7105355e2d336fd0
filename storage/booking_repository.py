"""Bookings, saga progress and seat sales in Postgres.

Why ~420 lines in one module: every function here reads or writes the bookings row and its sale
(insert, saga steps, cancellation, seat sales) and shares the row-to-domain mapping; split by step,
each part would import the others' shapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg

from domain.best_available import SeatRequest
from domain.bookings import (
    Booking,
    BookingStatus,
    CancelStep,
    FailureReason,
    SagaStep,
    saga_channel,
    seat_request_from_json,
    seat_request_json,
)
from domain.ids import new_id
from domain.notifications import SUBJECTS, NotificationType
from domain.saga import Cancellation, Priced, SagaBooking
from storage import queries as q
from storage.pool import Conn

_V = TypeVar("_V")


def _booking(r: asyncpg.Record) -> Booking:
    return Booking(
        id=r["id"],
        user_id=r["user_id"],
        event_id=r["event_id"],
        event_name=r["event_name"],
        event_date=r["event_date"],
        venue_name=r["venue_name"],
        seat_ids=tuple(r["seat_ids"]),
        status=BookingStatus(r["status"]),
        saga_step=SagaStep(r["saga_step"]),
        saga_slot=r["saga_slot"],
        failure_reason=FailureReason(r["failure_reason"]) if r["failure_reason"] else None,
        total_amount=r["total_amount"],
        currency=r["currency"],
        payment_token=r["payment_token"],
        payment_id=r["payment_id"],
        lock_expires_at=r["lock_expires_at"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        confirmed_at=r["confirmed_at"],
        failed_at=r["failed_at"],
        cancelled_at=r["cancelled_at"],
        seat_request=_seat_request(r["seat_request"]),
        failure_message=r["failure_message"],
    )


def _seat_request(value: str | dict[str, object] | None) -> SeatRequest | None:
    if value is None:
        return None
    return seat_request_from_json(json.loads(value) if isinstance(value, str) else value)


def to_saga(b: Booking) -> SagaBooking:
    return SagaBooking(
        id=b.id,
        user_id=b.user_id,
        event_id=b.event_id,
        seat_ids=b.seat_ids,
        amount=b.total_amount,
        currency=b.currency,
        payment_token=b.payment_token,
        status=b.status,
        step=b.saga_step,
        payment_id=b.payment_id,
        lock_expires_at=b.lock_expires_at,
        created_at=b.created_at,
        event_starts_at=b.event_date,
        seat_request=b.seat_request,
    )


@dataclass(frozen=True)
class Added:
    seats_found: int  # how many of the requested seats are seats of the event
    on_sale: bool | None  # the event has not started (None: no such event)
    booking_id: (
        str | None
    )  # None: not every seat matched, not on sale, or the idempotency key is taken


async def add(
    conn: Conn,
    *,
    booking_id: str,
    user_id: str,
    event_id: str,
    seat_ids: list[str],
    saga_slot: int,
    payment_token: str,
    idempotency_key: str | None,
    request_hash: str | None,
    request_id: str | None = None,
) -> Added:
    """Prices the seats from their tiers and writes the PENDING booking, if every seat is one of
    the event's, the event has not started and this user did not use the idempotency key in the
    last 24 h (`request_hash` is stored with the key, see `domain.bookings.request_fingerprint`).

    The insert announces the booking to its saga slot's actor (`saga_channel`), which starts it;
    `request_id` (the HTTP request's) is stored and announced with it, so the saga's and the
    notifier's log lines carry it."""
    args = (
        booking_id,
        user_id,
        event_id,
        seat_ids,
        saga_slot,
        payment_token,
        idempotency_key,
        saga_channel(saga_slot),
        request_hash,
        request_id,
    )
    return await _insert(
        conn,
        q.INSERT_BOOKING,
        args,
        lambda row: Added(row["seats"], row["on_sale"], row["id"]),
        user_id=user_id,
        key=idempotency_key,
        # Refused with everything else in order: only the key can have stopped it.
        key_only=lambda a: a.seats_found == len(seat_ids) and bool(a.on_sale),
    )


@dataclass(frozen=True)
class AddedBest:
    on_sale: bool | None  # the event has not started (None: no such event)
    tier_sold: bool  # the event sells the tier asked for (any tier when none was)
    # None: no such event or tier, not on sale, or the idempotency key is taken
    booking_id: str | None


async def add_best(
    conn: Conn,
    *,
    booking_id: str,
    user_id: str,
    event_id: str,
    request: SeatRequest,
    saga_slot: int,
    payment_token: str,
    idempotency_key: str | None,
    request_hash: str | None,
    request_id: str | None = None,
) -> AddedBest:
    """Writes a best-available PENDING booking (no seats, amount 0 until its saga's seat actor
    chose them), if the event has not started, sells the tier asked for and this user did not use
    the idempotency key in the last 24 h; announced to its saga slot's actor like `add`."""
    args = (
        booking_id,
        user_id,
        event_id,
        json.dumps(seat_request_json(request)),
        saga_slot,
        payment_token,
        idempotency_key,
        saga_channel(saga_slot),
        request_hash,
        request.tier,
        request_id,
    )
    return await _insert(
        conn,
        q.INSERT_BEST_BOOKING,
        args,
        lambda row: AddedBest(row["on_sale"], bool(row["tier_sold"]), row["id"]),
        user_id=user_id,
        key=idempotency_key,
        key_only=lambda a: bool(a.on_sale) and a.tier_sold,
    )


_A = TypeVar("_A", Added, AddedBest)


async def _insert(
    conn: Conn,
    statement: str,
    args: tuple[object, ...],
    read: Callable[[asyncpg.Record], _A],
    *,
    user_id: str,
    key: str | None,
    key_only: Callable[[_A], bool],
) -> _A:
    """Runs a booking insert; when only its idempotency key stopped it (`key_only`) and that key
    is older than 24 h, frees the key and inserts once more. Only a conflict costs the extra
    statements."""
    row = await conn.fetchrow(statement, *args)
    assert row is not None
    added = read(row)
    if added.booking_id is None and key is not None and key_only(added):
        if await conn.execute(q.EXPIRE_IDEMPOTENCY_KEY, user_id, key) != "UPDATE 0":
            row = await conn.fetchrow(statement, *args)
            assert row is not None
            added = read(row)
    return added


@dataclass(frozen=True)
class Announced:
    booking: SagaBooking
    request_id: str  # "" when the booking was made without one


def announced(payload: str) -> Announced:
    """The new booking as INSERT_BOOKING announces it to its saga actor."""
    b = json.loads(payload)
    return Announced(
        SagaBooking(
            id=b["id"],
            user_id=b["user_id"],
            event_id=b["event_id"],
            seat_ids=tuple(b["seat_ids"]),
            amount=b["amount"],
            currency=b["currency"],
            payment_token=b["payment_token"],
            status=BookingStatus.PENDING,
            step=SagaStep.STARTED,
            payment_id=None,
            lock_expires_at=None,
            created_at=datetime.fromisoformat(b["created_at"]),
            event_starts_at=datetime.fromisoformat(b["event_starts_at"])
            if b.get("event_starts_at")
            else None,
            seat_request=_seat_request(b.get("seat_request")),
        ),
        b.get("request_id") or "",
    )


@dataclass(frozen=True)
class KeyedBooking:
    booking_id: str
    request_hash: str | None  # None: written before request hashes were stored


async def get_by_idempotency_key(conn: Conn, *, user_id: str, key: str) -> KeyedBooking | None:
    row = await conn.fetchrow(q.SELECT_BOOKING_BY_IDEMPOTENCY_KEY, user_id, key)
    return KeyedBooking(row["id"], row["idempotency_hash"]) if row else None


async def get(conn: Conn, booking_id: str) -> Booking | None:
    row = await conn.fetchrow(q.SELECT_BOOKING_BY_ID, booking_id)
    return _booking(row) if row else None


async def list_by_user(
    conn: Conn, *, user_id: str, status: str | None, limit: int, offset: int
) -> tuple[list[Booking], int]:
    rows = await conn.fetch(q.SELECT_BOOKINGS_OF_USER, user_id, status, limit, offset)
    total = await conn.fetchval(q.COUNT_BOOKINGS_OF_USER, user_id, status)
    return [_booking(r) for r in rows], int(total)


async def get_many(conn: Conn, booking_ids: Sequence[str]) -> dict[str, Booking]:
    rows = await conn.fetch(q.SELECT_BOOKINGS_BY_IDS, list(booking_ids))
    return {r["id"]: _booking(r) for r in rows}


# The saga's step writes take many bookings at once and return the ids they moved (those still
# PENDING); a booking missing from the result had already finished.
async def mark_charging(conn: Conn, steps: Sequence[tuple[str, datetime]]) -> set[str]:
    """CHARGING with each lock's expiry, for (booking id, lock expiry) pairs."""
    ids, expiries = _columns(steps)
    return await _moved(conn, q.UPDATE_BOOKINGS_CHARGING, ids, expiries)


async def mark_charging_chosen(
    conn: Conn, booking_id: str, lock_expires_at: datetime, seat_ids: Sequence[str]
) -> Priced | None:
    """Best available: CHARGING with the seats chosen, priced from their tiers; the price, or None
    when the booking is no longer PENDING (or a seat is not the event's)."""
    row = await conn.fetchrow(
        q.UPDATE_BOOKING_CHARGING_CHOSEN, booking_id, lock_expires_at, list(seat_ids)
    )
    return Priced(row["total_amount"], row["currency"]) if row else None


async def mark_charged(conn: Conn, steps: Sequence[tuple[str, str]]) -> set[str]:
    """CHARGED with each payment, for (booking id, payment id) pairs."""
    ids, payment_ids = _columns(steps)
    return await _moved(conn, q.UPDATE_BOOKINGS_CHARGED, ids, payment_ids)


async def confirm(conn: Conn, booking_ids: Sequence[str]) -> set[str]:
    """CONFIRMED and each one's notification, atomically."""
    subject = SUBJECTS[NotificationType.BOOKING_CONFIRMED]
    return await _moved(
        conn, q.CONFIRM_BOOKINGS, list(booking_ids), _notification_ids(booking_ids), subject
    )


async def fail(conn: Conn, failures: Sequence[tuple[str, FailureReason, str | None]]) -> set[str]:
    """FAILED with each one's reason and message, any sale released and each one's notification,
    atomically."""
    ids = [f[0] for f in failures]
    subject = SUBJECTS[NotificationType.BOOKING_FAILED]
    return await _moved(
        conn,
        q.FAIL_BOOKINGS,
        ids,
        _notification_ids(ids),
        subject,
        [f[1].value for f in failures],
        [f[2] for f in failures],
    )


def _columns(pairs: Sequence[tuple[str, _V]]) -> tuple[list[str], list[_V]]:
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _notification_ids(booking_ids: Sequence[str]) -> list[str]:
    return [new_id("notif") for _ in booking_ids]


async def _moved(conn: Conn, statement: str, *args: object) -> set[str]:
    return {r["id"] for r in await conn.fetch(statement, *args)}


async def request_cancellation(conn: Conn, booking_id: str) -> bool:
    """Persists the intent to cancel a CONFIRMED booking (saga step CANCELLING, an open
    cancellation at REFUNDING); a repeat adds nothing. False when the booking is not CONFIRMED."""
    return bool(await conn.fetchval(q.REQUEST_CANCELLATION, booking_id))


async def get_cancellation(conn: Conn, booking_id: str) -> Cancellation | None:
    row = await conn.fetchrow(q.SELECT_CANCELLATION, booking_id)
    if row is None:
        return None
    return Cancellation(
        booking_id=row["booking_id"],
        event_id=row["event_id"],
        payment_id=row["payment_id"],
        step=CancelStep(row["step"]),
        cancelled_at=row["cancelled_at"],
    )


async def mark_cancelled(conn: Conn, booking_id: str) -> datetime | None:
    """After the refund: CANCELLED, its sale released, its notification and the cancellation at
    RELEASING, in one statement; the cancellation time, None if the booking was not CONFIRMED."""
    kind = NotificationType.BOOKING_CANCELLED
    cancelled_at: datetime | None = await conn.fetchval(
        q.CANCEL_BOOKING, booking_id, new_id("notif"), SUBJECTS[kind]
    )
    return cancelled_at


async def finish_cancellation(conn: Conn, booking_id: str) -> None:
    await conn.execute(q.FINISH_CANCELLATION, booking_id)


async def stale_cancellations(
    conn: Conn, *, slot: int, pool_size: int, updated_before: datetime, limit: int
) -> list[str]:
    rows = await conn.fetch(q.SELECT_STALE_CANCELLATIONS, slot, pool_size, updated_before, limit)
    return [r["booking_id"] for r in rows]


class SeatsTaken(Exception):
    """Postgres refused a sale: another active sale holds one of its seats."""


async def record_sales(
    conn: Conn, *, event_id: str, sales: Sequence[tuple[str, Sequence[str]]]
) -> None:
    """Writes the sales of (booking id, seat ids) pairs in one statement; the partial unique index
    refuses a seat another active sale holds (and with it the whole statement).

    Raises:
        SeatsTaken: one of the seats is held by another active sale; nothing was written.
    """
    seats = [seat for _, seat_ids in sales for seat in seat_ids]
    owners = [booking_id for booking_id, seat_ids in sales for _ in seat_ids]
    try:
        await conn.execute(q.INSERT_SEAT_SALES, event_id, seats, owners)
    except asyncpg.UniqueViolationError as exc:
        raise SeatsTaken(str(exc)) from exc


@dataclass(frozen=True)
class Sale:
    seat_id: str
    booking_id: str


@dataclass(frozen=True)
class LiveLock:
    booking_id: str
    seat_ids: tuple[str, ...]
    expires_at: datetime


async def active_sales_of_event(conn: Conn, event_id: str) -> list[Sale]:
    """The event's seats sold to active bookings (a seat actor's state on start)."""
    return [
        Sale(r["seat_id"], r["booking_id"])
        for r in await conn.fetch(q.SELECT_ACTIVE_SALES_OF_EVENT, event_id)
    ]


async def live_locks_of_event(conn: Conn, event_id: str) -> list[LiveLock]:
    """The locks that PENDING bookings of the event persisted and that have not expired, oldest first."""
    rows = await conn.fetch(q.SELECT_LIVE_LOCKS_OF_EVENT, event_id)
    return [LiveLock(r["id"], tuple(r["seat_ids"]), r["lock_expires_at"]) for r in rows]


async def has_sale(conn: Conn, booking_id: str) -> bool:
    return bool(await conn.fetchval(q.BOOKING_HAS_SALE, booking_id))


async def stale_pending(
    conn: Conn, *, slot: int, pool_size: int, updated_before: datetime, limit: int
) -> dict[str, str]:
    """The slot's PENDING bookings not moved since `updated_before`, oldest first: booking id ->
    the request id that made it ("" when none was stored)."""
    rows = await conn.fetch(q.SELECT_STALE_PENDING_BOOKINGS, slot, pool_size, updated_before, limit)
    return {r["id"]: r["request_id"] or "" for r in rows}
