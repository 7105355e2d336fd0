"""Rights and input (issue 12, items 4-7 and 10-13), through real HTTP against the running app:
admin bootstrap never takes an account over, rights follow the account, every /api route is
rate-limited per address, malformed input is 400 VALIDATION_ERROR (never 500 or another code),
recent notifications are the sent ones, unknown fields are ignored and CORS is opt-in."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.bootstrap import AdminEmailTaken
from cli import databases
from config.settings import get_settings
from supervision.ports import free_port
from tests.cli.serve_process import command_env, run_command
from tests.helpers import (
    ADMIN,
    CORS_ORIGIN,
    assert_error,
    auth,
    book_and_wait,
    create_event,
    create_venue,
    iso,
    login,
    new_user,
    wait_final,
)
from tests.waiting import wait_until

# -- 4. admin bootstrap --------------------------------------------------------------------------


def _run_cli(app_env: dict[str, str], state: Path, *argv: str, **extra: str) -> tuple[int, str]:
    """A real `ticketflow` process on the suite's database and Redis, with a state dir of its own.

    Never in this process: `serve` owns signals and stops every process it finds beneath it."""
    env = command_env(
        state,
        free_port(),
        "tf-rights",
        DATABASE_URL=app_env["DATABASE_URL"],
        REDIS_URL=app_env["REDIS_URL"],
        **extra,
    )
    done = run_command(env, *argv, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_bootstrap_never_promotes_an_account_it_did_not_create(
    server: str,
    app_env: dict[str, str],
    tmp_path: Path,
) -> None:
    email = f"squatter-{secrets.token_hex(5)}@example.com"
    with httpx.Client(base_url=server, timeout=30.0) as client:
        r = client.post(
            "/api/users/register",
            json={"name": "Squatter", "email": email, "password": "Squat1234X"},
        )
        assert r.status_code == 201, r.text
        user_id = r.json()["id"]

    # `serve` with that admin email refuses to start (prepare_database is its start-up step)...
    settings = get_settings().model_copy(update={"admin_email": email})
    with pytest.raises(AdminEmailTaken, match="not made an ADMIN"):
        asyncio.run(databases.prepare_database(settings, seed=False))
    # The command says so and stops before Ray or anything else starts (the database and Redis
    # are the suite's, so nothing embedded is started in the scratch state dir either).
    code, output = _run_cli(app_env, tmp_path, "serve", TICKETFLOW_ADMIN_EMAIL=email)
    assert code == 2 and "refusing to start" in output and email in output, output
    assert not (tmp_path / "postgres").exists() and "TicketFlow is serving" not in output, output
    # ...and `create-admin` does not take the account over either.
    code, output = _run_cli(
        app_env, tmp_path, "create-admin", "--email", email.upper(), "--password", "Other1234X"
    )
    assert code == 2 and "not made an ADMIN" in output and user_id in output, output

    async def role() -> str:
        conn = await asyncpg.connect(app_env["DATABASE_URL"])
        try:
            return str(await conn.fetchval("SELECT role FROM users WHERE id = $1", user_id))
        finally:
            await conn.close()

    assert asyncio.run(role()) == "USER"
    with httpx.Client(base_url=server, timeout=30.0) as client:
        token = client.post(
            "/api/users/login", json={"email": email, "password": "Squat1234X"}
        ).json()["token"]
        venue = {"name": "V", "address": "a", "city": "c", "country": "GB", "capacity": 5}
        assert_error(client.post("/api/venues", json=venue, headers=auth(token)), 403, "FORBIDDEN")
        assert (
            client.post(
                "/api/users/login", json={"email": email, "password": "Other1234X"}
            ).status_code
            == 401
        )


def test_create_admin_creates_once_and_never_resets_an_admins_password(
    server: str,
    app_env: dict[str, str],
    tmp_path: Path,
) -> None:
    email = f"second-admin-{secrets.token_hex(5)}@example.com"
    code, output = _run_cli(
        app_env, tmp_path, "create-admin", "--email", email, "--password", "First1234X"
    )
    assert code == 0 and f"admin {email} created" in output, output
    code, output = _run_cli(
        app_env, tmp_path, "create-admin", "--email", email, "--password", "Second1234X"
    )
    assert code == 0 and "already exists (password unchanged)" in output
    with httpx.Client(base_url=server, timeout=30.0) as client:
        assert (
            client.post(
                "/api/users/login", json={"email": email, "password": "First1234X"}
            ).status_code
            == 200
        )
        assert (
            client.post(
                "/api/users/login", json={"email": email, "password": "Second1234X"}
            ).status_code
            == 401
        )
    # The configured admin of the running server (an ADMIN it created) is left as it is too.
    assert (
        _run_cli(
            app_env, tmp_path, "create-admin", "--email", ADMIN[0], "--password", "Changed1234X"
        )[0]
        == 0
    )


# -- 5. rights follow the account ----------------------------------------------------------------


async def test_demoted_admin_loses_admin_routes_on_the_next_request(
    http: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    # The suite runs with TICKETFLOW_AUTH_USER_CACHE_SECONDS=0: every request reads the account.
    _, user = await new_user(http, name="Temporary Admin")
    await db.execute("UPDATE users SET role = 'ADMIN' WHERE id = $1", user["id"])
    token = await login(http, user["email"], "Passw0rdX")
    venue = {"name": "Demotion Hall", "address": "a", "city": "c", "country": "GB", "capacity": 5}
    assert (await http.post("/api/venues", json=venue, headers=auth(token))).status_code == 201

    await db.execute("UPDATE users SET role = 'USER' WHERE id = $1", user["id"])
    assert_error(await http.post("/api/venues", json=venue, headers=auth(token)), 403, "FORBIDDEN")
    start = datetime.now(UTC) + timedelta(days=5)
    event = {
        "name": "E",
        "venueId": "ven_x",
        "startsAt": iso(start),
        "endsAt": iso(start + timedelta(hours=1)),
        "ticketTiers": [{"tier": "VIP", "price": 100, "currency": "GBP", "capacity": 1}],
    }
    assert_error(await http.post("/api/events", json=event, headers=auth(token)), 403, "FORBIDDEN")
    # Still a valid user: the token works where no admin right is needed.
    assert (await http.get("/api/users/me", headers=auth(token))).status_code == 200


# -- 7. per-address limits on every /api route ---------------------------------------------------


async def _counted_addresses(redis_url: str) -> set[str]:
    import redis.asyncio as aioredis

    store = aioredis.from_url(redis_url)
    try:
        return {key.decode() async for key in store.scan_iter(match="tf:rl:ip:*")}
    finally:
        await store.aclose()


async def test_notification_routes_are_limited_per_address(
    http: httpx.AsyncClient, server: str, redis_url: str
) -> None:
    token, _ = await new_user(http)
    # 127.0.0.3 is this machine, but an address no other test uses.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
    async with httpx.AsyncClient(base_url=server, transport=transport, timeout=30.0) as client:
        assert (
            await client.get("/api/notifications/recent", headers=auth(token))
        ).status_code == 200
        assert (await client.get("/api/notifications/health")).status_code in (200, 503)
    assert any(key.startswith("tf:rl:ip:127.0.0.3:") for key in await _counted_addresses(redis_url))


async def test_forwarded_for_is_trusted_from_loopback_only(server: str, redis_url: str) -> None:
    """The documented trust boundary (README, "Rate limits"): a proxy on the server's own machine
    (127.0.0.1) names the client in X-Forwarded-For; any other sender's header is ignored."""
    named = f"198.51.100.{secrets.randbelow(200) + 20}"
    async with httpx.AsyncClient(base_url=server, timeout=30.0) as client:
        assert (
            await client.get("/api/events", headers={"X-Forwarded-For": named})
        ).status_code == 200
    assert any(key.startswith(f"tf:rl:ip:{named}:") for key in await _counted_addresses(redis_url))


