"""A seat actor's recent service time (pure): what the `auto` admission rate reads of it.

The seat actor measures itself, rather than the admitter timing a call to it, because that costs
nothing on any path that matters: a `time.monotonic()` pair per call, and the figure rides on the
report the actor already sends the directory every few seconds; the admitter reads every event's
figure in one directory call a tick. A probe call from the admitter would instead be one actor
call per room per second, would create the seat actor of a room nobody booked yet (and keep an
idle one from retiring), and would measure one call rather than the calls bookings make.

What it measures: the 90th percentile of the service time of the calls since the last report
(from the method's start to its return: waiting for the seat map to load, for the sale insert of
a reserve, for the pool), and the worst lag of the actor's event loop over the same interval (how
late its sweeper woke up). The second covers what the first cannot see: calls that are waiting
for the loop before their method starts. Neither covers Ray's own queueing in front of the actor
(beyond its `max_concurrency`) or the hop to it; the booking latency the admitter derives from
Postgres (Little's law) includes those.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

PERCENTILE = 0.9
MAX_SAMPLES = 1024  # the latest calls of the interval; a busy actor's older ones are dropped


@dataclass
class ServiceTimes:
    """Service times of one actor's calls and its loop's lag since the last `take`."""

    _calls: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    _lag: float | None = None

    def record(self, seconds: float) -> None:
        """One call took `seconds`, from its method's start to its return."""
        self._calls.append(max(0.0, seconds))

    def record_lag(self, seconds: float) -> None:
        """The event loop ran a timer `seconds` late."""
        self._lag = max(self._lag or 0.0, max(0.0, seconds))

    def take(self) -> float | None:
        """The interval's figure (the calls' 90th percentile or the loop lag, whichever is worse),
        and a new interval begins; None when nothing was measured."""
        figure: float | None = self._lag
        if self._calls:
            ordered = sorted(self._calls)
            p90 = ordered[max(0, math.ceil(PERCENTILE * len(ordered)) - 1)]
            figure = max(p90, figure or 0.0)
        self._calls.clear()
        self._lag = None
        return figure
