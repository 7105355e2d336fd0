"""The booking saga: lock -> charge -> reserve -> CONFIRMED -> notify, with compensation.

Why ~530 lines in one module: the booking runner and the cancellation runner share their ports,
idempotency keys and step rules (the refund key above all); each reads best beside the other.

Pure orchestration over four ports; the BookingSaga actor supplies real ones (seat actors, the
payment actor, Postgres, the notifier), the unit tests in-memory fakes. Each step's outcome is
persisted before the next step begins, so `run` can resume a booking from any persisted step:
every external call it repeats carries the same idempotency key, so a resumed saga never locks,
charges or refunds twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from domain.best_available import SeatRequest
from domain.bookings import (
    BookingStatus,
    CancelStep,
    FailureReason,
    SagaStep,
    charge_key,
    refund_key,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class SagaBooking:
    """What the saga needs to know of a booking, as persisted."""

    id: str
    user_id: str
    event_id: str
    seat_ids: tuple[str, ...]
    amount: int
    currency: str
    payment_token: str
    status: BookingStatus
    step: SagaStep
    payment_id: str | None
    lock_expires_at: datetime | None
    created_at: datetime
    # When the event starts (its sale closes then); None when not known (an older announcement).
    event_starts_at: datetime | None = None
    # Best available: the seats to choose; `seat_ids` stays empty until the choice is persisted.
    seat_request: SeatRequest | None = None


@dataclass(frozen=True)
class SeatLock:
    ok: bool
    expires_at: datetime | None = None
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeatChoice:
    """The seat actor's answer to a best-available request: the seats it chose and locked for the
    booking, or why none could be (`message`: what is left)."""

    ok: bool
    seat_ids: tuple[str, ...] = ()
    expires_at: datetime | None = None
    message: str | None = None


@dataclass(frozen=True)
class Priced:
    amount: int
    currency: str


@dataclass(frozen=True)
class Charge:
    payment_id: str
    succeeded: bool
    decline_code: str | None = None


class SeatsPort(Protocol):
    async def lock(
        self, *, event_id: str, booking_id: str, seat_ids: tuple[str, ...]
    ) -> SeatLock: ...
    async def lock_best(
        self, *, event_id: str, booking_id: str, request: SeatRequest
    ) -> SeatChoice:
        """Chooses and locks the best seats for the booking in one step; asked again for the same
        booking while its lock lives, the same seats."""
        ...

    async def release(self, *, event_id: str, booking_id: str) -> None: ...
    async def reserve(self, *, event_id: str, booking_id: str) -> bool: ...


class PaymentsPort(Protocol):
    async def charge(
        self,
        *,
        booking_id: str,
        user_id: str,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
    ) -> Charge: ...
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
        """The outcome of the charge attempted with this key (replayed if unknown); None if none was."""
        ...

    async def refund(self, *, payment_id: str, idempotency_key: str) -> None: ...


class BookingStore(Protocol):
    async def load(self, booking_id: str) -> SagaBooking | None: ...
    async def mark_charging(self, booking_id: str, lock_expires_at: datetime) -> bool: ...
    async def mark_charging_chosen(
        self, booking_id: str, lock_expires_at: datetime, seat_ids: tuple[str, ...]
    ) -> Priced | None:
        """CHARGING with the seats chosen for it, priced from their tiers, in one write; the price,
        or None when the booking is no longer PENDING."""
        ...

    async def mark_charged(self, booking_id: str, payment_id: str) -> bool: ...
    async def confirm(self, booking_id: str) -> bool: ...
    async def fail(
        self, booking_id: str, reason: FailureReason, message: str | None = None
    ) -> bool: ...
    async def has_sale(self, booking_id: str) -> bool: ...


class NotifierPort(Protocol):
    async def poke(self) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class SagaOutcome:
    booking_id: str
    status: BookingStatus
    failure_reason: FailureReason | None = None


# Do not start a charge on a lock that will lapse before the charge can finish.
CHARGE_MARGIN = timedelta(seconds=5)


class BookingSagaRunner:
    def __init__(
        self,
        *,
        seats: SeatsPort,
        payments: PaymentsPort,
        store: BookingStore,
        notifier: NotifierPort,
        clock: Clock,
        step_timeout: float,
        deadline: timedelta,
    ) -> None:
        self._seats = seats
        self._payments = payments
        self._store = store
        self._notifier = notifier
        self._clock = clock
        self._step_timeout = step_timeout
        self._deadline = deadline

    async def run(self, booking_id: str, known: SagaBooking | None = None) -> SagaOutcome | None:
        """Drives one booking as far as it can go; None when it must be resumed later.

        `known` is the booking as it was just written (its announcement), which spares reading it
        back; without it the booking is loaded. Transient failures (an actor or the provider
        unreachable, a step timing out) leave the booking at its persisted step for the recovery
        sweep, until the saga's deadline passes; after that the saga compensates and fails with
        INTERNAL_ERROR.
        """
        booking = (
            known
            if known is not None and known.id == booking_id
            else await self._store.load(booking_id)
        )
        if booking is None:
            logger.warning("saga: booking %s does not exist", booking_id)
            return None
        if booking.status is not BookingStatus.PENDING:
            return SagaOutcome(booking.id, booking.status)
        try:
            return await self._advance(booking)
        except Exception as exc:  # noqa: BLE001 - any failure of a dependency is retried or failed
            if self._clock.now() - booking.created_at < self._deadline:
                logger.warning(
                    "saga %s: step %s interrupted (%s); will resume",
                    booking.id,
                    booking.step,
                    type(exc).__name__,
                )
                return None
            logger.error(
                "saga %s: deadline passed in step %s; compensating", booking.id, booking.step
            )
            try:
                return await self._give_up(booking_id)
            except Exception as exc:  # noqa: BLE001 - the database itself is away: try again later
                logger.error(
                    "saga %s: could not record the failure (%s)", booking.id, type(exc).__name__
                )
                return None

    async def _call(self, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, timeout=self._step_timeout)

    async def _advance(self, b: SagaBooking) -> SagaOutcome:
        step = b.step
        lock_expires_at = b.lock_expires_at
        chosen = False
        if step is SagaStep.STARTED:
            if self._sale_closed(
                b
            ):  # the event started while the booking waited: nothing is held yet
                return await self._fail(b, FailureReason.SEATS_UNAVAILABLE)
            if b.seat_request is not None and not b.seat_ids:
                # Best available: the seat actor chooses and locks in one step; a resumed saga
                # whose choice was not persisted asks again and gets the seats it holds.
                choice = await self._call(
                    self._seats.lock_best(
                        event_id=b.event_id, booking_id=b.id, request=b.seat_request
                    )
                )
                if not choice.ok:
                    return await self._fail(b, FailureReason.SEATS_UNAVAILABLE, choice.message)
                assert choice.expires_at is not None and choice.seat_ids
                b = replace(b, seat_ids=choice.seat_ids)
                lock_expires_at = choice.expires_at
                chosen = True
            else:
                lock = await self._call(
                    self._seats.lock(event_id=b.event_id, booking_id=b.id, seat_ids=b.seat_ids)
                )
                if not lock.ok:
                    return await self._fail(b, FailureReason.SEATS_UNAVAILABLE)
                assert lock.expires_at is not None
                lock_expires_at = lock.expires_at
            step = SagaStep.SEATS_LOCKED  # persisted with CHARGING below: one write, not two

        if step is SagaStep.SEATS_LOCKED:  # also rows persisted at SEATS_LOCKED by earlier versions
            if lock_expires_at is None or not self._chargeable(lock_expires_at):
                await self._release(b)
                return await self._fail(b, FailureReason.LOCK_EXPIRED)
            if self._sale_closed(b):  # no card is charged for an event that has started
                await self._release(b)
                return await self._fail(b, FailureReason.SEATS_UNAVAILABLE)
            # From here on a resume (lock still valid) replays the charge's idempotency key: if the
            # saga died before the charge, that is the first charge; if after, it learns the outcome.
            if chosen:  # the chosen seats and their price are persisted with the step
                priced = await self._store.mark_charging_chosen(b.id, lock_expires_at, b.seat_ids)
                if priced is None:
                    raise RuntimeError(f"saga {b.id}: no longer PENDING when its seats were chosen")
                b = replace(b, amount=priced.amount, currency=priced.currency)
            else:
                await self._store.mark_charging(b.id, lock_expires_at)
            step = SagaStep.CHARGING

        payment_id = b.payment_id
        if step is SagaStep.CHARGING:
            # A booking resumed after its lock lapsed (a long outage) is charged only if it already
            # was: a new charge would be refunded at reserve, money taken for nothing meanwhile.
            # Likewise once the event has started: only a charge already attempted is settled.
            chargeable = (
                lock_expires_at is not None
                and self._chargeable(lock_expires_at)
                and not self._sale_closed(b)
            )
            pay = self._payments.charge if chargeable else self._payments.charge_if_attempted
            charge = await self._call(
                pay(
                    booking_id=b.id,
                    user_id=b.user_id,
                    amount=b.amount,
                    currency=b.currency,
                    token=b.payment_token,
                    idempotency_key=charge_key(b.id),
                )
            )
            if charge is None:
                await self._release(b)
                closed = self._sale_closed(b)
                return await self._fail(
                    b, FailureReason.SEATS_UNAVAILABLE if closed else FailureReason.LOCK_EXPIRED
                )
            if not charge.succeeded:
                await self._release(b)
                return await self._fail(b, FailureReason.PAYMENT_DECLINED)
            payment_id = charge.payment_id
            await self._store.mark_charged(b.id, payment_id)
            step = SagaStep.CHARGED

        if step is SagaStep.CHARGED:
            assert payment_id is not None
            if not await self._call(self._seats.reserve(event_id=b.event_id, booking_id=b.id)):
                # The lock lapsed while the card was charged and the seats may be someone else's:
                # the money goes back before the booking is reported failed.
                await self._call(
                    self._payments.refund(payment_id=payment_id, idempotency_key=refund_key(b.id))
                )
                return await self._fail(b, FailureReason.LOCK_EXPIRED)
            await self._store.confirm(b.id)
            await self._notify()
            return SagaOutcome(b.id, BookingStatus.CONFIRMED)

        raise RuntimeError(f"saga {b.id}: unexpected step {step}")

    def _sale_closed(self, b: SagaBooking) -> bool:
        """The event has started: its seats are no longer for sale (CONTRACT.md, EVENT_NOT_ON_SALE)."""
        return b.event_starts_at is not None and b.event_starts_at <= self._clock.now()

    def _chargeable(self, lock_expires_at: datetime) -> bool:
        """The lock outlives a charge started now."""
        return lock_expires_at - self._clock.now() >= CHARGE_MARGIN

    async def _give_up(self, booking_id: str) -> SagaOutcome | None:
        """Past the deadline: the buyer gets a final answer now; compensation is best effort.

        A paid booking whose sale Postgres already holds is confirmed (the seats were
        delivered). Anything else has its locks released, is recorded FAILED with INTERNAL_ERROR,
        then has its charge (if one succeeded) refunded. The refund comes after FAILED: a refund
        made before the booking is final could meet a crash, and a resumed saga finding the lock
        still live would reserve and confirm a booking whose money went back. Whatever of the
        compensation cannot be done now (the processor or an actor does not answer) is finished
        later by the payment actor's reconciliation, which refunds every successful charge of a
        FAILED booking, and by the lock's own expiry.
        """
        booking = await self._store.load(booking_id)
        if booking is None or booking.status is not BookingStatus.PENDING:
            return SagaOutcome(booking_id, booking.status) if booking else None
        if booking.step is SagaStep.CHARGED and await self._store.has_sale(booking.id):
            # Paid for and the sale is written (Postgres says so, whatever state the seat actor
            # is in): refunding now would leave the seats sold to a FAILED booking.
            await self._store.confirm(booking.id)
            await self._notify()
            return SagaOutcome(booking.id, BookingStatus.CONFIRMED)
        try:
            await self._release(booking)
        except Exception as exc:  # noqa: BLE001 - the lock expires by itself
            logger.warning(
                "saga %s: release failed (%s); the lock will expire", booking.id, type(exc).__name__
            )
        outcome = await self._fail(booking, FailureReason.INTERNAL_ERROR)
        if booking.step in (SagaStep.CHARGING, SagaStep.CHARGED):
            try:
                # The charge's real outcome, without charging if no charge was ever attempted.
                attempted = await self._call(
                    self._payments.charge_if_attempted(
                        booking_id=booking.id,
                        user_id=booking.user_id,
                        amount=booking.amount,
                        currency=booking.currency,
                        token=booking.payment_token,
                        idempotency_key=charge_key(booking.id),
                    )
                )
                if attempted is not None and attempted.succeeded:
                    await self._call(
                        self._payments.refund(
                            payment_id=attempted.payment_id, idempotency_key=refund_key(booking.id)
                        )
                    )
            except Exception as exc:  # noqa: BLE001 - reconciliation refunds it later
                logger.error(
                    "saga %s: charge outcome or refund unavailable (%s); left to reconciliation",
                    booking.id,
                    type(exc).__name__,
                )
        return outcome

    async def _release(self, b: SagaBooking) -> None:
        await self._call(self._seats.release(event_id=b.event_id, booking_id=b.id))

    async def _fail(
        self, b: SagaBooking, reason: FailureReason, message: str | None = None
    ) -> SagaOutcome:
        await self._store.fail(b.id, reason, message)
        await self._notify()
        return SagaOutcome(b.id, BookingStatus.FAILED, reason)

    async def _notify(self) -> None:
        try:
            await self._notifier.poke()
        except Exception as exc:  # noqa: BLE001 - the notification row is already persisted
            logger.warning("notifier unreachable (%s); its poller will deliver", type(exc).__name__)


# -- cancellation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cancellation:
    """A requested cancellation, as persisted (`booking_cancellations` and its booking)."""

    booking_id: str
    event_id: str
    payment_id: str | None
    step: CancelStep
    cancelled_at: datetime | None


@dataclass(frozen=True)
class CancelOutcome:
    booking_id: str
    # When the booking became CANCELLED (refunded, sale released); None: not yet, the refund is
    # retried by the recovery sweep (the booking is still CONFIRMED and charged meanwhile).
    cancelled_at: datetime | None


class SeatReleasePort(Protocol):
    async def unreserve(self, *, event_id: str, booking_id: str) -> None:
        """Frees the booking's sold seats in the live seat actor, if one runs (it reloads otherwise)."""
        ...


