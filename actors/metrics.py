"""TicketFlow's Prometheus metrics, exported through `ray.util.metrics`.

Every Ray node exports its processes' metrics on its metrics export port (`ray start
--metrics-export-port=8080`; the Ray dashboard's Metrics view and Prometheus read it there). Ray
prefixes every name with `ray_`, so `ticketflow_bookings_total` is scraped as
`ray_ticketflow_bookings_total`. docs/operations.md says what to watch and what each alert means.

Metric objects are created lazily, on the first call in the process that records (a gateway
replica, a seat actor, a saga actor...), never at import time: a `ray.util.metrics` object belongs
to the process that created it. Outside Ray (unit tests, the `ticketflow` command's driver before
`ray.init`), every helper is a no-op, and no helper ever raises: a metric must never break a
booking.

Labels are kept to small, bounded sets. There is deliberately NO `event_id` label: every event
ever on sale would become a time series of every metric, forever (Prometheus cardinality grows with
events x statuses x reasons x nodes). Per-event figures come from the logs (`event_id=` is in every
seat actor line) and from `GET /api/inventory/events/{id}/seats`. As a second guard, each label
accepts at most `MAX_LABEL_VALUES` distinct values per process; later ones are recorded as `other`.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

logger = logging.getLogger(__name__)

PREFIX = "ticketflow_"
BOOKINGS = PREFIX + "bookings_total"
SAGA_STEP_SECONDS = PREFIX + "saga_step_seconds"
SEAT_LOCKS = PREFIX + "seat_locks_total"
SEAT_ACTORS_LIVE = PREFIX + "seat_actors_live"
SEAT_ACTOR_STARTS = PREFIX + "seat_actor_starts_total"
PAYMENTS = PREFIX + "payments_total"
EMAILS = PREFIX + "emails_total"
RATE_LIMITED = PREFIX + "rate_limited_total"
QUEUE_LENGTH = PREFIX + "waiting_room_queue_length"
ADMITTED = PREFIX + "waiting_room_admitted_total"
TIME_IN_QUEUE = PREFIX + "waiting_room_time_in_queue_seconds"
PLACE_READS = PREFIX + "waiting_room_place_reads_total"
STREAMS_OPEN = PREFIX + "waiting_room_streams_open"

# Saga steps are actor hops (~1-2 ms), Postgres writes (~1-5 ms) and card charges (~0.3-3 s).
SAGA_STEP_BOUNDARIES = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
# From a few seconds (a room that keeps up) to hours (a big on-sale's back of the line).
TIME_IN_QUEUE_BOUNDARIES = [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0]
BOUNDARIES = {TIME_IN_QUEUE: TIME_IN_QUEUE_BOUNDARIES}
MAX_LABEL_VALUES = 32
MAX_LABEL_LENGTH = 48
OTHER = "other"
NONE = "none"

# name -> (kind, description, tag keys)
_SPECS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    BOOKINGS: (
        "counter",
        "Bookings that reached a final status, by status and failure reason.",
        ("status", "reason"),
    ),
    SAGA_STEP_SECONDS: ("histogram", "Duration of one booking saga step, in seconds.", ("step",)),
    SEAT_LOCKS: (
        "counter",
        "Seat lock requests (one per booking, all seats or none), granted or refused.",
        ("result",),
    ),
    SEAT_ACTORS_LIVE: (
        "gauge",
        "1 for each live SeatInventory actor process (sum over the cluster).",
        (),
    ),
    SEAT_ACTOR_STARTS: (
        "counter",
        "SeatInventory actor (re)starts: first use of an event, or a restart after a crash or node loss.",
        (),
    ),
    PAYMENTS: ("counter", "Card payment outcomes (charges and refunds).", ("outcome",)),
    EMAILS: ("counter", "Email delivery outcomes.", ("outcome",)),
    RATE_LIMITED: ("counter", "Requests refused by a rate limit, by route class.", ("kind",)),
    QUEUE_LENGTH: (
        "gauge",
        "Buyers waiting in the waiting rooms of all events on sale (not yet admitted).",
        (),
    ),
    ADMITTED: ("counter", "Buyers admitted from a waiting room (rate: admitted per second).", ()),
    TIME_IN_QUEUE: (
        "histogram",
        "Time from joining a waiting room to being admitted, in seconds.",
        (),
    ),
    PLACE_READS: (
        "counter",
        "Waiting-room place reads answered (joins, polls and stream re-reads), by kind.",
        ("kind",),
    ),
    STREAMS_OPEN: (
        "gauge",
        "Server-sent-event streams of queue places open now in one Gateway replica (sum them).",
        (),
    ),
}

_lock = threading.Lock()
_metrics: dict[str, Any] = {}
_seen: dict[str, set[str]] = {}
_broken = False


def _in_ray() -> bool:
    ray = sys.modules.get("ray")  # never import Ray just to find out it is not running
    if ray is None:
        return False
    try:
        return bool(ray.is_initialized())
    except Exception:  # noqa: BLE001 - a half-imported Ray is not running Ray
        return False


def _create(name: str) -> Any:
    from ray.util import metrics as ray_metrics

    kind, description, tag_keys = _SPECS[name]
    if kind == "counter":
        return ray_metrics.Counter(name, description=description, tag_keys=tag_keys)
    if kind == "histogram":
        return ray_metrics.Histogram(
            name,
            description=description,
            boundaries=BOUNDARIES.get(name, SAGA_STEP_BOUNDARIES),
            tag_keys=tag_keys,
        )
    return ray_metrics.Gauge(name, description=description, tag_keys=tag_keys)


def _metric(name: str) -> Any | None:
    """This process's metric object, created on first use; None outside Ray."""
    global _broken
    if _broken or not _in_ray():
        return None
    metric = _metrics.get(name)
    if metric is not None:
        return metric
    with _lock:
        metric = _metrics.get(name)
        if metric is None:
            try:
                metric = _create(name)
            except Exception:  # noqa: BLE001 - metrics are best effort
                logger.warning(
                    "metrics disabled in this process: creating %s failed", name, exc_info=True
                )
                _broken = True
                return None
            _metrics[name] = metric
    return metric


