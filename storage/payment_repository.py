"""Payments in Postgres; the idempotency key column makes a charge attempt durable."""

from __future__ import annotations

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


async def start(
    conn: Conn, *, booking_id: str, user_id: str, amount: int, currency: str,
    provider: str, idempotency_key: str,
) -> Payment:
    """The attempt for this key: a new PROCESSING row, or the one already recorded."""
    row = await conn.fetchrow(q.INSERT_PAYMENT, new_id("pay"), booking_id, user_id, amount, currency, provider, idempotency_key)
    existing = _payment(row) if row else await get_by_key(conn, idempotency_key)
    assert existing is not None
    return existing


async def record_outcome(
    conn: Conn, *, payment_id: str, succeeded: bool, provider_transaction_id: str | None, decline_code: str | None
) -> Payment | None:
    row = await conn.fetchrow(
        q.UPDATE_PAYMENT_OUTCOME, payment_id, "SUCCESS" if succeeded else "FAILED", provider_transaction_id, decline_code
    )
    return _payment(row) if row else None


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
