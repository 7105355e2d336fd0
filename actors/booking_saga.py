"""BookingSaga: one of a fixed pool of actors, each driving many booking sagas at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import ray

from actors import metrics, registry
from actors.coalescer import Coalescer
from config.settings import get_settings
from domain.bookings import FailureReason
from domain.inventory import LockResult, ReserveResult
from domain.saga import BookingSagaRunner, Charge, SagaBooking, SagaOutcome, SeatLock
from storage import booking_repository
from storage.pool import create_pool

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


async def _lock_batch(event_id: str, requests: list[tuple[str, tuple[str, ...]]]) -> list[LockResult]:
    results: list[LockResult] = await registry.call_seat_actor(event_id, lambda h: h.lock_many.remote(requests))
    return results


class _Seats:
    def __init__(self) -> None:
        # Concurrent sagas' locks for one event travel in one seat-actor call.
        self._locks: Coalescer[tuple[str, tuple[str, ...]], LockResult] = Coalescer(_lock_batch)

    async def lock(self, *, event_id: str, booking_id: str, seat_ids: tuple[str, ...]) -> SeatLock:
        with _timed("lock"):
            result = await self._locks.submit(event_id, (booking_id, seat_ids))
        if not result.ok:
            return SeatLock(ok=False, conflicts=result.conflicts + result.unknown)
        return SeatLock(ok=True, expires_at=datetime.fromtimestamp(result.expires_at, tz=UTC))

    async def release(self, *, event_id: str, booking_id: str) -> None:
        with _timed("release"):
            await registry.call_seat_actor(event_id, lambda h: h.release.remote(booking_id))

    async def reserve(self, *, event_id: str, booking_id: str) -> bool:
        with _timed("reserve"):
            result: ReserveResult = await registry.call_seat_actor(event_id, lambda h: h.reserve.remote(booking_id))
        return result.ok


async def _call_payment_actor(method: str, **kwargs: Any) -> Any:
    return await registry.call_actor(
        registry.PAYMENT_ACTOR, registry.payment_gateway, lambda h: getattr(h, method).remote(**kwargs),
    )


class _Payments:
    async def charge(
        self, *, booking_id: str, user_id: str, amount: int, currency: str, token: str, idempotency_key: str
    ) -> Charge:
        with _timed("charge"):
            charge: Charge = await _call_payment_actor(
                "charge", booking_id=booking_id, user_id=user_id, amount=amount, currency=currency, token=token,
                idempotency_key=idempotency_key,
            )
        return charge

    async def charge_if_attempted(
        self, *, booking_id: str, user_id: str, amount: int, currency: str, token: str, idempotency_key: str
    ) -> Charge | None:
        charge: Charge | None = await _call_payment_actor(
            "charge_if_attempted", booking_id=booking_id, user_id=user_id, amount=amount, currency=currency,
            token=token, idempotency_key=idempotency_key,
        )
        return charge

    async def refund(self, *, payment_id: str, idempotency_key: str) -> None:
        with _timed("refund"):
            await _call_payment_actor("refund", payment_id=payment_id, idempotency_key=idempotency_key)


class _Notifier:
    """Wakes the notifier at most every POKE_INTERVAL: during an on-sale one actor call per
    booking would cost more than the emails; the notifier's own poll catches anything missed."""

    POKE_INTERVAL = 0.1

    def __init__(self) -> None:
        self._last_poke = 0.0

    async def poke(self) -> None:
        now = time.monotonic()
        if now - self._last_poke >= self.POKE_INTERVAL:
            self._last_poke = now
            registry.notifier().poke.remote()


