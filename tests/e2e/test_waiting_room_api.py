"""The sale's opening and the virtual waiting room (issue 15) over HTTP, against the running Serve
app, real Ray, Postgres and Redis: event settings, booking before the opening, the booking gate
(admission tokens), the queue routes and the admitter.

Events here are small and their sales open a few seconds from now, so the whole module stays short.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from actors.admitter import AdmitterClient
from domain.admission import AdmissionTokens, admission_key
from domain.admission_rate import START_PER_MINUTE
from storage.waiting_room import WaitingRoom
from tests.helpers import (
    assert_error,
    auth,
    create_event,
    create_room_event,
    iso,
    kill_gateway_replica,
    new_user,
    wait_final,
    wait_healthy,
)
from tests.waiting import wait_until

PAY = {"type": "card", "token": "pm_card_visa"}


def _at(seconds: float) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=seconds))


async def _book_quantity(
    http: httpx.AsyncClient, token: str, event_id: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.post(
        "/api/bookings",
        headers={**auth(token), **(headers or {})},
        json={"eventId": event_id, "quantity": 1, "paymentMethod": PAY},
    )


async def _book_seat(
    http: httpx.AsyncClient,
    token: str,
    event_id: str,
    seat: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await http.post(
        "/api/bookings",
        headers={**auth(token), **(headers or {})},
        json={"eventId": event_id, "seatIds": [seat], "paymentMethod": PAY},
    )


# -- event settings ------------------------------------------------------------------------------


async def test_an_event_shows_its_sales_start_and_waiting_room(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    opens = _at(3600)
    event = await create_event(
        http,
        admin_token,
        vip=2,
        general=0,
        salesStartAt=opens,
        waitingRoom={"enabled": True, "admitPerMinute": 120},
    )
    plain = await create_event(http, admin_token, vip=1, general=0)
    auto = await create_event(
        http, admin_token, vip=1, general=0, waitingRoom={"enabled": True, "admitPerMinute": "auto"}
    )

    assert event["salesStartAt"] == opens
    assert event["waitingRoom"] == {"enabled": True, "admitPerMinute": 120}
    assert plain["salesStartAt"] is None
    assert plain["waitingRoom"] == {"enabled": False, "admitPerMinute": "auto"}
    assert auto["waitingRoom"] == {"enabled": True, "admitPerMinute": "auto"}
    listed = (await http.get("/api/events", params={"venueId": event["venue"]["id"]})).json()
    assert listed["data"][0]["salesStartAt"] == opens
    assert listed["data"][0]["waitingRoom"] == {"enabled": True, "admitPerMinute": 120}


async def test_event_settings_out_of_range_are_refused(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_event(http, admin_token, vip=1, general=0)
    starts = event["startsAt"]
    bad_bodies: list[dict[str, Any]] = [
        {"salesStartAt": starts},  # not before startsAt
        {"salesStartAt": "2030-01-01T10:00:00"},  # no timezone
        {"waitingRoom": {"enabled": True, "admitPerMinute": 0}},
        {"waitingRoom": {"enabled": True, "admitPerMinute": 1_000_001}},
        {"waitingRoom": {"enabled": True, "admitPerMinute": "fast"}},
        {"waitingRoom": {"admitPerMinute": 60}},  # enabled is required
    ]
    for body in bad_bodies:
        r = await http.put(f"/api/events/{event['id']}", headers=auth(admin_token), json=body)
        assert_error(r, 400, "VALIDATION_ERROR")
    # The same checks guard creation.
    r = await http.post(
        "/api/events",
        headers=auth(admin_token),
        json={
            "name": "Late sale",
            "venueId": event["venue"]["id"],
            "startsAt": starts,
            "endsAt": event["endsAt"],
            "salesStartAt": event["endsAt"],
            "ticketTiers": [{"tier": "VIP", "price": 100, "currency": "GBP", "capacity": 1}],
        },
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    unchanged = (await http.get(f"/api/events/{event['id']}")).json()
    assert unchanged["salesStartAt"] is None and unchanged["waitingRoom"]["enabled"] is False


async def test_an_update_changes_the_settings_and_null_opens_the_sale(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_event(http, admin_token, vip=1, general=0)
    opens = _at(7200)

    r = await http.put(
        f"/api/events/{event['id']}",
        headers=auth(admin_token),
        json={"salesStartAt": opens, "waitingRoom": {"enabled": True, "admitPerMinute": 30}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["salesStartAt"] == opens
    assert r.json()["waitingRoom"] == {"enabled": True, "admitPerMinute": 30}
    # Left out: unchanged.
    r = await http.put(
        f"/api/events/{event['id']}", headers=auth(admin_token), json={"name": "Renamed"}
    )
    assert r.json()["salesStartAt"] == opens and r.json()["waitingRoom"]["admitPerMinute"] == 30
    # null: on sale at once; the room turned off.
    r = await http.put(
        f"/api/events/{event['id']}",
        headers=auth(admin_token),
        json={"salesStartAt": None, "waitingRoom": {"enabled": False}},
    )
    assert r.json()["salesStartAt"] is None
    assert r.json()["waitingRoom"] == {"enabled": False, "admitPerMinute": "auto"}


async def test_booking_before_the_sale_opens_is_refused_before_any_lock_or_charge(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    event = await create_event(http, admin_token, vip=2, general=0, salesStartAt=_at(3600))
    token, _ = await new_user(http)

    named = await _book_seat(http, token, event["id"], "seat_A1")
    best = await _book_quantity(http, token, event["id"])
    keyed = await _book_seat(
        http, token, event["id"], "seat_A2", {"Idempotency-Key": f"early-{time.time_ns()}"}
    )

    for r in (named, best, keyed):
        assert_error(r, 409, "EVENT_NOT_ON_SALE")
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE event_id = $1", event["id"]) == 0
    inventory = (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()
    assert inventory["onSale"] is False and inventory["summary"]["available"] == 2

    # Once the sale opens (here: moved into the past), the same booking goes through.
    await db.execute(
        "UPDATE events SET sales_start_at = now() - interval '1 second' WHERE id = $1", event["id"]
    )
    assert (await _book_seat(http, token, event["id"], "seat_A1")).status_code == 202
    inventory = (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()
    assert inventory["onSale"] is True


# -- the booking gate: admission tokens ------------------------------------------------------------


def _tokens(app_env: dict[str, str]) -> AdmissionTokens:
    """Admission tokens as the Gateway makes them: the key derived from the app's JWT secret."""
    return AdmissionTokens(key=admission_key(app_env["JWT_SECRET"]), window_seconds=600)