def _label(name: str, key: str, value: str | None) -> str:
    """A bounded label value: short, and one of at most MAX_LABEL_VALUES per metric label."""
    text = (value or NONE).strip()[:MAX_LABEL_LENGTH] or NONE
    seen = _seen.setdefault(f"{name}:{key}", set())
    if text in seen:
        return text
    if len(seen) >= MAX_LABEL_VALUES:
        return OTHER
    seen.add(text)
    return text


def _record(
    name: str, method: str, value: float, tags: dict[str, str | None] | None = None
) -> None:
    metric = _metric(name)
    if metric is None:
        return
    try:
        final = {k: _label(name, k, v) for k, v in (tags or {}).items()}
        getattr(metric, method)(value, tags=final or None)
    except Exception:  # noqa: BLE001 - never let a metric break the caller
        logger.debug("recording %s failed", name, exc_info=True)


# -- the helpers the app calls --------------------------------------------------------------------
def record_booking_final(status: str, reason: str | None) -> None:
    """A booking reached a final status (CONFIRMED, FAILED, CANCELLED); reason: its failureReason."""
    _record(BOOKINGS, "inc", 1.0, {"status": status, "reason": reason})


def observe_saga_step(step: str, seconds: float) -> None:
    """One saga step (lock, charge, reserve, confirm, release, refund, notify) took `seconds`."""
    _record(SAGA_STEP_SECONDS, "observe", max(0.0, float(seconds)), {"step": step})


def record_lock(granted: bool) -> None:
    """A seat actor granted or refused one booking's lock request."""
    _record(SEAT_LOCKS, "inc", 1.0, {"result": "granted" if granted else "refused"})


def seat_actor_started() -> None:
    """Called once by a SeatInventory actor process when it (re)starts."""
    _record(SEAT_ACTOR_STARTS, "inc", 1.0)
    _record(SEAT_ACTORS_LIVE, "set", 1.0)


def seat_actor_stopped() -> None:
    """Called by a SeatInventory actor when it retires (its process then exits)."""
    _record(SEAT_ACTORS_LIVE, "set", 0.0)


def record_payment(outcome: str) -> None:
    """A charge or refund outcome: succeeded, declined, error, refunded, refund_failed."""
    _record(PAYMENTS, "inc", 1.0, {"outcome": outcome})


def record_email(outcome: str, count: int = 1) -> None:
    """Email delivery outcomes: sent, outbox, retry, gave_up."""
    _record(EMAILS, "inc", float(count), {"outcome": outcome})


def record_rate_limited(kind: str) -> None:
    """A request refused by a rate limit; kind: the route class (login, register, booking, ...)."""
    _record(RATE_LIMITED, "inc", 1.0, {"kind": kind})


def set_queue_length(waiting: int) -> None:
    """How many buyers wait in all waiting rooms now (set by the one admitter each tick)."""
    _record(QUEUE_LENGTH, "set", float(max(0, waiting)))


def record_admitted(times_in_queue: list[float]) -> None:
    """Buyers admitted from a waiting room, with how long each waited (seconds)."""
    if not times_in_queue:
        return
    _record(ADMITTED, "inc", float(len(times_in_queue)))
    for seconds in times_in_queue:
        _record(TIME_IN_QUEUE, "observe", max(0.0, float(seconds)))


def record_place_read(kind: str) -> None:
    """A waiting-room place answered; kind: join, poll or stream."""
    _record(PLACE_READS, "inc", 1.0, {"kind": kind})


def set_streams_open(count: int) -> None:
    """How many place streams this Gateway replica holds open now."""
    _record(STREAMS_OPEN, "set", float(max(0, count)))


def _reset_for_tests() -> None:
    """Forgets this process's metric objects and label sets (unit tests only)."""
    global _broken
    with _lock:
        _metrics.clear()
        _seen.clear()
        _broken = False
