"""Thin API client helpers for the end-to-end tests."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

ADMIN = ("admin@ticketflow.test", "Admin1234!")
FINAL = {"CONFIRMED", "FAILED", "CANCELLED"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(http: httpx.AsyncClient, email: str, password: str) -> str:
    r = await http.post("/api/users/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


async def new_user(http: httpx.AsyncClient, name: str = "Buyer") -> tuple[str, dict[str, Any]]:
    email = f"user-{secrets.token_hex(6)}@example.com"
    r = await http.post("/api/users/register", json={"name": name, "email": email, "password": "Passw0rdX"})
    assert r.status_code == 201, r.text
    return await login(http, email, "Passw0rdX"), r.json()


async def create_venue(http: httpx.AsyncClient, admin: str, *, capacity: int = 5000, name: str = "Test Hall") -> dict[str, Any]:
    r = await http.post("/api/venues", headers=auth(admin), json={
        "name": name, "address": "1 Test Street", "city": "London", "country": "GB", "capacity": capacity,
    })
    assert r.status_code == 201, r.text
    return dict(r.json())


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def create_event(
    http: httpx.AsyncClient, admin: str, *, venue_id: str | None = None, vip: int = 10, general: int = 40,
    starts_in: timedelta = timedelta(days=30), name: str = "Test Show",
) -> dict[str, Any]:
    if venue_id is None:
        venue_id = (await create_venue(http, admin))["id"]
    starts = datetime.now(UTC) + starts_in
    tiers = []
    if vip:
        tiers.append({"tier": "VIP", "price": 25000, "currency": "GBP", "capacity": vip})
    if general:
        tiers.append({"tier": "GENERAL", "price": 7500, "currency": "GBP", "capacity": general})
    r = await http.post("/api/events", headers=auth(admin), json={
        "name": name, "description": "A test event", "venueId": venue_id, "startsAt": iso(starts),
        "endsAt": iso(starts + timedelta(hours=3)), "ticketTiers": tiers,
    })
    assert r.status_code == 201, r.text
    detail = await http.get(f"/api/events/{r.json()['id']}")
    assert detail.status_code == 200, detail.text
    return dict(detail.json())


async def book(
    http: httpx.AsyncClient, token: str, event_id: str, seat_ids: list[str], card: str = "pm_card_visa",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await http.post("/api/bookings", headers={**auth(token), **(headers or {})}, json={
        "eventId": event_id, "seatIds": seat_ids, "paymentMethod": {"type": "card", "token": card},
    })


async def wait_final(http: httpx.AsyncClient, token: str, booking_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = await http.get(f"/api/bookings/{booking_id}", headers=auth(token))
        assert r.status_code == 200, r.text
        body = dict(r.json())
        if body["status"] in FINAL:
            return body
        assert time.monotonic() < deadline, f"booking {booking_id} still {body['status']}"
        await asyncio.sleep(0.2)


async def book_and_wait(http: httpx.AsyncClient, token: str, event_id: str, seat_ids: list[str], card: str = "pm_card_visa") -> dict[str, Any]:
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