class _Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self, booking_id: str) -> SagaBooking | None:
        async with self._pool.acquire() as conn:
            booking = await booking_repository.get(conn, booking_id)
        return booking_repository.to_saga(booking) if booking else None

    async def mark_charging(self, booking_id: str, lock_expires_at: datetime) -> bool:
        async with self._pool.acquire() as conn:
            return await booking_repository.mark_charging(conn, booking_id, lock_expires_at)

    async def mark_charged(self, booking_id: str, payment_id: str) -> bool:
        async with self._pool.acquire() as conn:
            return await booking_repository.mark_charged(conn, booking_id, payment_id)

    async def confirm(self, booking_id: str) -> bool:
        with _timed("confirm"):
            async with self._pool.acquire() as conn:
                done = await booking_repository.confirm(conn, booking_id)
        if done:
            metrics.record_booking_final("CONFIRMED", None)
        return done

    async def fail(self, booking_id: str, reason: FailureReason) -> bool:
        async with self._pool.acquire() as conn:
            done = await booking_repository.fail(conn, booking_id, reason)
        if done:
            metrics.record_booking_final("FAILED", reason.value)
        return done

    async def has_sale(self, booking_id: str) -> bool:
        async with self._pool.acquire() as conn:
            return await booking_repository.has_sale(conn, booking_id)


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=10_000)  # type: ignore[call-overload]
class BookingSaga:
    """Drives booking sagas (`domain.saga.BookingSagaRunner`) for the bookings of its slot.

    State: the set of bookings it is driving right now; everything else is in Postgres, written
    after every step. Concurrency: each booking runs as its own asyncio task; one booking is never
    driven twice at once by this actor, and a booking belongs to exactly one slot.

    Restarts: `max_restarts=-1`. On (re)start, and every `saga_recovery_interval_seconds`, it
    resumes its slot's PENDING bookings that have not moved for `saga_stale_after_seconds`, so a
    saga cut short by a crash of this actor, a seat actor or the whole server ends CONFIRMED or
    FAILED. Resuming repeats a step with the same idempotency keys, so nothing is charged twice.
    """

    def __init__(self, slot: int, pool_size: int) -> None:
        self._settings = get_settings()
        self._slot = slot
        self._pool_size = pool_size
        self._active: dict[str, asyncio.Task[SagaOutcome | None]] = {}
        self._runner: BookingSagaRunner | None = None
        self._runner_lock = asyncio.Lock()
        self._pool: asyncpg.Pool | None = None
        self._recovery = asyncio.get_running_loop().create_task(self._recover_forever())

    async def _get_runner(self) -> BookingSagaRunner:
        if self._runner is None:
            async with self._runner_lock:
                if self._runner is None:
                    self._runner = await self._build_runner()
        return self._runner

    async def _build_runner(self) -> BookingSagaRunner:
        self._pool = await create_pool(self._settings, min_size=1, max_size=10)
        return BookingSagaRunner(
            seats=_Seats(), payments=_Payments(), store=_Store(self._pool), notifier=_Notifier(),
            clock=_Clock(), step_timeout=self._settings.saga_step_timeout_seconds,
            deadline=timedelta(seconds=self._settings.saga_timeout_seconds),
        )

    async def start(self, booking_id: str) -> None:
        """Starts (or joins) the saga of a booking and returns at once."""
        await self._drive(booking_id)

    async def run(self, booking_id: str) -> SagaOutcome | None:
        """Drives a booking and waits for it (tests and recovery tools)."""
        task = await self._drive(booking_id)
        return await asyncio.shield(task)

    async def _drive(self, booking_id: str) -> asyncio.Task[SagaOutcome | None]:
        task = self._active.get(booking_id)
        if task is None:
            runner = await self._get_runner()
            task = asyncio.get_running_loop().create_task(runner.run(booking_id))
            self._active[booking_id] = task
            task.add_done_callback(lambda t: self._finished(booking_id, t))
        return task

    def _finished(self, booking_id: str, task: asyncio.Task[SagaOutcome | None]) -> None:
        self._active.pop(booking_id, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("saga crashed", exc_info=exc, extra={"booking_id": booking_id, "saga_slot": self._slot})
            return
        outcome = task.result()
        if outcome is not None:
            logger.info("saga finished", extra={
                "booking_id": booking_id, "status": outcome.status.value,
                "failure_reason": outcome.failure_reason.value if outcome.failure_reason else None,
                "saga_slot": self._slot,
            })

    async def _recover_forever(self) -> None:
        while True:
            try:
                await self.recover_once()
            except Exception as exc:  # noqa: BLE001 - the database may be down; try again later
                logger.warning("saga %d: recovery round failed (%s)", self._slot, type(exc).__name__)
            await asyncio.sleep(self._settings.saga_recovery_interval_seconds)

    async def recover_once(self) -> int:
        await self._get_runner()
        assert self._pool is not None
        stale_before = datetime.now(UTC) - timedelta(seconds=self._settings.saga_stale_after_seconds)
        async with self._pool.acquire() as conn:
            ids = await booking_repository.stale_pending(
                conn, slot=self._slot, pool_size=self._pool_size, updated_before=stale_before, limit=500
            )
        resumed = [b for b in ids if b not in self._active]
        for booking_id in resumed:
            await self._drive(booking_id)
        if resumed:
            logger.info("saga %d: resumed %d unfinished bookings", self._slot, len(resumed))
        return len(resumed)
