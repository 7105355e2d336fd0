"""When a buyer in a waiting room should next look at their place (pure; docs/waiting-room.md).

Every look is a request through the Gateway, and a request costs the Gateway about as much CPU as
a health check (~2 ms here), the same CPU the admitted buyers' bookings need. Buyers who look every
few seconds would cost the sale more than the sale itself: 20 000 of them looking every 5 s make
4 000 requests a second. So every place read says when a look can next bring news
(`retryAfterSeconds`, and the `Retry-After` header):

- queued: about when their turn comes at the current rate, `(ahead + 1) / rate` plus one admitter
  round, so a buyer typically looks once more and finds themselves admitted;
- before the opening, within one horizon of it: the time to the opening plus their turn after it,
  by the lottery's draw. The draw was fixed at the join, so the hint gives away roughly where it
  fell; it changes nothing. Further from the opening the turn is not known yet (everyone who
  joins later draws too, and may draw ahead), so the buyer is told to look again within the last
  horizon before the opening, at a point spread by `jitter`: the line's looks there stay within
  the budget, and each is told its turn from a line that is (nearly) complete.
- never sooner than `MIN_SECONDS`, and never later than the horizon: those whose turn lies beyond
  it are spread over its last quarter (`jitter`), so they do not come back together. The horizon
  is `waiting / reads_per_second` (within `MIN_HORIZON_SECONDS`..`MAX_HORIZON_SECONDS`): however
  long the line, the buyers far back cost at most about `reads_per_second` reads a second, and
  are told of a sell-out within one horizon.

The reads that remain are about two per admitted buyer (at their turn, and one if early) plus the
far-back budget: the load of a room no longer grows with the length of its line.
"""

from __future__ import annotations

import math

MIN_SECONDS = 1
MIN_HORIZON_SECONDS = 30
MAX_HORIZON_SECONDS = 600
# Admissions happen once a second (the admitter's round); a look a round after the turn finds it.
ROUND_SECONDS = 1.0
FINAL_STATUSES = frozenset({"ADMITTED", "CLOSED"})


def horizon_seconds(*, waiting: int, reads_per_second: float) -> float:
    """The longest a buyer is told to stay away: the far-back reads stay within the budget."""
    if reads_per_second <= 0:
        raise ValueError("the read budget must be positive")
    return min(MAX_HORIZON_SECONDS, max(MIN_HORIZON_SECONDS, waiting / reads_per_second))


def next_look_seconds(
    *,
    status: str,
    rank: int | None,
    per_minute: int,
    waiting: int,
    until_opening: float | None,
    reads_per_second: float,
    jitter: float,
) -> int | None:
    """Seconds until the buyer's next look is worth making; None once the place is final.

    Args:
        status: the place's status (WAITING, QUEUED, ADMITTED, CLOSED).
        rank: people ahead in the line's order (QUEUED), or ahead in the draw (WAITING); None
            when unknown.
        per_minute: the admission rate now (or the one the room will start at).
        waiting: people in line.
        until_opening: seconds to the room's opening (WAITING; None or <= 0: open or unknown).
        reads_per_second: the budget for the buyers far back (see `horizon_seconds`).
        jitter: a number in [0, 1), drawn by the caller, that spreads the far-back buyers.
    """
    if status in FINAL_STATUSES:
        return None
    if per_minute < 1:
        raise ValueError("the admission rate must be at least 1 per minute")
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    horizon = horizon_seconds(waiting=waiting, reads_per_second=reads_per_second)
    turn = (max(rank or 0, 0) + 1) * 60.0 / per_minute + ROUND_SECONDS
    opening = max(0.0, until_opening or 0.0) if status == "WAITING" else 0.0
    if opening > horizon:
        # Back within the last horizon before the opening (or one horizon on, if that is nearer).
        last_call = opening - horizon * jitter
        return max(MIN_SECONDS, math.ceil(min(last_call, horizon * (0.75 + 0.25 * jitter))))
    wait = opening + turn
    if wait > horizon:
        return max(MIN_SECONDS, math.ceil(horizon * (0.75 + 0.25 * jitter)))
    return max(MIN_SECONDS, math.ceil(wait))
