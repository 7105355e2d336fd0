"""The `auto` admission rate of a waiting room: follow what the shop really confirms (pure).

An organiser who does not know what the shop can serve sets `admitPerMinute: "auto"`. The
admitter then feeds this controller, once a tick, a sample of the event's sale: how many bookings
are confirmed so far (a counter), how many are in flight (PENDING: accepted, not final yet), how
many failed on the shop's account in the last `WINDOW_SECONDS` (LOCK_EXPIRED: the saga was too
slow to pay within the lock; INTERNAL_ERROR: a dependency failed until the saga's deadline), and
the recent service time its seat actor reported (None when it reported none). From a sliding
window of samples it derives

- throughput: bookings confirmed per second over the window;
- latency: in flight / throughput (Little's law: the mean time a booking takes from accepted to
  final, while the flows are steady). A shop that times out or queues bookings in its saga or
  seat actor shows it here: in-flight grows while confirmations do not;
- error share: the shop's failures / (those failures + bookings confirmed in the window), once at
  least `MIN_FINAL_FOR_ERROR_SHARE` bookings ended in the window (one failure of two is noise).
  SEATS_UNAVAILABLE (another buyer was faster) and PAYMENT_DECLINED (the card) are not counted:
  they are what a working shop answers in a popular sale, and backing off on them would throttle
  a sale for being popular;
- seat-actor latency: what the event's seat actor measured itself (the 90th percentile of its
  calls' service time, or its event loop's lag if that is worse, over its last report interval);
  it rises before the booking latency does, since every booking passes the actor twice.

and adjusts the rate every `ADJUST_SECONDS`:

- overloaded (latency above `TARGET_LATENCY_SECONDS`, error share above `MAX_ERROR_SHARE`, or
  seat-actor latency above `MAX_SEAT_ACTOR_SECONDS`): halve, down to `MIN_PER_MINUTE`;
- healthy: grow by a fifth, up to `HEADROOM` times what the shop confirms (and never below
  `START_PER_MINUTE` for that cap, so a sale whose first buyers are still choosing is not throttled
  to nothing), and never above `MAX_PER_MINUTE`.

Multiplicative decrease and bounded growth (as TCP's congestion control): a shop that slows or
fails is relieved within a few seconds, and the rate climbs back while the shop keeps up.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

START_PER_MINUTE = 600  # 10 buyers a second until the sale shows what the shop does
MIN_PER_MINUTE = 60
MAX_PER_MINUTE = 60_000  # 1 000 buyers a second: far above what one event's seat actor sells
HEADROOM = 2.0  # admitted buyers browse, hesitate or get declined: admit more than is confirmed
INCREASE = 1.2
DECREASE = 0.5
TARGET_LATENCY_SECONDS = 5.0
# More than one booking in ten ending LOCK_EXPIRED or INTERNAL_ERROR is a shop in trouble: a
# healthy one has none of either (its saga pays well within the lock and its dependencies answer).
MAX_ERROR_SHARE = 0.1
MIN_FINAL_FOR_ERROR_SHARE = 5
# A seat actor's calls take well under 10 ms (a lock is a dict update, a reserve one insert); half
# a second at the 90th percentile is a backed-up event loop or a struggling Postgres, still far
# below the saga's step timeout, so the room backs off before bookings start timing out.
MAX_SEAT_ACTOR_SECONDS = 0.5
WINDOW_SECONDS = 10.0
ADJUST_SECONDS = 3.0


@dataclass(frozen=True)
class SaleSample:
    """The event's sale at one moment (`at`: seconds on any one clock)."""

    at: float
    confirmed: int  # bookings confirmed so far (a counter that only grows, bar cancellations)
    in_flight: int  # bookings accepted and not final yet
    failed: int = 0  # bookings failed on the shop's account within the last WINDOW_SECONDS
    seat_actor_seconds: float | None = None  # the seat actor's recent service time, if reported


@dataclass(frozen=True)
class ShopReading:
    """What the window says about the shop."""

    confirmed_per_second: float
    in_flight: int
    latency_seconds: float  # inf when bookings are in flight and none is confirmed
    error_share: float = 0.0  # 0 until MIN_FINAL_FOR_ERROR_SHARE bookings ended in the window
    seat_actor_seconds: float | None = None


@dataclass
class AutoRate:
    """The auto rate of one event's room; `observe` a sample every tick, read `per_minute`."""

    per_minute: int = START_PER_MINUTE
    _samples: deque[SaleSample] = field(default_factory=deque)
    _adjusted_at: float | None = None
    overload: str | None = None  # why the last adjustment halved the rate (None: it did not)

    def reading(self) -> ShopReading | None:
        """The shop's throughput and latency over the window; None until half a window is seen."""
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        span = last.at - first.at
        if span < WINDOW_SECONDS / 2:
            return None
        rate = max(0, last.confirmed - first.confirmed) / span
        if last.in_flight == 0:
            latency = 0.0
        elif rate > 0:
            latency = last.in_flight / rate
        else:
            latency = math.inf
        confirmed = max(0, last.confirmed - first.confirmed)
        final = confirmed + last.failed
        share = last.failed / final if final >= MIN_FINAL_FOR_ERROR_SHARE else 0.0
        return ShopReading(rate, last.in_flight, latency, share, last.seat_actor_seconds)

    def observe(self, sample: SaleSample) -> int:
        """Takes a sample and returns the rate to admit at now (admissions per minute)."""
        self._samples.append(sample)
        while self._samples and sample.at - self._samples[0].at > WINDOW_SECONDS:
            self._samples.popleft()
        if self._adjusted_at is not None and sample.at - self._adjusted_at < ADJUST_SECONDS:
            return self.per_minute
        reading = self.reading()
        if reading is None:
            return self.per_minute
        self._adjusted_at = sample.at
        self.overload = overload(reading)
        self.per_minute = next_rate(self.per_minute, reading)
        return self.per_minute


def overload(reading: ShopReading) -> str | None:
    """Why the shop counts as overloaded (for logs and reports), or None when it keeps up."""
    if reading.latency_seconds > TARGET_LATENCY_SECONDS:
        return f"booking latency {reading.latency_seconds:.1f} s"
    if reading.error_share > MAX_ERROR_SHARE:
        return f"error share {reading.error_share:.0%}"
    seat = reading.seat_actor_seconds
    if seat is not None and seat > MAX_SEAT_ACTOR_SECONDS:
        return f"seat actor latency {seat * 1000:.0f} ms"
    return None


def next_rate(per_minute: int, reading: ShopReading) -> int:
    """The rate after one adjustment (see the module docstring)."""
    if overload(reading) is not None:
        return max(MIN_PER_MINUTE, math.floor(per_minute * DECREASE))
    cap = max(START_PER_MINUTE, HEADROOM * reading.confirmed_per_second * 60)
    grown = math.ceil(per_minute * INCREASE)
    return max(MIN_PER_MINUTE, min(MAX_PER_MINUTE, math.floor(cap), grown))
