"""Bookings end to end: saga, payments, email, cancellation, concurrency and a crash."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import ray

from actors import names
from domain.bookings import BookingStatus, SagaStep, charge_key, saga_channel
from domain.payments import ChargeCard, PaymentProviderUnavailable
from domain.saga import Charge, SagaBooking
from storage import booking_repository
from tests.fakes.smtp_server import SmtpSink
from tests.fakes.stripe_api import FakeStripe
from tests.helpers import (
    assert_consistent,
    assert_error,
    auth,
    book,
    book_and_wait,
    create_event,
    new_user,
    wait_final,
)
from tests.waiting import wait_until


async def test_happy_path(http: httpx.AsyncClient, admin_token: str, smtp_sink: SmtpSink) -> None:
    event = await create_event(http, admin_token, vip=4, general=4)
    token, user = await new_user(http, "Happy Buyer")
    r = await book(http, token, event["id"], ["seat_A1", "seat_B1"])
    assert r.status_code == 202
    body = r.json()
    assert set(body) == {"bookingId", "status", "message"} and body["status"] == "PENDING"
    assert body["bookingId"].startswith("bkg_") and body["bookingId"] in body["message"]
    b = await wait_final(http, token, body["bookingId"])
    assert b["status"] == "CONFIRMED" and b["failureReason"] is None
    assert b["totalAmount"] == 25000 + 7500 and b["currency"] == "GBP"  # computed on the server
    assert b["userId"] == user["id"] and b["venueName"] == "Test Hall" and b["confirmedAt"]
    seats = {
        s["id"]: s["status"]
        for s in (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()["seats"]
    }
    assert seats["seat_A1"] == seats["seat_B1"] == "RESERVED"
    p = (await http.get(f"/api/payments/booking/{b['id']}", headers=auth(token))).json()
    assert p["status"] == "SUCCESS" and p["amount"] == 32500 and p["id"] == b["paymentId"]
    assert p["providerTransactionId"].startswith("ch_")
    assert (await http.get(f"/api/payments/{p['id']}", headers=auth(token))).json() == p
    mine = (await http.get("/api/bookings/my", headers=auth(token))).json()
    assert [x["id"] for x in mine["data"]] == [b["id"]] and mine["pagination"]["total"] == 1
    assert (
        await http.get("/api/bookings/my", params={"status": "FAILED"}, headers=auth(token))
    ).json()["data"] == []
    # The confirmation email reaches a real SMTP server.
    mail = await wait_until(
        lambda: next((m for m in smtp_sink.messages if user["email"] in m["To"]), None),
        timeout=15,
        what=f"the confirmation email to {user['email']}",
    )
    assert (
        mail["Subject"] == "Your booking is confirmed!"
        and "seat_A1" in mail.get_body(("plain",)).get_content()
    )
    notes = (await http.get("/api/notifications/recent", headers=auth(token))).json()["data"]
    assert notes[0]["type"] == "BOOKING_CONFIRMED" and notes[0]["bookingId"] == b["id"]


async def test_declined_card_frees_seats(
    http: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    for card in (
        "pm_card_chargeDeclined",
        "pm_card_chargeDeclinedInsufficientFunds",
        "pm_card_unknown",
    ):
        b = await book_and_wait(http, user_token, event["id"], ["seat_A1"], card=card)
        assert b["status"] == "FAILED" and b["failureReason"] == "PAYMENT_DECLINED"
        p = (await http.get(f"/api/payments/booking/{b['id']}", headers=auth(user_token))).json()
        assert p["status"] == "FAILED"
    inv = (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()
    assert inv["summary"]["available"] == 4


async def test_seat_already_sold(
    http: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    assert (await book_and_wait(http, user_token, event["id"], ["seat_A1"]))[
        "status"
    ] == "CONFIRMED"
    other, _ = await new_user(http)
    b = await book_and_wait(http, other, event["id"], ["seat_A1", "seat_A2"])
    assert b["status"] == "FAILED" and b["failureReason"] == "SEATS_UNAVAILABLE"
    assert_error(
        await http.get(f"/api/payments/booking/{b['id']}", headers=auth(other)),
        404,
        "PAYMENT_NOT_FOUND",
    )


async def test_booking_validation(
    http: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    event = await create_event(http, admin_token, vip=2, general=20)
    eid = event["id"]
    assert_error(await book(http, user_token, "evnt_missing", ["seat_A1"]), 404, "EVENT_NOT_FOUND")
    assert_error(await book(http, user_token, eid, []), 400, "INVALID_SEAT_COUNT")
    assert_error(
        await book(http, user_token, eid, [f"seat_B{i}" for i in range(1, 12)]),
        400,
        "INVALID_SEAT_COUNT",
    )
    assert_error(await book(http, user_token, eid, ["seat_A1", "seat_A1"]), 400, "VALIDATION_ERROR")
    assert_error(await book(http, user_token, eid, ["seat_Z99"]), 400, "VALIDATION_ERROR")
    assert_error(
        await book(http, user_token, eid, ["'; DROP TABLE seats;--"]), 400, "VALIDATION_ERROR"
    )
    r = await http.post(
        "/api/bookings", headers=auth(user_token), json={"eventId": eid, "seatIds": ["seat_A1"]}
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    r = await http.post(
        "/api/bookings",
        json={
            "eventId": eid,
            "seatIds": ["seat_A1"],
            "paymentMethod": {"type": "card", "token": "pm_card_visa"},
        },
    )
    assert_error(r, 401, "UNAUTHORIZED")


async def test_idempotent_retry(
    http: httpx.AsyncClient, admin_token: str, user_token: str, db: asyncpg.Pool
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    key = {"Idempotency-Key": f"retry-{time.time_ns()}"}
    first = await book(http, user_token, event["id"], ["seat_A2"], headers=key)
    second = await book(http, user_token, event["id"], ["seat_A2"], headers=key)
    assert first.status_code == second.status_code == 202 and first.json() == second.json()
    count = await db.fetchval("SELECT count(*) FROM bookings WHERE event_id = $1", event["id"])
    assert count == 1
    other, _ = await new_user(http)
    third = await book(http, other, event["id"], ["seat_A1"], headers=key)  # same key, another user
    assert third.json()["bookingId"] != first.json()["bookingId"]
    assert (await wait_final(http, user_token, first.json()["bookingId"]))["status"] == "CONFIRMED"


async def test_cancellation_refunds_and_frees_seats(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    token, _ = await new_user(http)
    b = await book_and_wait(http, token, event["id"], ["seat_A1", "seat_A2"])
    other, _ = await new_user(http)
    assert_error(
        await http.post(f"/api/bookings/{b['id']}/cancel", json={}, headers=auth(other)),
        404,
        "BOOKING_NOT_FOUND",
    )
    assert_error(
        await http.post(f"/api/bookings/{b['id']}/cancel", json={}, headers=auth(admin_token)),
        404,
        "BOOKING_NOT_FOUND",
    )
    r = await http.post(f"/api/bookings/{b['id']}/cancel", json={}, headers=auth(token))
    assert r.status_code == 200, r.text
    c = r.json()
    assert (
        c["bookingId"] == b["id"]
        and c["status"] == "CANCELLED"
        and c["refundAmount"] == 50000
        and c["currency"] == "GBP"
    )
    assert (await http.get(f"/api/payments/booking/{b['id']}", headers=auth(token))).json()[
        "status"
    ] == "REFUNDED"
    assert_error(
        await http.post(f"/api/bookings/{b['id']}/cancel", json={}, headers=auth(token)),
        422,
        "BOOKING_NOT_CANCELLABLE",
    )
    inv = (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()
    assert inv["summary"]["available"] == 4
    again = await book_and_wait(http, other, event["id"], ["seat_A1", "seat_A2"])
    assert again["status"] == "CONFIRMED"
    types = [
        r["type"]
        for r in await db.fetch(
            "SELECT type FROM notifications WHERE booking_id = $1 ORDER BY created_at", b["id"]
        )
    ]
    assert types == ["BOOKING_CONFIRMED", "BOOKING_CANCELLED"]


async def test_cancellation_window_and_failed_bookings(
    http: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    soon = await create_event(http, admin_token, vip=2, general=0, starts_in=timedelta(hours=23))
    b = await book_and_wait(http, user_token, soon["id"], ["seat_A1"])
    assert b["status"] == "CONFIRMED"
    assert_error(
        await http.post(f"/api/bookings/{b['id']}/cancel", json={}, headers=auth(user_token)),
        422,
        "CANCELLATION_WINDOW_EXPIRED",
    )
    failed = await book_and_wait(
        http, user_token, soon["id"], ["seat_A2"], card="pm_card_chargeDeclined"
    )
    assert_error(
        await http.post(f"/api/bookings/{failed['id']}/cancel", json={}, headers=auth(user_token)),
        422,
        "BOOKING_NOT_CANCELLABLE",
    )


async def test_booking_and_payment_authorisation(
    http: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    event = await create_event(http, admin_token, vip=1, general=1)
    b = await book_and_wait(http, user_token, event["id"], ["seat_A1"])
    other, _ = await new_user(http)
    pid = b["paymentId"]
    for path in (
        f"/api/bookings/{b['id']}",
        f"/api/payments/{pid}",
        f"/api/payments/booking/{b['id']}",
    ):
        assert_error(await http.get(path), 401, "UNAUTHORIZED")
        code = "BOOKING_NOT_FOUND" if path.startswith("/api/bookings") else "PAYMENT_NOT_FOUND"
        assert_error(await http.get(path, headers=auth(other)), 404, code)
        assert (await http.get(path, headers=auth(admin_token))).status_code == 200
        assert (await http.get(path, headers=auth(user_token))).status_code == 200
    assert_error(
        await http.get("/api/bookings/bkg_missing", headers=auth(user_token)),
        404,
        "BOOKING_NOT_FOUND",
    )
    assert_error(
        await http.get("/api/payments/pay_missing", headers=auth(user_token)),
        404,
        "PAYMENT_NOT_FOUND",
    )
    assert_error(await http.get("/api/bookings/my"), 401, "UNAUTHORIZED")
    assert_error(await http.get("/api/notifications/recent"), 401, "UNAUTHORIZED")
    health = await http.get("/api/notifications/health")
    assert health.status_code == 200 and health.json() == {
        "status": "ok",
        "ray": "connected",
        "postgres": "connected",
        "smtp": "reachable",
    }


async def test_forty_buyers_race_for_two_seats(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    event = await create_event(http, admin_token, vip=2, general=2)
    users = [await new_user(http) for _ in range(40)]
    responses = await asyncio.gather(
        *(book(http, t, event["id"], ["seat_A1", "seat_A2"]) for t, _ in users)
    )
    assert all(r.status_code == 202 for r in responses)
    finals = await asyncio.gather(
        *(
            wait_final(http, t, r.json()["bookingId"])
            for (t, _), r in zip(users, responses, strict=True)
        )
    )
    confirmed = [f for f in finals if f["status"] == "CONFIRMED"]
    assert len(confirmed) == 1
    assert all(f["failureReason"] == "SEATS_UNAVAILABLE" for f in finals if f["status"] == "FAILED")
    await assert_consistent(db, event["id"])
    kept = await db.fetchval(
        "SELECT count(*) FROM payments p JOIN bookings b ON b.id = p.booking_id WHERE b.event_id = $1 AND p.status = 'SUCCESS'",
        event["id"],
    )
    assert kept == 1  # exactly one successful charge not refunded


async def test_thirty_buyers_random_pairs(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    event = await create_event(http, admin_token, vip=0, general=50)
    seat_ids = [s["id"] for row in event["seatMap"]["rows"] for s in row["seats"]]
    rng = random.Random(7)
    users = [await new_user(http) for _ in range(30)]
    picks = [rng.sample(seat_ids, 2) for _ in users]
    responses = await asyncio.gather(
        *(book(http, t, event["id"], p) for (t, _), p in zip(users, picks, strict=True))
    )
    finals = await asyncio.gather(
        *(
            wait_final(http, t, r.json()["bookingId"])
            for (t, _), r in zip(users, responses, strict=True)
        )
    )
    await assert_consistent(db, event["id"])
    sold = await db.fetchval(
        "SELECT count(*) FROM seat_sales WHERE event_id = $1 AND released_at IS NULL", event["id"]
    )
    assert sold == 2 * sum(1 for f in finals if f["status"] == "CONFIRMED")
    inv = (await http.get(f"/api/inventory/events/{event['id']}/seats")).json()
    assert inv["summary"]["reserved"] == sold


async def test_saga_actor_killed_mid_charge(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    event = await create_event(http, admin_token, vip=4, general=0)
    token, _ = await new_user(http)
    r = await book(http, token, event["id"], ["seat_A3", "seat_A4"])
    booking_id = r.json()["bookingId"]
    await wait_until(
        lambda: db.fetchval("SELECT saga_step FROM bookings WHERE id = $1", booking_id),
        until=lambda step: step == "CHARGING",
        timeout=20,
        interval=0.02,
        what=f"booking {booking_id}'s saga to reach CHARGING",
    )
    slot = await db.fetchval("SELECT saga_slot FROM bookings WHERE id = $1", booking_id)
    ray.kill(
        ray.get_actor(names.saga_actor_name(slot), namespace=names.NAMESPACE), no_restart=False
    )
    final = await wait_final(http, token, booking_id, timeout=90)
    assert final["status"] in ("CONFIRMED", "FAILED")
    charges = await db.fetch("SELECT status FROM payments WHERE booking_id = $1", booking_id)
    assert len(charges) == 1  # one idempotency key, one payment row
    await assert_consistent(db, event["id"])


async def test_the_payment_actor_reports_a_charge_only_if_one_was_attempted(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
) -> None:
    event = await create_event(http, admin_token, vip=1, general=0)
    token, user = await new_user(http)
    b = await book_and_wait(http, token, event["id"], ["seat_A1"])
    assert b["status"] == "CONFIRMED"
    gateway = ray.get_actor(names.PAYMENT_ACTOR, namespace=names.NAMESPACE)
    args = {
        "booking_id": b["id"],
        "user_id": user["id"],
        "amount": b["totalAmount"],
        "currency": b["currency"],
        "token": "pm_card_visa",
    }

    made = await gateway.charge_if_attempted.remote(**args, idempotency_key=charge_key(b["id"]))
    never = await gateway.charge_if_attempted.remote(
        **args, idempotency_key=f"{b['id']}:never-charged"
    )

    assert made is not None and made.succeeded and made.payment_id == b["paymentId"]
    assert never is None
    assert await db.fetchval("SELECT count(*) FROM payments WHERE booking_id = $1", b["id"]) == 1


async def test_the_payment_actor_charges_a_batch_and_answers_each_charge_alone(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
    stripe_api: FakeStripe,
) -> None:
    event = await create_event(http, admin_token, vip=3, general=0)
    token, user = await new_user(http)
    paid = [await book_and_wait(http, token, event["id"], [f"seat_A{i}"]) for i in (1, 2, 3)]
    gateway = ray.get_actor(names.PAYMENT_ACTOR, namespace=names.NAMESPACE)

    def card(b: dict[str, Any], token: str = "pm_card_visa") -> ChargeCard:
        return ChargeCard(
            booking_id=b["id"],
            user_id=user["id"],
            amount=b["totalAmount"],
            currency=b["currency"],
            payment_token=token,
            idempotency_key=f"{b['id']}:batch-test",
        )

    # One decline among successes: each charge gets its own outcome, all recorded.
    declined, charged = await gateway.charge_many.remote(
        [card(paid[0], "pm_card_chargeDeclined"), card(paid[1])]
    )
    assert (
        not declined.succeeded and declined.decline_code == "generic_decline" and charged.succeeded
    )
    rows = {
        r["idempotency_key"]: r["status"]
        for r in await db.fetch(
            "SELECT idempotency_key, status FROM payments WHERE idempotency_key = ANY($1::text[])",
            [card(b).idempotency_key for b in paid[:2]],
        )
    }
    assert rows == {
        card(paid[0]).idempotency_key: "FAILED",
        card(paid[1]).idempotency_key: "SUCCESS",
    }

    # The processor down: the charge it cannot answer fails alone; one already recorded (paid[1])
    # is answered from Postgres; the failed one is left PROCESSING, to be replayed with its key.
    stripe_api.fail_next(500, times=None)
    try:
        recorded, unanswered = await gateway.charge_many.remote([card(paid[1]), card(paid[2])])
    finally:
        stripe_api.recover()
    assert recorded == charged
    assert isinstance(unanswered, PaymentProviderUnavailable)
    key = card(paid[2]).idempotency_key
    assert (
        await db.fetchval("SELECT status FROM payments WHERE idempotency_key = $1", key)
        == "PROCESSING"
    )
    (replayed,) = await gateway.charge_many.remote([card(paid[2])])
    assert isinstance(replayed, Charge) and replayed.succeeded
    assert (
        await db.fetchval("SELECT status FROM payments WHERE idempotency_key = $1", key)
        == "SUCCESS"
    )


async def test_the_booking_insert_announces_what_the_saga_needs_on_its_slot_channel(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
) -> None:
    from config.settings import get_settings

    event = await create_event(http, admin_token, vip=1, general=0)
    token, user = await new_user(http)
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def hear(_conn: Any, _pid: int, channel: str, payload: object) -> None:
        heard.put_nowait((channel, str(payload)))

    channels = [saga_channel(slot) for slot in range(get_settings().saga_pool_size)]
    async with db.acquire() as listener:
        for channel in channels:
            await listener.add_listener(channel, hear)
        try:
            r = await book(http, token, event["id"], ["seat_A1"])
            booking_id = r.json()["bookingId"]
            channel, payload = await asyncio.wait_for(heard.get(), timeout=10)
        finally:
            for channel_name in channels:
                await listener.remove_listener(channel_name, hear)
    row = await db.fetchrow(
        "SELECT b.saga_slot, b.total_amount, b.created_at, e.starts_at FROM bookings b JOIN events e ON e.id = b.event_id"
        " WHERE b.id = $1",
        booking_id,
    )
    assert channel == saga_channel(row["saga_slot"])
    assert booking_repository.announced(payload).booking == SagaBooking(
        id=booking_id,
        user_id=user["id"],
        event_id=event["id"],
        seat_ids=("seat_A1",),
        amount=row["total_amount"],
        currency="GBP",
        payment_token="pm_card_visa",
        status=BookingStatus.PENDING,
        step=SagaStep.STARTED,
        payment_id=None,
        lock_expires_at=None,
        created_at=row["created_at"],
        event_starts_at=row["starts_at"],
    )
    assert (await wait_final(http, token, booking_id))["status"] == "CONFIRMED"


async def test_a_booking_announced_while_its_saga_actor_was_not_listening_still_completes(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
) -> None:
    """Sagas start from the booking insert's announcement on Postgres; an announcement lost with the
    listening connection is made good once the actor listens again (or by its recovery sweep)."""
    listening = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'"
    before = {r["pid"] for r in await db.fetch(listening)}
    assert before, "no saga actor is listening for new bookings"
    event = await create_event(http, admin_token, vip=2, general=0)
    token, _ = await new_user(http)
    for pid in before:
        await db.execute("SELECT pg_terminate_backend($1)", pid)
    r = await book(http, token, event["id"], ["seat_A1", "seat_A2"])
    assert r.status_code == 202
    final = await wait_final(http, token, r.json()["bookingId"], timeout=30)
    assert final["status"] == "CONFIRMED"

    async def listeners() -> set[int]:
        return {r["pid"] for r in await db.fetch(listening)}

    await wait_until(
        listeners,
        until=lambda after: after and not after & before,
        timeout=15,
        what=f"a saga actor to LISTEN again on a new connection (terminated: {sorted(before)})",
    )
    await assert_consistent(db, event["id"])


async def test_structured_logs_carry_request_booking_and_event_ids(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    import json
    from pathlib import Path

    event = await create_event(http, admin_token, vip=1, general=0)
    token, _ = await new_user(http)
    r = await book(http, token, event["id"], ["seat_A1"], headers={"X-Request-Id": "trace-logs-1"})
    booking_id = r.json()["bookingId"]
    await wait_final(http, token, booking_id)
    # This session's own Ray logs: session_latest may be another Ray's on a shared machine.
    logs = Path("/tmp/ray") / ray.get_runtime_context().get_session_name() / "logs"
    # The request id joins them all: the route's line, the saga actor's, and the notifier's
    # (the notifier reads it with the notification; the saga got it with the booking's announcement).
    wanted = {"booking accepted": False, "saga finished": False, "notification sent": False}

    def look() -> dict[str, bool]:
        for path in logs.glob("worker-*"):
            for line in path.read_text(errors="replace").splitlines():
                if booking_id not in line or not line.startswith("{"):
                    continue
                record = json.loads(line)
                if record.get("message") == "booking accepted":
                    assert (
                        record["request_id"] == "trace-logs-1" and record["event_id"] == event["id"]
                    )
                    wanted["booking accepted"] = True
                if record.get("message") == "saga finished":
                    assert (
                        record["status"] == "CONFIRMED" and record["request_id"] == "trace-logs-1"
                    )
                    wanted["saga finished"] = True
                if record.get("message") == "notification sent":
                    assert (
                        record["request_id"] == "trace-logs-1"
                        and record["booking_id"] == booking_id
                    )
                    wanted["notification sent"] = True
        return dict(wanted)

    await wait_until(
        look,
        until=lambda seen: all(seen.values()),
        timeout=10,
        interval=0.5,
        what=f"the route's, the saga's and the notifier's log lines of booking {booking_id}",
    )


async def test_an_idempotency_key_older_than_24_hours_starts_a_new_booking(
    http: httpx.AsyncClient,
    admin_token: str,
    user_token: str,
    db: asyncpg.Pool,
) -> None:
    event = await create_event(http, admin_token, vip=2, general=0)
    key = {"Idempotency-Key": f"old-{time.time_ns()}"}
    first = (await book(http, user_token, event["id"], ["seat_A1"], headers=key)).json()[
        "bookingId"
    ]
    await wait_final(http, user_token, first)
    await db.execute(
        "UPDATE bookings SET created_at = now() - interval '25 hours' WHERE id = $1", first
    )
    again = await book(http, user_token, event["id"], ["seat_A2"], headers=key)
    assert again.status_code == 202 and again.json()["bookingId"] != first
    assert (await wait_final(http, user_token, again.json()["bookingId"]))["status"] == "CONFIRMED"
