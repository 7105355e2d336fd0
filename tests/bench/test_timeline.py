"""benchmarks.common.timeline and burstiness: latency window by window, and how bunched arrivals
came."""

from __future__ import annotations

from benchmarks.common import burstiness, timeline


def test_timeline_summarises_each_window_on_its_own() -> None:
    at = [0.1, 0.2, 4.9, 5.0, 12.5]
    seconds = [0.010, 0.020, 0.030, 0.500, 0.040]
    rows = timeline(at, seconds, 5.0)
    assert [(r["start_s"], r["n"], r["max"]) for r in rows] == [
        (0.0, 3, 30.0),
        (5.0, 1, 500.0),
        (10.0, 1, 40.0),
    ]


def test_burstiness_tells_even_arrivals_from_bursts() -> None:
    even = [i * 0.05 for i in range(200)]  # 20 a second, evenly
    bursts = [float(i // 20) for i in range(200)]  # 20 at once, every second
    assert (burstiness(even, 0.1)["dispersion"] or 0) < 0.1
    b = burstiness(bursts, 0.1)
    assert b["max"] == 20 and (b["dispersion"] or 0) > 10
    assert burstiness([], 0.1)["dispersion"] is None


def test_even_arrivals_are_spaced_by_the_rate() -> None:
    from benchmarks.paced import even_arrivals

    assert even_arrivals(4, 2.0) == [0.0, 0.5, 1.0, 1.5]
