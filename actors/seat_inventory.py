"""SeatInventory: the one actor that decides who holds which seat of one event."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

import ray

from actors import metrics
from actors.directory import REPORT_EVERY_SWEEPS, DirectoryClient
from config.settings import get_settings
from domain.best_available import BestLockResult, SeatRequest
from domain.inventory import LockResult, ReserveResult, SeatMap, Summary
from domain.service_time import ServiceTimes
from storage import booking_repository, catalog_repository
from storage.booking_repository import SeatsTaken
from storage.pool import LazyPool

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


class _Measured(Protocol):
    _times: ServiceTimes


M = TypeVar("M", bound=_Measured)


def _timed(
    method: Callable[Concatenate[M, P], Awaitable[R]],
) -> Callable[Concatenate[M, P], Awaitable[R]]:
    """Records the call's service time (its start to its return, failed or not) in `_times`."""

    @functools.wraps(method)
    async def timed(self: M, /, *args: P.args, **kwargs: P.kwargs) -> R:
        started = time.monotonic()
        try:
            return await method(self, *args, **kwargs)
        finally:
            self._times.record(time.monotonic() - started)

    return timed


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=1000)  # type: ignore[call-overload]
class SeatInventory:
    """The seat map of one event: every seat's status, and each lock's booking and expiry.

    State: a `domain.inventory.SeatMap` in memory, rebuilt from Postgres when the actor starts
    (active seat sales become RESERVED, locks the sagas persisted and that are still live become
    LOCKED again), so a restart neither frees a seat a buyer is paying for nor sells one twice.

    Concurrency: an async actor; its methods interleave only at `await`. Every check-and-change is
    one synchronous SeatMap call. A reserve marks the lock as being written, awaits the sale
    insert (the unique index is the last guard), then settles or rolls back synchronously.

    Restarts and retries: detached, named `seat-inventory:<event_id>`, `max_restarts=-1`,
    `max_task_retries=0`. Every method is idempotent for its booking, so callers may repeat a
    call whose outcome they did not see. Expired locks are swept every
    `seat_actor_sweep_seconds`; after `seat_actor_idle_seconds` with no call and no live lock the
    actor retires itself and the next call starts a fresh one.

    Latency: its calls time themselves and the sweeper times its own wake-ups (the
    event loop's lag); every periodic report to the directory carries the interval's figure
    (domain.service_time, which says why the actor measures itself), read by the `auto`
    admission rate of the event's waiting room.
    """

    def __init__(self, event_id: str) -> None:
        self._settings = get_settings()
        self._event_id = event_id
        self._map: SeatMap | None = None
        self._db = LazyPool(self._settings, min_size=1, max_size=4)
        self._directory = DirectoryClient()
        self._loading: asyncio.Task[SeatMap] | None = None
        self._reserving: dict[str, asyncio.Task[dict[str, ReserveResult]]] = {}
        self._last_call = time.monotonic()
        self._times = ServiceTimes()
        self._node_id = ray.get_runtime_context().get_node_id()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        metrics.seat_actor_started()

    async def _ready(self) -> SeatMap:
        self._last_call = time.monotonic()
        if self._map is not None:
            return self._map
        if self._loading is None or (
            self._loading.done() and self._loading.exception() is not None
        ):
            self._loading = asyncio.get_running_loop().create_task(self._load())
        return await asyncio.shield(self._loading)

    async def _load(self) -> SeatMap:
        pool = await self._db.get()
        async with pool.acquire() as conn:
            seat_ids = await catalog_repository.seat_ids_of(conn, self._event_id)
            sales = await booking_repository.active_sales_of_event(conn, self._event_id)
            locks = await booking_repository.live_locks_of_event(conn, self._event_id)
        seat_map = SeatMap(tuple(seat_ids))
        for sale in sales:
            seat_map.restore_reserved(sale.seat_id, sale.booking_id)
        now = time.time()
        restored = sum(
            seat_map.restore_lock(lock.booking_id, lock.seat_ids, lock.expires_at.timestamp(), now)
            for lock in locks
        )
        logger.info(
            "seat actor %s loaded: %d seats, %d sold, %d live locks restored",
            self._event_id,
            len(seat_ids),
            len(sales),
            restored,
            extra={
                "event_id": self._event_id,
                "seats": len(seat_ids),
                "sold": len(sales),
                "locks_restored": restored,
            },
        )
        self._map = seat_map
        return seat_map

    def _report(self, *, measured: bool = False) -> None:
        """Tells the directory where this actor lives and whether it may be retired; `measured`:
        with the service time since the last such report (the periodic reports)."""
        holds = self._map is not None and self._map.holds_anything()
        last_used = time.time() - (time.monotonic() - self._last_call)
        self._directory.report(
            event_id=self._event_id,
            node_id=self._node_id,
            last_used=last_used,
            holds_locks=holds,
            service_seconds=self._times.take() if measured else None,
        )

    async def _sweep_forever(self) -> None:
        sweeps = 0
        every = self._settings.seat_actor_sweep_seconds
        while True:
            slept = time.monotonic()
            await asyncio.sleep(every)
            self._times.record_lag(time.monotonic() - slept - every)
            if sweeps % REPORT_EVERY_SWEEPS == 0:
                self._report(measured=True)
            sweeps += 1
            if self._map is not None:
                lapsed = self._map.expire(time.time())
                if lapsed:
                    logger.info("seat actor %s: %d locks expired", self._event_id, len(lapsed))
            idle_for = time.monotonic() - self._last_call
            holds = self._map is not None and self._map.holds_anything()
            if not holds and idle_for > self._settings.seat_actor_idle_seconds:
                logger.info("seat actor %s idle for %.0f s; retiring", self._event_id, idle_for)
                await self._db.close()
                metrics.seat_actor_stopped()
                self._directory.forget(self._event_id)
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return

    @_timed
    async def lock(
        self, booking_id: str, seat_ids: tuple[str, ...], ttl: float | None = None
    ) -> LockResult:
        seat_map = await self._ready()
        limit = float(self._settings.seat_lock_ttl)
        held_before = seat_map.holds_anything()
        result = seat_map.lock(
            booking_id, tuple(seat_ids), ttl=min(ttl or limit, limit), now=time.time()
        )
        metrics.record_lock(result.ok)
        if not held_before and seat_map.holds_anything():
            self._report()  # from now on the directory must not retire this actor
        return result

    @_timed
    async def lock_many(self, requests: list[tuple[str, tuple[str, ...]]]) -> list[LockResult]:
        """Many bookings' locks in one call (coalesced by the callers), each all-or-none, in order."""
        seat_map = await self._ready()
        ttl = float(self._settings.seat_lock_ttl)
        now = time.time()
        held_before = seat_map.holds_anything()
        results = [
            seat_map.lock(booking_id, tuple(seat_ids), ttl=ttl, now=now)
            for booking_id, seat_ids in requests
        ]
        for result in results:
            metrics.record_lock(result.ok)
        if not held_before and seat_map.holds_anything():
            self._report()
        return results

    @_timed
    async def release(self, booking_id: str) -> tuple[str, ...]:
        return (await self._ready()).release(booking_id)

    async def reserve(self, booking_id: str) -> ReserveResult:
        return (await self.reserve_many([booking_id]))[0]

    @_timed
    async def reserve_many(self, booking_ids: list[str]) -> list[ReserveResult]:
        """Many bookings' reserves in one call (coalesced by the callers), answered in order.

        Every booking that holds a live lock is marked as being sold at once (one synchronous
        pass), then all their sales are written in one statement. A retried reserve that overlaps
        a running one (a caller's timeout) joins it instead of writing the same sale twice.
        """
        seat_map = await self._ready()
        now = time.time()
        answered: dict[str, ReserveResult] = {}
        running: dict[str, asyncio.Task[dict[str, ReserveResult]]] = {}
        begun: list[tuple[str, tuple[str, ...]]] = []
        for booking_id in booking_ids:
            if booking_id in answered or booking_id in running:
                continue
            joined = self._reserving.get(booking_id)
            if joined is not None:
                running[booking_id] = joined
                continue
            result = seat_map.begin_reserve(booking_id, now=now)
            if result.ok:
                begun.append((booking_id, result.seat_ids))
            else:
                answered[booking_id] = result
        if begun:
            write = asyncio.get_running_loop().create_task(self._write_sales(seat_map, begun))
            for booking_id, _ in begun:
                self._reserving[booking_id] = running[booking_id] = write
            write.add_done_callback(lambda _t: self._forget_reserving(begun))
        results = []
        for booking_id in booking_ids:
            if booking_id in answered:
                results.append(answered[booking_id])
            else:
                results.append((await asyncio.shield(running[booking_id]))[booking_id])
        return results

    def _forget_reserving(self, begun: list[tuple[str, tuple[str, ...]]]) -> None:
        for booking_id, _ in begun:
            self._reserving.pop(booking_id, None)

    async def _write_sales(
        self, seat_map: SeatMap, begun: list[tuple[str, tuple[str, ...]]]
    ) -> dict[str, ReserveResult]:
        """Writes the sales of bookings whose reserve has begun, then settles or rolls back each."""
        pool = await self._db.get()
        try:
            async with pool.acquire() as conn:
                await booking_repository.record_sales(conn, event_id=self._event_id, sales=begun)
        except SeatsTaken:
            # Postgres says another active sale holds one of these seats: memory was wrong (it
            # cannot be, short of a bug). One statement each finds whose; the database wins.
            return await self._write_sales_one_by_one(seat_map, begun)
        except BaseException:
            for booking_id, _ in begun:
                seat_map.abort_reserve(booking_id)
            raise
        for booking_id, _ in begun:
            seat_map.settle_reserve(booking_id)
        return {booking_id: ReserveResult(ok=True, seat_ids=seats) for booking_id, seats in begun}

    async def _write_sales_one_by_one(
        self, seat_map: SeatMap, begun: list[tuple[str, tuple[str, ...]]]
    ) -> dict[str, ReserveResult]:
        pool = await self._db.get()
        results: dict[str, ReserveResult] = {}
        for index, (booking_id, seats) in enumerate(begun):
            try:
                async with pool.acquire() as conn:
                    await booking_repository.record_sales(
                        conn, event_id=self._event_id, sales=[(booking_id, seats)]
                    )
            except SeatsTaken:
                logger.error(
                    "seat actor %s: sale for %s refused by the database", self._event_id, booking_id
                )
                seat_map.abort_reserve(booking_id)
                seat_map.release(booking_id)
                results[booking_id] = ReserveResult(ok=False, reason="SEATS_TAKEN")
                continue
            except BaseException:
                for later, _ in begun[index:]:
                    seat_map.abort_reserve(later)
                raise
            seat_map.settle_reserve(booking_id)
            results[booking_id] = ReserveResult(ok=True, seat_ids=seats)
        return results

    @_timed
    async def unreserve(self, booking_id: str) -> tuple[str, ...]:
        """After a cancellation released the sale in Postgres: the seats are AVAILABLE again."""
        return (await self._ready()).unreserve(booking_id)

    @_timed
    async def snapshot(self) -> tuple[dict[str, str], Summary]:
        seat_map = await self._ready()
        now = time.time()
        statuses = {seat: status.value for seat, status in seat_map.statuses(now).items()}
        return statuses, seat_map.summary(now)

    @_timed
    async def summary(self) -> Summary:
        return (await self._ready()).summary(time.time())

    @_timed
    async def lock_of(self, booking_id: str) -> tuple[tuple[str, ...], float] | None:
        return (await self._ready()).lock_of(booking_id)

    @_timed
    async def warm(self) -> Summary:
        """Loads everything a booking needs (seat statuses and the layout best available chooses
        by) before buyers arrive, so the first wave of a sale meets a warm actor. Counts as a use:
        a warmer that calls it keeps an on-sale actor from retiring idle."""
        seat_map = await self._ready()
        await self._ensure_layout(seat_map)
        return seat_map.summary(time.time())

    async def _ensure_layout(self, seat_map: SeatMap) -> None:
        if seat_map.has_layout():
            return
        pool = await self._db.get()
        async with pool.acquire() as conn:
            seats = await catalog_repository.seats_of(conn, self._event_id)
        seat_map.use_layout([s.seat for s in seats])  # a no-op if a concurrent call won

    @_timed
    async def lock_best(
        self, *, booking_id: str, request: SeatRequest, ttl: float | None = None
    ) -> BestLockResult:
        """Chooses the best available seats for a booking and locks them (best available).

        The choice and the lock are one synchronous SeatMap call, so no other caller can take the
        chosen seats in between. Idempotent for the booking: a repeated call returns the seats it
        already holds (or bought). The first call after a (re)start reads the event's rows and
        tiers once; until then the actor knows only seat ids.
        """
        seat_map = await self._ready()
        await self._ensure_layout(seat_map)
        limit = float(self._settings.seat_lock_ttl)
        held_before = seat_map.holds_anything()
        result = seat_map.choose_and_lock(
            booking_id, request, ttl=min(ttl or limit, limit), now=time.time()
        )
        metrics.record_lock(result.ok)
        if not held_before and seat_map.holds_anything():
            self._report()
        return result

    @_timed
    async def lock_best_many(self, requests: list[tuple[str, SeatRequest]]) -> list[BestLockResult]:
        """Many bookings' best-available locks in one call (coalesced by the callers), chosen and
        locked one after another in order, each as `lock_best` would."""
        seat_map = await self._ready()
        await self._ensure_layout(seat_map)
        ttl = float(self._settings.seat_lock_ttl)
        now = time.time()
        held_before = seat_map.holds_anything()
        results = [
            seat_map.choose_and_lock(booking_id, request, ttl=ttl, now=now)
            for booking_id, request in requests
        ]
        for result in results:
            metrics.record_lock(result.ok)
        if not held_before and seat_map.holds_anything():
            self._report()
        return results
