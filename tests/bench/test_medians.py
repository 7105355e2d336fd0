"""`bench compare --runs N`: the medians and ranges docs/performance.md reports, from N reports."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.cli import build_parser
from benchmarks.medians import median_summary, medians_markdown


def onsale(
    label: str, confirmed_per_s: float, sell_out: float | None, *, passed: bool = True
) -> dict[str, Any]:
    return {
        "label": label,
        "checks": {"passed": passed},
        "results": {
            "confirmed_per_s": confirmed_per_s,
            "time_to_sell_out_s": sell_out,
            "http_requests_per_s": 10 * confirmed_per_s,
            "latency_202_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0},
            "latency_e2e_confirmed_ms": {"p50": 4.0, "p95": 5.0, "p99": 6.0},
        },
    }


def report(
    tf: float,
    pg: float,
    *,
    tf_sell_out: float | None = 10.0,
    lock: float = 20_000.0,
    redis: float = 10_000.0,
    passed: bool = True,
    failures: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "onsale": [
            onsale("ticketflow", tf, tf_sell_out, passed=passed),
            onsale("plain-pg", pg, 2.0),
        ],
        "floor": [
            {"label": "ticketflow", "requests_per_s": 2000.0},
            {"label": "plain-pg", "requests_per_s": 9000.0},
        ],
        "locks": {
            "results": [
                {"engine": "ray-batched", "seats": 50, "attempts_per_s": lock},
                {"engine": "redis", "seats": 50, "attempts_per_s": redis},
            ]
        },
        "failures": failures or {},
    }


def test_medians_ranges_and_ratios_are_per_run() -> None:
    summary = median_summary(
        [report(60, 240), report(70, 200, lock=30_000), report(50, 250, lock=14_000, redis=7_000)]
    )
    assert summary["runs"] == 3 and summary["checks_passed_every_run"]
    assert summary["onsale"]["ticketflow"]["confirmed bookings/s"] == {
        "median": 60.0,
        "min": 50.0,
        "max": 70.0,
        "n": 3,
    }
    # Each run's own ratio (0.25, 0.35, 0.2), then their median: not 60 / 240.
    ratios = summary["ratios"]["ticketflow / plain-pg"]["confirmed bookings/s"]
    assert (
        ratios["median"] == pytest.approx(0.25)
        and ratios["min"] == pytest.approx(0.2)
        and ratios["max"] == pytest.approx(0.35)
    )
    assert summary["floor"]["plain-pg"]["median"] == 9000.0
    assert summary["locks"]["ray-batched"]["50"]["median"] == 20_000.0
    assert summary["lock_ratios"]["ray-batched / redis"]["50"]["median"] == pytest.approx(2.0)
    assert summary["lock_ratios"]["ray-batched / redis"]["50"]["max"] == pytest.approx(3.0)


def test_a_target_that_never_sold_out_is_left_out_of_that_median_not_counted_as_zero() -> None:
    summary = median_summary([report(60, 240, tf_sell_out=None), report(70, 200, tf_sell_out=12.0)])
    assert summary["onsale"]["ticketflow"]["time to sell out (s)"] == {
        "median": 12.0,
        "min": 12.0,
        "max": 12.0,
        "n": 1,
    }


def test_one_failed_check_or_failure_in_any_run_shows() -> None:
    summary = median_summary(
        [report(60, 240), report(70, 200, passed=False, failures={"plain-pg": "did not start"})]
    )
    assert not summary["checks_passed_every_run"]
    assert summary["failures"] == ["run 2: plain-pg: did not start"]
    text = medians_markdown(summary)
    assert "FAILED in at least one run" in text and "run 2: plain-pg: did not start" in text


def test_markdown_shows_median_and_range() -> None:
    text = medians_markdown(median_summary([report(60, 240), report(70, 200), report(50, 250)]))
    assert "## Median of 3 runs" in text
    assert (
        "| confirmed bookings/s | 60.0 (50.0-70.0) | 240.0 (200.0-250.0) | 0.25x (0.20x-0.35x) |"
        in text
    )
    assert "| ray-batched / redis | 2.00x |" in text


def test_runs_is_a_compare_option_and_must_be_positive() -> None:
    parser = build_parser()
    assert parser.parse_args(["compare", "--runs", "3"]).runs == 3
    assert parser.parse_args(["compare"]).runs == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "--runs", "0"])
