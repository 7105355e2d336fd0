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

from tests.helpers import assert_error, auth, create_event, iso, new_user

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
