"""Payments in Postgres, read as `domain.payments.Payment`; the idempotency key column makes a
charge attempt durable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from domain.bookings import BookingStatus
from domain.ids import new_id
from domain.payments import ChargeCard, ChargeOutcome, Payment, PaymentStatus
from storage import queries as q
from storage.pool import Conn


def _payment(r: asyncpg.Record) -> Payment:
    return Payment(
        id=r["id"],
        booking_id=r["booking_id"],
        user_id=r["user_id"],
        amount=r["amount"],
        currency=r["currency"],
        status=PaymentStatus(r["status"]),
        provider=r["provider"],
        provider_transaction_id=r["provider_transaction_id"],
        decline_code=r["decline_code"],
        refund_id=r["refund_id"],
        idempotency_key=r["idempotency_key"],
        created_at=r["created_at"],
        processed_at=r["processed_at"],
        refunded_at=r["refunded_at"],
    )


async def start(conn: Conn, orders: Sequence[ChargeCard], *, provider: str) -> dict[str, Payment]:
    """The payment of each charge by its idempotency key: a new PROCESSING row, or the one
    already recorded."""
    rows = await conn.fetch(
        q.INSERT_PAYMENTS,
        [new_id("pay") for _ in orders],
        [o.booking_id for o in orders],
        [o.user_id for o in orders],
        [o.amount for o in orders],
        [o.currency for o in orders],
        provider,
        [o.idempotency_key for o in orders],
    )
    payments = {r["idempotency_key"]: _payment(r) for r in rows}
    missing = [o.idempotency_key for o in orders if o.idempotency_key not in payments]
    if missing:
        payments.update(
            {
                r["idempotency_key"]: _payment(r)
                for r in await conn.fetch(q.SELECT_PAYMENTS_BY_KEYS, missing)
            }
        )
    return payments


async def record_outcomes(conn: Conn, outcomes: Sequence[tuple[str, ChargeOutcome]]) -> None:
    """SUCCESS or FAILED for (payment id, processor's answer) pairs still PROCESSING; a settled
    payment is left as it is."""
    await conn.execute(
        q.UPDATE_PAYMENT_OUTCOMES,
        [payment_id for payment_id, _ in outcomes],
        [
            (PaymentStatus.SUCCESS if o.succeeded else PaymentStatus.FAILED).value
            for _, o in outcomes
        ],
        [o.provider_transaction_id for _, o in outcomes],
        [o.decline_code for _, o in outcomes],
    )


async def record_refund(conn: Conn, *, payment_id: str, refund_id: str | None) -> Payment | None:
    row = await conn.fetchrow(q.UPDATE_PAYMENT_REFUNDED, payment_id, refund_id)
    return _payment(row) if row else None


@dataclass(frozen=True)
class Unsettled:
    payment: Payment
    payment_token: str
    booking_status: BookingStatus


async def unsettled(conn: Conn, *, started_before: datetime, limit: int = 100) -> list[Unsettled]:
    rows = await conn.fetch(q.SELECT_PAYMENTS_TO_RECONCILE, started_before, limit)
    result = []
    for r in rows:
        full = await get(conn, r["id"])
        if full is not None:
            result.append(Unsettled(full, r["payment_token"], BookingStatus(r["booking_status"])))
    return result


async def get_by_key(conn: Conn, idempotency_key: str) -> Payment | None:
    row = await conn.fetchrow(q.SELECT_PAYMENT_BY_KEY, idempotency_key)
    return _payment(row) if row else None


async def get(conn: Conn, payment_id: str) -> Payment | None:
    row = await conn.fetchrow(q.SELECT_PAYMENT_BY_ID, payment_id)
    return _payment(row) if row else None


async def get_of_booking(conn: Conn, booking_id: str) -> Payment | None:
    row = await conn.fetchrow(q.SELECT_PAYMENT_OF_BOOKING, booking_id)
    return _payment(row) if row else None
