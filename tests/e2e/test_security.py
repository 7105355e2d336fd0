"""Security: rate limits, the authorisation matrix, tokens of deleted users, input bounds."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from tests.helpers import (
    assert_error,
    auth,
    book_and_wait,
    create_event,
    create_venue,
    iso,
    login,
    new_user,
)


async def test_login_is_rate_limited_per_account(http: httpx.AsyncClient) -> None:
    _, user = await new_user(http)  # one login already spent by new_user
    statuses = []
    for _ in range(6):
        r = await http.post(
            "/api/users/login", json={"email": user["email"], "password": "Wrong1234"}
        )
        statuses.append(r.status_code)
    assert statuses == [401, 401, 401, 401, 429, 429]
    r = await http.post("/api/users/login", json={"email": user["email"], "password": "Passw0rdX"})
    error = assert_error(r, 429, "RATE_LIMITED")
    assert 1 <= int(r.headers["retry-after"]) <= 61 and "limit" in error["message"]
    # Another account from the same address is not affected.
    other_token, other = await new_user(http)
    assert (
        await http.post("/api/users/login", json={"email": other["email"], "password": "Passw0rdX"})
    ).status_code == 200


async def test_deleted_users_token_is_401(http: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    token, user = await new_user(http)
    assert (await http.get("/api/bookings/my", headers=auth(token))).status_code == 200
    await db.execute("DELETE FROM users WHERE id = $1", user["id"])
    for path in ("/api/users/me", "/api/bookings/my", "/api/notifications/recent"):
        assert_error(await http.get(path, headers=auth(token)), 401, "UNAUTHORIZED")


async def test_authorisation_matrix(http: httpx.AsyncClient, admin_token: str) -> None:
    owner, _ = await new_user(http)
    other, _ = await new_user(http)
    event = await create_event(http, admin_token, vip=4, general=4)
    venue_id = event["venue"]["id"]
    booking = await book_and_wait(http, owner, event["id"], ["seat_A1"])
    assert booking["status"] == "CONFIRMED"
    start = datetime.now(UTC) + timedelta(days=9)
    new_event = {
        "name": "M",
        "venueId": venue_id,
        "startsAt": iso(start),
        "endsAt": iso(start + timedelta(hours=1)),
        "ticketTiers": [{"tier": "VIP", "price": 100, "currency": "GBP", "capacity": 1}],
    }
    new_venue = {"name": "V", "address": "a", "city": "c", "country": "FR", "capacity": 5}

    def booking_body() -> dict[str, object]:
        return {
            "eventId": event["id"],
            "seatIds": [f"seat_B{secrets.randbelow(4) + 1}"],
            "paymentMethod": {"type": "card", "token": "pm_card_chargeDeclined"},
        }

    def register_body() -> dict[str, object]:
        return {
            "name": "Matrix",
            "email": f"m-{secrets.token_hex(5)}@example.com",
            "password": "Passw0rdX",
        }

    callers = {
        "anonymous": {},
        "user": auth(owner),
        "other": auth(other),
        "admin": auth(admin_token),
    }
    # route -> expected status for (anonymous, owner, other user, admin)
    matrix: list[tuple[str, str, object, tuple[int, int, int, int]]] = [
        ("GET", "/health", None, (200, 200, 200, 200)),
        ("POST", "/api/users/register", register_body, (201, 201, 201, 201)),
        ("GET", "/api/users/me", None, (401, 200, 200, 200)),
        ("GET", "/api/events", None, (200, 200, 200, 200)),
        ("GET", f"/api/events/{event['id']}", None, (200, 200, 200, 200)),
        ("POST", "/api/events", new_event, (401, 403, 403, 201)),
        ("PUT", f"/api/events/{event['id']}", {"description": "changed"}, (401, 403, 403, 200)),
        ("POST", "/api/venues", new_venue, (401, 403, 403, 201)),
        ("GET", f"/api/venues/{venue_id}", None, (200, 200, 200, 200)),
        ("GET", f"/api/inventory/events/{event['id']}/seats", None, (200, 200, 200, 200)),
        ("POST", "/api/bookings", booking_body, (401, 202, 202, 202)),
        ("GET", "/api/bookings/my", None, (401, 200, 200, 200)),
        ("GET", f"/api/bookings/{booking['id']}", None, (401, 200, 404, 200)),
        ("GET", f"/api/payments/{booking['paymentId']}", None, (401, 200, 404, 200)),
        ("GET", f"/api/payments/booking/{booking['id']}", None, (401, 200, 404, 200)),
        ("GET", "/api/notifications/recent", None, (401, 200, 200, 200)),
        ("GET", "/api/notifications/health", None, (200, 200, 200, 200)),
        # the owner's cancel last: it changes the booking
        ("POST", f"/api/bookings/{booking['id']}/cancel", {}, (401, 200, 404, 404)),
    ]
    order = ["anonymous", "other", "admin", "user"]
    failures = []
    for method, path, body, expected in matrix:
        for who in order:
            want = expected[["anonymous", "user", "other", "admin"].index(who)]
            payload = body() if callable(body) else body
            r = await http.request(method, path, json=payload, headers=callers[who])
            if r.status_code != want:
                failures.append(
                    f"{method} {path} as {who}: {r.status_code} (wanted {want}) {r.text[:120]}"
                )
    assert not failures, "\n".join(failures)


async def test_input_bounds_are_400_never_500(
    http: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    big = {"name": "x" * 70_000, "email": "a@example.com", "password": "Passw0rdX"}
    assert_error(await http.post("/api/users/register", json=big), 413, "PAYLOAD_TOO_LARGE")

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    r = await http.post(
        "/api/users/login", content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    venue = {"name": "V", "address": "a", "city": "c", "country": "GB", "capacity": 10}
    for bad in (
        {**venue, "name": "y" * 201},
        {**venue, "capacity": 10**12},
        {**venue, "capacity": "ten"},
        {**venue, "name": "tab\tname"},
        {**venue, "name": "zero\u200bwidth"},
        {**venue, "city": None},
    ):
        assert_error(
            await http.post("/api/venues", json=bad, headers=auth(admin_token)),
            400,
            "VALIDATION_ERROR",
        )
    event = await create_event(http, admin_token, vip=1, general=1)
    r = await http.post(
        "/api/bookings",
        headers=auth(user_token),
        json={
            "eventId": event["id"],
            "seatIds": ["seat_A1"] * 1000,
            "paymentMethod": {"type": "card", "token": "pm_card_visa"},
        },
    )
    assert_error(r, 400, "INVALID_SEAT_COUNT")
    r = await http.post(
        "/api/bookings",
        headers=auth(user_token),
        json={
            "eventId": event["id"],
            "seatIds": ["seat_A1"],
            "paymentMethod": {"type": "card", "token": "pm_card_visa'; --"},
        },
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    assert_error(await http.get("/api/events", params={"page": 10**30}), 400, "VALIDATION_ERROR")
    assert_error(await http.get("/api/events/' OR 1=1 --"), 404, "EVENT_NOT_FOUND")
    assert_error(
        await http.get("/api/bookings/my", params={"status": "DROP"}, headers=auth(user_token)),
        400,
        "VALIDATION_ERROR",
    )
    r = await http.post(
        "/api/bookings",
        headers={**auth(user_token), "Idempotency-Key": "bad key with spaces"},
        json={
            "eventId": event["id"],
            "seatIds": ["seat_A1"],
            "paymentMethod": {"type": "card", "token": "pm_card_visa"},
        },
    )
    assert_error(r, 400, "VALIDATION_ERROR")


async def test_unicode_and_sql_text_round_trip(http: httpx.AsyncClient, admin_token: str) -> None:
    name = 'Zoë\'s "Ångström" Hall 🎫; DROP TABLE venues;--'
    venue = await create_venue(http, admin_token, name=name)
    got = (await http.get(f"/api/venues/{venue['id']}")).json()
    assert got["name"] == name
    token, user = await new_user(http, name="Zoë Ångström-O'Brien")
    assert (await http.get("/api/users/me", headers=auth(token))).json()[
        "name"
    ] == "Zoë Ångström-O'Brien"


async def test_passwords_never_returned_and_headers_set(http: httpx.AsyncClient) -> None:
    email = f"p-{secrets.token_hex(5)}@example.com"
    r = await http.post(
        "/api/users/register", json={"name": "Pat", "email": email, "password": "Sup3rSecretX"}
    )
    assert "Sup3rSecretX" not in r.text and "password" not in r.text and "argon2" not in r.text
    token = await login(http, email, "Sup3rSecretX")
    me = await http.get("/api/users/me", headers=auth(token))
    assert "argon2" not in me.text
    for header, value in (
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ):
        assert me.headers[header] == value


async def test_passwords_and_tokens_never_reach_the_logs(http: httpx.AsyncClient) -> None:
    from pathlib import Path

    password = f"Pw{secrets.token_hex(8)}X9"
    email = f"log-{secrets.token_hex(5)}@example.com"
    assert (
        await http.post(
            "/api/users/register", json={"name": "Logan", "email": email, "password": password}
        )
    ).status_code == 201
    await http.post("/api/users/login", json={"email": email, "password": password + "wrong"})
    token = await login(http, email, password)
    await http.get("/api/users/me", headers=auth(token))
    await http.get("/api/users/me", headers=auth(token + "tampered"))
    # Everything the session's Ray processes (gateway, actors, Serve) wrote: INFO and up, JSON.
    # This session's own directory: /tmp/ray/session_latest may be another Ray's on this machine.
    import ray

    logs = Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    for path in logs.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            text = path.read_text(errors="replace")
            assert password not in text, f"password logged in {path}"
            assert token.split(".")[2] not in text, f"token logged in {path}"


async def test_per_ip_limits_count_the_clients_real_address_not_a_forged_header(
    server: str, redis_url: str
) -> None:
    """Through Serve's proxy and behind fast ingress alike (`./dev test` runs both): a client that
    claims another address in X-Forwarded-For is still counted under the address it connects from."""
    import redis.asyncio as aioredis

    forged = f"203.0.113.{secrets.randbelow(200) + 20}"
    # 127.0.0.2 is this machine too, but not a trusted proxy as 127.0.0.1 is.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=server, transport=transport, timeout=30.0) as client:
        r = await client.get("/api/events", headers={"X-Forwarded-For": forged})
    assert r.status_code == 200
    store = aioredis.from_url(redis_url)
    try:
        counted = {key.decode() async for key in store.scan_iter(match="tf:rl:ip:*")}
    finally:
        await store.aclose()
    assert any(key.startswith("tf:rl:ip:127.0.0.2:") for key in counted), counted
    assert not any(forged in key for key in counted), counted
