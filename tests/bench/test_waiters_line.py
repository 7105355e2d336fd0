"""`benchmarks.waiters`: the bench's buyers in line, in a process of their own, against a place
endpoint shaped like ours (`GET /api/queue/{ticket}`), over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web

from benchmarks.waiters import start_line

# ticket -> the answers it gives, in turn (the last one repeats).
SCRIPT: dict[str, list[dict[str, Any] | None]] = {
    "t-admitted": [
        {"status": "WAITING", "retryAfterSeconds": 1},
        {"status": "QUEUED", "retryAfterSeconds": 1},
        {"status": "ADMITTED", "admissionToken": "adm-1", "retryAfterSeconds": None},
    ],
    "t-closed": [{"status": "QUEUED", "retryAfterSeconds": 1}, {"status": "CLOSED"}],
    "t-stays": [{"status": "QUEUED", "retryAfterSeconds": 2}],
    "t-flaky": [None, {"status": "QUEUED", "retryAfterSeconds": 2}],  # None: a 503 first
}


@pytest_asyncio.fixture
async def place_server() -> AsyncIterator[tuple[str, Counter[str]]]:
    reads: Counter[str] = Counter()

    async def place(request: web.Request) -> web.Response:
        ticket = request.match_info["ticket"]
        assert request.headers["Authorization"] == f"Bearer bearer-{ticket}"
        answers = SCRIPT[ticket]
        answer = answers[min(reads[ticket], len(answers) - 1)]
        reads[ticket] += 1
        if answer is None:
            return web.json_response({"error": {"code": "SERVICE_UNAVAILABLE"}}, status=503)
        return web.json_response({"ticket": ticket, **answer})

    app = web.Application()
    app.router.add_get("/api/queue/{ticket}", place)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", reads
    finally:
        await runner.cleanup()


async def test_the_line_reports_admissions_and_closings_as_they_come_and_its_figures_when_told(
    place_server: tuple[str, Counter[str]],
) -> None:
    url, reads = place_server
    now = time.time()
    config = {
        "url": url,
        "http_client": "aiohttp",
        "timeout": 5,
        "pool": 4,
        "waiters": [[i, f"bearer-{t}", t, now + 0.2] for i, t in enumerate(SCRIPT)],
    }
    proc = await start_line(config)
    assert proc.stdin is not None

    async def next_message() -> dict[str, Any]:
        raw = await asyncio.wait_for(proc.stdout.readline(), timeout=20)  # type: ignore[union-attr]
        assert raw, "the waiters' process ended early"
        message: dict[str, Any] = json.loads(raw)
        return message

    # Each looked when told: admitted at its third look (two 1 s hints), closed at its second.
    first, second = await next_message(), await next_message()
    assert {"closed", "at"} == set(first) and first["closed"] == 1
    assert second == {"admitted": 0, "token": "adm-1"}
    assert reads["t-admitted"] == 3 and reads["t-closed"] == 2
    # The other two are still in line until told; the 503 was retried.
    assert reads["t-flaky"] >= 2
    # It runs at the lowest priority: it stands for buyers on other machines.
    assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
    proc.stdin.write(b"told\n")
    stats = (await next_message())["stats"]
    assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    assert isinstance(stats, dict)
    assert stats["polls"] == sum(reads.values()) == len(stats["poll_times"])
    assert stats["poll_errors"] == {"503": 1}
    # Every 200 but the admitted and the closed answer carried a hint.
    assert stats["hinted"] == stats["polls"] - 2 - 1
