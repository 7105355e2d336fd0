"""Payments in Postgres; the idempotency key column makes a charge attempt durable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from domain.ids import new_id
from storage import queries as q
from storage.pool import Conn


@dataclass(frozen=True)
class Payment:
    id: str
    booking_id: str
    user_id: str
    amount: int
    currency: str
    status: str  # PROCESSING | SUCCESS | FAILED | REFUNDED
    provider: str
    provider_transaction_id: str | None
    decline_code: str | None
    refund_id: str | None
    idempotency_key: str
    created_at: datetime
    processed_at: datetime | None
    refunded_at: datetime | None


def _payment(r: asyncpg.Record) -> Payment:
    return Payment(**{k: r[k] for k in Payment.__dataclass_fields__})


@dataclass(frozen=True)
class Attempt:
    """A charge about to be sent to the processor, keyed by its idempotency key."""

    booking_id: str
    user_id: str
    amount: int
    currency: str
    idempotency_key: str


async def start(conn: Conn, attempts: Sequence[Attempt], *, provider: str) -> dict[str, Payment]:
    """The payment of each attempt by its key: a new PROCESSING row, or the one already recorded."""
    rows = await conn.fetch(
        q.INSERT_PAYMENTS, [new_id("pay") for _ in attempts], [a.booking_id for a in attempts],
        [a.user_id for a in attempts], [a.amount for a in attempts], [a.currency for a in attempts],
        provider, [a.idempotency_key for a in attempts],
    )
    payments = {r["idempotency_key"]: _payment(r) for r in rows}
    missing = [a.idempotency_key for a in attempts if a.idempotency_key not in payments]
    if missing:
        payments.update({r["idempotency_key"]: _payment(r) for r in await conn.fetch(q.SELECT_PAYMENTS_BY_KEYS, missing)})
    return payments


@dataclass(frozen=True)
class Outcome:
    payment_id: str
    succeeded: bool
    provider_transaction_id: str | None
    decline_code: str | None


async def record_outcomes(conn: Conn, outcomes: Sequence[Outcome]) -> None:
    """SUCCESS or FAILED for payments still PROCESSING; a settled payment is left as it is."""
    await conn.execute(
        q.UPDATE_PAYMENT_OUTCOMES, [o.payment_id for o in outcomes],
        ["SUCCESS" if o.succeeded else "FAILED" for o in outcomes],
        [o.provider_transaction_id for o in outcomes], [o.decline_code for o in outcomes],
    )


async def record_refund(conn: Conn, *, payment_id: str, refund_id: str | None) -> Payment | None:
    row = await conn.fetchrow(q.UPDATE_PAYMENT_REFUNDED, payment_id, refund_id)
    return _payment(row) if row else None


@dataclass(frozen=True)
class Unsettled:
    payment: Payment
    payment_token: str
    booking_status: str


async def unsettled(conn: Conn, *, started_before: datetime, limit: int = 100) -> list[Unsettled]:
    rows = await conn.fetch(q.SELECT_PAYMENTS_TO_RECONCILE, started_before, limit)
    result = []
    for r in rows:
        full = await get(conn, r["id"])
        if full is not None:
            result.append(Unsettled(full, r["payment_token"], r["booking_status"]))
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
