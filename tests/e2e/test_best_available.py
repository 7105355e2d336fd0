"""Best available over HTTP: the seat actor chooses and locks, the booking shows the seats and the
price of what was chosen. Against the running Serve app, real Ray and Postgres."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx

from tests.helpers import (
    assert_consistent,
    assert_error,
    auth,
    book_and_wait,
    create_event,
    new_user,
)

WAIT = {"Prefer": "wait=10"}
VIP_PRICE, GENERAL_PRICE = 25000, 7500


def best(event_id: str, quantity: Any, **extra: Any) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "quantity": quantity,
        "paymentMethod": {"type": "card", "token": "pm_card_visa"},
        **extra,
    }


async def book_best(
    http: httpx.AsyncClient, token: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.post(
        "/api/bookings", headers={**auth(token), **WAIT, **(headers or {})}, json=body
    )


async def final(http: httpx.AsyncClient, token: str, r: httpx.Response) -> dict[str, Any]:
    """The final booking an answer gives, or asks for once more if it was still PENDING."""
    assert r.status_code in (200, 202), r.text
    if r.status_code == 200:
        return dict(r.json())
    again = await http.get(
        f"/api/bookings/{r.json()['bookingId']}", headers={**auth(token), **WAIT}
    )
    assert again.status_code == 200 and again.json()["status"] != "PENDING", again.text
    return dict(again.json())


async def test_the_best_seats_together_front_and_centre_priced_from_their_tier(
    http: httpx.AsyncClient,
    admin_token: str,
) -> None:
    event = await create_event(http, admin_token, vip=10, general=40)  # row A: VIP 1-10
    token, _ = await new_user(http)
    booking = await final(http, token, await book_best(http, token, best(event["id"], 2)))
    assert booking["status"] == "CONFIRMED", booking
    assert booking["seatIds"] == ["seat_A5", "seat_A6"]  # the middle of the front row
    assert booking["totalAmount"] == 2 * VIP_PRICE
    seats = (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()["seats"]
    assert {s["id"] for s in seats if s["status"] == "RESERVED"} == {"seat_A5", "seat_A6"}


async def test_a_tier_asked_for_is_the_tier_given(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_event(http, admin_token, vip=10, general=40)  # rows B and C: GENERAL
    token, _ = await new_user(http)
    booking = await final(
        http, token, await book_best(http, token, best(event["id"], 3, tier="GENERAL"))
    )
    assert booking["status"] == "CONFIRMED" and booking["totalAmount"] == 3 * GENERAL_PRICE
    assert all(s.startswith("seat_B") for s in booking["seatIds"]), booking["seatIds"]


async def test_together_without_a_block_says_what_is_left_and_scattered_takes_them(
    http: httpx.AsyncClient,
    admin_token: str,
) -> None:
    event = await create_event(http, admin_token, vip=3, general=0)  # A1 A2 A3
    token, _ = await new_user(http)
    assert (await book_and_wait(http, token, event["id"], ["seat_A2"]))["status"] == "CONFIRMED"

    refused = await final(http, token, await book_best(http, token, best(event["id"], 2)))
    assert refused["status"] == "FAILED" and refused["failureReason"] == "SEATS_UNAVAILABLE"
    assert refused["seatIds"] == [] and refused["failureMessage"], refused
    assert "2" in refused["failureMessage"] and "1" in refused["failureMessage"], refused[
        "failureMessage"
    ]

    scattered = await final(
        http, token, await book_best(http, token, best(event["id"], 2, together=False))
    )
    assert scattered["status"] == "CONFIRMED" and sorted(scattered["seatIds"]) == [
        "seat_A1",
        "seat_A3",
    ]


async def test_a_rush_for_the_best_seats_sells_each_seat_once(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
) -> None:
    event = await create_event(http, admin_token, vip=10, general=20)  # 30 seats, 20 buyers of 2
    buyers = [await new_user(http) for _ in range(20)]
    answers = await asyncio.gather(
        *(book_best(http, t, best(event["id"], 2, together=False)) for t, _ in buyers)
    )
    bookings = [await final(http, t, r) for (t, _), r in zip(buyers, answers, strict=True)]
    confirmed = [b for b in bookings if b["status"] == "CONFIRMED"]
    failed = [b for b in bookings if b["status"] == "FAILED"]
    assert len(confirmed) == 15 and len(failed) == 5, [b["status"] for b in bookings]
    assert all(b["failureReason"] == "SEATS_UNAVAILABLE" for b in failed)
    sold = [s for b in confirmed for s in b["seatIds"]]
    assert len(sold) == len(set(sold)) == 30
    await assert_consistent(db, event["id"])


async def test_best_available_requests_are_validated(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    event = await create_event(http, admin_token, vip=4, general=4)
    token, _ = await new_user(http)
    pay = {"type": "card", "token": "pm_card_visa"}
    both = {"eventId": event["id"], "seatIds": ["seat_A1"], "quantity": 1, "paymentMethod": pay}
    assert_error(await book_best(http, token, both), 400, "VALIDATION_ERROR")
    assert_error(
        await book_best(http, token, {"eventId": event["id"], "paymentMethod": pay}),
        400,
        "VALIDATION_ERROR",
    )
    for quantity in (0, 11):
        assert_error(
            await book_best(http, token, best(event["id"], quantity)), 400, "INVALID_SEAT_COUNT"
        )
    assert_error(await book_best(http, token, best(event["id"], "two")), 400, "VALIDATION_ERROR")
    assert_error(
        await book_best(http, token, best(event["id"], 1, tier="BALCONY")), 400, "VALIDATION_ERROR"
    )
    no_standing = await book_best(http, token, best(event["id"], 1, tier="STANDING"))
    assert_error(no_standing, 400, "VALIDATION_ERROR")
    assert "STANDING" in no_standing.json()["error"]["message"]
    named_with_tier = {
        "eventId": event["id"],
        "seatIds": ["seat_A1"],
        "tier": "VIP",
        "paymentMethod": pay,
    }
    assert_error(await book_best(http, token, named_with_tier), 400, "VALIDATION_ERROR")
    assert_error(await book_best(http, token, best("evnt_missing", 1)), 404, "EVENT_NOT_FOUND")
    await db.execute(
        "UPDATE events SET starts_at = now() - interval '1 minute', ends_at = now() + interval '3 hours' WHERE id = $1",
        event["id"],
    )
    assert_error(await book_best(http, token, best(event["id"], 1)), 409, "EVENT_NOT_ON_SALE")
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE event_id = $1", event["id"]) == 0


async def test_an_idempotency_key_covers_the_quantity_asked_for(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_event(http, admin_token, vip=4, general=4)
    token, _ = await new_user(http)
    key = {"Idempotency-Key": f"best-{event['id']}"}
    first = await final(http, token, await book_best(http, token, best(event["id"], 2), key))
    again = await final(http, token, await book_best(http, token, best(event["id"], 2), key))
    assert again["id"] == first["id"]
    assert_error(
        await book_best(http, token, best(event["id"], 3), key), 409, "IDEMPOTENCY_KEY_REUSED"
    )