class RefundPort(Protocol):
    async def refund(self, *, payment_id: str, idempotency_key: str) -> None: ...


class CancellationStore(Protocol):
    async def load_cancellation(self, booking_id: str) -> Cancellation | None: ...
    async def mark_cancelled(self, booking_id: str) -> datetime | None:
        """CANCELLED, the sale released, the notification and step RELEASING, atomically; the
        cancellation time, or None when the booking was not CONFIRMED (already done)."""
        ...

    async def mark_released(self, booking_id: str) -> None: ...


class CancellationRunner:
    """Drives a requested cancellation: refund -> CANCELLED (sale released, notified) -> the seat
    actor's copy released.

    The intent (step REFUNDING, the booking still CONFIRMED) is persisted before this runs, and
    every step is persisted before the next, so `run` resumes from any step after any crash: the
    refund repeats its idempotency key `<bookingId>:refund` (the same key the booking saga's
    LOCK_EXPIRED refund and the payment reconciliation use: there is one charge per booking and
    it is refunded at most once, whoever asks), and the booking becomes CANCELLED only after the
    refund went through. So an interruption leaves either a CONFIRMED, charged booking with an
    open cancellation (finished by the next run) or a CANCELLED, refunded one, never a refunded
    CONFIRMED booking at rest.
    """

    def __init__(
        self,
        *,
        seats: SeatReleasePort,
        payments: RefundPort,
        store: CancellationStore,
        notifier: NotifierPort,
        step_timeout: float,
    ) -> None:
        self._seats = seats
        self._payments = payments
        self._store = store
        self._notifier = notifier
        self._step_timeout = step_timeout

    async def run(self, booking_id: str) -> CancelOutcome | None:
        """Drives one cancellation as far as it can go; None when none was requested.

        A refund that fails (the processor down or refusing) leaves the cancellation at
        REFUNDING for the recovery sweep: the outcome then has no `cancelled_at`.
        """
        c = await self._store.load_cancellation(booking_id)
        if c is None:
            return None
        cancelled_at = c.cancelled_at
        if c.step is CancelStep.REFUNDING:
            try:
                if c.payment_id is not None:
                    await self._call(
                        self._payments.refund(
                            payment_id=c.payment_id, idempotency_key=refund_key(booking_id)
                        )
                    )
                cancelled_at = await self._call(self._store.mark_cancelled(booking_id))
            except Exception as exc:  # noqa: BLE001 - the processor or the database: resumed later
                logger.warning(
                    "cancellation %s: refund step interrupted (%s); will resume",
                    booking_id,
                    type(exc).__name__,
                )
                return CancelOutcome(booking_id, None)
            if cancelled_at is None:  # a concurrent run moved it first
                reloaded = await self._store.load_cancellation(booking_id)
                cancelled_at = reloaded.cancelled_at if reloaded else None
            else:
                await self._notify()
        if c.step is not CancelStep.DONE:
            try:
                await self._call(self._seats.unreserve(event_id=c.event_id, booking_id=booking_id))
                await self._call(self._store.mark_released(booking_id))
            except Exception as exc:  # noqa: BLE001 - refunded and CANCELLED already; the sweep retries
                logger.warning(
                    "cancellation %s: seat release interrupted (%s); will resume",
                    booking_id,
                    type(exc).__name__,
                )
        return CancelOutcome(booking_id, cancelled_at)

    async def _call(self, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, timeout=self._step_timeout)

    async def _notify(self) -> None:
        try:
            await self._notifier.poke()
        except Exception as exc:  # noqa: BLE001 - the notification row is already persisted
            logger.warning("notifier unreachable (%s); its poller will deliver", type(exc).__name__)