def _adm(token: str) -> dict[str, str]:
    return {"X-Admission-Token": token}


async def test_a_room_event_refuses_bookings_without_a_valid_admission_token(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool, app_env: dict[str, str]
) -> None:
    room = {"enabled": True, "admitPerMinute": 600}
    event = await create_event(http, admin_token, vip=4, general=0, waitingRoom=room)
    other = await create_event(http, admin_token, vip=1, general=0, waitingRoom=room)
    token, user = await new_user(http)
    _, someone = await new_user(http)
    tokens = _tokens(app_env)
    valid = tokens.issue(user_id=user["id"], event_id=event["id"]).token
    forged = AdmissionTokens(key=admission_key("not the server's secret " * 2)).issue(
        user_id=user["id"], event_id=event["id"]
    )
    refused = {
        "none": {},
        "garbage": _adm("not-a-token"),
        "forged": _adm(forged.token),
        "tampered": _adm(valid[:-2] + ("AA" if not valid.endswith("AA") else "BB")),
        "another event": _adm(tokens.issue(user_id=user["id"], event_id=other["id"]).token),
        "another user": _adm(tokens.issue(user_id=someone["id"], event_id=event["id"]).token),
        "expired": _adm(
            tokens.issue(
                user_id=user["id"], event_id=event["id"], admitted_at=time.time() - 601
            ).token
        ),
        "a login JWT": _adm(token),
    }
    for why, headers in refused.items():
        named = await _book_seat(http, token, event["id"], "seat_A1", headers)
        best = await _book_quantity(http, token, event["id"], headers)
        for r in (named, best):
            error = assert_error(r, 403, "ADMISSION_REQUIRED")
            assert why and error["message"]
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE event_id = $1", event["id"]) == 0
    # An event without a room ignores the header, whatever it holds.
    plain = await create_event(http, admin_token, vip=1, general=0)
    assert (await _book_seat(http, token, plain["id"], "seat_A1", _adm("junk"))).status_code == 202


