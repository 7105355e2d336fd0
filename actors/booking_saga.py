"""BookingSaga: one of a fixed pool of actors, each driving many booking sagas at once.

Why ~530 lines in one module: the actor and the four thin adapters it gives the pure saga runners
(seats, payments, store, notifier: `domain.saga`'s ports), which exist only for this actor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import ray

from actors import metrics
from actors.clients import NotifierClient, PaymentClient, SeatInventoryClient
from actors.coalescer import Coalescer
from config.settings import get_settings
from domain.best_available import SeatRequest
from domain.bookings import FailureReason, saga_channel
from domain.payments import ChargeCard
from domain.saga import (
    BookingSagaRunner,
    Cancellation,
    CancellationRunner,
    CancelOutcome,
    Charge,
    Priced,
    SagaBooking,
    SagaOutcome,
    SeatChoice,
    SeatLock,
)
from storage import booking_repository
from storage.pool import LazyPool, connect_alone

logger = logging.getLogger(__name__)


@contextmanager
def _timed(step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.observe_saga_step(step, time.perf_counter() - started)


class _Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class _Seats:
    """The saga's seats port over the seat actors' client (which coalesces concurrent steps)."""

    def __init__(self, seats: SeatInventoryClient) -> None:
        self._seats = seats

    async def lock(self, *, event_id: str, booking_id: str, seat_ids: tuple[str, ...]) -> SeatLock:
        with _timed("lock"):
            result = await self._seats.lock(
                event_id=event_id, booking_id=booking_id, seat_ids=seat_ids
            )
        if not result.ok:
            return SeatLock(ok=False, conflicts=result.conflicts + result.unknown)
        return SeatLock(ok=True, expires_at=datetime.fromtimestamp(result.expires_at, tz=UTC))

    async def lock_best(
        self, *, event_id: str, booking_id: str, request: SeatRequest
    ) -> SeatChoice:
        # One call per booking: the choice is made and locked in the seat actor in one step.
        with _timed("lock"):
            result = await self._seats.lock_best(
                event_id=event_id, booking_id=booking_id, request=request
            )
        if not result.ok:
            return SeatChoice(ok=False, message=result.message)
        return SeatChoice(
            ok=True,
            seat_ids=result.seat_ids,
            expires_at=datetime.fromtimestamp(result.expires_at, tz=UTC),
        )

    async def release(self, *, event_id: str, booking_id: str) -> None:
        with _timed("release"):
            await self._seats.release(event_id=event_id, booking_id=booking_id)

    async def reserve(self, *, event_id: str, booking_id: str) -> bool:
        with _timed("reserve"):
            result = await self._seats.reserve(event_id=event_id, booking_id=booking_id)
        return result.ok

    async def unreserve(self, *, event_id: str, booking_id: str) -> None:
        await self._seats.unreserve_if_live(event_id=event_id, booking_id=booking_id)


class _Payments:
    """The saga's payments port over the payment actor's client; each charge carries the request
    id of the booking's HTTP request, so the payment actor's log line joins the booking's."""

    def __init__(self, payments: PaymentClient, request_ids: Mapping[str, str]) -> None:
        self._payments = payments
        self._request_ids = request_ids

    def _order(
        self,
        *,
        booking_id: str,
        user_id: str,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
    ) -> ChargeCard:
        return ChargeCard(
            booking_id=booking_id,
            user_id=user_id,
            amount=amount,
            currency=currency,
            payment_token=token,
            idempotency_key=idempotency_key,
            request_id=self._request_ids.get(booking_id, ""),
        )

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
        order = self._order(
            booking_id=booking_id,
            user_id=user_id,
            amount=amount,
            currency=currency,
            token=token,
            idempotency_key=idempotency_key,
        )
        with _timed("charge"):
            return await self._payments.charge(order)

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
        return await self._payments.charge_if_attempted(
            self._order(
                booking_id=booking_id,
                user_id=user_id,
                amount=amount,
                currency=currency,
                token=token,
                idempotency_key=idempotency_key,
            )
        )

    async def refund(self, *, payment_id: str, idempotency_key: str) -> None:
        with _timed("refund"):
            await self._payments.refund(payment_id=payment_id, idempotency_key=idempotency_key)


_ALL = ""  # the one key of coalescers that are not per event


