"""PaymentGateway: charges and refunds through the configured processor, recorded in Postgres."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
import ray

from actors import metrics
from config.settings import get_settings
from domain.bookings import BookingStatus, refund_key
from domain.errors import RefundFailed, TicketFlowError
from domain.payments import (
    ChargeCard,
    ChargeOutcome,
    Payment,
    PaymentProcessor,
    PaymentProviderUnavailable,
    PaymentStatus,
)
from domain.saga import Charge
from providers.payments import processor_from_settings
from storage import payment_repository
from storage.pool import LazyPool

logger = logging.getLogger(__name__)


def _recorded(payment: Payment) -> Charge:
    """What a recorded attempt says; a PROCESSING one is overwritten once the processor answers."""
    if payment.status is PaymentStatus.FAILED:
        return Charge(payment.id, False, payment.decline_code)
    return Charge(payment.id, payment.charged)


def _transportable(exc: BaseException) -> TicketFlowError:
    """A processor failure as an error that survives the trip back through Ray (it is pickled)."""
    if isinstance(exc, TicketFlowError):
        return exc
    return PaymentProviderUnavailable(
        f"The payment processor failed ({type(exc).__name__}); retry shortly"
    )


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=1000)  # type: ignore[call-overload]
class PaymentGateway:
    """Talks to the card processor (simulated, or Stripe when STRIPE_API_KEY is set).

    State: none of its own beyond a connection pool and the processor client; every attempt is a
    row in `payments` keyed by its idempotency key, written before the processor is called.

    Reconciliation: every `payment_reconcile_interval_seconds` it settles charges whose outcome
    was never recorded (replaying their key) and refunds every successful charge of a FAILED
    booking (a saga that gave up while the processor did not answer), so a late success never
    keeps money for a seat that was not delivered.

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
            timeout=self._settings.payment_timeout_seconds,
        )
        self._pool = LazyPool(self._settings, min_size=1, max_size=8)
        self._reconciler = asyncio.get_running_loop().create_task(self._reconcile_forever())

    async def _db(self) -> asyncpg.Pool:
        return await self._pool.get()

    async def charge(
        self,
        *,
        booking_id: str,
        user_id: str,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
    ) -> Charge:
        result = (
            await self.charge_many(
                [
                    ChargeCard(
                        booking_id=booking_id,
                        user_id=user_id,
                        amount=amount,
                        currency=currency,
                        payment_token=token,
                        idempotency_key=idempotency_key,
                    )
                ]
            )
        )[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def charge_many(self, orders: list[ChargeCard]) -> list[Charge | TicketFlowError]:
        """Many bookings' charges in one call (coalesced by the saga actors), answered in order.

        The attempts are recorded in one statement before any reaches the processor, the
        processor is asked for the new ones concurrently, and their outcomes are recorded in one
        statement. A charge the processor could not answer comes back as its error, alone; the
        database failing fails the call (the sagas replay the same keys later).
        """
        pool = await self._db()
        async with pool.acquire() as conn:
            payments = await payment_repository.start(conn, orders, provider=self._processor.name)
        results: list[Charge | TicketFlowError] = []
        to_send: list[tuple[int, ChargeCard, str]] = []
        for order in orders:
            payment = payments[order.idempotency_key]
            if not payment.settled:
                to_send.append((len(results), order, payment.id))
            results.append(_recorded(payment))
        if not to_send:
            return results
        answers = await asyncio.gather(
            *(self._processor.charge(order.request()) for _, order, _ in to_send),
            return_exceptions=True,
        )
        outcomes: list[tuple[str, ChargeOutcome]] = []
        for (index, order, payment_id), answer in zip(to_send, answers, strict=True):
            if isinstance(answer, BaseException):
                metrics.record_payment("error")
                results[index] = _transportable(answer)
                continue
            metrics.record_payment("succeeded" if answer.succeeded else "declined")
            outcomes.append((payment_id, answer))
            results[index] = Charge(payment_id, answer.succeeded, answer.decline_code)
            logger.info(
                "charge booking_id=%s payment_id=%s succeeded=%s decline_code=%s",
                order.booking_id,
                payment_id,
                answer.succeeded,
                answer.decline_code,
                extra={
                    "request_id": order.request_id,
                    "booking_id": order.booking_id,
                    "payment_id": payment_id,
                },
            )
        if outcomes:
            async with pool.acquire() as conn:
                await payment_repository.record_outcomes(conn, outcomes)
        return results

    async def charge_if_attempted(
        self,
        *,
        booking_id: str,
        user_id: str,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
    ) -> Charge | None:
        """The outcome of the charge attempted with this key, or None when none ever was.

        Every attempt is recorded before the processor is called, so no row means the card was
        never charged with this key; a row whose outcome is unknown is settled by replaying it.
        """
        pool = await self._db()
        async with pool.acquire() as conn:
            attempted = await payment_repository.get_by_key(conn, idempotency_key)
        if attempted is None:
            return None
        return await self.charge(
            booking_id=booking_id,
            user_id=user_id,
            amount=amount,
            currency=currency,
            token=token,
            idempotency_key=idempotency_key,
        )

    async def refund(self, *, payment_id: str, idempotency_key: str) -> None:
        """Refunds a successful payment in full; a repeat of a done refund does nothing."""
        pool = await self._db()
        async with pool.acquire() as conn:
            payment = await payment_repository.get(conn, payment_id)
        if payment is None or payment.status is PaymentStatus.REFUNDED:
            return
        if payment.status is not PaymentStatus.SUCCESS or payment.provider_transaction_id is None:
            raise RefundFailed(f"payment {payment_id} is {payment.status}; nothing to refund")
        outcome = await self._processor.refund(
            provider_transaction_id=payment.provider_transaction_id,
            amount=payment.amount,
            idempotency_key=idempotency_key,
        )
        if not outcome.succeeded:
            metrics.record_payment("refund_failed")
            raise RefundFailed(f"refund of payment {payment_id} was refused: {outcome.message}")
        metrics.record_payment("refunded")
        async with pool.acquire() as conn:
            await payment_repository.record_refund(
                conn, payment_id=payment_id, refund_id=outcome.refund_id
            )
        logger.info(
            "refund booking_id=%s payment_id=%s refund_id=%s",
            payment.booking_id,
            payment_id,
            outcome.refund_id,
        )

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.payment_reconcile_interval_seconds)
            try:
                await self.reconcile_once()
            except Exception as exc:  # noqa: BLE001 - provider or database away: next round
                logger.warning("payment reconciliation round failed (%s)", type(exc).__name__)

    async def reconcile_once(self) -> int:
        """Settles what sagas left open; returns how many payments it touched."""
        pool = await self._db()
        started_before = datetime.now(UTC) - timedelta(
            seconds=2 * self._settings.payment_timeout_seconds
        )
        async with pool.acquire() as conn:
            open_payments = await payment_repository.unsettled(conn, started_before=started_before)
        for item in open_payments:
            p = item.payment
            charge = Charge(p.id, p.status is PaymentStatus.SUCCESS)
            if not p.settled:
                charge = await self.charge(
                    booking_id=p.booking_id,
                    user_id=p.user_id,
                    amount=p.amount,
                    currency=p.currency,
                    token=item.payment_token,
                    idempotency_key=p.idempotency_key,
                )
            if charge.succeeded and item.booking_status is BookingStatus.FAILED:
                await self.refund(payment_id=p.id, idempotency_key=refund_key(p.booking_id))
                logger.warning(
                    "reconciliation refunded payment %s of failed booking %s", p.id, p.booking_id
                )
        return len(open_payments)

    async def ping(self) -> str:
        return self._processor.name
