"""The auto admission rate (domain/admission_rate.py): a pure controller, driven by samples."""

from __future__ import annotations

import math

from domain.admission_rate import (
    ADJUST_SECONDS,
    HEADROOM,
    MAX_ERROR_SHARE,
    MAX_PER_MINUTE,
    MAX_SEAT_ACTOR_SECONDS,
    MIN_FINAL_FOR_ERROR_SHARE,
    MIN_PER_MINUTE,
    START_PER_MINUTE,
    TARGET_LATENCY_SECONDS,
    WINDOW_SECONDS,
    AutoRate,
    SaleSample,
    ShopReading,
    next_rate,
    overload,
)


def _drive(
    auto: AutoRate,
    *,
    seconds: int,
    confirmed_per_second: float,
    in_flight: int,
    failed: int = 0,
    seat_actor_seconds: float | None = None,
) -> int:
    """Feeds a steady shop for `seconds` (one sample a second, as the admitter ticks); `failed`:
    the shop's failures of the last window, as the admitter's query counts them."""
    start = auto._samples[-1].at if auto._samples else 0.0
    done = auto._samples[-1].confirmed if auto._samples else 0
    rate = auto.per_minute
    for t in range(1, seconds + 1):
        rate = auto.observe(
            SaleSample(
                at=start + t,
                confirmed=done + math.floor(confirmed_per_second * t),
                in_flight=in_flight,
                failed=failed,
                seat_actor_seconds=seat_actor_seconds,
            )
        )
    return rate


def test_it_starts_at_the_documented_rate_and_holds_it_until_it_has_seen_half_a_window() -> None:
    auto = AutoRate()
    assert auto.per_minute == START_PER_MINUTE
    rate = _drive(auto, seconds=int(WINDOW_SECONDS / 2) - 1, confirmed_per_second=0, in_flight=500)
    assert rate == START_PER_MINUTE


def test_an_overloaded_shop_halves_the_rate_down_to_the_floor() -> None:
    auto = AutoRate()
    # 200 in flight, 10 confirmed a second: 20 s a booking, four times the target.
    rate = _drive(auto, seconds=8, confirmed_per_second=10, in_flight=200)
    assert rate == START_PER_MINUTE // 2
    rate = _drive(auto, seconds=60, confirmed_per_second=10, in_flight=200)
    assert rate == MIN_PER_MINUTE


def test_a_shop_that_confirms_nothing_while_bookings_wait_is_overloaded() -> None:
    reading = ShopReading(confirmed_per_second=0.0, in_flight=3, latency_seconds=math.inf)
    assert next_rate(1000, reading) == 500


def test_a_healthy_shop_grows_the_rate_up_to_twice_what_it_confirms() -> None:
    auto = AutoRate()
    # 50 confirmed a second, 20 in flight: 0.4 s a booking. The cap is 2 x 3000 a minute.
    rate = _drive(auto, seconds=120, confirmed_per_second=50, in_flight=20)
    assert rate == HEADROOM * 50 * 60
    # Confirmations fall to 10 a second: the rate follows them down.
    rate = _drive(auto, seconds=30, confirmed_per_second=10, in_flight=2)
    assert rate == HEADROOM * 10 * 60


def test_the_rate_changes_at_most_once_per_adjustment_period() -> None:
    auto = AutoRate()
    rates = [_drive(auto, seconds=1, confirmed_per_second=10, in_flight=500) for _ in range(20)]
    changes = sum(1 for a, b in zip(rates, rates[1:], strict=False) if a != b)
    assert changes <= 20 / ADJUST_SECONDS + 1


def test_growth_never_passes_the_ceiling_and_a_quiet_sale_settles_at_the_start_rate() -> None:
    huge = ShopReading(confirmed_per_second=1e9, in_flight=0, latency_seconds=0.0)
    assert next_rate(MAX_PER_MINUTE, huge) == MAX_PER_MINUTE
    quiet = ShopReading(confirmed_per_second=0.0, in_flight=0, latency_seconds=0.0)
    assert next_rate(10_000, quiet) == START_PER_MINUTE
    assert next_rate(START_PER_MINUTE, quiet) == START_PER_MINUTE
    at_target = ShopReading(
        confirmed_per_second=100.0, in_flight=500, latency_seconds=TARGET_LATENCY_SECONDS
    )
    assert next_rate(1000, at_target) == 1200  # at the target, not above it: still healthy


