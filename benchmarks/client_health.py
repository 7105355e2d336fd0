"""The load generator's own stalls, measured while a phase is timed.

A latency the client measures includes the client's own event loop: a garbage collection of a
heap holding 20 000 waiting buyers, or a loop busy with their place reads, delays every answer
being timed. `ClientHealth` records both (the loop's lag, sampled every few milliseconds, and the
pause of each collection), so a report shows whether a p99 is the server's or the client's.

`freeze_setup_objects` moves what the set-up built (buyers, tokens, tickets) out of the
collector's sight (`gc.freeze`): they live for the whole run, so traversing them in every full
collection during the timed phase only adds pauses to the measured latencies.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import cancel_and_wait, latency_summary, timeline

LAG_PROBE_SECONDS = 0.005
TIMELINE_WINDOW_SECONDS = 5.0


def freeze_setup_objects() -> None:
    gc.collect()
    gc.freeze()


@dataclass
class ClientHealth:
    """Loop lag and collector pauses between `start()` and `stop()`."""

    lags: list[float] = field(default_factory=list)
    lagged_at: list[float] = field(default_factory=list)  # seconds from start() of each lag
    gc_pauses: list[float] = field(default_factory=list)
    _started: float = 0.0
    _gc_started: float = 0.0
    _probe: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._started = time.perf_counter()
        gc.callbacks.append(self._on_gc)
        self._probe = asyncio.ensure_future(self._measure_lag())

    async def stop(self) -> dict[str, Any]:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._probe is not None:
            await cancel_and_wait(self._probe)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return {
            "loop_lag_ms": latency_summary(self.lags),
            "loop_lag_timeline": timeline(self.lagged_at, self.lags, TIMELINE_WINDOW_SECONDS),
            "gc_pause_ms": latency_summary(self.gc_pauses),
            "gc_pause_total_ms": round(sum(self.gc_pauses) * 1000, 1),
        }

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.gc_pauses.append(time.perf_counter() - self._gc_started)
            self._gc_started = 0.0

    async def _measure_lag(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_SECONDS)
            self.lags.append(max(0.0, time.perf_counter() - asked - LAG_PROBE_SECONDS))
            self.lagged_at.append(asked - self._started)