# -- 10, 11. malformed input is 400 VALIDATION_ERROR -------------------------------------------


async def _post_raw(
    http: httpx.AsyncClient,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
) -> httpx.Response:
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    return await http.post(path, content=body, headers=sent)


async def test_every_unparseable_body_is_a_validation_error(http: httpx.AsyncClient) -> None:
    register = "/api/users/register"
    bodies: list[tuple[str, bytes, str | None]] = [
        ("bad JSON", b'{"name": "A", "email":', "application/json"),
        ("5 000 levels deep", b"[" * 5000 + b"]" * 5000, "application/json"),
        ("100 levels deep", b'{"name": ' + b"[" * 100 + b"]" * 100 + b"}", "application/json"),
        (
            "invalid UTF-8",
            b'{"name": "\xff\xfe", "email": "a@example.com", "password": "Passw0rdX"}',
            "application/json",
        ),
        (
            "a number too long to convert",
            b'{"name": "Ab", "email": "a@example.com", "password": ' + b"9" * 5000 + b"}",
            "application/json",
        ),
        (
            "a huge float",
            b'{"name": "Ab", "email": "a@example.com", "password": 1e999}',
            "application/json",
        ),
        (
            "wrong content type",
            b'{"name": "Ab", "email": "a@example.com", "password": "Passw0rdX"}',
            "text/plain",
        ),
        ("no content type", b"not json at all", None),
        ("empty body", b"", "application/json"),
        ("a JSON array", b"[]", "application/json"),
        ("JSON null", b"null", "application/json"),
    ]
    failures = []
    for label, body, content_type in bodies:
        r = await _post_raw(http, register, body, content_type=content_type)
        if r.status_code != 400 or r.json().get("error", {}).get("code") != "VALIDATION_ERROR":
            failures.append(f"{label}: {r.status_code} {r.text[:200]}")
        else:
            assert_error(r, 400, "VALIDATION_ERROR")
    assert not failures, "\n".join(failures)


