"""Money and seats (issue 12): cancellation as a resumable workflow, no sale once an event has
started, and an Idempotency-Key bound to its request. Against the running Serve app, real Ray,
Postgres and the fake Stripe API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import ray

from actors import factory, names
from domain.bookings import BookingStatus, FailureReason, request_fingerprint
from storage import booking_repository
from tests.conftest import STRIPE_LATENCY_SECONDS
from tests.fakes.stripe_api import FakeStripe
from tests.helpers import (
    assert_consistent,
    assert_error,
    auth,
    book,
    book_and_wait,
    create_event,
    kill_gateway_replica,
    new_user,
    wait_final,
    wait_healthy,
)
from tests.waiting import wait_until

# -- an event that has started is no longer on sale ---------------------------------------------


async def _start_event_now(db: asyncpg.Pool, event_id: str) -> None:
    """The event started a minute ago (the API refuses to create one in the past)."""
    await db.execute(
        "UPDATE events SET starts_at = now() - interval '1 minute', ends_at = now() + interval '3 hours' WHERE id = $1",
        event_id,
    )


async def test_a_booking_for_an_event_that_has_started_is_refused_before_any_lock_or_charge(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
) -> None:
    event = await create_event(http, admin_token, vip=2, general=0)
    upcoming = (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()
    assert upcoming["onSale"] is True
    await _start_event_now(db, event["id"])
    token, _ = await new_user(http)

    r = await book(http, token, event["id"], ["seat_A1"])
    keyed = await book(
        http, token, event["id"], ["seat_A2"], headers={"Idempotency-Key": f"late-{time.time_ns()}"}
    )

    assert_error(r, 409, "EVENT_NOT_ON_SALE")
    assert_error(keyed, 409, "EVENT_NOT_ON_SALE")
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE event_id = $1", event["id"]) == 0
    inventory = (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()
    assert inventory["onSale"] is False and inventory["summary"]["available"] == 2
    # The checks that answer first are unchanged: an unknown event is still 404.
    assert_error(await book(http, token, "evnt_missing", ["seat_A1"]), 404, "EVENT_NOT_FOUND")


async def test_the_saga_fails_a_booking_whose_event_started_while_it_waited(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
) -> None:
    event = await create_event(http, admin_token, vip=1, general=0)
    token, user = await new_user(http)
    await _start_event_now(db, event["id"])
    # Accepted just before the start (written as the insert writes it), driven just after it.
    booking_id = f"bkg_started{time.time_ns()}"
    await db.execute(
        "INSERT INTO bookings (id, user_id, event_id, seat_ids, status, saga_step, saga_slot, total_amount, currency,"
        " payment_token) VALUES ($1, $2, $3, ARRAY['seat_A1'], 'PENDING', 'STARTED', 0, 25000, 'GBP', 'pm_card_visa')",
        booking_id,
        user["id"],
        event["id"],
    )
    saga = ray.get_actor(names.saga_actor_name(0), namespace=names.NAMESPACE)

    outcome = await saga.run.remote(booking_id)

    assert (
        outcome.status is BookingStatus.FAILED
        and outcome.failure_reason is FailureReason.SEATS_UNAVAILABLE
    )
    final = await wait_final(http, token, booking_id)
    assert final["status"] == "FAILED" and final["failureReason"] == "SEATS_UNAVAILABLE"
    assert await db.fetchval("SELECT count(*) FROM payments WHERE booking_id = $1", booking_id) == 0
    assert (
        await db.fetchval("SELECT lock_expires_at FROM bookings WHERE id = $1", booking_id) is None
    )


# -- Idempotency-Key bound to its request --------------------------------------------------------


async def test_an_idempotency_key_with_another_body_is_refused_and_starts_nothing(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
) -> None:
    event = await create_event(http, admin_token, vip=4, general=0)
    other_event = await create_event(http, admin_token, vip=4, general=0)
    token, _ = await new_user(http)
    key = {"Idempotency-Key": f"body-{time.time_ns()}"}
    first = await book(http, token, event["id"], ["seat_A1", "seat_A2"], headers=key)
    assert first.status_code == 202

    # The same request (seats in another order are the same seats) answers with the same booking.
    same = await book(http, token, event["id"], ["seat_A2", "seat_A1"], headers=key)
    assert same.status_code == 202 and same.json() == first.json()
    # Anything that changes what is bought or who pays is another request.
    for other in (
        book(http, token, event["id"], ["seat_A1", "seat_A3"], headers=key),
        book(http, token, event["id"], ["seat_A1"], headers=key),
        book(http, token, other_event["id"], ["seat_A1", "seat_A2"], headers=key),
        book(
            http, token, event["id"], ["seat_A1", "seat_A2"], card="pm_card_mastercard", headers=key
        ),
    ):
        error = assert_error(await other, 409, "IDEMPOTENCY_KEY_REUSED")
        assert first.json()["bookingId"] in error["message"]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM bookings WHERE event_id = ANY($1::text[])",
            [event["id"], other_event["id"]],
        )
        == 1
    )
    # Keys are per user: another user's request with the same key is a booking of its own.
    other_token, _ = await new_user(http)
    theirs = await book(http, other_token, event["id"], ["seat_A3"], headers=key)
    assert theirs.status_code == 202 and theirs.json()["bookingId"] != first.json()["bookingId"]
    assert (await wait_final(http, token, first.json()["bookingId"]))["status"] == "CONFIRMED"
    assert (await wait_final(http, other_token, theirs.json()["bookingId"]))[
        "status"
    ] == "CONFIRMED"


def test_the_request_fingerprint_ignores_seat_order_only() -> None:
    base = {
        "event_id": "evnt_1",
        "seat_ids": ["seat_A1", "seat_A2"],
        "payment_type": "card",
        "payment_token": "tok_visa",
    }
    same = request_fingerprint(**{**base, "seat_ids": ["seat_A2", "seat_A1"]})  # type: ignore[arg-type]
    assert request_fingerprint(**base) == same  # type: ignore[arg-type]
    for change in (
        {"event_id": "evnt_2"},
        {"seat_ids": ["seat_A1"]},
        {"payment_token": "pm_card_visa"},
    ):
        assert request_fingerprint(**{**base, **change}) != same  # type: ignore[arg-type]


# -- cancellation: a persisted workflow -----------------------------------------------------------


async def _confirmed(
    http: httpx.AsyncClient, admin_token: str, seats: int = 2
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    event = await create_event(http, admin_token, vip=seats, general=0)
    token, _ = await new_user(http)
    b = await book_and_wait(http, token, event["id"], [f"seat_A{i}" for i in range(1, seats + 1)])
    assert b["status"] == "CONFIRMED"
    return token, b, event


async def _charge_id(http: httpx.AsyncClient, token: str, booking_id: str) -> str:
    return str(
        (await http.get(f"/api/payments/booking/{booking_id}", headers=auth(token))).json()[
            "providerTransactionId"
        ]
    )


def _refunds_of(stripe_api: FakeStripe, charge_id: str) -> list[dict[str, Any]]:
    return [r for r in stripe_api.refunds.values() if r["charge"] == charge_id]


async def _cancel(
    http: httpx.AsyncClient, token: str, booking_id: str, **kwargs: Any
) -> httpx.Response:
    return await http.post(
        f"/api/bookings/{booking_id}/cancel", json={}, headers=auth(token), **kwargs
    )


async def _wait_cancelled(
    http: httpx.AsyncClient,
    db: asyncpg.Pool,
    token: str,
    b: dict[str, Any],
    event: dict[str, Any],
    timeout: float = 60,
) -> None:
    """The cancellation ended well: CANCELLED, refunded, seats free everywhere, one notification."""
    await wait_until(
        lambda: db.fetchval(
            "SELECT step FROM booking_cancellations WHERE booking_id = $1", b["id"]
        ),
        until=lambda step: step == "DONE",
        timeout=timeout,
        what=f"booking {b['id']}'s cancellation to reach step DONE",
    )
    booking = (await http.get(f"/api/bookings/{b['id']}", headers=auth(token))).json()
    assert booking["status"] == "CANCELLED" and booking["cancelledAt"]
    payment = (await http.get(f"/api/payments/booking/{b['id']}", headers=auth(token))).json()
    assert payment["status"] == "REFUNDED"
    inventory = (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()
    assert inventory["summary"]["available"] == inventory["summary"]["total"], inventory["summary"]
    kinds = [
        r["type"]
        for r in await db.fetch("SELECT type FROM notifications WHERE booking_id = $1", b["id"])
    ]
    assert sorted(kinds) == ["BOOKING_CANCELLED", "BOOKING_CONFIRMED"]
    await assert_consistent(db, event["id"])


async def test_twenty_concurrent_cancels_of_one_booking_refund_once(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
    stripe_api: FakeStripe,
) -> None:
    token, b, event = await _confirmed(http, admin_token)
    charge = await _charge_id(http, token, b["id"])

    answers = await asyncio.gather(*(_cancel(http, token, b["id"]) for _ in range(20)))

    ok = [a for a in answers if a.status_code == 200]
    assert ok, [a.text for a in answers]
    # Every request that joined the running cancellation got the same cancelled booking; any that
    # came after it finished got the reference's answer for a booking that is not CONFIRMED.
    assert len({a.text for a in ok}) == 1 and ok[0].json()["status"] == "CANCELLED"
    for a in answers:
        if a.status_code != 200:
            assert_error(a, 422, "BOOKING_NOT_CANCELLABLE")
    assert len(_refunds_of(stripe_api, charge)) == 1
    await _wait_cancelled(http, db, token, b, event)
    assert len(_refunds_of(stripe_api, charge)) == 1


async def test_a_refund_that_fails_leaves_the_booking_confirmed_and_is_retried(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
    stripe_api: FakeStripe,
) -> None:
    token, b, event = await _confirmed(http, admin_token)
    charge = await _charge_id(http, token, b["id"])
    stripe_api.fail_next(500, times=None)  # the processor is down
    try:
        r = await _cancel(http, token, b["id"])
        assert_error(r, 503, "SERVICE_UNAVAILABLE")
        booking = (await http.get(f"/api/bookings/{b['id']}", headers=auth(token))).json()
        assert booking["status"] == "CONFIRMED"
        payment = (await http.get(f"/api/payments/booking/{b['id']}", headers=auth(token))).json()
        assert (
            payment["status"] == "SUCCESS"
        )  # CONFIRMED and charged: never a refunded CONFIRMED booking
        assert (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()["summary"][
            "reserved"
        ] == 2
    finally:
        stripe_api.recover()
        stripe_api.delay(STRIPE_LATENCY_SECONDS)
    # Nobody asks again: the saga actor's recovery sweep finishes it once the processor answers.
    await _wait_cancelled(http, db, token, b, event)
    assert len(_refunds_of(stripe_api, charge)) == 1


async def test_a_client_that_goes_away_mid_cancel_still_gets_a_whole_cancellation(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
    stripe_api: FakeStripe,
) -> None:
    token, b, event = await _confirmed(http, admin_token)
    charge = await _charge_id(http, token, b["id"])
    try:
        await _cancel(http, token, b["id"], timeout=STRIPE_LATENCY_SECONDS / 3)
    except httpx.TimeoutException:
        pass  # the client hung up while the refund was in flight
    await _wait_cancelled(http, db, token, b, event)
    assert len(_refunds_of(stripe_api, charge)) == 1
    assert_error(await _cancel(http, token, b["id"]), 422, "BOOKING_NOT_CANCELLABLE")


async def _wait_recorded(db: asyncpg.Pool | asyncpg.Connection, booking_id: str) -> None:
    await wait_until(
        lambda: db.fetchval(
            "SELECT count(*) FROM booking_cancellations WHERE booking_id = $1", booking_id
        ),
        until=lambda n: n > 0,
        timeout=20,
        interval=0.01,
        what=f"booking {booking_id}'s cancellation to be recorded",
    )


def _kill_saga_actor(slot: int) -> None:
    ray.kill(
        ray.get_actor(names.saga_actor_name(slot), namespace=names.NAMESPACE), no_restart=False
    )


async def test_the_saga_actor_killed_while_the_refund_is_in_flight(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
    stripe_api: FakeStripe,
) -> None:
    token, b, event = await _confirmed(http, admin_token)
    charge = await _charge_id(http, token, b["id"])
    slot = await db.fetchval("SELECT saga_slot FROM bookings WHERE id = $1", b["id"])
    refunds_asked = len(stripe_api.requests_to("/v1/refunds"))
    stripe_api.delay(2.0)  # the refund request sits at the processor
    try:
        cancel = asyncio.create_task(_cancel(http, token, b["id"]))
        await wait_until(
            lambda: len(stripe_api.requests_to("/v1/refunds")),
            until=lambda n: n > refunds_asked,
            timeout=20,
            interval=0.02,
            what=f"a refund request at the processor (had {refunds_asked})",
        )
        await asyncio.to_thread(_kill_saga_actor, slot)
    finally:
        stripe_api.delay(STRIPE_LATENCY_SECONDS)
    r = await cancel
    # The route waits out the actor's restart and joins the resumed cancellation (or, if that takes
    # longer than it waits, says it is recorded); either way it ends whole.
    assert r.status_code in (200, 503), r.text
    await _wait_cancelled(http, db, token, b, event)
    assert len(_refunds_of(stripe_api, charge)) == 1  # the replayed key did not refund twice


async def test_the_saga_actor_killed_between_the_refund_and_cancelled(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
    stripe_api: FakeStripe,
) -> None:
    token, b, event = await _confirmed(http, admin_token)
    charge = await _charge_id(http, token, b["id"])
    slot = await db.fetchval("SELECT saga_slot FROM bookings WHERE id = $1", b["id"])
    async with db.acquire() as conn:
        cancel = asyncio.create_task(_cancel(http, token, b["id"]))
        await _wait_recorded(conn, b["id"])
        # Hold the booking row: the refund goes through, the write of CANCELLED waits behind us.
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SELECT 1 FROM bookings WHERE id = $1 FOR UPDATE", b["id"])
            await wait_until(
                lambda: db.fetchval("SELECT status FROM payments WHERE booking_id = $1", b["id"]),
                until=lambda status: status == "REFUNDED",
                timeout=20,
                interval=0.02,
                what=f"booking {b['id']}'s payment to be REFUNDED",
            )
            # Refunded, not yet CANCELLED: the one state that must never be left as it is.
            assert (
                await db.fetchval("SELECT status FROM bookings WHERE id = $1", b["id"])
                == "CONFIRMED"
            )
            await asyncio.to_thread(_kill_saga_actor, slot)
            await asyncio.sleep(0.5)
        finally:
            await tx.rollback()
    r = await cancel
    assert r.status_code in (200, 503), r.text
    await _wait_cancelled(http, db, token, b, event)
    assert len(_refunds_of(stripe_api, charge)) == 1


async def test_a_cancellation_recorded_by_a_gateway_that_died_before_driving_it_is_finished_by_the_sweep(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
    stripe_api: FakeStripe,
) -> None:
    """The state a Gateway leaves when it dies right after writing the intent: nobody drives it."""
    token, b, event = await _confirmed(http, admin_token)
    charge = await _charge_id(http, token, b["id"])
    async with db.acquire() as conn:
        assert await booking_repository.request_cancellation(conn, b["id"])
        assert await booking_repository.request_cancellation(conn, b["id"])  # a repeat adds nothing
    booking = (await http.get(f"/api/bookings/{b['id']}", headers=auth(token))).json()
    assert booking["status"] == "CONFIRMED"  # the public status until the refund went through
    await _wait_cancelled(http, db, token, b, event)
    assert len(_refunds_of(stripe_api, charge)) == 1


async def test_a_cancellation_cut_off_before_the_seat_actor_release_is_finished_by_the_sweep(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
    stripe_api: FakeStripe,
) -> None:
    """The state a process leaves when it dies right after writing CANCELLED: Postgres has
    released the sale, the live seat actor still holds the seats as sold."""
    token, b, event = await _confirmed(http, admin_token)
    charge = await _charge_id(http, token, b["id"])
    assert (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()["summary"][
        "reserved"
    ] == 2
    gateway = ray.get_actor(names.PAYMENT_ACTOR, namespace=names.NAMESPACE)
    async with db.acquire() as conn:
        assert await booking_repository.request_cancellation(conn, b["id"])
        await gateway.refund.remote(payment_id=b["paymentId"], idempotency_key=f"{b['id']}:refund")
        assert await booking_repository.mark_cancelled(conn, b["id"]) is not None
    assert (
        await db.fetchval("SELECT step FROM booking_cancellations WHERE booking_id = $1", b["id"])
        == "RELEASING"
    )
    assert (
        factory.existing(names.seat_actor_name(event["id"])) is not None
    )  # the live copy that still says RESERVED
    await _wait_cancelled(http, db, token, b, event)
    assert len(_refunds_of(stripe_api, charge)) == 1


async def test_the_gateway_replica_killed_mid_cancel(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
    stripe_api: FakeStripe,
) -> None:
    """The issue's own case: the HTTP process dies between the refund and CANCELLED."""
    token, b, event = await _confirmed(http, admin_token)
    charge = await _charge_id(http, token, b["id"])
    stripe_api.delay(2.0)  # the refund is in flight when the replica goes
    try:
        cancel = asyncio.create_task(_cancel(http, token, b["id"]))
        await _wait_recorded(db, b["id"])
        await asyncio.to_thread(kill_gateway_replica)
        try:
            answer: httpx.Response | None = await cancel
        except httpx.TransportError:
            answer = None  # the connection closed without an answer
        assert answer is None or answer.status_code in (200, 503), answer.text
    finally:
        stripe_api.delay(STRIPE_LATENCY_SECONDS)
    await wait_healthy(http, timeout=90, what="the API to come back with a new Gateway replica")
    await _wait_cancelled(http, db, token, b, event)
    assert len(_refunds_of(stripe_api, charge)) == 1
