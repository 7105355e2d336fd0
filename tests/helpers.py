"""Thin API client helpers for the end-to-end tests."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tests.waiting import WaitedTooLong, wait_until

ADMIN = ("admin@ticketflow.test", "Admin1234!")
CORS_ORIGIN = "https://app.example.test"
FINAL = {"CONFIRMED", "FAILED", "CANCELLED"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(http: httpx.AsyncClient, email: str, password: str) -> str:
    r = await http.post("/api/users/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


async def new_user(http: httpx.AsyncClient, name: str = "Buyer") -> tuple[str, dict[str, Any]]:
    email = f"user-{secrets.token_hex(6)}@example.com"
    r = await http.post(
        "/api/users/register", json={"name": name, "email": email, "password": "Passw0rdX"}
    )
    assert r.status_code == 201, r.text
    return await login(http, email, "Passw0rdX"), r.json()


async def create_venue(
    http: httpx.AsyncClient, admin: str, *, capacity: int = 5000, name: str = "Test Hall"
) -> dict[str, Any]:
    r = await http.post(
        "/api/venues",
        headers=auth(admin),
        json={
            "name": name,
            "address": "1 Test Street",
            "city": "London",
            "country": "GB",
            "capacity": capacity,
        },
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def create_event(
    http: httpx.AsyncClient,
    admin: str,
    *,
    venue_id: str | None = None,
    vip: int = 10,
    general: int = 40,
    starts_in: timedelta = timedelta(days=30),
    name: str = "Test Show",
    **extra: Any,
) -> dict[str, Any]:
    """Creates an event (as admin) and returns its detail; `extra` joins the request body
    (`salesStartAt`, `waitingRoom`, ...)."""
    if venue_id is None:
        venue_id = (await create_venue(http, admin))["id"]
    starts = datetime.now(UTC) + starts_in
    tiers = []
    if vip:
        tiers.append({"tier": "VIP", "price": 25000, "currency": "GBP", "capacity": vip})
    if general:
        tiers.append({"tier": "GENERAL", "price": 7500, "currency": "GBP", "capacity": general})
    r = await http.post(
        "/api/events",
        headers=auth(admin),
        json={
            "name": name,
            "description": "A test event",
            "venueId": venue_id,
            "startsAt": iso(starts),
            "endsAt": iso(starts + timedelta(hours=3)),
            "ticketTiers": tiers,
            **extra,
        },
    )
    assert r.status_code == 201, r.text
    detail = await http.get(f"/api/events/{r.json()['id']}")
    assert detail.status_code == 200, detail.text
    return dict(detail.json())


async def book(
    http: httpx.AsyncClient,
    token: str,
    event_id: str,
    seat_ids: list[str],
    card: str = "pm_card_visa",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await http.post(
        "/api/bookings",
        headers={**auth(token), **(headers or {})},
        json={
            "eventId": event_id,
            "seatIds": seat_ids,
            "paymentMethod": {"type": "card", "token": card},
        },
    )


async def get_booking(http: httpx.AsyncClient, token: str, booking_id: str) -> dict[str, Any]:
    r = await http.get(f"/api/bookings/{booking_id}", headers=auth(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def wait_final(
    http: httpx.AsyncClient, token: str, booking_id: str, timeout: float = 60.0
) -> dict[str, Any]:
    return await wait_until(
        lambda: get_booking(http, token, booking_id),
        until=lambda b: b["status"] in FINAL,
        timeout=timeout,
        what=f"booking {booking_id} to be {'/'.join(sorted(FINAL))}",
    )


async def book_and_wait(
    http: httpx.AsyncClient,
    token: str,
    event_id: str,
    seat_ids: list[str],
    card: str = "pm_card_visa",
) -> dict[str, Any]:
    r = await book(http, token, event_id, seat_ids, card)
    assert r.status_code == 202, r.text
    return await wait_final(http, token, r.json()["bookingId"])


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert body["error"]["requestId"] == r.headers["x-request-id"]
    return dict(body["error"])


async def consistency_problems(
    db: asyncpg.Pool, event_id: str | None = None, *, pending_older_than: float = 60.0
) -> list[str]:
    """What breaks the promises, over one event or the whole database (empty when all is well)."""
    problems = []
    scope = "($1::text IS NULL OR b.event_id = $1)"
    doubles = await db.fetch(
        f"SELECT b.event_id, s AS seat, count(*) AS n FROM bookings b, unnest(b.seat_ids) s "
        f"WHERE b.status = 'CONFIRMED' AND {scope} GROUP BY 1, 2 HAVING count(*) > 1",
        event_id,
    )
    problems += [
        f"seat {r['seat']} of {r['event_id']} is in {r['n']} CONFIRMED bookings" for r in doubles
    ]
    mismatch = await db.fetch(
        f"SELECT b.id FROM bookings b LEFT JOIN seat_sales ss ON ss.booking_id = b.id AND ss.released_at IS NULL "
        f"WHERE {scope} GROUP BY b.id, b.status, b.seat_ids "
        f"HAVING (b.status = 'CONFIRMED') <> (count(ss.seat_id) = cardinality(b.seat_ids) AND cardinality(b.seat_ids) > 0) "
        f"    OR (b.status <> 'CONFIRMED' AND count(ss.seat_id) > 0)",
        event_id,
    )
    problems += [f"booking {r['id']}: RESERVED seats disagree with its status" for r in mismatch]
    kept = await db.fetch(
        f"SELECT p.id, b.id AS booking, b.status FROM payments p JOIN bookings b ON b.id = p.booking_id "
        f"WHERE p.status = 'SUCCESS' AND b.status <> 'CONFIRMED' AND {scope}",
        event_id,
    )
    problems += [f"payment {r['id']} kept for {r['status']} booking {r['booking']}" for r in kept]
    # A cancellation half done: refunded, yet the booking still CONFIRMED (its seats still sold).
    refunded = await db.fetch(
        f"SELECT p.id, b.id AS booking FROM payments p JOIN bookings b ON b.id = p.booking_id "
        f"WHERE p.status = 'REFUNDED' AND b.status = 'CONFIRMED' AND {scope}",
        event_id,
    )
    problems += [
        f"payment {r['id']} refunded for CONFIRMED booking {r['booking']}" for r in refunded
    ]
    stuck = await db.fetch(
        f"SELECT b.id FROM bookings b WHERE b.status = 'PENDING' AND {scope} "
        f"AND b.created_at < now() - make_interval(secs => $2)",
        event_id,
        pending_older_than,
    )
    problems += [f"booking {r['id']} stuck PENDING" for r in stuck]
    return problems


async def settled_problems(
    db: asyncpg.Pool, event_id: str | None = None, *, settle_seconds: float = 20.0
) -> list[str]:
    """Waits up to settle_seconds for reconciliation; returns the problems seen last (none: settled).

    A booking still PENDING when the time is up counts as a problem too.
    """

    async def look() -> list[str]:
        pending = await db.fetchval(
            "SELECT count(*) FROM bookings WHERE status = 'PENDING' AND ($1::text IS NULL OR event_id = $1)",
            event_id,
        )
        return await consistency_problems(db, event_id) + [
            f"{pending} bookings still PENDING"
        ] * bool(pending)

    try:
        return await wait_until(
            look,
            until=lambda problems: not problems,
            timeout=settle_seconds,
            interval=0.5,
            what="reconciliation to leave no problem and no PENDING booking",
        )
    except WaitedTooLong as timed_out:
        return list(timed_out.last)


async def assert_consistent(
    db: asyncpg.Pool, event_id: str | None = None, *, settle_seconds: float = 20.0
) -> None:
    """Waits up to settle_seconds for reconciliation, then requires no problem at all."""
    problems = await settled_problems(db, event_id, settle_seconds=settle_seconds)
    assert not problems, problems


async def wait_healthy(
    http: httpx.AsyncClient, *, timeout: float, what: str = "the API to answer /health with 200"
) -> None:
    """Waits for /health to answer 200; a closed connection meanwhile means "not yet"."""

    async def health() -> int:
        return (await http.get("/health")).status_code

    await wait_until(
        health,
        until=lambda status: status == 200,
        timeout=timeout,
        interval=0.25,
        what=what,
        ignoring=(httpx.TransportError,),
    )


def kill_gateway_replica(deployment: str = "Gateway") -> str:
    """Kills a replica process of `deployment` (the Gateway by default); Serve's controller starts
    a new one."""
    import ray

    for entry in ray.util.list_named_actors(all_namespaces=True):
        if (
            entry["namespace"] == "serve"
            and entry["name"].startswith("SERVE_REPLICA::")
            and f"#{deployment}#" in entry["name"]
        ):
            ray.kill(ray.get_actor(entry["name"], namespace="serve"), no_restart=True)
            return str(entry["name"])
    raise AssertionError(f"no {deployment} replica to kill")


async def create_room_event(
    http: httpx.AsyncClient, admin: str, *, rate: int | str, opens_in: float, seats: int = 4
) -> dict[str, Any]:
    """An event of `seats` VIP seats with a waiting room at `rate` (a minute, or "auto"), whose sale
    opens `opens_in` seconds from now (negative: it opened that long ago)."""
    return await create_event(
        http,
        admin,
        vip=seats,
        general=0,
        salesStartAt=iso(datetime.now(UTC) + timedelta(seconds=opens_in)),
        waitingRoom={"enabled": True, "admitPerMinute": rate},
    )
