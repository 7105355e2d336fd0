"""The waiting room's place reads say when to look next, and a stream whose client has gone ends
on the server (issue 15), over HTTP against the running Serve app, real Ray and Redis."""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from config.settings import get_settings
from domain.next_look import MIN_HORIZON_SECONDS
from tests.helpers import auth, create_room_event, iso, new_user
from tests.waiting import wait_until


async def _room(http: httpx.AsyncClient, admin: str, *, rate: int, opens_in: float) -> str:
    return str((await create_room_event(http, admin, rate=rate, opens_in=opens_in))["id"])


async def _join(http: httpx.AsyncClient, event_id: str) -> tuple[str, httpx.Response]:
    token, _ = await new_user(http)
    r = await http.post(f"/api/events/{event_id}/queue", headers=auth(token))
    assert r.status_code == 201, r.text
    return token, r


def _hint(r: httpx.Response) -> int | None:
    """The answer's hint; the header and the field always agree."""
    body: dict[str, Any] = r.json()
    hint = body["retryAfterSeconds"]
    assert r.headers.get("retry-after") == (None if hint is None else str(hint))
    return None if hint is None else int(hint)


async def test_place_reads_say_when_to_look_next(http: httpx.AsyncClient, admin_token: str) -> None:
    # An opening an hour away: the hint is the horizon (a short line: its floor), not the hour.
    event_id = await _room(http, admin_token, rate=60, opens_in=3600)
    token, joined = await _join(http, event_id)
    assert joined.json()["status"] == "WAITING"
    assert 0.75 * MIN_HORIZON_SECONDS <= (_hint(joined) or 0) <= MIN_HORIZON_SECONDS

    # The organiser brings the opening forward: the next read counts down to it (and the turn,
    # one a second at 60 a minute, plus a round).
    r = await http.put(
        f"/api/events/{event_id}",
        headers=auth(admin_token),
        json={"salesStartAt": iso(datetime.now(UTC) + timedelta(seconds=10))},
    )
    assert r.status_code == 200, r.text
    ticket = joined.json()["ticket"]
    read = await http.get(f"/api/queue/{ticket}", headers=auth(token))
    assert read.status_code == 200 and read.json()["status"] == "WAITING"
    assert 9 <= (_hint(read) or 0) <= 13

    # A room open for 12 s at six a minute: one admission due at once, the next at 20 s. The
    # hint is the turn at that rate, from the same answer (within the 30 s horizon).
    open_id = await _room(http, admin_token, rate=6, opens_in=-12)
    first_token, first = await _join(http, open_id)
    await wait_until(
        lambda: http.get(f"/api/queue/{first.json()['ticket']}", headers=auth(first_token)),
        until=lambda r: r.json()["status"] == "ADMITTED",
        timeout=15,
        what="the first in line to be admitted",
    )
    _, second = await _join(http, open_id)
    body = second.json()
    assert body["status"] == "QUEUED"
    assert _hint(second) == math.ceil((body["ahead"] + 1) * 60 / 6 + 1)

    # Admitted: nothing more to wait for, no hint.
    admitted = await http.get(f"/api/queue/{first.json()['ticket']}", headers=auth(first_token))
    assert admitted.json()["status"] == "ADMITTED" and _hint(admitted) is None


async def _streams_open(port: int) -> float | None:
    """The open place streams over every Gateway replica, as Ray's metrics endpoint says."""
    async with httpx.AsyncClient(timeout=5.0) as scraper:
        body = (await scraper.get(f"http://127.0.0.1:{port}/metrics")).text
    values = re.findall(
        r"^ray_ticketflow_waiting_room_streams_open(?:\{[^}]*\})? (\S+)$", body, re.M
    )
    return sum(float(v) for v in values) if values else None


async def test_a_stream_whose_client_went_away_ends_on_the_server(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    """Without the end on disconnect, the stream of a place that never changes (an opening an
    hour away) would live its five minutes and hold the gauge at one."""
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    event_id = await _room(http, admin_token, rate=60, opens_in=3600)
    token, joined = await _join(http, event_id)
    async with httpx.AsyncClient(base_url=str(http.base_url), timeout=30) as own:
        async with own.stream(
            "GET",
            f"/api/queue/{joined.json()['ticket']}",
            headers={**auth(token), "Accept": "text/event-stream"},
        ) as stream:
            assert stream.status_code == 200
            # Kept referenced: a line iterator dropped mid-stream is finalised, and httpx then
            # closes the connection (which this test wants only later).
            lines = stream.aiter_lines()
            async for line in lines:
                if line.startswith("data: "):
                    break
            await wait_until(
                lambda: _streams_open(port),
                until=lambda n: n is not None and n >= 1,
                timeout=60,  # a process's first metric takes a few of Ray's 10 s exports
                interval=1.0,
                what="the open stream on the metrics endpoint",
            )
        await lines.aclose()
    # The client (and its connection) is gone.
    await wait_until(
        lambda: _streams_open(port),
        until=lambda n: n == 0,
        timeout=45,
        interval=1.0,
        what="the stream to end on the server after its client went away",
    )


def _replica_policies(deployment: str) -> list[int]:
    """The scheduling policy of every thread of each live replica process of `deployment` (Ray
    titles a replica's process `ray::ServeReplica:<app>:<deployment>`)."""
    values: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if not title.startswith("ray::ServeReplica:") or not title.endswith(f":{deployment}"):
                continue
            for task in (proc / "task").iterdir():
                values.append(os.sched_getscheduler(int(task.name)))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return values


async def test_the_place_readers_yield_the_cpu_to_the_gateway(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/queue/none")).status_code in (401, 404)
    # The suite runs with the default TICKETFLOW_PLACE_READER_PRIORITY (idle), on Linux. The
    # places application may still be starting its replica (the Gateway answers meanwhile).
    assert get_settings().place_reader_priority == "idle"
    readers = await wait_until(
        lambda: _replica_policies("PlaceReader"), timeout=60, what="a place reader's process"
    )
    gateway = _replica_policies("Gateway")
    assert set(readers) == {os.SCHED_IDLE}, readers
    assert gateway and os.SCHED_IDLE not in gateway, gateway
