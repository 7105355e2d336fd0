"""The on-sale benchmark's first-wave figures (issue 14 item 3), without servers: which POSTs are
the first wave, their percentiles apart from the whole phase's, and the rows and ratios they get
in the single report, the side-by-side comparison and the medians."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import compare
from benchmarks.first_wave import FirstWave
from benchmarks.medians import RATIO_FIGURES, median_summary, medians_markdown
from benchmarks.onsale import report_markdown, summary_rows
from tests.bench.test_medians import report

FIRST_202 = "first wave: 202/200 answer p95 (ms)"
FIRST_E2E = "first wave: confirmed end-to-end p95 (ms)"


def test_the_first_wave_is_the_first_concurrency_posts_sent() -> None:
    wave = FirstWave(size=3)
    assert [wave.admit() for _ in range(5)] == [True, True, True, False, False]
    assert wave.sent == 5


def test_its_percentiles_are_of_the_wave_alone() -> None:
    wave = FirstWave(size=20)
    wave.lat_202 += [1.0 + i / 100 for i in range(20)]  # a cold actor: about a second each
    wave.lat_e2e_confirmed += [1.2, 1.5]
    summary = wave.summary()
    assert summary["size"] == 20
    assert summary["latency_202_ms"]["n"] == 20 and summary["latency_e2e_confirmed_ms"]["n"] == 2
    assert 1180 <= summary["latency_202_ms"]["p95"] <= 1190
    assert 1480 <= summary["latency_e2e_confirmed_ms"]["p95"] <= 1500
    empty = FirstWave(size=4).summary()  # nothing answered (every POST an error)
    assert empty["latency_202_ms"]["p95"] is None and empty["latency_202_ms"]["n"] == 0


def onsale_report(label: str, whole_p95: float, first: dict[str, Any] | None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "duration_s": 3.0,
        "attempts": 40,
        "bookings_posted": 40,
        "retries": 0,
        "confirmed": 20,
        "confirmed_seats": 40,
        "failed": {},
        "confirmed_per_s": 6.7,
        "sold_out": True,
        "time_to_sell_out_s": 3.0,
        "http_requests_per_s": 20.0,
        "http_requests_per_confirmed": 3.0,
        "answered_final": 0,
        "latency_202_ms": {"p50": 10.0, "p95": whole_p95, "p99": 50.0},
        "latency_e2e_confirmed_ms": {"p50": 30.0, "p95": 2 * whole_p95, "p99": 90.0},
        "errors": {},
        "client_cpu_util": 0.1,
    }
    if first is not None:
        results["first_wave"] = first
    return {
        "label": label,
        "params": {
            "seats": 40,
            "buyers": 4,
            "attempts": 40,
            "concurrency": 8,
            "pick": "random",
            "seats_per_booking": 2,
            "retries": 3,
            "wait": False,
        },
        "results": results,
        "checks": {"passed": True},
    }


def first_wave(p95_202: float, p95_e2e: float) -> dict[str, Any]:
    return {
        "size": 8,
        "latency_202_ms": {"n": 8, "p95": p95_202},
        "latency_e2e_confirmed_ms": {"n": 5, "p95": p95_e2e},
    }


def test_the_report_shows_the_first_wave_next_to_the_whole_phase() -> None:
    rows = summary_rows(onsale_report("ticketflow", 40.0, first_wave(900.0, 1100.0)))
    names = [name for name, _ in rows]
    # Right after the whole phase's latencies, so the two read together.
    at = names.index("confirmed end-to-end p99 (ms)")
    assert names[at + 1 : at + 3] == [FIRST_202, FIRST_E2E]
    assert dict(rows)[FIRST_202] == 900.0 and dict(rows)[FIRST_E2E] == 1100.0
    text = report_markdown(onsale_report("ticketflow", 40.0, first_wave(900.0, 1100.0)))
    assert "first wave: the first 8 POSTs" in text
    assert f"| {FIRST_E2E} | 1 100 |" in text


def test_a_report_saved_before_the_first_wave_still_renders() -> None:
    rows = dict(summary_rows(onsale_report("ticketflow", 40.0, None)))
    assert rows[FIRST_202] is None and rows[FIRST_E2E] is None


def test_the_comparison_gives_the_first_wave_a_ratio() -> None:
    text = compare.compare_markdown(
        {
            "machine": {"cpus": 2, "platform": "p", "python": "3", "loadavg_at_start": [0]},
            "payment_latency_ms": 5,
            "floor": [],
            "onsale": [
                onsale_report("ticketflow", 40.0, first_wave(60.0, 200.0)),
                onsale_report("plain-pg", 20.0, first_wave(30.0, 100.0)),
            ],
            "locks": None,
            "failures": {},
        }
    )
    assert "first wave: the first 8 POSTs" in text
    assert f"| {FIRST_E2E} | 200.0 | 100.0 | 2.00x |" in text


def test_medians_carry_the_first_wave_and_its_ratios() -> None:
    reports = [report(60, 240), report(70, 200), report(50, 250)]
    for i, r in enumerate(reports):
        for target in r["onsale"]:
            cold = target["label"] == "ticketflow"
            target["results"]["first_wave"] = first_wave(
                (300.0 if cold else 100.0) + i, 1000.0 if cold else 250.0
            )
    summary = median_summary(reports)
    tf = summary["onsale"]["ticketflow"]
    assert tf[FIRST_202] == {"median": 301.0, "min": 300.0, "max": 302.0, "n": 3}
    assert {FIRST_202, FIRST_E2E} <= set(RATIO_FIGURES)
    ratios = summary["ratios"]["ticketflow / plain-pg"]
    assert ratios[FIRST_E2E]["median"] == pytest.approx(4.0)
    assert f"| {FIRST_E2E} | 1 000 | 250.0 | 4.00x |" in medians_markdown(summary)
    # Older reports without the figure: a dash, not a crash.
    assert "| first wave: 202/200 answer p95 (ms) | - | - | - |" in medians_markdown(
        median_summary([report(60, 240)])
    )
