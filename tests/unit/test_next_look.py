"""When a waiting buyer is told to look again (domain.next_look): at their turn, within a budget."""

from __future__ import annotations

import heapq
import random

import pytest

from domain.next_look import (
    MAX_HORIZON_SECONDS,
    MIN_HORIZON_SECONDS,
    horizon_seconds,
    next_look_seconds,
)


def _look(**overrides: object) -> int | None:
    args: dict[str, object] = {
        "status": "QUEUED",
        "rank": 0,
        "per_minute": 600,
        "waiting": 100,
        "until_opening": None,
        "reads_per_second": 50.0,
        "jitter": 0.5,
    }
    args.update(overrides)
    return next_look_seconds(**args)  # type: ignore[arg-type]


def test_final_places_need_no_more_looks() -> None:
    assert _look(status="ADMITTED") is None
    assert _look(status="CLOSED") is None


def test_a_queued_buyer_looks_again_at_their_turn() -> None:
    # 600 a minute: 10 a second; 49 ahead -> the 50th admission, 5 s away, plus one round.
    assert _look(rank=49) == 6
    # At the front of a fast room: a round (plus a thousandth of a second, rounded up).
    assert _look(rank=0, per_minute=60_000) == 2
    # A slower rate, a later look.
    assert _look(rank=49, per_minute=60, waiting=5_000) == 51


def test_before_the_opening_the_look_is_the_opening_plus_the_turn_in_the_draw() -> None:
    assert _look(status="WAITING", rank=0, until_opening=10.0) == 12
    assert _look(status="WAITING", rank=99, until_opening=10.0) == 21
    # The opening passed (or is unknown): the turn alone.
    assert _look(status="WAITING", rank=99, until_opening=-5.0) == 11
    assert _look(status="WAITING", rank=99, until_opening=None) == 11


def test_buyers_far_back_are_told_the_horizon_spread_over_its_last_quarter() -> None:
    # 20 000 waiting, 50 reads a second for them: a 400 s horizon.
    horizon = horizon_seconds(waiting=20_000, reads_per_second=50)
    assert horizon == 400
    looks = [
        _look(rank=19_000, waiting=20_000, jitter=random.Random(i).random()) for i in range(200)
    ]
    assert all(300 <= look <= 400 for look in looks if look is not None)
    assert len(set(looks)) > 20  # spread, not one instant for everyone
    # An opening an hour away: the horizon, not the hour.
    assert _look(status="WAITING", until_opening=3600.0, waiting=20_000, jitter=0.0) == 300


def test_far_from_the_opening_the_last_look_before_it_falls_in_its_last_horizon() -> None:
    """Turns are not known an hour ahead (later joiners draw too): every buyer's looks step towards
    the opening and the last one before it lands in its last horizon, spread, so the line is
    nearly complete when each is told its turn (and the looks there stay within the budget)."""
    rng = random.Random(3)
    waiting, budget, opening = 20_000, 50.0, 3_600.0
    horizon = horizon_seconds(waiting=waiting, reads_per_second=budget)  # 400 s
    last_looks = []
    for _ in range(2_000):
        now = 0.0
        while True:
            look = _look(
                status="WAITING",
                rank=19_000,
                waiting=waiting,
                until_opening=opening - now,
                reads_per_second=budget,
                jitter=rng.random(),
            )
            assert look is not None
            if now + look >= opening:
                break
            now += look
        last_looks.append(opening - now)
    assert all(0 < before <= horizon for before in last_looks)
    # Spread over the horizon, not bunched at its start or end: each quarter holds a fair share.
    quarters = [sum(1 for b in last_looks if q * 100 < b <= (q + 1) * 100) for q in range(4)]
    assert min(quarters) > 2_000 / 4 * 0.5, quarters


def _simulated_reads(*, buyers: int, per_minute: int, budget: float, seconds: int) -> int:
    """A line of `buyers` (all in the draw) from its opening: the admitter admits on schedule once
    a second, every buyer looks when told (first at the hint their join gave) until admitted."""
    rng = random.Random(7)
    admitted = 0
    looks: list[tuple[float, int]] = []  # (when, rank at the opening)
    for rank in range(buyers):
        first = _look(
            status="WAITING",
            rank=rank,
            per_minute=per_minute,
            waiting=buyers,
            until_opening=0.0,
            reads_per_second=budget,
            jitter=rng.random(),
        )
        assert first is not None
        heapq.heappush(looks, (float(first), rank))
    reads = 0
    for second in range(1, seconds + 1):
        admitted = min(buyers, per_minute * second // 60)
        while looks and looks[0][0] <= second:
            _, rank = heapq.heappop(looks)
            reads += 1
            if rank < admitted:
                continue  # admitted: this look found the token
            look = _look(
                rank=rank - admitted,
                per_minute=per_minute,
                waiting=buyers - admitted,
                reads_per_second=budget,
                jitter=rng.random(),
            )
            assert look is not None
            heapq.heappush(looks, (second + look, rank))
    return reads


@pytest.mark.parametrize("buyers", [2_000, 20_000, 40_000])
def test_the_reads_stay_near_two_per_admission_plus_the_budget(buyers: int) -> None:
    """The reads a second during the sale stay near two per admitted buyer plus the far-back
    budget (and the horizon's quarter of jitter), up to the line the longest horizon covers
    (budget x MAX_HORIZON_SECONDS: 30 000 here); beyond it, a look every horizon at most."""
    per_minute, budget, seconds = 1200, 50.0, 900
    reads = _simulated_reads(buyers=buyers, per_minute=per_minute, budget=budget, seconds=seconds)
    far_back = max(budget, buyers / MAX_HORIZON_SECONDS)
    assert reads / seconds <= 2 * per_minute / 60 + far_back * 1.34
    # The contrast the hints exist for: everyone looking every 5 s, buyers / 5 reads a second.
    assert reads / seconds < buyers / 5 / 10


def test_the_horizon_is_bounded_both_ways() -> None:
    assert horizon_seconds(waiting=0, reads_per_second=50) == MIN_HORIZON_SECONDS
    assert horizon_seconds(waiting=10**9, reads_per_second=50) == MAX_HORIZON_SECONDS
    with pytest.raises(ValueError):
        horizon_seconds(waiting=1, reads_per_second=0)


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError):
        _look(per_minute=0)
    with pytest.raises(ValueError):
        _look(jitter=1.0)