class _Store:
    """The saga's reads and step writes; concurrent sagas' writes of one kind share a statement."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._loads: Coalescer[str, SagaBooking | None] = Coalescer(self._load_batch)
        self._charging: Coalescer[tuple[str, datetime], bool] = Coalescer(self._charging_batch)
        self._charged: Coalescer[tuple[str, str], bool] = Coalescer(self._charged_batch)
        self._confirms: Coalescer[str, bool] = Coalescer(self._confirm_batch)
        self._failures: Coalescer[tuple[str, FailureReason, str | None], bool] = Coalescer(
            self._fail_batch
        )

    async def load(self, booking_id: str) -> SagaBooking | None:
        return await self._loads.submit(_ALL, booking_id)

    async def mark_charging(self, booking_id: str, lock_expires_at: datetime) -> bool:
        return await self._charging.submit(_ALL, (booking_id, lock_expires_at))

    async def mark_charging_chosen(
        self, booking_id: str, lock_expires_at: datetime, seat_ids: tuple[str, ...]
    ) -> Priced | None:
        async with self._pool.acquire() as conn:
            return await booking_repository.mark_charging_chosen(
                conn, booking_id, lock_expires_at, seat_ids
            )

    async def mark_charged(self, booking_id: str, payment_id: str) -> bool:
        return await self._charged.submit(_ALL, (booking_id, payment_id))

    async def confirm(self, booking_id: str) -> bool:
        with _timed("confirm"):
            done = await self._confirms.submit(_ALL, booking_id)
        if done:
            metrics.record_booking_final("CONFIRMED", None)
        return done

    async def fail(
        self, booking_id: str, reason: FailureReason, message: str | None = None
    ) -> bool:
        done = await self._failures.submit(_ALL, (booking_id, reason, message))
        if done:
            metrics.record_booking_final("FAILED", reason.value)
        return done

    async def has_sale(self, booking_id: str) -> bool:
        async with self._pool.acquire() as conn:
            return await booking_repository.has_sale(conn, booking_id)

    # Cancellations are rare next to bookings: one statement each, not coalesced.
    async def load_cancellation(self, booking_id: str) -> Cancellation | None:
        async with self._pool.acquire() as conn:
            return await booking_repository.get_cancellation(conn, booking_id)

    async def mark_cancelled(self, booking_id: str) -> datetime | None:
        async with self._pool.acquire() as conn:
            cancelled_at = await booking_repository.mark_cancelled(conn, booking_id)
        if cancelled_at is not None:
            metrics.record_booking_final("CANCELLED", None)
        return cancelled_at

    async def mark_released(self, booking_id: str) -> None:
        async with self._pool.acquire() as conn:
            await booking_repository.finish_cancellation(conn, booking_id)

    async def _load_batch(self, _key: str, booking_ids: list[str]) -> list[SagaBooking | None]:
        async with self._pool.acquire() as conn:
            found = await booking_repository.get_many(conn, booking_ids)
        return [booking_repository.to_saga(found[b]) if b in found else None for b in booking_ids]

    async def _charging_batch(self, _key: str, steps: list[tuple[str, datetime]]) -> list[bool]:
        async with self._pool.acquire() as conn:
            moved = await booking_repository.mark_charging(conn, steps)
        return [booking_id in moved for booking_id, _ in steps]

    async def _charged_batch(self, _key: str, steps: list[tuple[str, str]]) -> list[bool]:
        async with self._pool.acquire() as conn:
            moved = await booking_repository.mark_charged(conn, steps)
        return [booking_id in moved for booking_id, _ in steps]

    async def _confirm_batch(self, _key: str, booking_ids: list[str]) -> list[bool]:
        async with self._pool.acquire() as conn:
            moved = await booking_repository.confirm(conn, booking_ids)
        return [booking_id in moved for booking_id in booking_ids]

    async def _fail_batch(
        self, _key: str, failures: list[tuple[str, FailureReason, str | None]]
    ) -> list[bool]:
        async with self._pool.acquire() as conn:
            moved = await booking_repository.fail(conn, failures)
        return [booking_id in moved for booking_id, _, _ in failures]


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=10_000)  # type: ignore[call-overload]
class BookingSaga:
    """Drives booking sagas (`domain.saga.BookingSagaRunner`) for the bookings of its slot.

    State: the set of bookings it is driving right now; everything else is in Postgres, written
    after every step. Concurrency: each booking runs as its own asyncio task; one booking is never
    driven twice at once by this actor, and a booking belongs to exactly one slot. Concurrent
    sagas' steps of one kind (a lock, a charge, a reserve, a step write) share one actor call or
    one statement (`actors/coalescer.py`).

    Start: the Gateway's booking insert notifies this slot's Postgres channel
    (`domain.bookings.saga_channel`) in the same statement, so a saga starts when its booking is
    committed, with no actor call on the request path; `start` does the same for callers that
    hold a booking id.

    Restarts: `max_restarts=-1`. On (re)start, and every `saga_recovery_interval_seconds`, it
    resumes its slot's PENDING bookings that have not moved for `saga_stale_after_seconds`, so a
    saga cut short by a crash of this actor, a seat actor or the whole server ends CONFIRMED or
    FAILED; whenever it (re)starts listening it resumes at once every PENDING booking of its slot
    that it is not driving (one that arrived while nobody listened). Resuming repeats a step with
    the same idempotency keys, so nothing is charged twice.

    Cancellations: `cancel` drives a cancellation the Gateway persisted (refund, then CANCELLED and
    the seats released; `domain.saga.CancellationRunner`); the same sweep resumes open ones whose
    driver died or whose refund failed, replaying the refund's idempotency key.
    """

    def __init__(self, slot: int, pool_size: int) -> None:
        self._settings = get_settings()
        self._slot = slot
        self._pool_size = pool_size
        self._active: dict[str, asyncio.Task[SagaOutcome | None]] = {}
        self._cancelling: dict[str, asyncio.Task[CancelOutcome | None]] = {}
        self._runner: BookingSagaRunner | None = None
        self._cancel_runner: CancellationRunner | None = None
        self._runner_lock = asyncio.Lock()
        self._db = LazyPool(self._settings, min_size=1, max_size=10)
        # booking id -> the request id of the HTTP request that started it (or its cancellation),
        # while this actor drives it: its log lines, and its charge, carry it.
        self._request_ids: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        self._recovery = loop.create_task(self._recover_forever())
        self._listener = loop.create_task(self._listen_forever())

    async def _get_runner(self) -> BookingSagaRunner:
        if self._runner is None:
            async with self._runner_lock:
                if self._runner is None:
                    self._runner = await self._build_runner()
        return self._runner

    async def _build_runner(self) -> BookingSagaRunner:
        pool = await self._db.get()
        seats = _Seats(SeatInventoryClient())
        payments = _Payments(PaymentClient(), self._request_ids)
        store, notifier = _Store(pool), NotifierClient()
        self._cancel_runner = CancellationRunner(
            seats=seats,
            payments=payments,
            store=store,
            notifier=notifier,
            step_timeout=self._settings.saga_step_timeout_seconds,
        )
        return BookingSagaRunner(
            seats=seats,
            payments=payments,
            store=store,
            notifier=notifier,
            clock=_Clock(),
            step_timeout=self._settings.saga_step_timeout_seconds,
            deadline=timedelta(seconds=self._settings.saga_timeout_seconds),
        )

    async def cancel(self, booking_id: str, request_id: str = "") -> CancelOutcome | None:
        """Drives (or joins) the requested cancellation of a booking and waits for its outcome.

        The Gateway persists the intent first (`booking_repository.request_cancellation`), so this
        call may be lost, repeated or made by many requests at once: concurrent calls share one
        run, and the recovery sweep resumes a cancellation nobody drives. None: none requested.
        """
        await self._get_runner()
        if request_id:
            self._request_ids[booking_id] = request_id
        return await asyncio.shield(self._spawn_cancel(booking_id))

    def _spawn_cancel(self, booking_id: str) -> asyncio.Task[CancelOutcome | None]:
        assert self._cancel_runner is not None
        task = self._cancelling.get(booking_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._cancel_runner.run(booking_id))
            self._cancelling[booking_id] = task
            task.add_done_callback(lambda t: self._cancel_finished(booking_id, t))
        return task

    def _cancel_finished(self, booking_id: str, task: asyncio.Task[CancelOutcome | None]) -> None:
        self._cancelling.pop(booking_id, None)
        request_id = self._request_ids.pop(booking_id, "") if booking_id not in self._active else ""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error(
                "cancellation crashed",
                exc_info=exc,
                extra={"request_id": request_id, "booking_id": booking_id, "saga_slot": self._slot},
            )
            return
        outcome = task.result()
        if outcome is not None and outcome.cancelled_at is not None:
            logger.info(
                "booking cancelled",
                extra={"request_id": request_id, "booking_id": booking_id, "saga_slot": self._slot},
            )

    async def start(self, booking_id: str, request_id: str = "") -> None:
        """Starts (or joins) the saga of a booking and returns at once."""
        await self._drive(booking_id, request_id=request_id)

    async def run(self, booking_id: str, request_id: str = "") -> SagaOutcome | None:
        """Drives a booking and waits for it (tests and recovery tools)."""
        task = await self._drive(booking_id, request_id=request_id)
        return await asyncio.shield(task)

    async def _drive(
        self, booking_id: str, known: SagaBooking | None = None, *, request_id: str = ""
    ) -> asyncio.Task[SagaOutcome | None]:
        return self._spawn(await self._get_runner(), booking_id, known, request_id=request_id)

    def _spawn(
        self,
        runner: BookingSagaRunner,
        booking_id: str,
        known: SagaBooking | None = None,
        *,
        request_id: str = "",
    ) -> asyncio.Task[SagaOutcome | None]:
        if request_id:  # also when joining: the recovery sweep may have started it first
            self._request_ids.setdefault(booking_id, request_id)
        task = self._active.get(booking_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(runner.run(booking_id, known))
            self._active[booking_id] = task
            task.add_done_callback(lambda t: self._finished(booking_id, t))
        return task

    def _on_booking(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            announced = booking_repository.announced(str(payload))
        except (ValueError, KeyError, TypeError):
            logger.error("saga %d: unreadable booking announcement %.200r", self._slot, payload)
            return  # the recovery sweep finds the booking, if there is one
        booking, request_id = announced.booking, announced.request_id
        if self._runner is not None:
            self._spawn(self._runner, booking.id, booking, request_id=request_id)
        else:
            asyncio.get_running_loop().create_task(
                self._drive(booking.id, booking, request_id=request_id)
            )

    async def _listen_forever(self) -> None:
        channel = saga_channel(self._slot)
        while True:
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await connect_alone(self._settings)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(channel, self._on_booking)
                await self.recover_once(stale_after=0.0)
                await lost.wait()
                logger.warning("saga %d: lost its Postgres listener; reconnecting", self._slot)
            except Exception as exc:  # noqa: BLE001 - the database may be down; the sweep still runs
                logger.warning(
                    "saga %d: cannot listen for new bookings (%s)", self._slot, type(exc).__name__
                )
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(1.0)

    def _finished(self, booking_id: str, task: asyncio.Task[SagaOutcome | None]) -> None:
        self._active.pop(booking_id, None)
        request_id = (
            self._request_ids.pop(booking_id, "") if booking_id not in self._cancelling else ""
        )
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error(
                "saga crashed",
                exc_info=exc,
                extra={"request_id": request_id, "booking_id": booking_id, "saga_slot": self._slot},
            )
            return
        outcome = task.result()
        if outcome is not None and logger.isEnabledFor(logging.INFO):
            logger.info(
                "saga finished",
                extra={
                    "request_id": request_id,
                    "booking_id": booking_id,
                    "status": outcome.status.value,
                    "failure_reason": outcome.failure_reason.value
                    if outcome.failure_reason
                    else None,
                    "saga_slot": self._slot,
                },
            )

    async def _recover_forever(self) -> None:
        while True:
            try:
                await self.recover_once()
            except Exception as exc:  # noqa: BLE001 - the database may be down; try again later
                logger.warning(
                    "saga %d: recovery round failed (%s)", self._slot, type(exc).__name__
                )
            await asyncio.sleep(self._settings.saga_recovery_interval_seconds)

    async def recover_once(self, stale_after: float | None = None) -> int:
        """Resumes this slot's PENDING bookings and open cancellations not moved for `stale_after`
        seconds (default: `saga_stale_after_seconds`) that this actor is not driving; returns how many."""
        runner = await self._get_runner()
        pool = await self._db.get()
        if stale_after is None:
            stale_after = self._settings.saga_stale_after_seconds
        stale_before = datetime.now(UTC) - timedelta(seconds=stale_after)
        async with pool.acquire() as conn:
            ids = await booking_repository.stale_pending(
                conn,
                slot=self._slot,
                pool_size=self._pool_size,
                updated_before=stale_before,
                limit=500,
            )
            cancels = await booking_repository.stale_cancellations(
                conn,
                slot=self._slot,
                pool_size=self._pool_size,
                updated_before=stale_before,
                limit=500,
            )
        resumed = [b for b in ids if b not in self._active]
        for booking_id in resumed:
            self._spawn(runner, booking_id, request_id=ids[booking_id])
        # Cancellations whose driver died (or whose refund failed) are taken up again the same way.
        resumed_cancels = [b for b in cancels if b not in self._cancelling]
        for booking_id in resumed_cancels:
            self._spawn_cancel(booking_id)
        if resumed or resumed_cancels:
            logger.info(
                "saga %d: resumed %d unfinished bookings and %d cancellations",
                self._slot,
                len(resumed),
                len(resumed_cancels),
            )
        return len(resumed) + len(resumed_cancels)
