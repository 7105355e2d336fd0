"""The buyers waiting in line, in a process of their own (`bench onsale --queue`).

Why a process: 20 000 buyers in line are 20 000 coroutines, their timers and their looks. In the
process that times the admitted buyers' bookings, every look and every collection of their heap
stretches the latencies being measured by the client's own event loop, which is not the shop's
p99. Here they run apart, at the lowest CPU priority (SCHED_IDLE): they stand for clients on
other machines, whose CPU the shop never shares. What the shop does for their looks (the place
readers, Redis, the admitter) is what the benchmark measures, and that stays on the server.

The parent (`benchmarks.queue`) talks to this process in JSON lines:
- stdin, first line: `{"url", "http_client", "timeout", "pool", "waiters": [[index, bearer token,
  ticket, epoch of the first look], ...]}`; a later line `told` ends the looks (the waiters' time
  is up).
- stdout: `{"admitted": index, "token": admission token}` as each buyer is admitted (the parent
  books for it), `{"closed": index, "at": epoch}` as one hears the room closed, and last
  `{"stats": {...}}` (`LineStats`).

Run: `python -m benchmarks.waiters` (the parent starts it).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from benchmarks.httpclient import HttpClient, TransportError, open_client

ERROR_BACKOFF_SECONDS = 1.0
# The longest line the parent reads: the figures, with the time of every look.
MESSAGE_LIMIT = 1 << 27


async def start_line(config: dict[str, Any]) -> asyncio.subprocess.Process:
    """Starts `python -m benchmarks.waiters` and hands it `config` (the first stdin line above);
    its messages come on the process's stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.waiters",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=MESSAGE_LIMIT,
    )
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(config) + "\n").encode())
    await proc.stdin.drain()
    return proc


@dataclass
class LineStats:
    polls: int = 0
    poll_errors: Counter[str] = field(default_factory=Counter)
    poll_times: list[float] = field(default_factory=list)  # epoch seconds of every place read
    hinted: int = 0  # place answers that said when to look next


def next_wait(body: dict[str, Any], rng: random.Random) -> float:
    """When to look next: the server's hint; without one, a third of the estimated wait."""
    hint = body.get("retryAfterSeconds")
    if hint is not None:
        return float(hint)
    wait = float(body.get("estimatedWaitSeconds") or 2.0)
    return min(10.0, max(0.5, wait / 3)) * rng.uniform(0.7, 1.3)


class Line:
    """Every waiter looks when told until ADMITTED, CLOSED or `told`; what happens is written to
    `out` as it happens."""

    def __init__(self, http: HttpClient, out: TextIO) -> None:
        self.http = http
        self.out = out
        self.stats = LineStats()
        self.told = asyncio.Event()

    def emit(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    async def wait_in_line(self, index: int, bearer: str, ticket: str, first_look: float) -> None:
        rng = random.Random(index)
        await self._sleep_until_told(first_look - time.time())
        headers = {"Authorization": f"Bearer {bearer}"}
        while not self.told.is_set():
            self.stats.polls += 1
            self.stats.poll_times.append(time.time())
            try:
                status, body, _ = await self.http.request(
                    "GET", f"/api/queue/{ticket}", headers=headers
                )
            except TransportError:
                status, body = 0, None
            if status != 200 or not isinstance(body, dict):
                self.stats.poll_errors[str(status)] += 1
                await self._sleep_until_told(ERROR_BACKOFF_SECONDS)
                continue
            if body.get("retryAfterSeconds") is not None:
                self.stats.hinted += 1
            if body["status"] == "ADMITTED":
                self.emit({"admitted": index, "token": body["admissionToken"]})
                return
            if body["status"] == "CLOSED":
                self.emit({"closed": index, "at": time.time()})
                return
            await self._sleep_until_told(next_wait(body, rng))

    async def _sleep_until_told(self, seconds: float) -> None:
        """One timer per waiter: 20 000 sleeping buyers cost nothing between their looks."""
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self.told.wait(), timeout=seconds)
        except TimeoutError:
            pass


def _listen_for_told(loop: asyncio.AbstractEventLoop, told: asyncio.Event) -> None:
    """The parent's `told` line, or its end of the pipe (the parent went away): either ends it."""
    sys.stdin.readline()
    loop.call_soon_threadsafe(told.set)


async def run(config: dict[str, Any]) -> None:
    http = open_client(
        config["http_client"], config["url"], pool=config["pool"], timeout=config["timeout"]
    )
    line = Line(http, sys.stdout)
    threading.Thread(
        target=_listen_for_told, args=(asyncio.get_running_loop(), line.told), daemon=True
    ).start()
    try:
        await asyncio.gather(*(line.wait_in_line(*w) for w in config["waiters"]))
    finally:
        await http.aclose()
    stats = line.stats
    line.emit(
        {
            "stats": {
                "polls": stats.polls,
                "poll_errors": dict(stats.poll_errors),
                "poll_times": stats.poll_times,
                "hinted": stats.hinted,
            }
        }
    )


def run_at_the_lowest_priority() -> None:
    """SCHED_IDLE (CPU that nothing else wants), else nice 19. Called before any thread starts,
    so that every thread of this process inherits it."""
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)


def main() -> None:
    run_at_the_lowest_priority()
    config = json.loads(sys.stdin.readline())
    asyncio.run(run(config))


if __name__ == "__main__":
    main()
