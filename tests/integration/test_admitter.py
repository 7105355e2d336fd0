"""The waiting rooms' admitter (actors/admitter.py) on the session's real Ray, Postgres and Redis:
closing the rooms of started events, and what its `auto` rates read besides the sale's counts
(the shop's failures, the seat actor's latency). The admitter's own loop ticks every second beside
the test's `tick_once` calls; both feed the same rates."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from actors.admitter import AdmitterClient, TickReport
from actors.clients import SeatInventoryClient
from domain.admission_rate import MAX_SEAT_ACTOR_SECONDS, START_PER_MINUTE
from domain.ids import new_id
from tests.helpers import auth, create_room_event, new_user
from tests.waiting import wait_until


async def _room_event(
    http: httpx.AsyncClient, admin: str, *, rate: int | str, seats: int = 4
) -> dict[str, Any]:
    """An event whose sale and room opened a minute ago."""
    return await create_room_event(http, admin, rate=rate, opens_in=-60, seats=seats)


async def _place(http: httpx.AsyncClient, token: str, ticket: str) -> dict[str, Any]:
    r = await http.get(f"/api/queue/{ticket}", headers=auth(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_the_room_of_an_event_that_started_closes_and_its_waiters_read_closed(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    # One admission a minute: two waiters stay QUEUED for as long as this test runs.
    event = await _room_event(http, admin_token, rate=1)
    waiters = [await new_user(http) for _ in range(2)]
    tickets = []
    for token, _ in waiters:
        r = await http.post(f"/api/events/{event['id']}/queue", headers=auth(token))
        assert r.status_code == 201, r.text
        tickets.append(r.json()["ticket"])
    token, _ = waiters[1]
    assert (await _place(http, token, tickets[1]))["status"] == "QUEUED"

    # The show starts (moved in Postgres, as an organiser's edit or the clock would).
    await db.execute(
        "UPDATE events SET starts_at = now() - interval '1 second' WHERE id = $1", event["id"]
    )

    closed = await wait_until(
        lambda: _place(http, token, tickets[1]),
        until=lambda p: p["status"] == "CLOSED",
        timeout=10,
        interval=0.25,
        what="the waiter of a started event to read CLOSED",
    )
    assert closed["position"] is None and closed["admissionToken"] is None
    # Closed once: later rounds leave it be (and still list no sale for it).
    report = await AdmitterClient().tick_once()
    assert event["id"] not in report.closed and event["id"] not in report.rates


async def test_an_auto_room_backs_off_when_the_shop_fails_its_bookings(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    event = await _room_event(http, admin_token, rate="auto")
    _, user = await new_user(http)
    # Six bookings the shop failed just now (their sagas ran out of lock time or gave up): no
    # booking latency to see (nothing in flight), only the error share.
    for reason in ["LOCK_EXPIRED"] * 4 + ["INTERNAL_ERROR"] * 2:
        await db.execute(
            """INSERT INTO bookings (id, user_id, event_id, seat_ids, status, saga_step, saga_slot,
                                     failure_reason, total_amount, currency, payment_token, failed_at)
               VALUES ($1, $2, $3, ARRAY['seat_A1'], 'FAILED', 'FAILED', 0, $4, 25000, 'GBP', 't',
                       now())""",
            new_id("bkg"),
            user["id"],
            event["id"],
            reason,
        )

    async def tick() -> TickReport:
        return await AdmitterClient().tick_once()

    report = await wait_until(
        tick,
        until=lambda r: r.rates.get(event["id"], START_PER_MINUTE) < START_PER_MINUTE,
        timeout=12,
        interval=0.5,
        what="the auto rate to back off from the shop's failures",
    )
    assert report.rates[event["id"]] == START_PER_MINUTE // 2
    assert report.overloaded[event["id"]] == "error share 100%"


async def test_the_admitter_reads_the_latency_the_seat_actor_reports(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await _room_event(http, admin_token, rate="auto")
    await SeatInventoryClient().snapshot(event["id"])  # the actor exists and has served a call

    async def tick() -> TickReport:
        return await AdmitterClient().tick_once()

    report = await wait_until(
        tick,
        until=lambda r: event["id"] in r.seat_actor_seconds,
        timeout=12,
        interval=0.5,
        what="the seat actor's service time to reach the admitter through the directory",
    )
    # An idle test actor: quick, and nowhere near the back-off threshold.
    assert 0 <= report.seat_actor_seconds[event["id"]] < MAX_SEAT_ACTOR_SECONDS
    assert event["id"] not in report.overloaded
