"""Venues, events and the seat inventory over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.helpers import assert_error, auth, book, create_event, create_venue, iso, wait_final


async def test_venue_create_get_and_validation(
    http: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    venue = await create_venue(http, admin_token, capacity=20789, name="Madison Square Garden")
    assert (
        venue["id"].startswith("ven_") and venue["country"] == "GB" and venue["capacity"] == 20789
    )
    r = await http.get(f"/api/venues/{venue['id']}")
    assert r.status_code == 200 and r.json()["events"] == []
    assert_error(await http.get("/api/venues/ven_nope"), 404, "VENUE_NOT_FOUND")
    body = {"name": "X", "address": "a", "city": "c", "country": "GB", "capacity": 10}
    assert_error(await http.post("/api/venues", json=body), 401, "UNAUTHORIZED")
    assert_error(
        await http.post("/api/venues", json=body, headers=auth(user_token)), 403, "FORBIDDEN"
    )
    for bad in (
        {**body, "country": "UK"},
        {**body, "country": "gb"},
        {**body, "capacity": 0},
        {**body, "capacity": -5},
        {k: v for k, v in body.items() if k != "city"},
        {**body, "name": ""},
    ):
        assert_error(
            await http.post("/api/venues", json=bad, headers=auth(admin_token)),
            400,
            "VALIDATION_ERROR",
        )


async def test_event_shapes_and_seat_map(http: httpx.AsyncClient, admin_token: str) -> None:
    event = await create_event(http, admin_token, vip=30, general=25)
    assert event["id"].startswith("evnt_")
    assert event["totalSeats"] == 55 and event["availableSeats"] == 55
    assert [t["tier"] for t in event["ticketTiers"]] == ["VIP", "GENERAL"]
    assert event["ticketTiers"][0] == {
        "tier": "VIP",
        "price": 25000,
        "currency": "GBP",
        "capacity": 30,
        "available": 30,
    }
    rows = event["seatMap"]["rows"]
    # 20 seats per row; each tier starts a fresh row: VIP A(20) B(10), GENERAL C(20) D(5)
    assert [(r["row"], r["tier"], len(r["seats"])) for r in rows] == [
        ("A", "VIP", 20),
        ("B", "VIP", 10),
        ("C", "GENERAL", 20),
        ("D", "GENERAL", 5),
    ]
    assert rows[2]["seats"][0] == {
        "id": "seat_C1",
        "row": "C",
        "number": 1,
        "tier": "GENERAL",
        "price": 7500,
        "currency": "GBP",
    }
    assert event["venue"]["city"] == "London" and event["startsAt"].endswith("Z")
    assert_error(await http.get("/api/events/evnt_missing"), 404, "EVENT_NOT_FOUND")


async def test_rows_past_z(http: httpx.AsyncClient, admin_token: str) -> None:
    event = await create_event(http, admin_token, vip=0, general=20 * 28)
    labels = [r["row"] for r in event["seatMap"]["rows"]]
    assert labels[25:28] == ["Z", "AA", "AB"]


async def test_event_validation(http: httpx.AsyncClient, admin_token: str, user_token: str) -> None:
    venue = await create_venue(http, admin_token, capacity=100)
    start = datetime.now(UTC) + timedelta(days=10)
    base = {
        "name": "Show",
        "venueId": venue["id"],
        "startsAt": iso(start),
        "endsAt": iso(start + timedelta(hours=2)),
        "ticketTiers": [{"tier": "GENERAL", "price": 1000, "currency": "EUR", "capacity": 50}],
    }
    post = lambda body, token=admin_token: http.post("/api/events", json=body, headers=auth(token))  # noqa: E731
    assert (await post(base)).status_code == 201
    assert_error(await post(base, user_token), 403, "FORBIDDEN")
    assert_error(await http.post("/api/events", json=base), 401, "UNAUTHORIZED")
    assert_error(await post({**base, "venueId": "ven_missing"}), 404, "VENUE_NOT_FOUND")
    big = {
        **base,
        "ticketTiers": [{"tier": "GENERAL", "price": 1000, "currency": "EUR", "capacity": 101}],
    }
    assert_error(await post(big), 422, "CAPACITY_EXCEEDED")
    for bad in (
        {**base, "endsAt": base["startsAt"]},
        {**base, "endsAt": iso(start - timedelta(hours=1))},
        {
            **base,
            "ticketTiers": [{"tier": "GENERAL", "price": 1000, "currency": "EURO", "capacity": 5}],
        },
        {
            **base,
            "ticketTiers": [{"tier": "GENERAL", "price": 10.5, "currency": "EUR", "capacity": 5}],
        },
        {
            **base,
            "ticketTiers": [{"tier": "GENERAL", "price": 0, "currency": "EUR", "capacity": 5}],
        },
        {
            **base,
            "ticketTiers": [{"tier": "GENERAL", "price": 100, "currency": "EUR", "capacity": 0}],
        },
        {
            **base,
            "ticketTiers": [{"tier": "BALCONY", "price": 100, "currency": "EUR", "capacity": 5}],
        },
        {**base, "ticketTiers": []},
        {**base, "startsAt": "not a date"},
        {k: v for k, v in base.items() if k != "name"},
    ):
        assert_error(await post(bad), 400, "VALIDATION_ERROR")


async def test_explicit_seat_map(http: httpx.AsyncClient, admin_token: str) -> None:
    venue = await create_venue(http, admin_token, capacity=100)
    start = datetime.now(UTC) + timedelta(days=10)
    body = {
        "name": "Club",
        "venueId": venue["id"],
        "startsAt": iso(start),
        "endsAt": iso(start + timedelta(hours=2)),
        "ticketTiers": [
            {"tier": "VIP", "price": 5000, "currency": "USD", "capacity": 3},
            {"tier": "STANDING", "price": 2000, "currency": "USD", "capacity": 5},
        ],
        "seatMap": {
            "rows": [
                {"row": "A", "tier": "VIP", "seats": 3},
                {"row": "S", "tier": "STANDING", "seats": 5},
            ]
        },
    }
    r = await http.post("/api/events", json=body, headers=auth(admin_token))
    assert r.status_code == 201, r.text
    rows = (await http.get(f"/api/events/{r.json()['id']}")).json()["seatMap"]["rows"]
    assert [(x["row"], len(x["seats"])) for x in rows] == [("A", 3), ("S", 5)]
    wrong = {
        **body,
        "seatMap": {
            "rows": [
                {"row": "A", "tier": "VIP", "seats": 2},
                {"row": "S", "tier": "STANDING", "seats": 5},
            ]
        },
    }
    assert_error(
        await http.post("/api/events", json=wrong, headers=auth(admin_token)),
        400,
        "VALIDATION_ERROR",
    )


async def test_list_pagination_filters_ordering_upcoming(
    http: httpx.AsyncClient, admin_token: str, db: object
) -> None:
    venue = await create_venue(http, admin_token)
    made = [
        await create_event(
            http,
            admin_token,
            venue_id=venue["id"],
            vip=2,
            general=2,
            starts_in=timedelta(days=d),
            name=f"E{d}",
        )
        for d in (40, 20, 30)
    ]
    # An event that has started is not listed (moved into the past directly in the database).
    past = made[0]
    await db.execute(
        "UPDATE events SET starts_at = now() - interval '1 day', ends_at = now() WHERE id = $1",
        past["id"],
    )  # type: ignore[attr-defined]
    r = await http.get("/api/events", params={"venueId": venue["id"]})
    body = r.json()
    assert [e["name"] for e in body["data"]] == ["E20", "E30"]
    assert body["pagination"] == {"page": 1, "perPage": 20, "total": 2, "totalPages": 1}
    r = await http.get("/api/events", params={"venueId": venue["id"], "perPage": 1, "page": 2})
    assert [e["name"] for e in r.json()["data"]] == ["E30"] and r.json()["pagination"][
        "totalPages"
    ] == 2
    cut = iso(datetime.now(UTC) + timedelta(days=25))
    assert [
        e["name"]
        for e in (
            await http.get("/api/events", params={"venueId": venue["id"], "from": cut})
        ).json()["data"]
    ] == ["E30"]
    assert [
        e["name"]
        for e in (await http.get("/api/events", params={"venueId": venue["id"], "to": cut})).json()[
            "data"
        ]
    ] == ["E20"]
    v = (await http.get(f"/api/venues/{venue['id']}")).json()
    assert [e["name"] for e in v["events"]] == ["E20", "E30"]
    for bad in ({"perPage": 101}, {"perPage": 0}, {"page": 0}, {"from": "yesterday"}):
        assert_error(await http.get("/api/events", params=bad), 400, "VALIDATION_ERROR")


async def test_inventory_counts_and_update_rules(
    http: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    event = await create_event(http, admin_token, vip=4, general=6)
    eid = event["id"]
    r = await http.get(f"/api/inventory/events/{eid}/seats")
    assert r.status_code == 200
    inv = r.json()
    assert inv["summary"] == {"total": 10, "available": 10, "locked": 0, "reserved": 0}
    assert inv["seats"][0] == {
        "id": "seat_A1",
        "row": "A",
        "number": 1,
        "tier": "VIP",
        "price": 25000,
        "currency": "GBP",
        "status": "AVAILABLE",
    }
    assert_error(await http.get("/api/inventory/events/evnt_nope/seats"), 404, "EVENT_NOT_FOUND")

    # Name and dates may change at any time; tiers only while nothing is locked or sold.
    put = await http.put(f"/api/events/{eid}", json={"name": "Renamed"}, headers=auth(admin_token))
    assert put.status_code == 200 and put.json()["name"] == "Renamed"
    assert_error(
        await http.put(f"/api/events/{eid}", json={"name": "x"}, headers=auth(user_token)),
        403,
        "FORBIDDEN",
    )
    assert_error(
        await http.put("/api/events/evnt_nope", json={"name": "x"}, headers=auth(admin_token)),
        404,
        "EVENT_NOT_FOUND",
    )
    new_tiers = {
        "ticketTiers": [{"tier": "GENERAL", "price": 5000, "currency": "GBP", "capacity": 12}]
    }
    put = await http.put(f"/api/events/{eid}", json=new_tiers, headers=auth(admin_token))
    assert put.status_code == 200 and put.json()["totalSeats"] == 12

    b = await book(http, user_token, eid, ["seat_A1", "seat_A2"])
    assert b.status_code == 202
    final = await wait_final(http, user_token, b.json()["bookingId"])
    assert final["status"] == "CONFIRMED" and final["totalAmount"] == 10000
    inv = (await http.get(f"/api/inventory/events/{eid}/seats")).json()
    assert inv["summary"] == {"total": 12, "available": 10, "locked": 0, "reserved": 2}
    ev = (await http.get(f"/api/events/{eid}")).json()
    assert ev["availableSeats"] == 10 and ev["ticketTiers"][0]["available"] == 10
    assert_error(
        await http.put(f"/api/events/{eid}", json=new_tiers, headers=auth(admin_token)),
        422,
        "EVENT_HAS_BOOKINGS",
    )
    assert_error(
        await http.put(
            f"/api/events/{eid}", json={"endsAt": ev["startsAt"]}, headers=auth(admin_token)
        ),
        400,
        "VALIDATION_ERROR",
    )
