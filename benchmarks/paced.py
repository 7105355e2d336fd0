"""The on-sale with buyers arriving at given times (open loop): the waiting room's references.

`bench onsale --queue` compares the admitted buyers' booking p99 with "the same sale without the
room". The same sale is the same booking load: buyers who arrive when the room's admitted buyers
started their attempts (`arrivals`, replayed to the millisecond), each with one attempt (pick
seats, book, retry on SEATS_UNAVAILABLE), as admitted buyers do, but with nobody waiting in a
room, no place reads and no admitter. What remains between the two runs is what the room's load
costs the booking path.

Why replayed times rather than the same rate: buyers admitted once a second who look when told
do not arrive evenly spaced; theirs came about as bunched as arrivals at random (`posts_per_100ms`
in the report). At the same rate, arrivals at random wait longer in every queue on the path than
evenly spaced ones, whatever the room does: a reference of evenly spaced arrivals (`even_arrivals`,
reported beside it) measures that difference too, not only the room's cost. (A closed loop of a
few buyers, the third reference, never has more than those few bookings in flight.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.httpclient import HttpClient
from benchmarks.onsale import Buyer, OnsaleConfig, OnsaleRun, drive


def even_arrivals(count: int, per_second: float) -> list[float]:
    """`count` arrivals `1 / per_second` apart, from 0."""
    if per_second <= 0:
        raise ValueError("the arrival rate must be positive")
    return [n / per_second for n in range(count)]


class PacedOnsaleRun(OnsaleRun):
    """The on-sale whose buyers start their one attempt at `arrivals` (seconds from the phase's
    start; at most `concurrency` at once), until the seats, the buyers or the phase's time run
    out."""

    def __init__(self, config: OnsaleConfig, client: HttpClient, arrivals: Sequence[float]) -> None:
        if any(t < 0 for t in arrivals):
            raise ValueError("arrivals are seconds from the start: none may be negative")
        super().__init__(config, client)
        self.arrivals = sorted(arrivals)
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
        for buyer, at in zip(self.buyers[: self.cfg.attempts], self.arrivals, strict=False):
            await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
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
    config: OnsaleConfig, arrivals: Sequence[float], client: HttpClient, how: str
) -> dict[str, Any]:
    """The whole scenario (set-up, the booking phase with those arrivals, checks) and its report;
    `how` says in the log how the arrivals were made."""
    config.validate()
    run = PacedOnsaleRun(config, client, arrivals)
    return await drive(
        run, config, f"set-up ({config.seats} seats, {len(run.arrivals)} buyers arriving {how})"
    )