def _healthy(**changes: float | None) -> ShopReading:
    """20 confirmed a second, 0.5 s a booking: a shop that keeps up, but for `changes`."""
    base = ShopReading(confirmed_per_second=20.0, in_flight=10, latency_seconds=0.5)
    return ShopReading(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_a_shop_failing_more_than_the_documented_share_halves_the_rate() -> None:
    auto = AutoRate(per_minute=2000)
    # 10 confirmed a second (about 100 in the window) and 30 LOCK_EXPIRED/INTERNAL_ERROR in it:
    # booking latency is fine (0.2 s), the error share (23%) is not.
    rate = _drive(auto, seconds=8, confirmed_per_second=10, in_flight=2, failed=30)
    assert rate == 1000
    assert auto.overload is not None and auto.overload.startswith("error share")
    rate = _drive(auto, seconds=60, confirmed_per_second=10, in_flight=2, failed=30)
    assert rate == MIN_PER_MINUTE


def test_a_few_failures_among_many_confirmations_let_the_rate_grow() -> None:
    auto = AutoRate()
    # 50 confirmed a second, 5 failures in the window: about 1%, below the limit.
    rate = _drive(auto, seconds=8, confirmed_per_second=50, in_flight=20, failed=5)
    assert rate > START_PER_MINUTE and auto.overload is None


def test_the_error_share_waits_for_enough_final_bookings() -> None:
    auto = AutoRate()
    # Four failures and nothing confirmed: four of four, but too few to say anything.
    rate = _drive(
        auto, seconds=8, confirmed_per_second=0, in_flight=0, failed=MIN_FINAL_FOR_ERROR_SHARE - 1
    )
    reading = auto.reading()
    assert reading is not None and reading.error_share == 0.0
    assert rate == START_PER_MINUTE and auto.overload is None
    _drive(auto, seconds=1, confirmed_per_second=0, in_flight=0, failed=MIN_FINAL_FOR_ERROR_SHARE)
    reading = auto.reading()
    assert reading is not None and reading.error_share == 1.0


def test_the_thresholds_are_where_the_docstring_says() -> None:
    assert overload(_healthy()) is None
    assert overload(_healthy(error_share=MAX_ERROR_SHARE)) is None  # at the limit: still healthy
    assert overload(_healthy(error_share=MAX_ERROR_SHARE + 0.01)) == "error share 11%"
    assert overload(_healthy(seat_actor_seconds=MAX_SEAT_ACTOR_SECONDS)) is None
    assert overload(_healthy(seat_actor_seconds=0.8)) == "seat actor latency 800 ms"
    assert overload(_healthy(latency_seconds=6.0)) == "booking latency 6.0 s"
    assert next_rate(1000, _healthy(seat_actor_seconds=0.8)) == 500
    assert next_rate(1000, _healthy(error_share=0.5)) == 500


def test_a_slow_seat_actor_halves_the_rate_and_a_quick_one_lets_it_grow() -> None:
    slow = AutoRate(per_minute=4000)
    rate = _drive(slow, seconds=8, confirmed_per_second=50, in_flight=5, seat_actor_seconds=1.2)
    assert rate == 2000 and slow.overload == "seat actor latency 1200 ms"
    quick = AutoRate(per_minute=4000)
    rate = _drive(quick, seconds=8, confirmed_per_second=50, in_flight=5, seat_actor_seconds=0.004)
    assert rate == 4800 and quick.overload is None
    unknown = AutoRate(per_minute=4000)  # no report from the seat actor: the other signals decide
    assert _drive(unknown, seconds=8, confirmed_per_second=50, in_flight=5) == 4800
