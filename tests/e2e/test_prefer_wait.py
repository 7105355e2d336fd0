"""`Prefer: wait=N` on the booking routes (RFC 7240): one round trip instead of polling. Against
the running Serve app, real Ray, Postgres and the fake Stripe API."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx

from tests.conftest import STRIPE_LATENCY_SECONDS
from tests.fakes.stripe_api import FakeStripe
from tests.helpers import assert_error, auth, book, create_event, new_user, wait_final

SLOW_CHARGE_SECONDS = 2.0


def wait(seconds: int) -> dict[str, str]:
    return {"Prefer": f"wait={seconds}"}


async def get(
    http: httpx.AsyncClient, token: str, booking_id: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.get(f"/api/bookings/{booking_id}", headers={**auth(token), **(headers or {})})


async def test_a_booking_asked_with_wait_is_answered_final_in_one_round_trip(
    http: httpx.AsyncClient,
    admin_token: str,
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    token, _ = await new_user(http)
    began = time.time()
    r = await book(http, token, event["id"], ["seat_A1", "seat_A2"], headers=wait(10))
    answered = time.time()
    assert r.status_code == 200, r.text
    # Woken by the saga's end, not by the wait running out (when the saga took long enough for
    # the two to differ).
    confirmed = datetime.fromisoformat(r.json()["confirmedAt"].replace("Z", "+00:00")).timestamp()
    if confirmed < began + 8.0:
        assert answered - confirmed < 1.5, (
            f"answered {answered - confirmed:.1f} s after the booking was confirmed"
        )
    assert r.headers["Preference-Applied"] == "wait=10"
    body = r.json()
    assert body["status"] == "CONFIRMED" and body["seatIds"] == ["seat_A1", "seat_A2"]
    # The body is the booking as GET /api/bookings/{id} gives it.
    assert body == (await get(http, token, body["id"])).json()


async def test_a_declined_card_is_answered_failed_in_one_round_trip(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    token, _ = await new_user(http)
    r = await book(
        http, token, event["id"], ["seat_A1"], card="pm_card_chargeDeclined", headers=wait(10)
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "FAILED" and r.json()["failureReason"] == "PAYMENT_DECLINED"


async def test_without_the_preference_the_answer_is_the_usual_202(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    token, _ = await new_user(http)
    r = await book(http, token, event["id"], ["seat_A1"], headers={"Prefer": "respond-async"})
    assert r.status_code == 202 and r.json()["status"] == "PENDING"
    assert "Preference-Applied" not in r.headers


async def _waiters_on_a_slow_booking(
    http: httpx.AsyncClient,
    admin_token: str,
    stripe_api: FakeStripe,
) -> tuple[float, float, float]:
    """Five `wait=10` waiters on a booking whose charge sits at the processor: when they began,
    when they were answered and when the booking was confirmed (epoch seconds)."""
    event = await create_event(http, admin_token, vip=2, general=2)
    token, _ = await new_user(http)
    stripe_api.delay(SLOW_CHARGE_SECONDS)
    try:
        r = await book(http, token, event["id"], ["seat_B1"])
        assert r.status_code == 202, r.text
        booking_id = r.json()["bookingId"]
        started = time.monotonic()
        short = await get(http, token, booking_id, wait(1))
        assert short.status_code == 200 and short.json()["status"] == "PENDING"
        assert "Preference-Applied" not in short.headers
        assert time.monotonic() - started >= 0.9, "a wait of 1 s answered before its second was up"
        began = time.time()
        waiters = await asyncio.gather(*(get(http, token, booking_id, wait(10)) for _ in range(5)))
        answered = time.time()
    finally:
        stripe_api.delay(STRIPE_LATENCY_SECONDS)
    for w in waiters:
        assert w.status_code == 200 and w.json()["status"] == "CONFIRMED", w.text
        assert w.headers["Preference-Applied"] == "wait=10"
    confirmed = datetime.fromisoformat(
        waiters[0].json()["confirmedAt"].replace("Z", "+00:00")
    ).timestamp()
    return began, answered, confirmed


async def test_several_waiters_are_woken_by_the_sagas_end_and_a_short_wait_gets_pending(
    http: httpx.AsyncClient,
    admin_token: str,
    stripe_api: FakeStripe,
) -> None:
    # Woken by the saga's final write: answered right after the confirmation, not at the end of
    # their 10 s. The saga's own pace depends on the suite's load (the payment actor may be busy
    # reconciling earlier tests' payments), so only a sale confirmed well before the waiters'
    # deadline can tell the two apart: one that came late is tried again on a new booking.
    for _ in range(3):
        began, answered, confirmed = await _waiters_on_a_slow_booking(http, admin_token, stripe_api)
        if confirmed > began + 8.0:
            continue  # confirmed so near the 10 s deadline that a timeout would look the same
        woken_after = answered - max(confirmed, began)
        assert woken_after < 1.5, (
            f"waiters answered {woken_after:.1f} s after the booking was confirmed"
        )
        return
    raise AssertionError(
        "three bookings in a row were confirmed too late to tell a wake-up from a timeout"
    )


async def test_a_client_that_goes_away_mid_wait_does_not_hurt_the_booking_or_others(
    http: httpx.AsyncClient,
    server: str,
    admin_token: str,
    stripe_api: FakeStripe,
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    token, _ = await new_user(http)
    stripe_api.delay(SLOW_CHARGE_SECONDS)
    try:
        booking_id = (await book(http, token, event["id"], ["seat_B2"])).json()["bookingId"]
        async with httpx.AsyncClient(base_url=server, timeout=0.3) as impatient:
            for _ in range(5):
                try:
                    await impatient.get(
                        f"/api/bookings/{booking_id}", headers={**auth(token), **wait(10)}
                    )
                    raise AssertionError("a 10 s wait on a pending booking answered within 0.3 s")
                except httpx.ReadTimeout:
                    pass  # the client hung up while its request waited
        patient = await get(http, token, booking_id, wait(10))
    finally:
        stripe_api.delay(STRIPE_LATENCY_SECONDS)
    assert patient.status_code == 200 and patient.json()["status"] == "CONFIRMED"


async def test_waiting_never_shows_another_users_booking(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    owner, _ = await new_user(http)
    stranger, _ = await new_user(http)
    booking_id = (await book(http, owner, event["id"], ["seat_A1"])).json()["bookingId"]
    started = time.monotonic()
    assert_error(await get(http, stranger, booking_id, wait(10)), 404, "BOOKING_NOT_FOUND")
    assert time.monotonic() - started < 3.0


async def test_a_repeated_idempotency_key_with_wait_answers_the_first_booking_final(
    http: httpx.AsyncClient,
    admin_token: str,
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    token, _ = await new_user(http)
    key = {"Idempotency-Key": f"wait-{time.monotonic_ns()}"}
    first = await book(http, token, event["id"], ["seat_A2"], headers=key)
    assert first.status_code == 202
    done: dict[str, Any] = await wait_final(http, token, first.json()["bookingId"])
    again = await book(http, token, event["id"], ["seat_A2"], headers={**key, **wait(5)})
    assert again.status_code == 200 and again.json() == (await get(http, token, done["id"])).json()
