"""PaymentGateway: charges and refunds through the configured processor, recorded in Postgres."""

from __future__ import annotations

import logging

import asyncpg
import ray

from config.settings import get_settings
from domain.errors import RefundFailed
from domain.payments import ChargeRequest, PaymentProcessor
from domain.saga import Charge
from providers.payments import processor_from_settings
from storage import payment_repository
from storage.pool import create_pool

logger = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=1000)  # type: ignore[call-overload]
class PaymentGateway:
    """Talks to the card processor (simulated, or Stripe when STRIPE_API_KEY is set).

    State: none of its own beyond a connection pool and the processor client; every attempt is a
    row in `payments` keyed by its idempotency key, written before the processor is called.

    Idempotency: a charge or refund repeated with the same key returns the recorded outcome, or,
    when the outcome was never recorded (the actor died mid-call), asks the processor again with
    the same key, which the processor answers without charging twice. So a restart
    (`max_restarts=-1`) and a saga's retry are both safe; `max_task_retries` stays 0.
    """

    def __init__(self) -> None:
        self._settings = get_settings()
        key = self._settings.stripe_api_key
        self._processor: PaymentProcessor = processor_from_settings(
            stripe_api_key=key.get_secret_value() if key else None,
            stripe_api_base=self._settings.stripe_api_base,
            latency_ms=self._settings.payment_latency_ms,
        )
        self._pool: asyncpg.Pool | None = None

    async def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await create_pool(self._settings, min_size=1, max_size=8)
        return self._pool

    async def charge(
        self, *, booking_id: str, user_id: str, amount: int, currency: str, token: str, idempotency_key: str
    ) -> Charge:
        pool = await self._db()
        async with pool.acquire() as conn:
            payment = await payment_repository.start(
                conn, booking_id=booking_id, user_id=user_id, amount=amount, currency=currency,
                provider=self._processor.name, idempotency_key=idempotency_key,
            )
        if payment.status in ("SUCCESS", "REFUNDED"):
            return Charge(payment.id, True)
        if payment.status == "FAILED":
            return Charge(payment.id, False, payment.decline_code)
        outcome = await self._processor.charge(ChargeRequest(
            booking_id=booking_id, amount=amount, currency=currency, payment_token=token,
            idempotency_key=idempotency_key,
        ))
        async with pool.acquire() as conn:
            await payment_repository.record_outcome(
                conn, payment_id=payment.id, succeeded=outcome.succeeded,
                provider_transaction_id=outcome.provider_transaction_id, decline_code=outcome.decline_code,
            )
        logger.info(
            "charge booking_id=%s payment_id=%s succeeded=%s decline_code=%s",
            booking_id, payment.id, outcome.succeeded, outcome.decline_code,
        )
        return Charge(payment.id, outcome.succeeded, outcome.decline_code)

    async def refund(self, *, payment_id: str, idempotency_key: str) -> None:
        """Refunds a successful payment in full; a repeat of a done refund does nothing."""
        pool = await self._db()
        async with pool.acquire() as conn:
            payment = await payment_repository.get(conn, payment_id)
        if payment is None or payment.status == "REFUNDED":
            return
        if payment.status != "SUCCESS" or payment.provider_transaction_id is None:
            raise RefundFailed(f"payment {payment_id} is {payment.status}; nothing to refund")
        outcome = await self._processor.refund(
            provider_transaction_id=payment.provider_transaction_id, amount=payment.amount,
            idempotency_key=idempotency_key,
        )
        if not outcome.succeeded:
            raise RefundFailed(f"refund of payment {payment_id} was refused: {outcome.message}")
        async with pool.acquire() as conn:
            await payment_repository.record_refund(conn, payment_id=payment_id, refund_id=outcome.refund_id)
        logger.info("refund booking_id=%s payment_id=%s refund_id=%s", payment.booking_id, payment_id, outcome.refund_id)

    async def ping(self) -> str:
        return self._processor.name
