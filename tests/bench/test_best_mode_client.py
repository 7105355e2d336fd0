"""The benchmark client's side of issue 14's modes, without servers: the options, what counts as
"enough seats shown", the shared inventory reads, pretix's refusal and the new figures in the
medians."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from benchmarks import compare
from benchmarks.best_mode import (
    BEST_QUANTITIES,
    FreshReads,
    InventorySnapshot,
    largest_block,
    snapshot_of,
)
from benchmarks.cli import build_parser
from benchmarks.medians import median_summary, medians_markdown
from benchmarks.onsale import OnsaleConfig, mode_text
from benchmarks.options import onsale_config
from tests.bench.test_medians import report


def seat(row: str, number: int, status: str = "AVAILABLE", tier: str = "GENERAL") -> dict[str, Any]:
    return {
        "id": f"seat_{row}{number}",
        "row": row,
        "number": number,
        "tier": tier,
        "status": status,
    }


# -- options ----------------------------------------------------------------------------------------
def test_onsale_takes_pick_best_and_wait_into_its_config() -> None:
    args = build_parser().parse_args(
        ["onsale", "--url", "http://127.0.0.1:1/", "--pick", "best", "--wait"]
    )
    config = onsale_config(args, args.url)
    assert config.pick == "best" and config.wait is True and config.url == "http://127.0.0.1:1"
    plain = onsale_config(build_parser().parse_args(["onsale", "--url", "http://x"]), "http://x")
    assert plain.pick == "random" and plain.wait is False  # the default mode is unchanged


def test_compare_takes_the_same_modes() -> None:
    args = build_parser().parse_args(["compare", "--pick", "best", "--wait", "--runs", "3"])
    config = onsale_config(args, "http://127.0.0.1:2", "plain-pg")
    assert (config.pick, config.wait, config.label) == ("best", True, "plain-pg")


def test_an_unknown_pick_is_refused() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["onsale", "--url", "http://x", "--pick", "cheapest"])
    with pytest.raises(ValueError, match="pick must be one of"):
        OnsaleConfig(url="http://x", pick="cheapest").validate()


def test_the_mode_is_said_in_words() -> None:
    assert mode_text({"pick": "best", "wait": True, "seats_per_booking": 2}) == (
        "1-4 seats together, best available, Prefer: wait=10"
    )
    assert mode_text({"pick": "random", "seats_per_booking": 2}) == (
        "2 seats per booking (random), polled"
    )
    assert BEST_QUANTITIES == (1, 4)


def test_pretix_refuses_best_available_but_runs_the_other_modes() -> None:
    best = build_parser().parse_args(["compare", "--pick", "best", "--baselines", "pretix"])
    refusal = compare.mode_refusal("pretix", best)
    assert refusal is not None and "no best-available API" in refusal
    assert compare.mode_refusal("plain-pg", best) is None
    assert compare.mode_refusal("ticketflow", best) is None
    waiting = build_parser().parse_args(["compare", "--wait", "--baselines", "pretix"])
    assert compare.mode_refusal("pretix", waiting) is None


def test_a_skipped_target_is_named_in_the_comparison() -> None:
    text = compare.compare_markdown(
        {
            "machine": {"cpus": 2, "platform": "p", "python": "3", "loadavg_at_start": [0]},
            "payment_latency_ms": 5,
            "floor": [],
            "onsale": [],
            "locks": None,
            "failures": {},
            "skipped": {"pretix": "pretix has no best-available API"},
        }
    )
    assert "Skipped: pretix: pretix has no best-available API" in text


# -- "enough seats shown" -----------------------------------------------------------------------------
def test_largest_block_counts_adjacent_available_seats_of_one_row_and_tier() -> None:
    seats = [
        seat("A", 1),
        seat("A", 2),
        seat("A", 3, "LOCKED"),
        seat("A", 4),
        seat("B", 3),
        seat("B", 1),
        seat("B", 2),  # out of order in the list: still three together
        seat("C", 1, tier="VIP"),
        seat("C", 2),  # another tier in the same row breaks the run
    ]
    assert largest_block(seats) == 3
    assert largest_block([seat("A", 1, "RESERVED"), seat("A", 3)]) == 1
    assert largest_block([]) == 0


def test_a_snapshot_fits_a_together_request_only_with_a_block() -> None:
    body = {
        "summary": {"total": 5, "available": 3, "locked": 1, "reserved": 1},
        "seats": [seat("A", 1), seat("A", 3), seat("B", 1), seat("B", 2, "LOCKED")],
    }
    shown = snapshot_of(body)
    assert shown == InventorySnapshot(available=3, locked=1, largest_block=1)
    assert shown.fits(1, together=True) and not shown.fits(2, together=True)
    assert shown.fits(3, together=False) and not shown.fits(4, together=False)
    assert not shown.sold_out
    assert InventorySnapshot(0, 0, 0).sold_out and not InventorySnapshot(0, 2, 0).sold_out
    assert snapshot_of({"error": {}}) is None and snapshot_of(None) is None


async def test_refusals_that_arrive_together_share_one_read_started_after_them() -> None:
    started: list[int] = []
    gate = asyncio.Event()

    async def read() -> InventorySnapshot:
        started.append(len(started))
        await gate.wait()
        return InventorySnapshot(len(started), 0, 0)

    reads = FreshReads(read)
    first = asyncio.ensure_future(reads.fresh())
    await asyncio.sleep(0)  # the first read is running now
    later = [asyncio.ensure_future(reads.fresh()) for _ in range(5)]
    await asyncio.sleep(0)
    assert len(started) == 1  # the later callers queue behind it, for one read of their own
    gate.set()
    results = await asyncio.gather(first, *later)
    assert results[0].available == 1
    assert {r.available for r in results[1:]} == {2}  # one read, started after they asked
    assert reads.reads == 2


# -- the new figures in the medians ---------------------------------------------------------------------
def test_medians_carry_issue_14s_figures_and_their_ratios() -> None:
    reports = [report(60, 240), report(70, 200), report(50, 250)]
    for r in reports:
        for target in r["onsale"]:
            target["results"]["http_requests_per_confirmed"] = (
                1.2 if target["label"] == "ticketflow" else 1.0
            )
            target["results"]["unavailable_while_enough"] = 0
    summary = median_summary(reports)
    tf = summary["onsale"]["ticketflow"]
    assert tf["HTTP requests per confirmed booking"]["median"] == 1.2
    assert tf["SEATS_UNAVAILABLE while enough shown (best)"]["median"] == 0
    ratios = summary["ratios"]["ticketflow / plain-pg"]
    assert ratios["confirmed end-to-end p95 (ms)"]["median"] == pytest.approx(1.0)
    assert ratios["202/200 answer p99 (ms)"]["median"] == pytest.approx(1.0)
    assert ratios["HTTP requests per confirmed booking"]["median"] == pytest.approx(1.2)
    text = medians_markdown(summary)
    assert "| 202/200 answer p99 (ms) | 3.0 | 3.0 | 1.00x |" in text
    assert "| SEATS_UNAVAILABLE while enough shown (best) | 0.0 | 0.0 |  |" in text
