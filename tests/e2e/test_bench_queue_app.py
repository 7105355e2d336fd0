"""A seconds-long run of `bench onsale --queue` against the real app, so that benchmark cannot rot."""

from __future__ import annotations

import pytest

from benchmarks.queue import QueueConfig, run_queue_onsale
from benchmarks.queue_report import passed, queue_markdown
from tests.bench_app import app_onsale_config


@pytest.mark.slow
async def test_onsale_benchmark_behind_the_waiting_room(server: str) -> None:
    config = app_onsale_config(
        server,
        seats=12,
        concurrency=8,
        seats_per_booking=2,
        retries=3,
        duration=30,
        grace=15,
        setup_concurrency=4,
        seed=5,
    )
    queue = QueueConfig(buyers=10, admit_per_minute=1200, baseline_concurrency=2, tell_seconds=40)

    report = await run_queue_onsale(config, queue)

    q = report["queue"]
    assert q["buyers"] == 10 and q["admitted"] >= 6, q
    assert q["server_errors"] == 0 and report["results"]["errors"] == {}, report["results"]
    assert report["results"]["confirmed"] >= 6
    # 1200 a minute is 20 a second: ten buyers are in within a couple of seconds of the opening.
    assert q["time_to_admit_all_s"] is not None and q["time_to_admit_all_s"] <= 5
    # Every buyer looked when the server said to, and those left over heard of the sell-out.
    assert q["answers_with_a_hint"] >= q["buyers"], q
    assert q["still_waiting_at_the_end"] == 0, q
    assert report["checks"]["oversold_seats"] == 0 and passed(report), report["checks"]
    # The references: the same arrivals replayed, the same rate evenly spaced, and a closed loop
    # of two buyers, all without the room.
    assert report["baseline"]["results"]["confirmed"] > 0
    assert report["baseline"]["results"]["attempts"] <= q["admitted"]
    assert report["baseline"]["params"]["buyers"] == report["results"]["attempts"]
    assert report["baseline_even"]["results"]["confirmed"] > 0
    assert report["baseline_even"]["results"]["attempts"] <= q["admitted"]
    assert report["baseline_closed_loop"]["results"]["confirmed"] > 0
    assert "p99 ratio" in queue_markdown(report)
    # The load generator's own stalls are measured beside the latencies it times.
    health = report["results"]["load_generator"]
    assert health["loop_lag_ms"]["n"] > 0 and health["gc_pause_total_ms"] >= 0
    assert "load generator's loop lag" in queue_markdown(report)
