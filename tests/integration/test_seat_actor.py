"""The SeatInventory actor on a real local Ray, backed by real Postgres."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
import ray

from actors import factory, names
from actors.clients import SeatInventoryClient
from tests.helpers import book_and_wait, create_event, new_user
from tests.waiting import wait_until

# The typed client the saga actors use; a test calls the same methods, so mypy checks them too.
seats_client = SeatInventoryClient()


async def _event(http: httpx.AsyncClient, admin_token: str, seats: int = 10) -> str:
    return str((await create_event(http, admin_token, vip=0, general=seats))["id"])


async def test_fifty_concurrent_locks_one_winner_per_seat(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event_id = await _event(http, admin_token, seats=6)
    seats = ["seat_A1", "seat_A2", "seat_A3", "seat_A4", "seat_A5", "seat_A6"]
    # 50 bookings, each wanting an overlapping window of 2-3 seats.
    wants = {f"bkg_race_{i}": tuple(seats[i % 5 : i % 5 + 2 + i % 2]) for i in range(50)}
    results = await asyncio.gather(
        *(
            seats_client.lock_with_ttl(event_id=event_id, booking_id=b, seat_ids=s)
            for b, s in wants.items()
        )
    )
    winners = [b for b, r in zip(wants, results, strict=True) if r.ok]
    held = [seat for b in winners for seat in wants[b]]
    assert len(held) == len(set(held)), "a seat was granted to two bookings"
    assert winners
    for r in results:
        if not r.ok:
            assert set(r.conflicts) & set(held)
    statuses, summary = await seats_client.snapshot(event_id)
    assert summary.locked == len(held)
    assert all(statuses[s] == "LOCKED" for s in held)


async def test_lock_expires_without_any_call(http: httpx.AsyncClient, admin_token: str) -> None:
    event_id = await _event(http, admin_token)
    result = await seats_client.lock_with_ttl(
        event_id=event_id, booking_id="bkg_short", seat_ids=("seat_A1", "seat_A2"), ttl=1.0
    )
    assert result.ok
    assert (await seats_client.lock_of(event_id=event_id, booking_id="bkg_short")) is not None
    # lock_of only reads (it never expires a lock itself): the lock goes only if the sweeper frees it.
    await wait_until(
        lambda: seats_client.lock_of(event_id=event_id, booking_id="bkg_short"),
        until=lambda lock: lock is None,
        timeout=10,
        interval=0.25,
        what="the sweeper to free the 1 s lock, with no other call expiring it",
    )
    _, summary = await seats_client.snapshot(event_id)
    assert summary.locked == 0 and summary.available == 10


async def test_killed_actor_rebuilds_reserved_seats(
    http: httpx.AsyncClient, admin_token: str, db: asyncpg.Pool
) -> None:
    event_id = await _event(http, admin_token)
    token, _ = await new_user(http)
    booked = await book_and_wait(http, token, event_id, ["seat_A5", "seat_A6"])
    assert booked["status"] == "CONFIRMED"
    actor = seats_client.handle_blocking(event_id)  # the raw handle: this test kills the process
    # A live lock that a saga persisted survives the restart as well. This booking's updated_at
    # lies in the future so that no saga's recovery sweep picks it up during the test.
    locker = "bkg_01LIVELOCK" + event_id[-14:]
    await db.execute(
        "INSERT INTO bookings (id, user_id, event_id, seat_ids, status, saga_step, saga_slot, total_amount,"
        " currency, payment_token, lock_expires_at, updated_at) SELECT $1, user_id, event_id, ARRAY['seat_A7'],"
        " 'PENDING', 'SEATS_LOCKED', 0, 7500, 'GBP', 'pm_card_visa', now() + interval '60 seconds',"
        " now() + interval '1 hour' FROM bookings WHERE id = $2",
        locker,
        booked["id"],
    )
    assert (
        await seats_client.lock_with_ttl(
            event_id=event_id, booking_id=locker, seat_ids=("seat_A7",)
        )
    ).ok
    old_pid = await actor.__ray_call__.remote(lambda self: __import__("os").getpid())
    ray.kill(actor, no_restart=False)
    await wait_until(
        lambda: actor.__ray_call__.remote(lambda self: __import__("os").getpid()),
        until=lambda pid: pid != old_pid,
        timeout=30,
        what=f"the seat actor to restart (old pid {old_pid})",
        ignoring=(ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError),
    )
    statuses, summary = await seats_client.snapshot(event_id)
    assert statuses["seat_A5"] == statuses["seat_A6"] == "RESERVED"
    assert statuses["seat_A7"] == "LOCKED"
    assert summary.reserved == 2 and summary.locked == 1
    assert (await seats_client.lock_of(event_id=event_id, booking_id=locker)) is not None
    # Rebuilt state still refuses to sell a reserved seat.
    assert not (
        await seats_client.lock_with_ttl(
            event_id=event_id, booking_id="bkg_thief", seat_ids=("seat_A5",)
        )
    ).ok
    assert not (
        await seats_client.lock_with_ttl(
            event_id=event_id, booking_id="bkg_thief", seat_ids=("seat_A7",)
        )
    ).ok
    await seats_client.release(event_id=event_id, booking_id=locker)
    await db.execute(
        "UPDATE bookings SET status = 'FAILED', failure_reason = 'INTERNAL_ERROR' WHERE id = $1",
        locker,
    )


@pytest.mark.slow
async def test_idle_actor_exits_and_comes_back(
    http: httpx.AsyncClient, admin_token: str, app_env: dict[str, str]
) -> None:
    event_id = await _event(http, admin_token)
    assert (await seats_client.snapshot(event_id))[1].total == 10
    idle = float(app_env["TICKETFLOW_SEAT_ACTOR_IDLE_SECONDS"])

    def find() -> object:
        factory.forget(
            names.seat_actor_name(event_id)
        )  # no cached handle: look the actor up afresh
        return factory.existing(names.seat_actor_name(event_id))

    await wait_until(
        find,
        until=lambda found: found is None,
        timeout=idle + 15,
        interval=0.5,
        what=f"the seat actor of {event_id} to retire after {idle:g} s idle",
    )
    # Reading the inventory does not start it again...
    r = await http.get(f"/api/inventory/events/{event_id}/seats")
    assert r.json()["summary"]["available"] == 10
    assert factory.existing(names.seat_actor_name(event_id)) is None
    # ...a lock does.
    result = await seats_client.lock_with_ttl(
        event_id=event_id, booking_id="bkg_back", seat_ids=("seat_A1",)
    )
    assert result.ok
    assert factory.existing(names.seat_actor_name(event_id)) is not None


async def test_lock_many_decides_each_request_in_order(
    http: httpx.AsyncClient, admin_token: str
) -> None:
    event_id = await _event(http, admin_token, seats=4)
    results = await seats_client.lock_many(
        event_id,
        [
            ("bkg_m1", ("seat_A1", "seat_A2")),
            (
                "bkg_m2",
                ("seat_A2", "seat_A3"),
            ),  # loses seat_A2 to the first request: none of it is held
            ("bkg_m3", ("seat_A3", "seat_A4")),
            ("bkg_m1", ("seat_A1", "seat_A2")),  # a repeat of the first: idempotent
        ],
    )
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].conflicts == ("seat_A2",)
    statuses, summary = await seats_client.snapshot(event_id)
    assert summary.locked == 4 and statuses["seat_A3"] == "LOCKED"
    assert await seats_client.lock_of(event_id=event_id, booking_id="bkg_m2") is None


async def test_reserve_many_writes_every_sale_and_lets_the_database_refuse_a_taken_seat(
    http: httpx.AsyncClient,
    admin_token: str,
    db: asyncpg.Pool,
) -> None:
    event_id = await _event(http, admin_token, seats=4)
    _, user = await new_user(http)
    # Booking rows for the sales to point at; not PENDING, so no saga picks them up.
    owners = ["bkg_rm_a", "bkg_rm_b", "bkg_rm_x"]
    for booking_id in owners:
        await db.execute(
            "INSERT INTO bookings (id, user_id, event_id, seat_ids, status, saga_step, saga_slot, total_amount, "
            "currency, payment_token) VALUES ($1, $2, $3, '{seat_A1}', 'CANCELLED', 'CANCELLED', 0, 100, 'GBP', 't')",
            f"{booking_id}_{event_id}",
            user["id"],
            event_id,
        )
    a, b, x = (f"{o}_{event_id}" for o in owners)
    locked = await seats_client.lock_many(
        event_id, [(a, ("seat_A1", "seat_A2")), (b, ("seat_A3", "seat_A4"))]
    )
    assert all(r.ok for r in locked)
    # A sale the actor cannot know of: memory says seat_A3 is b's to buy, Postgres says it is sold.
    await db.execute(
        "INSERT INTO seat_sales (event_id, seat_id, booking_id) VALUES ($1, 'seat_A3', $2)",
        event_id,
        x,
    )

    first, second, repeat = await seats_client.reserve_many(event_id, [a, b, a])

    assert first.ok and first.seat_ids == ("seat_A1", "seat_A2") and repeat == first
    assert not second.ok and second.reason == "SEATS_TAKEN"
    sold = await db.fetch(
        "SELECT seat_id, booking_id FROM seat_sales WHERE event_id = $1 AND released_at IS NULL ORDER BY seat_id",
        event_id,
    )
    assert [(r["seat_id"], r["booking_id"]) for r in sold] == [
        ("seat_A1", a),
        ("seat_A2", a),
        ("seat_A3", x),
    ]
    statuses, _ = await seats_client.snapshot(event_id)
    assert statuses["seat_A1"] == statuses["seat_A2"] == "RESERVED"
    assert (
        await seats_client.lock_of(event_id=event_id, booking_id=b) is None
    )  # the database won: b holds nothing
    # A repeated reserve of a sold booking answers from memory and writes nothing twice.
    assert (await seats_client.reserve_many(event_id, [a]))[0].ok
    assert await db.fetchval("SELECT count(*) FROM seat_sales WHERE booking_id = $1", a) == 2
