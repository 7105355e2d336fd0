"""`bench onsale --queue`'s report: the waiting room's figures beside the references' p99, and
whether the run passed (benchmarks/queue.py runs it)."""

from __future__ import annotations

from typing import Any

from benchmarks.common import fmt, markdown_table
from benchmarks.onsale import report_markdown


def server_errors(report: dict[str, Any]) -> int:
    """5xx answers on the booking path and on place reads."""
    r = report["results"]
    booking = sum(n for k, n in r["errors"].items() if k[:1] == "5")
    reads = sum(
        n for k, n in r.get("queue", {}).get("place_read_errors", {}).items() if k[:1] == "5"
    )
    return int(booking + reads)


def _p99(report: dict[str, Any], key: str) -> float | None:
    value = report["results"][key]["p99"]
    return float(value) if value is not None else None


def _pair(d: dict[str, Any] | None) -> str | None:
    if not d or d.get("p50") is None:
        return None
    return f"{d['p50']} / {d['max']}"


def queue_markdown(report: dict[str, Any]) -> str:
    q = report["queue"]
    rows: list[tuple[str, Any]] = [
        ("buyers in the room", q["buyers"]),
        ("admission rate (per minute)", q["admit_per_minute"]),
        ("admitted", q["admitted"]),
        ("told CLOSED (sold out)", q["closed_out"]),
        ("time to admit them (s, from the opening)", q["time_to_admit_all_s"]),
        ("still waiting when the run ended", q.get("still_waiting_at_the_end")),
        ("heard of the sell-out within (s): p50 / max", _pair(q.get("closed_heard_within_s"))),
        ("place reads", q["place_reads"]),
        ("place reads before the opening (not timed)", q.get("place_reads_before_opening")),
        ("place reads a second while the sale ran", q.get("place_reads_per_s_during_sale")),
        ("place reads per admitted buyer", q.get("place_reads_per_admitted")),
        ("5xx answers (must be 0)", q["server_errors"]),
        ("oversold seats (must be 0)", report["checks"].get("oversold_seats")),
    ]
    references = (
        (report.get("baseline"), "the same arrivals without the room", " (goal <= 1.5)"),
        (report.get("baseline_even"), "the same rate, evenly spaced, without the room", ""),
        (report.get("baseline_closed_loop"), "a closed loop of few buyers without the room", ""),
    )
    rows.append(
        (
            "bookings a 100 ms at most / variance over mean (1: as at random)",
            _bunching(report),
        )
    )
    for key, name in (("latency_202_ms", "202"), ("latency_e2e_confirmed_ms", "confirmed e2e")):
        ours = _p99(report, key)
        rows.append((f"{name} p99 (ms), admitted buyers", ours))
        for ref_report, what, goal in references:
            if ref_report is None:
                continue
            ref = _p99(ref_report, key)
            rows.append((f"{name} p99 (ms), {what}", ref))
            ratio = round(ours / ref, 2) if ours is not None and ref else None
            rows.append((f"{name} p99 ratio to it{goal}", ratio))
    text = (
        f"### On-sale behind the waiting room: {report['label']}\n\n"
        + markdown_table(["figure", "value"], [(n, fmt(v)) for n, v in rows])
        + "\n\n"
        + report_markdown(report)
    )
    for ref_report, _what, _goal in references:
        if ref_report is not None:
            text += "\n" + report_markdown(ref_report)
    return text


def _bunching(report: dict[str, Any]) -> str | None:
    b = report["results"].get("posts_per_100ms")
    if not b or b["max"] is None:
        return None
    return f"{b['max']} / {b['dispersion']}"


def passed(report: dict[str, Any]) -> bool:
    refs = [report.get(k) for k in ("baseline", "baseline_even", "baseline_closed_loop")]
    return (
        bool(report["checks"]["passed"])
        and report["queue"]["server_errors"] == 0
        and all(ref is None or bool(ref["checks"]["passed"]) for ref in refs)
    )
