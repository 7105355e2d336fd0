"""A seconds-long run of the on-sale benchmark against the real app, so the benchmark cannot rot."""

from __future__ import annotations

import pytest

from benchmarks.onsale import report_markdown, run_onsale
from tests.bench_app import app_onsale_config


@pytest.mark.slow
async def test_onsale_benchmark_against_ticketflow(server: str) -> None:
    config = app_onsale_config(
        server,
        seats=20,
        buyers=3,
        attempts=30,
        concurrency=8,
        retries=3,
        duration=45,
        grace=15,
        setup_concurrency=3,
        decline_fraction=0.2,
        seed=3,
    )
    report = await run_onsale(config)
    results, checks = report["results"], report["checks"]
    assert results["errors"] == {}, results["errors"]
    assert results["confirmed"] > 0 and results["sold_out"]
    assert checks["oversold_seats"] == 0 and checks["stuck_pending"] == 0
    assert checks["charges_without_booking"] == 0 and checks["reserved_mismatch"] == 0
    assert checks["passed"] is True
    # The first wave: the first `concurrency` POSTs, measured apart (every one answered here).
    first = results["first_wave"]
    assert first["size"] == 8 and first["latency_202_ms"]["n"] == 8
    assert 1 <= first["latency_e2e_confirmed_ms"]["n"] <= 8
    assert first["latency_e2e_confirmed_ms"]["p95"] > 0
    assert "| first wave: confirmed end-to-end p95 (ms) |" in report_markdown(report)
