"""The on-sale with buyers arriving at a fixed rate (open loop): the waiting room's reference.

`bench onsale --queue` compares the admitted buyers' booking p99 with "the same sale without the
room". The same sale is the same booking load: buyers who arrive at the rate the room admitted
them, each with one attempt (pick seats, book, retries on SEATS_UNAVAILABLE), as admitted buyers
do, but with nobody waiting in a room, no place reads and no admitter. What remains between the
two runs is what the room costs the booking path. (A closed loop of a few buyers, the other
reference, is stricter: it never has more than those few bookings in flight, where arrivals at a
rate sometimes overlap.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.httpclient import HttpClient
from benchmarks.onsale import Buyer, OnsaleConfig, OnsaleRun, drive


class PacedOnsaleRun(OnsaleRun):
    """The on-sale whose buyers start their one attempt `per_second` apart (at most
    `concurrency` at once), until the seats, the buyers or the phase's time run out."""

    def __init__(self, config: OnsaleConfig, client: HttpClient, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("the arrival rate must be positive")
        super().__init__(config, client)
        self.per_second = per_second
        self._arrivals: asyncio.Future[None] | None = None

    async def worker(self) -> None:
        """The first worker runs the arrivals (so the phase times them); the others return."""
        if self._arrivals is None:
            self._arrivals = asyncio.ensure_future(self._arrive())
            await self._arrivals

    async def _arrive(self) -> None:
        slots = asyncio.Semaphore(self.cfg.concurrency)
        started = time.perf_counter()
        running: list[asyncio.Task[None]] = []
        for n, buyer in enumerate(self.buyers[: self.cfg.attempts]):
            await asyncio.sleep(max(0.0, started + n / self.per_second - time.perf_counter()))
            if self.stop.is_set():
                break
            if self.elapsed() > self.cfg.duration:
                self.stop.set()
                break
            running.append(asyncio.create_task(self._one(buyer, slots)))
        await asyncio.gather(*running)

    async def _one(self, buyer: Buyer, slots: asyncio.Semaphore) -> None:
        async with slots:
            if self.stop.is_set():
                return
            self.stats.attempts += 1
            await self.attempt(buyer)


async def run_paced_onsale(
    config: OnsaleConfig, per_second: float, client: HttpClient
) -> dict[str, Any]:
    """The whole scenario (set-up, paced booking phase, checks) and its report."""
    config.validate()
    run = PacedOnsaleRun(config, client, per_second)
    return await drive(
        run,
        config,
        f"set-up ({config.seats} seats, {config.buyers} buyers arriving {per_second:.1f} a second)",
    )
