"""The on-sale benchmark's "first wave": the bookings the buyers sent the moment the sale opened.

Issue 14 asks whether the first buyers of a sale see warm latency (a cold seat actor used to cost
them a Ray worker start and a read of the event's seats). The whole-phase percentiles hide that:
a few slow bookings among thousands barely move the p95. So the first wave is measured alone.

The wave is the first `concurrency` bookings *sent* in the phase, in the order their POSTs left:
the workers start together, so these are exactly the buyers released at once, one per worker.
A count, not a time window (say, the first second), keeps the wave the same size on a fast and a
slow server: a window would hold many waves on one and part of a wave on the other. A POST that
got no 202/200 is counted in the wave but has no latency, as in the whole-phase figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import latency_summary


@dataclass
class FirstWave:
    """Which POSTs belong to the first wave, and their latencies (seconds)."""

    size: int
    sent: int = 0
    lat_202: list[float] = field(default_factory=list)
    lat_e2e_confirmed: list[float] = field(default_factory=list)

    def admit(self) -> bool:
        """Called as a POST is sent: whether it is one of the first `size`."""
        self.sent += 1
        return self.sent <= self.size

    def summary(self) -> dict[str, Any]:
        """The report's `first_wave`: its size and its percentiles in ms (each with its `n`)."""
        return {
            "size": self.size,
            "latency_202_ms": latency_summary(self.lat_202),
            "latency_e2e_confirmed_ms": latency_summary(self.lat_e2e_confirmed),
        }