async def test_an_admitted_buyer_books_several_times_and_a_retry_keeps_its_answer(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool, app_env: dict[str, str]
) -> None:
    event = await create_event(
        http, admin_token, vip=3, general=0, waitingRoom={"enabled": True, "admitPerMinute": 600}
    )
    token, user = await new_user(http)
    tokens = _tokens(app_env)
    # Admitted 500 s ago: still inside the 600 s window.
    admitted = tokens.issue(user_id=user["id"], event_id=event["id"], admitted_at=time.time() - 500)
    key = {"Idempotency-Key": f"room-{time.time_ns()}"}

    first = await _book_seat(http, token, event["id"], "seat_A1", {**_adm(admitted.token), **key})
    second = await _book_quantity(http, token, event["id"], _adm(admitted.token))
    assert first.status_code == 202 and second.status_code == 202, (first.text, second.text)
    confirmed = await wait_final(http, token, first.json()["bookingId"])
    assert confirmed["status"] == "CONFIRMED"
    assert (await wait_final(http, token, second.json()["bookingId"]))["status"] == "CONFIRMED"

    # The same request again, its token expired meanwhile: the first answer, nothing new.
    expired = tokens.issue(user_id=user["id"], event_id=event["id"], admitted_at=time.time() - 700)
    again = await _book_seat(http, token, event["id"], "seat_A1", {**_adm(expired.token), **key})
    assert again.status_code == 202 and again.json()["bookingId"] == first.json()["bookingId"]
    # A new request with the expired token is refused.
    assert_error(
        await _book_seat(http, token, event["id"], "seat_A3", _adm(expired.token)),
        403,
        "ADMISSION_REQUIRED",
    )
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE event_id = $1", event["id"]) == 2


async def test_before_the_opening_a_room_event_answers_not_on_sale_even_with_a_token(
    http: httpx.AsyncClient, admin_token: str, app_env: dict[str, str]
) -> None:
    event = await create_event(
        http,
        admin_token,
        vip=1,
        general=0,
        salesStartAt=_at(3600),
        waitingRoom={"enabled": True, "admitPerMinute": 600},
    )
    token, user = await new_user(http)
    admitted = _tokens(app_env).issue(user_id=user["id"], event_id=event["id"]).token
    assert_error(await _book_seat(http, token, event["id"], "seat_A1"), 409, "EVENT_NOT_ON_SALE")
    assert_error(
        await _book_seat(http, token, event["id"], "seat_A1", _adm(admitted)),
        409,
        "EVENT_NOT_ON_SALE",
    )


# -- the queue routes and the admitter --------------------------------------------------------------


async def _join(http: httpx.AsyncClient, token: str, event_id: str) -> httpx.Response:
    return await http.post(f"/api/events/{event_id}/queue", headers=auth(token))


