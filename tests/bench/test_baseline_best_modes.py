"""The plain baselines in issue 14's modes: best available (the seat actor's score, chosen the
usual way in Postgres and in Redis) and `Prefer: wait=N`, over HTTP against the real services
(started as subprocesses on Postgres and Redis), and the on-sale benchmark in `--pick best --wait`
against them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from benchmarks.best_mode import largest_block
from benchmarks.common import default_database_url, default_redis_url
from benchmarks.onsale import OnsaleConfig, report_markdown, run_onsale
from benchmarks.services import ServiceProcess, start_plain_service
from domain.best_available import SeatRequest, choose_seats
from domain.seating import Seat
from tests.bench.test_bench_smoke import _postgres_problem, _redis_problem

ADMIN = ("admin@ticketflow.dev", "Admin1234!")
# Long enough that a booking is still PENDING right after its 202 (the waits are then real).
PAYMENT_LATENCY_MS = 400
WAIT = {"Prefer": "wait=10"}


@pytest_asyncio.fixture(loop_scope="session", scope="module", params=["plain-pg", "plain-redis"])
async def baseline(request: pytest.FixtureRequest) -> AsyncIterator[ServiceProcess]:
    database_url, redis_url = default_database_url(), default_redis_url()
    problem = await _postgres_problem(database_url)
    if problem is None and request.param == "plain-redis":
        problem = await _redis_problem(redis_url)
    if problem:
        pytest.skip(problem)
    service = await start_plain_service(
        request.param,
        database_url=database_url,
        redis_url=redis_url,
        payment_latency_ms=PAYMENT_LATENCY_MS,
        admin_email=ADMIN[0],
        admin_password=ADMIN[1],
    )
    yield service
    await service.stop()


class Client:
    """A buyer and an admin on one baseline, with the event created for the test."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.admin = ""
        self.buyer = ""

    async def login(self, email: str, password: str) -> str:
        r = await self.http.post("/api/users/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    async def setup(self) -> None:
        self.admin = await self.login(*ADMIN)
        email = f"buyer-{time.monotonic_ns()}@example.com"
        r = await self.http.post(
            "/api/users/register",
            json={"name": "Best Buyer", "email": email, "password": "Bench1234!"},
        )
        assert r.status_code == 201, r.text
        self.buyer = await self.login(email, "Bench1234!")

    async def event(self, vip: int, general: int) -> str:
        head = {"Authorization": f"Bearer {self.admin}"}
        r = await self.http.post(
            "/api/venues",
            json={
                "name": "Arena",
                "address": "1 Road",
                "city": "London",
                "country": "GB",
                "capacity": vip + general,
            },
            headers=head,
        )
        assert r.status_code == 201, r.text
        r = await self.http.post(
            "/api/events",
            json={
                "name": "Best",
                "venueId": r.json()["id"],
                "startsAt": "2030-01-01T20:00:00Z",
                "endsAt": "2030-01-01T23:00:00Z",
                "ticketTiers": [
                    {"tier": "VIP", "price": 25000, "currency": "GBP", "capacity": vip},
                    {"tier": "GENERAL", "price": 7500, "currency": "GBP", "capacity": general},
                ],
            },
            headers=head,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def book(
        self,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        card: str = "pm_card_visa",
    ) -> httpx.Response:
        return await self.http.post(
            "/api/bookings",
            json={**body, "paymentMethod": {"type": "card", "token": card}},
            headers={"Authorization": f"Bearer {self.buyer}", **(headers or {})},
        )

    async def get(self, booking_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.get(
            f"/api/bookings/{booking_id}",
            headers={"Authorization": f"Bearer {self.buyer}", **(headers or {})},
        )

    async def inventory(self, event_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/inventory/events/{event_id}/seats")
        assert r.status_code == 200, r.text
        return list(r.json()["seats"])


@pytest_asyncio.fixture(loop_scope="session")
async def client(baseline: ServiceProcess) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(base_url=baseline.url, timeout=30) as http:
        c = Client(http)
        await c.setup()
        yield c


def _layout(seats: list[dict[str, Any]]) -> list[Seat]:
    """The seat map as the inventory lists it (in layout order: its position)."""
    return [Seat(s["id"], s["row"], int(s["number"]), s["tier"], i) for i, s in enumerate(seats)]


# -- best available ---------------------------------------------------------------------------------
@pytest.mark.asyncio(loop_scope="session")
async def test_best_available_gives_the_seats_the_seat_actors_score_chooses(
    client: Client,
) -> None:
    # 6 VIP seats in row A, 54 GENERAL in rows B-D (20 per row): few enough rows that the
    # Postgres baseline's candidate rows are the whole event, so its choice must be the chooser's.
    event_id = await client.event(vip=6, general=54)
    layout = _layout(await client.inventory(event_id))
    taken: set[str] = set()
    requests = [
        SeatRequest(2),
        SeatRequest(3, tier="GENERAL"),
        SeatRequest(4),
        SeatRequest(1, tier="VIP"),
        SeatRequest(4, tier="VIP"),
        SeatRequest(3, together=False),
        SeatRequest(2, tier="GENERAL"),
        SeatRequest(4, tier="GENERAL", together=False),
    ]
    refused = 0
    for request in requests:
        free = [s.id for s in layout if s.id not in taken]
        expected = choose_seats(layout, free, request)
        body: dict[str, Any] = {
            "eventId": event_id,
            "quantity": request.quantity,
            "together": request.together,
        }
        if request.tier:
            body["tier"] = request.tier
        r = await client.book(body, WAIT)
        assert r.status_code == 200, r.text
        booking = r.json()
        if not expected.ok:  # refused by both, with the same words
            refused += 1
            assert booking["failureReason"] == "SEATS_UNAVAILABLE", booking
            assert booking["failureMessage"] == expected.message
            continue
        assert booking["status"] == "CONFIRMED", booking
        assert sorted(booking["seatIds"]) == sorted(expected.seat_ids), request
        price = {
            s["id"]: 25000 if s["tier"] == "VIP" else 7500 for s in await client.inventory(event_id)
        }
        assert booking["totalAmount"] == sum(price[s] for s in booking["seatIds"])
        taken.update(booking["seatIds"])
    reserved = {s["id"] for s in await client.inventory(event_id) if s["status"] == "RESERVED"}
    assert reserved == taken
    assert refused == 1  # the four VIP seats together, once the pair took the middle of row A


@pytest.mark.asyncio(loop_scope="session")
async def test_best_available_refuses_what_does_not_fit_and_says_what_is_left(
    client: Client,
) -> None:
    event_id = await client.event(vip=3, general=20)
    r = await client.book({"eventId": event_id, "quantity": 4, "tier": "VIP"}, WAIT)
    assert r.status_code == 200, r.text
    refused = r.json()
    assert refused["status"] == "FAILED" and refused["failureReason"] == "SEATS_UNAVAILABLE"
    assert refused["failureMessage"] == "largest block of adjacent VIP seats: 3; 3 VIP seats left"
    assert refused["seatIds"] == []
    # Nothing was locked by the refusal: the three VIP seats are still there, together.
    r = await client.book({"eventId": event_id, "quantity": 3, "tier": "VIP"}, WAIT)
    assert r.json()["status"] == "CONFIRMED"
    assert sorted(r.json()["seatIds"]) == ["seat_A1", "seat_A2", "seat_A3"]
    # Scattered seats are refused only when too few are left at all.
    r = await client.book(
        {"eventId": event_id, "quantity": 1, "tier": "VIP", "together": False}, WAIT
    )
    assert r.json()["failureMessage"] == "largest block of adjacent VIP seats: 0; no VIP seats left"


@pytest.mark.asyncio(loop_scope="session")
async def test_a_declined_best_available_booking_gives_its_seats_back(client: Client) -> None:
    event_id = await client.event(vip=2, general=2)
    r = await client.book(
        {"eventId": event_id, "quantity": 2, "tier": "VIP"}, WAIT, card="pm_card_chargeDeclined"
    )
    assert r.json()["status"] == "FAILED" and r.json()["failureReason"] == "PAYMENT_DECLINED"
    # The released seats can be chosen again (Postgres' row counts, Redis' free sets).
    r = await client.book({"eventId": event_id, "quantity": 2, "tier": "VIP"}, WAIT)
    assert r.json()["status"] == "CONFIRMED", r.json()
    assert sorted(r.json()["seatIds"]) == ["seat_A1", "seat_A2"]


@pytest.mark.asyncio(loop_scope="session")
async def test_concurrent_best_available_bookings_never_share_a_seat_and_sell_out(
    client: Client,
) -> None:
    event_id = await client.event(vip=10, general=50)
    answers = await asyncio.gather(
        *(client.book({"eventId": event_id, "quantity": 1 + n % 4}, WAIT) for n in range(40))
    )
    confirmed = [r.json() for r in answers if r.json()["status"] == "CONFIRMED"]
    seats = [s for b in confirmed for s in b["seatIds"]]
    assert len(seats) == len(set(seats))
    assert sum(1 + n % 4 for n in range(40)) == 100  # more asked than the 60 seats
    failed = [
        (1 + n % 4, r.json()) for n, r in enumerate(answers) if r.json()["status"] == "FAILED"
    ]
    assert failed and {b["failureReason"] for _, b in failed} == {"SEATS_UNAVAILABLE"}
    left = [s for s in await client.inventory(event_id) if s["status"] == "AVAILABLE"]
    # Every refusal was deserved: no seat was released, so a block still free now was free then.
    for quantity, _ in failed:
        assert largest_block(left) < quantity
    assert len(seats) + len(left) == 60


@pytest.mark.parametrize(
    "body, code",
    [
        ({"seatIds": ["seat_A1"], "quantity": 1}, "VALIDATION_ERROR"),
        ({}, "VALIDATION_ERROR"),
        ({"quantity": 11}, "INVALID_SEAT_COUNT"),
        ({"quantity": 0}, "INVALID_SEAT_COUNT"),
        ({"seatIds": ["seat_A1"], "tier": "VIP"}, "VALIDATION_ERROR"),
        ({"quantity": 1, "tier": "BALCONY"}, "VALIDATION_ERROR"),
    ],
)
@pytest.mark.asyncio(loop_scope="session")
async def test_a_bad_best_available_body_is_refused_like_ticketflow_does(
    client: Client, body: dict[str, Any], code: str
) -> None:
    event_id = await client.event(vip=2, general=2)
    r = await client.book({"eventId": event_id, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code


@pytest.mark.asyncio(loop_scope="session")
async def test_a_tier_the_event_does_not_sell_is_refused(client: Client) -> None:
    event_id = await client.event(vip=2, general=2)
    r = await client.book({"eventId": event_id, "quantity": 1, "tier": "STANDING"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await client.book({"eventId": "evnt_nope", "quantity": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "EVENT_NOT_FOUND"


# -- Prefer: wait -----------------------------------------------------------------------------------
@pytest.mark.asyncio(loop_scope="session")
async def test_without_prefer_the_post_answers_202_and_the_booking_is_still_pending(
    client: Client,
) -> None:
    event_id = await client.event(vip=2, general=2)
    r = await client.book({"eventId": event_id, "seatIds": ["seat_A1"]})
    assert r.status_code == 202 and "Preference-Applied" not in r.headers
    booking_id = r.json()["bookingId"]
    # The charge takes PAYMENT_LATENCY_MS: a plain GET right away still sees it PENDING ...
    assert (await client.get(booking_id)).json()["status"] == "PENDING"
    # ... and a GET that prefers to wait is answered once it is final, in one round trip.
    r = await client.get(booking_id, WAIT)
    assert r.status_code == 200 and r.headers["Preference-Applied"] == "wait=10"
    assert r.json()["status"] == "CONFIRMED" and r.json()["seatIds"] == ["seat_A1"]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_post_that_prefers_to_wait_is_answered_with_the_final_booking(
    client: Client,
) -> None:
    event_id = await client.event(vip=2, general=2)
    r = await client.book({"eventId": event_id, "seatIds": ["seat_B1"]}, WAIT)
    assert r.status_code == 200 and r.headers["Preference-Applied"] == "wait=10"
    body = r.json()
    assert body["status"] == "CONFIRMED" and body["seatIds"] == ["seat_B1"]
    assert body == (await client.get(body["id"])).json()  # the booking as GET gives it
    r = await client.book(
        {"eventId": event_id, "seatIds": ["seat_B2"]}, WAIT, card="pm_card_chargeDeclined"
    )
    assert r.status_code == 200 and r.json()["failureReason"] == "PAYMENT_DECLINED"


@pytest.mark.asyncio(loop_scope="session")
async def test_a_wait_that_runs_out_answers_as_without_the_preference(client: Client) -> None:
    event_id = await client.event(vip=2, general=2)
    # wait=0: nothing final yet (the charge takes 400 ms): the POST's 202, the GET's PENDING.
    r = await client.book({"eventId": event_id, "seatIds": ["seat_A2"]}, {"Prefer": "wait=0"})
    assert r.status_code == 202 and "Preference-Applied" not in r.headers
    r2 = await client.get(r.json()["bookingId"], {"Prefer": "wait=0"})
    assert r2.status_code == 200 and r2.json()["status"] == "PENDING"
    assert "Preference-Applied" not in r2.headers
    # Several waiters on one booking are all woken by its end.
    answers = await asyncio.gather(*(client.get(r.json()["bookingId"], WAIT) for _ in range(5)))
    assert {a.json()["status"] for a in answers} == {"CONFIRMED"}


# -- the on-sale benchmark in best + wait mode --------------------------------------------------------
@pytest.mark.asyncio(loop_scope="session")
async def test_onsale_best_and_wait_sells_a_baseline_out_with_every_check_passing(
    baseline: ServiceProcess,
) -> None:
    config = OnsaleConfig(
        url=baseline.url,
        seats=60,
        buyers=5,
        attempts=200,
        concurrency=12,
        pick="best",
        wait=True,
        retries=3,
        duration=30,
        grace=5,
        setup_concurrency=5,
        seed=2,
        progress=False,
        label=baseline.label,
    )
    report = await run_onsale(config)
    results, checks = report["results"], report["checks"]
    assert results["errors"] == {}, results["errors"]
    assert results["sold_out"] and results["confirmed_seats"] == 60
    assert checks["oversold_seats"] == 0 and checks["stuck_pending"] == 0
    assert checks["charges_without_booking"] == 0 and checks["reserved_mismatch"] == 0
    assert checks["passed"] is True
    assert results["unavailable_while_enough"] == 0
    # One round trip per booking: every POST was answered final (the charge takes 0.4 s < 10 s).
    assert results["answered_final"] == results["bookings_posted"]
    assert results["http_requests"] == results["bookings_posted"]
    assert results["http_requests_per_confirmed"] == round(
        results["bookings_posted"] / results["confirmed"], 2
    )
    assert "1-4 seats together, best available, Prefer: wait=10" in report_markdown(report)
