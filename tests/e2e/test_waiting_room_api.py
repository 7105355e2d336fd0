"""The sale's opening and the virtual waiting room (issue 15) over HTTP, against the running Serve
app, real Ray, Postgres and Redis: event settings, booking before the opening, the booking gate
(admission tokens), the queue routes and the admitter.

Events here are small and their sales open a few seconds from now, so the whole module stays short.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from domain.admission import AdmissionTokens, admission_key
from tests.helpers import assert_error, auth, create_event, iso, new_user, wait_final

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
