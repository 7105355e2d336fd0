"""Medians over several `bench compare` runs (`--runs N`): the figures docs/performance.md reports.

One run on two cores varies by 10-15 %; the median of three or more, with its range, is what a
reader can compare. Ratios are medians of the per-run ratios (each run's targets shared the same
machine state), not ratios of medians.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.common import fmt, fmt_ratio, markdown_table, ratio
from benchmarks.locks import ENGINES

# (row, path into an on-sale report's "results")
ONSALE_FIGURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("confirmed bookings/s", ("confirmed_per_s",)),
    ("time to sell out (s)", ("time_to_sell_out_s",)),
    ("202/200 answer p50 (ms)", ("latency_202_ms", "p50")),
    ("202/200 answer p95 (ms)", ("latency_202_ms", "p95")),
    ("202/200 answer p99 (ms)", ("latency_202_ms", "p99")),
    ("confirmed end-to-end p50 (ms)", ("latency_e2e_confirmed_ms", "p50")),
    ("confirmed end-to-end p95 (ms)", ("latency_e2e_confirmed_ms", "p95")),
    ("confirmed end-to-end p99 (ms)", ("latency_e2e_confirmed_ms", "p99")),
    ("first wave: 202/200 answer p95 (ms)", ("first_wave", "latency_202_ms", "p95")),
    (
        "first wave: confirmed end-to-end p95 (ms)",
        ("first_wave", "latency_e2e_confirmed_ms", "p95"),
    ),
    ("HTTP requests/s", ("http_requests_per_s",)),
    ("HTTP requests per confirmed booking", ("http_requests_per_confirmed",)),
    ("SEATS_UNAVAILABLE while enough shown (best)", ("unavailable_while_enough",)),
)
# The issue 14 targets compare these between targets (a count that should be 0 has no ratio).
RATIO_FIGURES = (
    "confirmed bookings/s",
    "time to sell out (s)",
    "confirmed end-to-end p95 (ms)",
    "202/200 answer p99 (ms)",
    "first wave: 202/200 answer p95 (ms)",
    "first wave: confirmed end-to-end p95 (ms)",
    "HTTP requests per confirmed booking",
)


def spread(values: list[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values present (a target that never sold out has no time)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }


def _dig(results: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = results
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _ratio_in(
    run: dict[str, dict[str, Any]], first: str, other: str, path: tuple[str, ...]
) -> float | None:
    a, b = _dig(run[first]["results"], path), _dig(run[other]["results"], path)
    return ratio(float(a), float(b)) if a is not None and b is not None else None


def median_summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians (and ranges) of every figure across `compare` reports."""
    labels: list[str] = []
    for report in reports:
        labels += [r["label"] for r in report["onsale"] if r["label"] not in labels]
    by_run = [{r["label"]: r for r in report["onsale"]} for report in reports]
    onsale = {
        label: {
            name: spread(
                [_dig(run[label]["results"], path) if label in run else None for run in by_run]
            )
            for name, path in ONSALE_FIGURES
        }
        for label in labels
    }
    ratios: dict[str, dict[str, Any]] = {}
    if labels:
        first = labels[0]
        paths = dict(ONSALE_FIGURES)
        for other in labels[1:]:
            both = [run for run in by_run if first in run and other in run]
            ratios[f"{first} / {other}"] = {
                name: spread([_ratio_in(run, first, other, paths[name]) for run in both])
                for name in RATIO_FIGURES
            }
    floor_labels = [f["label"] for f in reports[0]["floor"]] if reports else []
    floor = {
        label: spread(
            [
                next((f["requests_per_s"] for f in r["floor"] if f["label"] == label), None)
                for r in reports
            ]
        )
        for label in floor_labels
    }
    locks: dict[str, dict[str, Any]] = {}
    lock_ratios: dict[str, dict[str, Any]] = {}
    lock_reports = [r["locks"] for r in reports if r.get("locks")]
    if lock_reports:
        rates = [
            {(x["engine"], x["seats"]): x["attempts_per_s"] for x in lr["results"]}
            for lr in lock_reports
        ]
        levels = sorted({seats for rate in rates for _, seats in rate}, reverse=True)
        engines = [e for e in ENGINES if any((e, n) in rate for rate in rates for n in levels)]
        for engine in engines:
            locks[engine] = {
                str(n): spread([rate.get((engine, n)) for rate in rates]) for n in levels
            }
        if "ray-batched" in engines:
            for base in engines:
                if base == "ray-batched":
                    continue
                lock_ratios[f"ray-batched / {base}"] = {
                    str(n): spread(
                        [
                            ratio(rate[("ray-batched", n)], rate[(base, n)])
                            if ("ray-batched", n) in rate and (base, n) in rate
                            else None
                            for rate in rates
                        ]
                    )
                    for n in levels
                }
    return {
        "runs": len(reports),
        "checks_passed_every_run": all(
            r["checks"]["passed"] for report in reports for r in report["onsale"]
        ),
        "failures": [
            f"run {i + 1}: {k}: {v}"
            for i, report in enumerate(reports)
            for k, v in report["failures"].items()
        ],
        "onsale": onsale,
        "ratios": ratios,
        "floor": floor,
        "locks": locks,
        "lock_ratios": lock_ratios,
    }


def _cell(s: dict[str, float] | None, *, as_ratio: bool = False) -> str:
    if s is None:
        return "-"

    def show(value: float) -> str:
        return fmt_ratio(value) if as_ratio else fmt(value)

    if s["min"] == s["max"]:
        return show(s["median"])
    return f"{show(s['median'])} ({show(s['min'])}-{show(s['max'])})"


def medians_markdown(summary: dict[str, Any]) -> str:
    n = summary["runs"]
    parts = [
        f"## Median of {n} runs\n",
        "Each cell: median (min-max) over the runs; ratios are medians of each run's ratio. Checks "
        + (
            "passed in every run."
            if summary["checks_passed_every_run"]
            else "**FAILED in at least one run.**"
        )
        + "\n",
    ]
    onsale = summary["onsale"]
    if onsale:
        labels = list(onsale)
        ratio_keys = list(summary["ratios"])
        rows = []
        for name, _path in ONSALE_FIGURES:
            row = [name, *(_cell(onsale[label][name]) for label in labels)]
            row += [
                _cell(summary["ratios"][k][name], as_ratio=True) if name in RATIO_FIGURES else ""
                for k in ratio_keys
            ]
            rows.append(row)
        if summary["floor"]:
            rows.append(
                [
                    "HTTP floor, GET /health (requests/s)",
                    *(_cell(summary["floor"].get(label)) for label in labels),
                    *("" for _ in ratio_keys),
                ]
            )
        parts.append(
            "### On-sale\n\n" + markdown_table(["figure", *labels, *ratio_keys], rows) + "\n"
        )
    if summary["locks"]:
        levels = list(next(iter(summary["locks"].values())))
        header = ["engine", *(f"{int(n):,} seats".replace(",", " ") for n in levels)]
        rows = [
            [engine, *(_cell(by_level[n]) for n in levels)]
            for engine, by_level in summary["locks"].items()
        ]
        rows += [
            [key, *(_cell(by_level[n], as_ratio=True) for n in levels)]
            for key, by_level in summary["lock_ratios"].items()
        ]
        parts.append("### Lock engines (lock attempts/s)\n\n" + markdown_table(header, rows) + "\n")
    if summary["failures"]:
        parts.append("Failures: " + "; ".join(summary["failures"]))
    return "\n".join(parts)