async def _place(http: httpx.AsyncClient, token: str, ticket: str) -> dict[str, Any]:
    r = await http.get(f"/api/queue/{ticket}", headers=auth(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _until_status(
    http: httpx.AsyncClient, token: str, ticket: str, status: str, timeout: float = 15.0
) -> dict[str, Any]:
    return await wait_until(
        lambda: _place(http, token, ticket),
        until=lambda p: p["status"] == status,
        timeout=timeout,
        interval=0.25,
        what=f"queue ticket {ticket} to be {status}",
    )


async def test_joining_twice_keeps_one_place_and_positions_follow_the_line(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    # Open since a second ago at one a minute: nobody is admitted during this test.
    event = await create_room_event(http, admin_token, rate=1, opens_in=-1, seats=5)
    first_token, _ = await new_user(http)
    second_token, _ = await new_user(http)

    joined = await _join(http, first_token, event["id"])
    again = await _join(http, first_token, event["id"])
    second = await _join(http, second_token, event["id"])

    assert joined.status_code == 201 and again.status_code == 200, (joined.text, again.text)
    assert again.json()["ticket"] == joined.json()["ticket"]
    assert joined.json()["ticket"].startswith(event["id"] + ".")
    first = await _place(http, first_token, joined.json()["ticket"])
    assert first["status"] == "QUEUED" and first["position"] == 1 and first["ahead"] == 0
    assert first["eventId"] == event["id"] and first["admissionToken"] is None
    assert second.status_code == 201
    # At one a minute (once the admitter has told the room its rate, within a second), the
    # second in line waits about two minutes.
    behind = await wait_until(
        lambda: _place(http, second_token, second.json()["ticket"]),
        until=lambda p: p["estimatedWaitSeconds"] >= 60,
        timeout=10,
        what="the wait estimate to follow the room's rate",
    )
    assert behind["position"] == 2 and behind["ahead"] == 1 and behind["waiting"] == 2
    assert behind["estimatedWaitSeconds"] <= 120, behind


async def test_queue_errors_are_clear(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    token, _ = await new_user(http)
    other_token, _ = await new_user(http)
    plain = await create_event(http, admin_token, vip=1, general=0)
    started = await create_room_event(http, admin_token, rate=60, opens_in=-1, seats=1)
    await db.execute(
        "UPDATE events SET sales_start_at = now() - interval '2 hours',"
        " starts_at = now() - interval '1 minute' WHERE id = $1",
        started["id"],
    )
    room = await create_room_event(http, admin_token, rate=1, opens_in=-1, seats=1)
    ticket = (await _join(http, token, room["id"])).json()["ticket"]

    assert_error(await _join(http, token, "evnt_missing"), 404, "EVENT_NOT_FOUND")
    assert_error(await _join(http, token, plain["id"]), 409, "WAITING_ROOM_NOT_ENABLED")
    assert_error(await _join(http, token, started["id"]), 409, "EVENT_NOT_ON_SALE")
    assert_error(await http.post(f"/api/events/{room['id']}/queue"), 401, "UNAUTHORIZED")
    # Another user's ticket, an unknown one, a malformed one: all simply not found.
    for who, what in (
        (other_token, ticket),
        (token, f"{room['id']}.AAAAAAAAAAAAAAAA"),
        (token, "not-a-ticket"),
    ):
        r = await http.get(f"/api/queue/{what}", headers=auth(who))
        assert_error(r, 404, "QUEUE_TICKET_NOT_FOUND")
    assert_error(await http.get(f"/api/queue/{ticket}"), 401, "UNAUTHORIZED")


async def test_early_joiners_wait_for_the_lottery_and_later_ones_queue_behind(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_room_event(http, admin_token, rate=1, opens_in=3, seats=10)
    buyers = [await new_user(http) for _ in range(5)]
    tickets = [(await _join(http, t, event["id"])).json()["ticket"] for t, _ in buyers]
    before = [await _place(http, t, ticket) for (t, _), ticket in zip(buyers, tickets, strict=True)]
    assert {p["status"] for p in before} == {"WAITING"}
    assert all(p["position"] is None and p["ahead"] is None for p in before)

    # The admitter opens the room at salesStartAt: the draw becomes the order.
    opened = await _until_status(http, buyers[0][0], tickets[0], "QUEUED")
    late_token, _ = await new_user(http)
    late = await _join(http, late_token, event["id"])

    after = [opened] + [
        await _place(http, t, ticket)
        for (t, _), ticket in zip(buyers[1:], tickets[1:], strict=True)
    ]
    assert sorted(p["position"] for p in after) == [1, 2, 3, 4, 5]
    assert late.json()["status"] == "QUEUED" and late.json()["position"] == 6


async def test_an_admitted_buyer_gets_a_token_books_with_it_and_the_stream_says_admitted(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_room_event(http, admin_token, rate=600, opens_in=2, seats=4)
    token, _ = await new_user(http)
    streamer, _ = await new_user(http)
    ticket = (await _join(http, token, event["id"])).json()["ticket"]
    streamed_ticket = (await _join(http, streamer, event["id"])).json()["ticket"]

    events: list[dict[str, Any]] = []
    async with http.stream(
        "GET",
        f"/api/queue/{streamed_ticket}",
        headers={**auth(streamer), "Accept": "text/event-stream"},
        timeout=30,
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    # One event per change, the first as it stood, the last ADMITTED; then the stream ended.
    assert events[0]["status"] == "WAITING" and events[-1]["status"] == "ADMITTED"
    assert events[-1]["admissionToken"]
    assert len(events) == len({json.dumps(e, sort_keys=True) for e in events})

    admitted = await _until_status(http, token, ticket, "ADMITTED")
    assert admitted["position"] is None and admitted["admissionToken"]
    expires = datetime.fromisoformat(admitted["admissionExpiresAt"].replace("Z", "+00:00"))
    assert 590 <= (expires - datetime.now(UTC)).total_seconds() <= 600
    # Reading again hands out the same token: the window runs from the admission.
    assert (await _place(http, token, ticket))["admissionToken"] == admitted["admissionToken"]

    r = await _book_seat(
        http, token, event["id"], "seat_A1", {"X-Admission-Token": admitted["admissionToken"]}
    )
    assert r.status_code == 202, r.text
    assert (await wait_final(http, token, r.json()["bookingId"]))["status"] == "CONFIRMED"
    # The streamer's token is theirs alone.
    assert_error(
        await _book_seat(
            http, token, event["id"], "seat_A2", {"X-Admission-Token": events[-1]["admissionToken"]}
        ),
        403,
        "ADMISSION_REQUIRED",
    )


async def test_admissions_never_run_ahead_of_the_configured_rate(
    http: httpx.AsyncClient, admin_token: str, app_env: dict[str, str]
) -> None:
    event = await create_room_event(http, admin_token, rate=60, opens_in=2, seats=50)
    for _ in range(12):
        token, _ = await new_user(http)
        assert (await _join(http, token, event["id"])).status_code == 201
    client = aioredis.from_url(app_env["REDIS_URL"])
    try:
        room = WaitingRoom(client)
        await asyncio.sleep(7)
        state = await room.pacing_state(event_id=event["id"])
        times = sorted(
            score
            for _, score in await client.zrange(
                room.keys(event["id"])["admitted"], 0, -1, withscores=True
            )
        )
    finally:
        await client.aclose()
    assert state.opened_at is not None
    # Admitting at all, and at one a second at most: the k-th admission is at least k s in.
    assert len(times) >= 2, times
    for k, at in enumerate(times, start=1):
        assert at - state.opened_at >= k * 60 / 60 - 1e-6, (k, at - state.opened_at)


async def test_a_sold_out_event_closes_its_room_and_waiters_read_closed(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_room_event(http, admin_token, rate=600, opens_in=-1, seats=1)
    buyer, _ = await new_user(http)
    waiter, _ = await new_user(http)
    bought = (await _join(http, buyer, event["id"])).json()["ticket"]
    waiting = (await _join(http, waiter, event["id"])).json()["ticket"]

    admitted = await _until_status(http, buyer, bought, "ADMITTED")
    # One seat, one admitted buyer holding it: the next in line stays in line.
    assert (await _place(http, waiter, waiting))["status"] == "QUEUED"
    r = await _book_seat(
        http, buyer, event["id"], "seat_A1", {"X-Admission-Token": admitted["admissionToken"]}
    )
    assert (await wait_final(http, buyer, r.json()["bookingId"]))["status"] == "CONFIRMED"

    closed = await _until_status(http, waiter, waiting, "CLOSED")
    assert closed["position"] is None and closed["admissionToken"] is None
    latecomer, _ = await new_user(http)
    assert_error(await _join(http, latecomer, event["id"]), 409, "WAITING_ROOM_CLOSED")
    # The admitted buyer's place still says so.
    assert (await _place(http, buyer, bought))["status"] == "ADMITTED"


async def test_the_admitter_paces_auto_rooms_from_the_start_rate_and_fixed_ones_at_theirs(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    auto = await create_room_event(http, admin_token, rate="auto", opens_in=-1, seats=2)
    fixed = await create_room_event(http, admin_token, rate=90, opens_in=-1, seats=2)
    token, _ = await new_user(http)
    ticket = (await _join(http, token, auto["id"])).json()["ticket"]

    report = await AdmitterClient().tick_once()

    assert report.rates[auto["id"]] == START_PER_MINUTE
    assert report.rates[fixed["id"]] == 90
    place = await _place(http, token, ticket)
    assert place["status"] in {"QUEUED", "ADMITTED"}


async def test_waiting_room_metrics_reach_the_prometheus_endpoint(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    import ray

    event = await create_room_event(http, admin_token, rate=600, opens_in=-1, seats=2)
    token, _ = await new_user(http)
    ticket = (await _join(http, token, event["id"])).json()["ticket"]
    await _until_status(http, token, ticket, "ADMITTED")
    port = ray._private.worker.global_worker.node.metrics_export_port
    wanted = (
        "ray_ticketflow_waiting_room_admitted_total",
        "ray_ticketflow_waiting_room_time_in_queue_seconds_count",
        "ray_ticketflow_waiting_room_queue_length",
    )

    async def missing() -> list[str]:
        async with httpx.AsyncClient(timeout=5.0) as scraper:
            body = (await scraper.get(f"http://127.0.0.1:{port}/metrics")).text
        return [name for name in wanted if not re.search(rf"^{name}[{{ ]", body, re.M)]

    await wait_until(
        missing,
        until=lambda gone: not gone,
        timeout=45,
        interval=1.0,
        what="the waiting room's series on Ray's metrics endpoint (value: the ones missing)",
    )


async def test_buyers_who_booked_are_not_counted_twice_against_the_seats_left(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    # Six seats, two a booking, one admission a second. Once two buyers have bought four seats,
    # two seats are left for the third: counting the two buyers both as sold seats and as admitted
    # buyers holding a seat would leave 6 - 4 - 2 = 0 and keep the third out for the whole window.
    event = await create_room_event(http, admin_token, rate=60, opens_in=-1, seats=6)
    buyers = [await new_user(http) for _ in range(3)]
    tickets = [(await _join(http, t, event["id"])).json()["ticket"] for t, _ in buyers]

    for (token, _), ticket, seats in zip(
        buyers[:2], tickets[:2], (["seat_A1", "seat_A2"], ["seat_A3", "seat_A4"]), strict=True
    ):
        admitted = await _until_status(http, token, ticket, "ADMITTED")
        r = await http.post(
            "/api/bookings",
            headers={**auth(token), "X-Admission-Token": admitted["admissionToken"]},
            json={"eventId": event["id"], "seatIds": seats, "paymentMethod": PAY},
        )
        assert (await wait_final(http, token, r.json()["bookingId"]))["status"] == "CONFIRMED"

    third = await _until_status(http, buyers[2][0], tickets[2], "ADMITTED", timeout=10)
    assert third["admissionToken"]


async def test_a_gateway_replica_restart_keeps_everyones_place(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_room_event(http, admin_token, rate=1, opens_in=-1, seats=5)
    buyers = [await new_user(http) for _ in range(3)]
    tickets = [(await _join(http, t, event["id"])).json()["ticket"] for t, _ in buyers]
    before = [await _place(http, t, ticket) for (t, _), ticket in zip(buyers, tickets, strict=True)]

    async def places() -> list[dict[str, Any]]:
        return [
            await _place(http, t, ticket) for (t, _), ticket in zip(buyers, tickets, strict=True)
        ]

    await asyncio.to_thread(kill_gateway_replica)
    # The places are read by their own deployment (serve_app.places_app): while the Gateway is
    # down they still answer. A pooled connection to the killed replica may fail once: "not yet".
    while_down = await wait_until(
        places,
        timeout=10,
        what="the places with the Gateway down",
        ignoring=(httpx.TransportError,),
    )
    assert [p["position"] for p in while_down] == [1, 2, 3]
    await wait_healthy(http, timeout=90, what="the API to come back with a new Gateway replica")
    # And a place reader's restart loses nobody's place either.
    await asyncio.to_thread(kill_gateway_replica, "PlaceReader")
    after = await wait_until(
        places,
        timeout=60,
        interval=0.5,
        what="the places through a new place reader",
        ignoring=(httpx.TransportError, AssertionError),
    )
    assert [p["position"] for p in after] == [p["position"] for p in before] == [1, 2, 3]
    again = await _join(http, buyers[1][0], event["id"])
    assert again.status_code == 200 and again.json()["ticket"] == tickets[1]
