"""storage/booking_repository.py against real Postgres, each test in a rolled-back transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from domain.best_available import SeatRequest
from domain.bookings import BookingStatus, CancelStep, FailureReason, SagaStep
from domain.ids import new_id
from storage import booking_repository as repo
from tests.integration.storage_support import Catalog, make_catalog


async def _add(
    conn: asyncpg.Connection,
    c: Catalog,
    seats: tuple[str, ...] | SeatRequest,
    *,
    key: str | None = None,
    hash: str | None = None,
    request_id: str | None = None,  # noqa: A002
) -> str:
    """A PENDING booking by `c`'s user: of `seats`, or best-available for a SeatRequest."""
    booking_id = new_id("bkg")
    fields: dict[str, Any] = {
        "booking_id": booking_id,
        "user_id": c.user_id,
        "event_id": c.event_id,
        "saga_slot": 0,
        "payment_token": "pm_card_visa",
        "idempotency_key": key,
        "request_hash": hash,
        "request_id": request_id,
    }
    added = await (
        repo.add_best(conn, request=seats, **fields)
        if isinstance(seats, SeatRequest)
        else repo.add(conn, seat_ids=list(seats), **fields)
    )
    assert added.booking_id == booking_id, added
    return booking_id


async def test_add_prices_the_seats_and_reads_back_as_a_pending_booking(
    conn: asyncpg.Connection,
) -> None:
    c = await make_catalog(conn)
    booking_id = await _add(conn, c, c.seat_ids[:2], request_id="req_repo_1")
    booking = await repo.get(conn, booking_id)
    assert booking is not None
    assert booking.status is BookingStatus.PENDING and booking.saga_step is SagaStep.STARTED
    assert booking.total_amount == 2 * c.price and booking.currency == "GBP"
    assert booking.seat_ids == c.seat_ids[:2] and booking.event_name == "Repo Night"
    assert (
        await conn.fetchval("SELECT request_id FROM bookings WHERE id = $1", booking_id)
        == "req_repo_1"
    )
    assert (await repo.get_many(conn, [booking_id, "bkg_missing"])).keys() == {booking_id}
    listed, total = await repo.list_by_user(
        conn, user_id=c.user_id, status="PENDING", limit=10, offset=0
    )
    assert [b.id for b in listed] == [booking_id] and total == 1
    saga = repo.to_saga(booking)
    assert saga.amount == booking.total_amount and saga.event_starts_at == booking.event_date


async def test_add_refuses_unknown_seats_and_a_started_event(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn)
    unknown = await repo.add(
        conn,
        booking_id=new_id("bkg"),
        user_id=c.user_id,
        event_id=c.event_id,
        seat_ids=["seat_Z9"],
        saga_slot=0,
        payment_token="t",
        idempotency_key=None,
        request_hash=None,
    )
    assert unknown.booking_id is None and unknown.seats_found == 0 and unknown.on_sale is True
    started = await make_catalog(conn, starts_in=timedelta(hours=-1))
    late = await repo.add(
        conn,
        booking_id=new_id("bkg"),
        user_id=started.user_id,
        event_id=started.event_id,
        seat_ids=[started.seat_ids[0]],
        saga_slot=0,
        payment_token="t",
        idempotency_key=None,
        request_hash=None,
    )
    assert late.booking_id is None and late.on_sale is False


async def test_an_idempotency_key_answers_for_its_first_booking(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn)
    first = await _add(conn, c, c.seat_ids[:1], key="k-1", hash="h-1")
    again = await repo.add(
        conn,
        booking_id=new_id("bkg"),
        user_id=c.user_id,
        event_id=c.event_id,
        seat_ids=list(c.seat_ids[1:2]),
        saga_slot=0,
        payment_token="t",
        idempotency_key="k-1",
        request_hash="h-2",
    )
    assert again.booking_id is None
    assert await repo.get_by_idempotency_key(
        conn, user_id=c.user_id, key="k-1"
    ) == repo.KeyedBooking(first, "h-1")


async def test_saga_steps_move_pending_bookings_once(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn)
    a, b = await _add(conn, c, c.seat_ids[:1]), await _add(conn, c, c.seat_ids[1:2])
    expiry = datetime.now(UTC) + timedelta(minutes=5)
    assert await repo.mark_charging(conn, [(a, expiry), (b, expiry)]) == {a, b}
    assert await repo.mark_charged(conn, [(a, "pay_x")]) == {a}
    assert await repo.confirm(conn, [a]) == {a}
    assert await repo.fail(
        conn, [(a, FailureReason.PAYMENT_DECLINED, None), (b, FailureReason.PAYMENT_DECLINED, None)]
    ) == {b}
    assert await repo.confirm(conn, [a, b]) == set()  # finished bookings never move again
    confirmed, failed = await repo.get(conn, a), await repo.get(conn, b)
    assert (
        confirmed is not None
        and confirmed.status is BookingStatus.CONFIRMED
        and confirmed.payment_id == "pay_x"
    )
    assert failed is not None and failed.failure_reason is FailureReason.PAYMENT_DECLINED
    kinds = await conn.fetch(
        "SELECT booking_id, type FROM notifications WHERE booking_id = ANY($1::text[])", [a, b]
    )
    assert {(r["booking_id"], r["type"]) for r in kinds} == {
        (a, "BOOKING_CONFIRMED"),
        (b, "BOOKING_FAILED"),
    }


