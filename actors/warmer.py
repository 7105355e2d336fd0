"""SeatActorWarmer: seat actors started before buyers arrive, so no buyer waits for a cold one.

A cold seat actor costs its first caller a Ray worker start and a read of the event's seats
(seconds on a busy node), which is what the first wave of a sale used to pay. Seat actors are
warmed at three moments:

- an event's creation, when its sale is open at once: the Gateway warms it in the background
  (`application.events`);
- a sale's opening (`salesStartAt`): every tick (`TICKETFLOW_SEAT_ACTOR_WARM_INTERVAL_SECONDS`)
  warms the events whose sale opens within `TICKETFLOW_SEAT_ACTOR_WARM_LEAD_SECONDS`, and keeps
  warm those that opened less than `TICKETFLOW_SEAT_ACTOR_HOT_SECONDS` ago: each tick's call
  counts as a use, so a hot sale's actor never retires idle, and one that went (evicted by the
  cap, or crashed) is back within a tick;
- start-up: this actor's first tick also warms the events on sale, the soonest first.

Always within the per-node cap: warming takes free slots only and never retires another event's
actor (`SeatInventoryClient.warm`); when the cap is reached it stops. A restart of this actor
simply warms again (it holds nothing but a pool).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import ray

from actors import factory
from actors.clients import SeatInventoryClient
from actors.names import WARMER_ACTOR
from config.settings import get_settings
from storage import catalog_repository
from storage.pool import LazyPool

logger = logging.getLogger(__name__)
# No more events are looked at per query than this (the cap stops the warming long before).
START_UP_LIMIT = 1000


@ray.remote(max_restarts=-1, max_task_retries=0)
class SeatActorWarmer:
    """Warms seat actors: at its start, the events on sale; then on every tick."""

    def __init__(self) -> None:
        self._settings = get_settings()
        self._db = LazyPool(self._settings, min_size=1, max_size=1)
        self._seats = SeatInventoryClient()
        self._loop = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        started = False
        while True:
            # Each on its own: a failing query of one kind must not stop the other.
            try:
                if not started:
                    warmed = await self.warm_on_sale()
                    started = True
                    logger.info("warmed %d seat actors at start-up", len(warmed))
            except Exception:  # noqa: BLE001 - the next tick tries again; bookings start actors anyway
                logger.warning("warming the events on sale failed", exc_info=True)
            try:
                await self.warm_sales_opening()
            except Exception:  # noqa: BLE001 - as above
                logger.warning("warming the sales opening failed", exc_info=True)
            await asyncio.sleep(self._settings.seat_actor_warm_interval_seconds)

    async def warm_sales_opening(self) -> list[str]:
        """Warms (or keeps warm) the seat actors of sales opening soon or opened lately."""
        pool = await self._db.get()
        async with pool.acquire() as conn:
            event_ids = await catalog_repository.sales_opening(
                conn,
                now=datetime.now(UTC),
                lead=timedelta(seconds=self._settings.seat_actor_warm_lead_seconds),
                hot=timedelta(seconds=self._settings.seat_actor_hot_seconds),
                limit=START_UP_LIMIT,
            )
        return await self._warm_all(event_ids)

    async def warm_on_sale(self) -> list[str]:
        """Warms the events not yet started, the soonest first, until the cap is reached."""
        pool = await self._db.get()
        async with pool.acquire() as conn:
            event_ids = await catalog_repository.events_on_sale(
                conn, now=datetime.now(UTC), limit=START_UP_LIMIT
            )
        return await self._warm_all(event_ids)

    async def _warm_all(self, event_ids: list[str]) -> list[str]:
        warmed = []
        for event_id in event_ids:
            if not await self._seats.warm(event_id):
                break  # every node is at the cap
            warmed.append(event_id)
        return warmed


def start_warmer() -> None:
    """Creates the warmer at start-up (detached and named: one per cluster)."""
    factory.get_or_create(SeatActorWarmer, WARMER_ACTOR)
