"""Admitter: the one loop per cluster that opens, paces and closes the events' waiting rooms."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import ray
import redis.asyncio as aioredis
from ray.actor import ActorHandle

from actors import factory, metrics
from actors.directory import DirectoryClient
from actors.names import ADMITTER_ACTOR
from config.settings import get_settings
from domain.admission import AdmissionPacer
from domain.admission_rate import WINDOW_SECONDS, AutoRate, SaleSample
from storage import catalog_repository
from storage.catalog_repository import RoomSale
from storage.pool import LazyPool
from storage.waiting_room import WaitingRoom

logger = logging.getLogger(__name__)
TICK_SECONDS = 1.0
# Rooms ticked per round, soonest events first; far above the sales any one shop runs at once.
MAX_ROOMS = 500
# Admitted per room per tick at most: one Redis script pops them, so it stays short.
MAX_BATCH = 2_000
# Rooms of events that started within this long are closed (once each); older ones were closed
# already, or their keys expire by themselves (WaitingRoom's key TTL).
STARTED_LOOKBACK = timedelta(days=1)
# The seat actors' service times come from the directory in one call a round; it must not hold
# the round up (the auto rate does without them for a round).
DIRECTORY_TIMEOUT_SECONDS = 0.5


@dataclass
class TickReport:
    """What one round did (for tests and operators)."""

    rooms: int = 0
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    admitted: dict[str, int] = field(default_factory=dict)
    rates: dict[str, int] = field(default_factory=dict)
    overloaded: dict[str, str] = field(default_factory=dict)  # auto rooms backing off, and why
    seat_actor_seconds: dict[str, float] = field(default_factory=dict)  # as the auto rates read it
    waiting: int = 0


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=4)  # type: ignore[call-overload]
class Admitter:
    """Every second, for each open sale with a waiting room: opens the room at `salesStartAt`,
    admits the next buyers at the event's rate (fixed, or `auto`: domain.admission_rate), never
    more than the seats left could serve, and closes the room when the event is sold out; and
    closes the rooms of events that have started (within `STARTED_LOOKBACK`), so their waiters
    read CLOSED instead of a place in a line that no longer moves.

    An auto rate is fed, per room and round, the sale's counts from Postgres (confirmed, in
    flight, the shop's recent failures) and the event's seat-actor service time, read from the
    directory (each seat actor measures itself and reports it there: domain.service_time says why
    that, rather than a timed probe call from here).

    State: the auto rates' recent samples (in memory; a restart starts them again from the start
    rate) and the started events whose rooms this process closed (a restart closes them once
    more: closing is idempotent). The queue and the admissions are in Redis, the counts in
    Postgres.
    Concurrency: one loop; `tick_once` (tests, tools) may run beside it, and so may another
    admitter in a second cluster on the same Redis: every admission is checked against the count
    it was paced with, inside the admitting script (`WaitingRoom.admit_paced`), so racing rounds
    never admit one allowance twice. Opening and closing are idempotent.
    Restarts: `max_restarts=-1`, detached and named (one per cluster); the loop starts again in
    `__init__` and picks up where Redis and Postgres are.
    """

    def __init__(self) -> None:
        settings = get_settings()
        self._pool = LazyPool(settings, min_size=1, max_size=2)
        self._redis: aioredis.Redis[Any] | None = (
            aioredis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
            if settings.redis_url
            else None
        )
        self._room = (
            None
            if self._redis is None
            else WaitingRoom(
                self._redis, admission_window_seconds=settings.admission_token_ttl_seconds
            )
        )
        self._window = settings.admission_token_ttl_seconds
        self._auto: dict[str, AutoRate] = {}
        self._closed_started: set[str] = set()
        self._directory = DirectoryClient()
        self._loop = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        if self._room is None:
            logger.warning("admitter: no Redis configured; waiting rooms stay shut")
            return
        while True:
            started = time.monotonic()
            try:
                await self.tick_once()
            except Exception as exc:  # noqa: BLE001 - Redis or Postgres away: try next second
                logger.warning("admitter: round failed (%s: %s)", type(exc).__name__, exc)
            await asyncio.sleep(max(0.05, TICK_SECONDS - (time.monotonic() - started)))

    async def tick_once(self) -> TickReport:
        """One round over every open sale with a waiting room."""
        report = TickReport()
        if self._room is None:
            return report
        pool = await self._pool.get()
        now = datetime.now(UTC)
        async with pool.acquire() as conn:
            sales = await catalog_repository.room_sales(
                conn,
                now=now,
                limit=MAX_ROOMS,
                window_seconds=self._window,
                failures_seconds=WINDOW_SECONDS,
            )
            started = await catalog_repository.started_room_events(
                conn, now=now, since=now - STARTED_LOOKBACK, limit=MAX_ROOMS
            )
        report.rooms = len(sales)
        await self._close_started(self._room, started, report)
        seat_times = await self._seat_times(
            [s.event_id for s in sales if s.admit_per_minute is None and not s.sold_out]
        )
        report.seat_actor_seconds = seat_times
        for sale in sales:
            await self._tick_room(self._room, sale, report, seat_times.get(sale.event_id))
        # Rooms of events no longer on sale: their rates are no longer needed.
        for gone in set(self._auto) - {s.event_id for s in sales}:
            del self._auto[gone]
        metrics.set_queue_length(report.waiting)
        return report

    async def _close_started(
        self, room: WaitingRoom, started: list[str], report: TickReport
    ) -> None:
        """Closes, once each, the rooms of events that started (their sale is over)."""
        for event_id in started:
            if event_id in self._closed_started:
                continue
            if await room.close(event_id=event_id):
                report.closed.append(event_id)
                logger.info("waiting room closed: event started", extra={"event_id": event_id})
            self._closed_started.add(event_id)
        # Out of the lookback: never listed again, so no longer remembered either.
        self._closed_started &= set(started)

    async def _seat_times(self, event_ids: list[str]) -> dict[str, float]:
        """The recent service time of each event's seat actor, as it reported it to the directory
        (none for an actor that reported none lately, or when the directory does not answer)."""
        if not event_ids:
            return {}
        try:
            return await asyncio.wait_for(
                self._directory.service_times(event_ids), timeout=DIRECTORY_TIMEOUT_SECONDS
            )
        except Exception as exc:  # noqa: BLE001 - the rate does without them this round
            logger.warning("admitter: no seat actor latencies (%s)", type(exc).__name__)
            return {}

    async def _tick_room(
        self, room: WaitingRoom, sale: RoomSale, report: TickReport, seat_seconds: float | None
    ) -> None:
        event_id = sale.event_id
        now = time.time()
        # The opening is salesStartAt (the joins before it are the lottery), else the first look.
        opens = now if sale.sales_start_at is None else sale.sales_start_at.timestamp()
        if sale.sold_out:
            if await room.close(event_id=event_id, now=now):
                report.closed.append(event_id)
                logger.info("waiting room closed: sold out", extra={"event_id": event_id})
            return
        state = await room.pacing_state(event_id=event_id, now=now)
        if state.opened_at is None:
            if await room.open(event_id=event_id, now=opens) is not None:
                report.opened.append(event_id)
                logger.info("waiting room opened", extra={"event_id": event_id})
        rate = self._rate(sale, now, seat_seconds)
        report.rates[event_id] = rate
        auto = self._auto.get(event_id)
        if auto is not None and auto.overload is not None:
            report.overloaded[event_id] = auto.overload
        await room.set_rate(event_id=event_id, per_minute=rate)
        admitted = await room.admit_paced(
            event_id=event_id,
            pacer=AdmissionPacer(rate),
            seats_left=sale.seats_for_pacing,
            max_batch=MAX_BATCH,
            now=now,
        )
        if admitted:
            report.admitted[event_id] = len(admitted)
            metrics.record_admitted(
                [a.admitted_at - a.joined_at for a in admitted if a.joined_at is not None]
            )
        report.waiting += max(0, state.waiting - len(admitted))

    def _rate(self, sale: RoomSale, now: float, seat_seconds: float | None) -> int:
        if sale.admit_per_minute is not None:
            self._auto.pop(sale.event_id, None)
            return sale.admit_per_minute
        auto = self._auto.setdefault(sale.event_id, AutoRate())
        before = auto.per_minute
        rate = auto.observe(
            SaleSample(
                at=now,
                confirmed=sale.confirmed,
                in_flight=sale.in_flight,
                failed=sale.failed,
                seat_actor_seconds=seat_seconds,
            )
        )
        if rate < before:
            logger.info(
                "auto rate of %s: %d -> %d a minute (%s)",
                sale.event_id,
                before,
                rate,
                auto.overload,
                extra={"event_id": sale.event_id},
            )
        return rate


class AdmitterClient:
    """Typed calls to the one `Admitter` (created at start-up with the other service actors)."""

    @staticmethod
    def _handle() -> ActorHandle[Any]:
        return factory.get_or_create(Admitter, ADMITTER_ACTOR)

    def start(self) -> None:
        self._handle()

    async def tick_once(self) -> TickReport:
        """Runs one round now (tests and tools); the loop goes on beside it."""
        report: TickReport = await self._handle().tick_once.remote()
        return report