async def test_chosen_seats_of_many_bookings_are_priced_and_written_in_one_statement(
    conn: asyncpg.Connection,
) -> None:
    c = await make_catalog(conn, seats=6)
    a, b, gone, foreign = [await _add(conn, c, SeatRequest(n)) for n in (2, 1, 1, 1)]
    assert await repo.fail(conn, [(gone, FailureReason.SEATS_UNAVAILABLE, None)]) == {gone}
    expiry = datetime.now(UTC) + timedelta(minutes=5)
    priced = await repo.mark_charging_chosen(
        conn,
        [
            (a, expiry, (c.seat_ids[3], c.seat_ids[2])),
            (b, expiry, (c.seat_ids[0],)),
            (gone, expiry, (c.seat_ids[1],)),  # no longer PENDING: not moved
            (foreign, expiry, ("seat_ZZ99",)),  # not a seat of the event: not moved
        ],
    )
    assert priced.keys() == {a, b}
    assert (priced[a].amount, priced[a].currency) == (2 * c.price, "GBP")
    assert priced[b].amount == c.price
    booking = await repo.get(conn, a)
    assert booking is not None and booking.saga_step is SagaStep.CHARGING
    assert booking.seat_ids == (c.seat_ids[3], c.seat_ids[2])  # in the order chosen
    assert booking.total_amount == 2 * c.price
    untouched = await repo.get(conn, foreign)
    assert untouched is not None and untouched.saga_step is SagaStep.STARTED


async def test_sales_are_unique_per_seat_and_read_back_for_the_seat_actor(
    conn: asyncpg.Connection,
) -> None:
    c = await make_catalog(conn)
    a, b = await _add(conn, c, c.seat_ids[:2]), await _add(conn, c, c.seat_ids[1:3])
    await repo.record_sales(conn, event_id=c.event_id, sales=[(a, c.seat_ids[:2])])
    await repo.record_sales(
        conn, event_id=c.event_id, sales=[(a, c.seat_ids[:2])]
    )  # a repeat writes nothing
    # In a savepoint, rolled back by the refusal, so the test's transaction goes on.
    with pytest.raises(repo.SeatsTaken):
        async with conn.transaction():
            await repo.record_sales(conn, event_id=c.event_id, sales=[(b, c.seat_ids[1:3])])
    sales = await repo.active_sales_of_event(conn, c.event_id)
    assert sorted(sales, key=lambda s: s.seat_id) == [
        repo.Sale(c.seat_ids[0], a),
        repo.Sale(c.seat_ids[1], a),
    ]
    assert await repo.has_sale(conn, a) and not await repo.has_sale(conn, b)


async def test_live_locks_are_the_unexpired_ones_of_pending_bookings(
    conn: asyncpg.Connection,
) -> None:
    c = await make_catalog(conn)
    live, lapsed = await _add(conn, c, c.seat_ids[:1]), await _add(conn, c, c.seat_ids[1:2])
    soon = datetime.now(UTC) + timedelta(minutes=2)
    await repo.mark_charging(
        conn, [(live, soon), (lapsed, datetime.now(UTC) - timedelta(seconds=1))]
    )
    locks = await repo.live_locks_of_event(conn, c.event_id)
    assert locks == [repo.LiveLock(live, c.seat_ids[:1], soon)]


async def test_a_cancellation_is_requested_once_and_then_finished(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn)
    booking_id = await _add(conn, c, c.seat_ids[:1])
    assert not await repo.request_cancellation(conn, booking_id)  # PENDING: not cancellable
    await repo.record_sales(conn, event_id=c.event_id, sales=[(booking_id, c.seat_ids[:1])])
    await repo.confirm(conn, [booking_id])
    assert await repo.request_cancellation(conn, booking_id)
    assert await repo.request_cancellation(conn, booking_id)  # a repeat joins the same one
    opened = await repo.get_cancellation(conn, booking_id)
    assert (
        opened is not None and opened.step is CancelStep.REFUNDING and opened.cancelled_at is None
    )
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert await repo.stale_cancellations(
        conn, slot=0, pool_size=4, updated_before=later, limit=10
    ) == [booking_id]
    cancelled_at = await repo.mark_cancelled(conn, booking_id)
    assert cancelled_at is not None and await repo.mark_cancelled(conn, booking_id) is None
    assert not await repo.has_sale(conn, booking_id)
    await repo.finish_cancellation(conn, booking_id)
    done = await repo.get_cancellation(conn, booking_id)
    assert done is not None and done.step is CancelStep.DONE
    assert (
        await repo.stale_cancellations(conn, slot=0, pool_size=4, updated_before=later, limit=10)
        == []
    )


async def test_stale_pending_bookings_are_found_by_slot(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn)
    booking_id = await _add(conn, c, c.seat_ids[:1], request_id="req_stale")
    later = datetime.now(UTC) + timedelta(seconds=1)
    stale = await repo.stale_pending(conn, slot=0, pool_size=4, updated_before=later, limit=500)
    assert stale[booking_id] == "req_stale"
    assert booking_id not in await repo.stale_pending(
        conn, slot=1, pool_size=4, updated_before=later, limit=500
    )
    earlier = datetime.now(UTC) - timedelta(hours=1)
    assert booking_id not in await repo.stale_pending(
        conn, slot=0, pool_size=4, updated_before=earlier, limit=500
    )


def test_an_announcement_reads_back_with_its_request_id() -> None:
    payload = (
        '{"id": "bkg_1", "user_id": "usr_1", "event_id": "evnt_1", "seat_ids": ["seat_A1"], "amount": 100,'
        ' "currency": "GBP", "payment_token": "t", "created_at": "2026-01-01T00:00:00+00:00",'
        ' "event_starts_at": null, "request_id": "req_9"}'
    )
    announced = repo.announced(payload)
    assert announced.request_id == "req_9" and announced.booking.id == "bkg_1"
    assert announced.booking.status is BookingStatus.PENDING
    assert repo.announced(payload.replace(', "request_id": "req_9"', "")).request_id == ""
