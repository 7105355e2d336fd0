"""storage/payment_repository.py against real Postgres: domain Payments with PaymentStatus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from domain.bookings import BookingStatus, FailureReason
from domain.ids import new_id
from domain.payments import ChargeCard, ChargeOutcome, PaymentStatus
from storage import booking_repository
from storage import payment_repository as repo
from tests.integration.storage_support import Catalog, make_catalog


async def _booking(conn: asyncpg.Connection, c: Catalog, seat: int = 0) -> str:
    booking_id = new_id("bkg")
    added = await booking_repository.add(
        conn,
        booking_id=booking_id,
        user_id=c.user_id,
        event_id=c.event_id,
        seat_ids=[c.seat_ids[seat]],
        saga_slot=0,
        payment_token="pm_card_visa",
        idempotency_key=None,
        request_hash=None,
    )
    assert added.booking_id == booking_id
    return booking_id


def _order(c: Catalog, booking_id: str) -> ChargeCard:
    return ChargeCard(
        booking_id=booking_id,
        user_id=c.user_id,
        amount=c.price,
        currency="GBP",
        payment_token="pm_card_visa",
        idempotency_key=f"{booking_id}:charge",
        request_id="req_pay",
    )


async def test_start_records_each_key_once(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn)
    a, b = await _booking(conn, c, 0), await _booking(conn, c, 1)
    started = await repo.start(conn, [_order(c, a), _order(c, b)], provider="simulated")
    first = started[f"{a}:charge"]
    assert first.status is PaymentStatus.PROCESSING and not first.settled and not first.charged
    assert first.booking_id == a and first.amount == c.price and first.provider == "simulated"
    again = await repo.start(conn, [_order(c, a)], provider="simulated")
    assert again[f"{a}:charge"].id == first.id  # the recorded attempt, not a second one
    assert await conn.fetchval("SELECT count(*) FROM payments WHERE booking_id = $1", a) == 1


async def test_outcomes_settle_processing_payments_only(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn)
    a, b = await _booking(conn, c, 0), await _booking(conn, c, 1)
    started = await repo.start(conn, [_order(c, a), _order(c, b)], provider="simulated")
    pa, pb = started[f"{a}:charge"], started[f"{b}:charge"]
    await repo.record_outcomes(
        conn,
        [
            (pa.id, ChargeOutcome(True, "ch_1")),
            (pb.id, ChargeOutcome(False, None, "card_declined")),
        ],
    )
    await repo.record_outcomes(
        conn, [(pa.id, ChargeOutcome(False, None, "late"))]
    )  # settled: unchanged
    succeeded, declined = await repo.get(conn, pa.id), await repo.get(conn, pb.id)
    assert succeeded is not None and succeeded.status is PaymentStatus.SUCCESS and succeeded.charged
    assert succeeded.provider_transaction_id == "ch_1" and succeeded.processed_at is not None
    assert (
        declined is not None
        and declined.status is PaymentStatus.FAILED
        and declined.decline_code == "card_declined"
    )
    assert await repo.get_by_key(conn, f"{a}:charge") == succeeded
    assert await repo.get_of_booking(conn, a) == succeeded
    assert await repo.get(conn, "pay_missing") is None


async def test_a_refund_is_recorded_once_for_a_successful_payment(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn)
    a = await _booking(conn, c)
    payment = (await repo.start(conn, [_order(c, a)], provider="simulated"))[f"{a}:charge"]
    assert (
        await repo.record_refund(conn, payment_id=payment.id, refund_id="re_1") is None
    )  # not SUCCESS yet
    await repo.record_outcomes(conn, [(payment.id, ChargeOutcome(True, "ch_2"))])
    refunded = await repo.record_refund(conn, payment_id=payment.id, refund_id="re_1")
    assert refunded is not None and refunded.status is PaymentStatus.REFUNDED and refunded.charged
    assert refunded.refund_id == "re_1" and refunded.refunded_at is not None
    assert await repo.record_refund(conn, payment_id=payment.id, refund_id="re_2") is None


async def test_unsettled_finds_unanswered_charges_and_money_kept_for_failed_bookings(
    conn: asyncpg.Connection,
) -> None:
    c = await make_catalog(conn)
    open_one, failed_one, fine = (
        await _booking(conn, c, 0),
        await _booking(conn, c, 1),
        await _booking(conn, c, 2),
    )
    started = await repo.start(
        conn, [_order(c, b) for b in (open_one, failed_one, fine)], provider="simulated"
    )
    await repo.record_outcomes(
        conn,
        [
            (started[f"{failed_one}:charge"].id, ChargeOutcome(True, "ch_3")),
            (started[f"{fine}:charge"].id, ChargeOutcome(True, "ch_4")),
        ],
    )
    await booking_repository.fail(conn, [(failed_one, FailureReason.INTERNAL_ERROR, None)])
    later = datetime.now(UTC) + timedelta(seconds=1)
    found = {u.payment.booking_id: u for u in await repo.unsettled(conn, started_before=later)}
    assert set(found) >= {open_one, failed_one} and fine not in found
    assert found[open_one].payment.status is PaymentStatus.PROCESSING
    assert (
        found[open_one].booking_status is BookingStatus.PENDING
        and found[open_one].payment_token == "pm_card_visa"
    )
    assert found[failed_one].booking_status is BookingStatus.FAILED
    earlier = datetime.now(UTC) - timedelta(hours=1)
    assert open_one not in {
        u.payment.booking_id for u in await repo.unsettled(conn, started_before=earlier)
    }
