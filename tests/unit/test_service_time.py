"""A seat actor's recent service time (domain/service_time.py), as it reports it."""

from __future__ import annotations

from domain.service_time import MAX_SAMPLES, ServiceTimes


def test_nothing_measured_reports_nothing() -> None:
    assert ServiceTimes().take() is None


def test_the_figure_is_the_90th_percentile_of_the_calls() -> None:
    times = ServiceTimes()
    for ms in range(1, 101):  # 1 ms to 100 ms
        times.record(ms / 1000)
    assert times.take() == 0.09


def test_a_late_loop_counts_when_it_is_worse_than_the_calls() -> None:
    times = ServiceTimes()
    times.record(0.002)
    times.record_lag(0.7)
    times.record_lag(0.3)
    assert times.take() == 0.7
    times.record_lag(0.001)
    times.record(0.004)
    assert times.take() == 0.004


def test_each_take_starts_a_new_interval() -> None:
    times = ServiceTimes()
    times.record(2.0)
    assert times.take() == 2.0
    assert times.take() is None


def test_a_busy_interval_keeps_only_its_latest_calls() -> None:
    times = ServiceTimes()
    for _ in range(MAX_SAMPLES):
        times.record(5.0)  # a slow start...
    for _ in range(MAX_SAMPLES):
        times.record(0.001)  # ...that has passed
    assert times.take() == 0.001