# Escaped in the JSON text, as a client would send them: json.dumps of a str holding "\ud800"
# writes "\\ud800", which every JSON parser accepts.
NUL = "\\u0000"
SURROGATE = "\\ud800"


async def test_nul_bytes_and_lone_surrogates_in_bodies_are_400(
    http: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    venue = await create_venue(http, admin_token)
    event = await create_event(http, admin_token, venue_id=venue["id"], vip=1, general=1)
    start = datetime.now(UTC) + timedelta(days=10)
    cases: list[tuple[str, str, dict[str, str], str]] = []
    for bad in (NUL, SURROGATE):
        cases += [
            (
                "/api/users/register",
                "name",
                {},
                f'{{"name": "Ab{bad}c", "email": "x{secrets.token_hex(4)}@example.com", "password": "Passw0rdX"}}',
            ),
            (
                "/api/users/register",
                "email",
                {},
                f'{{"name": "Abc", "email": "x{bad}@example.com", "password": "Passw0rdX"}}',
            ),
            (
                "/api/users/register",
                "password",
                {},
                f'{{"name": "Abc", "email": "x{secrets.token_hex(4)}@example.com", "password": "Passw0rdX{bad}"}}',
            ),
            (
                "/api/users/login",
                "email",
                {},
                f'{{"email": "a{bad}@example.com", "password": "Passw0rdX"}}',
            ),
            (
                "/api/users/login",
                "password",
                {},
                f'{{"email": "a@example.com", "password": "Passw0rdX{bad}"}}',
            ),
            (
                "/api/users/register",
                "key",
                {},
                f'{{"name": "Abc", "email": "a@example.com", "password": "Passw0rdX", "x{bad}": 1}}',
            ),
            (
                "/api/venues",
                "name",
                auth(admin_token),
                f'{{"name": "Hall{bad}", "address": "a", "city": "c", "country": "GB", "capacity": 5}}',
            ),
            (
                "/api/events",
                "name",
                auth(admin_token),
                f'{{"name": "Show{bad}", "venueId": "{venue["id"]}", "startsAt": "{iso(start)}", '
                f'"endsAt": "{iso(start + timedelta(hours=1))}", "ticketTiers": [{{"tier": "VIP", "price": 100, "currency": "GBP", "capacity": 1}}]}}',
            ),
            (
                "/api/events",
                "venueId",
                auth(admin_token),
                f'{{"name": "Show", "venueId": "ven_{bad}", "startsAt": "{iso(start)}", '
                f'"endsAt": "{iso(start + timedelta(hours=1))}", "ticketTiers": [{{"tier": "VIP", "price": 100, "currency": "GBP", "capacity": 1}}]}}',
            ),
            (
                "/api/bookings",
                "eventId",
                auth(user_token),
                f'{{"eventId": "{event["id"]}{bad}", "seatIds": ["seat_A1"], "paymentMethod": {{"type": "card", "token": "pm_card_visa"}}}}',
            ),
        ]
    failures = []
    for path, field, headers, body in cases:
        r = await _post_raw(http, path, body.encode(), headers)
        if r.status_code != 400 or r.json()["error"]["code"] != "VALIDATION_ERROR":
            failures.append(f"{path} {field} {body[:60]!r}: {r.status_code} {r.text[:160]}")
    assert not failures, "\n".join(failures)
    r = await http.put(
        f"/api/events/{event['id']}",
        content=f'{{"description": "d{SURROGATE}"}}'.encode(),
        headers={**auth(admin_token), "Content-Type": "application/json"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")


async def test_out_of_range_query_values_and_nul_in_urls_are_400(http: httpx.AsyncClient) -> None:
    for params in (
        {"from": "99999-01-01"},
        {"from": "0000-01-01"},
        {"to": "0000-12-31T00:00:00Z"},
        {"from": "0001-01-01T00:00:00+14:00"},
        {"to": "9999-12-31T23:59:59-14:00"},
        {"from": "2025-13-45"},
        {"venueId": "\x00"},
        {"page": "0"},
        {"perPage": "101"},
    ):
        assert_error(await http.get("/api/events", params=params), 400, "VALIDATION_ERROR")
    for path in ("/api/events/evnt_%00", "/api/venues/%00", "/api/inventory/events/%00/seats"):
        assert_error(await http.get(path), 400, "VALIDATION_ERROR")
    # The widest times that do exist in UTC are fine.
    r = await http.get(
        "/api/events", params={"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"}
    )
    assert r.status_code == 200, r.text


async def test_names_with_zero_width_joiners_are_accepted(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    persian = "علی\u200cرضا"  # ZWNJ, as Persian writes it
    hindi = "क्\u200dष Sharma"  # ZWJ
    for name in (persian, hindi):
        token, user = await new_user(http, name=name)
        assert user["name"] == name
        assert (await http.get("/api/users/me", headers=auth(token))).json()["name"] == name
    venue = await create_venue(http, admin_token, name=f"تالار {persian}")
    assert venue["name"] == f"تالار {persian}"
    # Other invisible format characters stay refused.
    bad = {
        "name": "zero\u200bwidth",
        "email": f"z-{secrets.token_hex(4)}@example.com",
        "password": "Passw0rdX",
    }
    assert_error(await http.post("/api/users/register", json=bad), 400, "VALIDATION_ERROR")


# -- 12. recent notifications are the sent ones ------------------------------------------------


async def _sent_count(db: asyncpg.Pool, user_id: str, kind: str = "BOOKING_CONFIRMED") -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM notifications WHERE user_id = $1 AND type = $2 AND status = 'SENT'",
            user_id,
            kind,
        )
    )


async def test_recent_notifications_are_the_20_newest_sent(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    event = await create_event(http, admin_token, vip=0, general=30)
    seats = [s["id"] for row in event["seatMap"]["rows"] for s in row["seats"]][:21]
    token, user = await new_user(http)
    bookings = await asyncio.gather(
        *(book_and_wait(http, token, event["id"], [seat]) for seat in seats)
    )
    assert [b["status"] for b in bookings] == ["CONFIRMED"] * 21
    await wait_until(
        lambda: _sent_count(db, user["id"]),
        until=lambda sent: sent >= 21,
        timeout=60,
        interval=0.5,
        what="all 21 confirmations to be SENT",
    )
    # One still queued (retry far away) and one given up: neither was sent, neither is listed.
    queued, gave_up = f"notif_{secrets.token_hex(8)}", f"notif_{secrets.token_hex(8)}"
    await db.execute(
        "INSERT INTO notifications (id, user_id, booking_id, type, subject, recipient, status, next_attempt_at) "
        "VALUES ($1, $2, $3, 'BOOKING_FAILED', 'queued', 'x@example.com', 'PENDING', now() + interval '1 day'), "
        "       ($4, $2, $5, 'BOOKING_FAILED', 'gave up', 'x@example.com', 'FAILED', now())",
        queued,
        user["id"],
        bookings[0]["id"],
        gave_up,
        bookings[1]["id"],
    )

    r = await http.get("/api/notifications/recent", headers=auth(token))
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 20
    assert {n["type"] for n in data} == {"BOOKING_CONFIRMED"} and {n["status"] for n in data} == {
        "SENT"
    }
    sent_at = [n["sentAt"] for n in data]
    assert all(isinstance(t, str) and t.endswith("Z") for t in sent_at), sent_at
    assert sent_at == sorted(sent_at, reverse=True)  # newest first
    newest = await db.fetch(
        "SELECT id FROM notifications WHERE user_id = $1 AND status = 'SENT' ORDER BY sent_at DESC, id DESC LIMIT 20",
        user["id"],
    )
    assert [n["id"] for n in data] == [row["id"] for row in newest]


async def test_a_cancellation_notice_is_listed_with_its_sent_time_within_seconds(
    http: httpx.AsyncClient,
    admin_token: str,
) -> None:
    event = await create_event(http, admin_token, vip=1, general=0)
    token, _ = await new_user(http)
    booking = await book_and_wait(http, token, event["id"], ["seat_A1"])
    r = await http.post(f"/api/bookings/{booking['id']}/cancel", json={}, headers=auth(token))
    assert r.status_code == 200, r.text

    async def recent() -> list[dict[str, Any]]:
        return list(
            (await http.get("/api/notifications/recent", headers=auth(token))).json()["data"]
        )

    listed = await wait_until(
        recent,
        until=lambda notes: any(n["type"] == "BOOKING_CANCELLED" for n in notes),
        timeout=10,
        what="the BOOKING_CANCELLED notice in the recent notifications",
    )
    notice = next(n for n in listed if n["type"] == "BOOKING_CANCELLED")
    assert notice["bookingId"] == booking["id"] and notice["sentAt"]
    sent = datetime.fromisoformat(notice["sentAt"].replace("Z", "+00:00"))
    assert abs((sent - datetime.now(UTC)).total_seconds()) < 15


# -- 13. unknown fields and CORS ---------------------------------------------------------------


async def test_unknown_fields_are_ignored_and_never_set_price_status_or_owner(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
) -> None:
    email = f"extra-{secrets.token_hex(5)}@example.com"
    r = await http.post(
        "/api/users/register",
        json={
            "name": "Extra",
            "email": email,
            "password": "Passw0rdX",
            "role": "ADMIN",
            "id": "usr_mine",
            "referrer": "ad",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "USER" and r.json()["id"] != "usr_mine"
    token = await login(http, email, "Passw0rdX")
    _, victim = await new_user(http)
    event = await create_event(http, admin_token, vip=2, general=0)  # VIP: 25000 GBP minor units
    r = await http.post(
        "/api/bookings",
        headers=auth(token),
        json={
            "eventId": event["id"],
            "seatIds": ["seat_A1"],
            "paymentMethod": {"type": "card", "token": "pm_card_visa", "brand": "x"},
            "eventName": "Free Show",
            "totalAmount": 1,
            "currency": "XXX",
            "status": "CONFIRMED",
            "userId": victim["id"],
            "price": 1,
            "seats": [{"id": "seat_A1", "price": 1}],
        },
    )
    assert r.status_code == 202, r.text
    booking_id = r.json()["bookingId"]
    body = await wait_final(http, token, booking_id)
    assert (
        body["status"] == "CONFIRMED" and body["totalAmount"] == 25000 and body["currency"] == "GBP"
    )
    assert body["eventName"] == event["name"] and body["userId"] != victim["id"]
    charged = await db.fetchrow(
        "SELECT amount, currency, user_id FROM payments WHERE booking_id = $1", booking_id
    )
    assert (charged["amount"], charged["currency"]) == (25000, "GBP") and charged[
        "user_id"
    ] == body["userId"]
    venue = {
        "name": "Extra Hall",
        "address": "a",
        "city": "c",
        "country": "GB",
        "capacity": 5,
        "id": "ven_mine",
        "rating": 5,
    }
    r = await http.post("/api/venues", json=venue, headers=auth(admin_token))
    assert r.status_code == 201 and r.json()["id"] != "ven_mine"


async def test_cors_only_for_the_configured_origins(http: httpx.AsyncClient) -> None:
    preflight = {
        "Origin": CORS_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    r = await http.options("/api/bookings", headers=preflight)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == CORS_ORIGIN
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= allowed
    assert "POST" in r.headers["access-control-allow-methods"] and r.headers[
        "x-request-id"
    ].startswith("req_")

    r = await http.get("/api/events", headers={"Origin": CORS_ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    error = await http.get("/api/users/me", headers={"Origin": CORS_ORIGIN})
    assert_error(error, 401, "UNAUTHORIZED")
    assert (
        error.headers["access-control-allow-origin"] == CORS_ORIGIN
    )  # a browser app can read errors too

    other = "https://evil.example.test"
    r = await http.get("/api/events", headers={"Origin": other})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = await http.options("/api/bookings", headers={**preflight, "Origin": other})
    assert "access-control-allow-origin" not in r.headers
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
