"""A work loop that runs rounds when woken, but never more often than a floor interval."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

logger = logging.getLogger(__name__)


async def paced_rounds(
    run_round: Callable[[], Awaitable[None]],
    wake: asyncio.Event,
    *,
    poll_seconds: float,
    min_interval: float,
    label: str = "round",
    clock: Callable[[], float] = time.monotonic,
) -> NoReturn:
    """Runs `run_round` whenever `wake` is set (or every `poll_seconds` without it), starting
    rounds at least `min_interval` apart.

    A round costs a fixed amount whatever it carries (its statements, a thread hop, the wake-up
    call that asked for it), so wake-ups arriving meanwhile are folded into the next round instead
    of each starting one; a wake-up after a quiet spell starts a round at once. A failing round is
    logged and the loop goes on.
    """
    last_start = float("-inf")
    while True:
        try:
            await asyncio.wait_for(wake.wait(), timeout=poll_seconds)
        except TimeoutError:
            pass
        delay = last_start + min_interval - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        wake.clear()
        last_start = clock()
        try:
            await run_round()
        except Exception as exc:  # noqa: BLE001 - the database may be down; try again later
            logger.warning("%s failed (%s)", label, type(exc).__name__)
