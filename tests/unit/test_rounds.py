"""The notifier's delivery loop: woken rounds, never closer together than the floor interval."""

from __future__ import annotations

import asyncio
import time

from actors.rounds import paced_rounds


async def _run(
    wakes: list[float], *, min_interval: float, poll_seconds: float = 10.0, fail: bool = False
) -> list[float]:
    """Wakes the loop at the given offsets (s) and returns when its rounds started (offsets)."""
    started: list[float] = []
    t0 = time.monotonic()

    async def run_round() -> None:
        started.append(time.monotonic() - t0)
        if fail:
            raise RuntimeError("database away")

    wake = asyncio.Event()
    loop = asyncio.create_task(
        paced_rounds(run_round, wake, poll_seconds=poll_seconds, min_interval=min_interval)
    )
    try:
        for at in wakes:
            await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
            wake.set()
        await asyncio.sleep(min_interval + 0.1)
    finally:
        loop.cancel()
    return started


async def test_many_wake_ups_fold_into_rounds_at_least_the_interval_apart() -> None:
    started = await _run([i * 0.01 for i in range(60)], min_interval=0.2)

    # 60 wake-ups over 0.6 s: a round per 0.2 s at most (plus the last wake-up's), not 60.
    assert 3 <= len(started) <= 5
    gaps = [b - a for a, b in zip(started, started[1:], strict=False)]
    assert all(gap >= 0.19 for gap in gaps), gaps


async def test_a_wake_up_after_a_quiet_spell_starts_a_round_at_once() -> None:
    started = await _run([0.0, 0.5], min_interval=0.2)

    assert len(started) == 2
    assert started[0] < 0.05 and 0.5 <= started[1] < 0.55


async def test_without_wake_ups_rounds_come_every_poll_and_a_failing_round_does_not_stop_them() -> (
    None
):
    started = await _run([], min_interval=0.01, poll_seconds=0.05, fail=True)

    assert len(started) >= 2
