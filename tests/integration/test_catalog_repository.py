"""storage/catalog_repository.py against real Postgres."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import asyncpg

from domain.bookings import FailureReason
from domain.catalog import HeldCounts, WaitingRoomSettings
from domain.ids import new_id
from domain.seating import TicketTier, generate_layout
from storage import booking_repository
from storage import catalog_repository as repo
from storage import queries as q
from tests.integration.storage_support import make_catalog


async def test_an_event_reads_back_with_its_venue_tiers_and_priced_seats(
    conn: asyncpg.Connection,
) -> None:
    c = await make_catalog(conn, seats=3)
    event = await repo.get_event(conn, c.event_id)
    assert event is not None and event.name == "Repo Night" and event.venue_city == "London"
    assert [(t.tier, t.price, t.capacity) for t in event.tiers] == [("GENERAL", 2500, 3)]
    venue = await repo.get_venue(conn, event.venue_id)
    assert venue is not None and await repo.get_venue_by_name(conn, venue.name) == venue
    assert await repo.seat_ids_of(conn, c.event_id) == list(c.seat_ids)
    seats = await repo.seats_of(conn, c.event_id)
    assert [s.seat.id for s in seats] == list(c.seat_ids) and {
        (s.price, s.currency) for s in seats
    } == {(2500, "GBP")}
    assert await repo.seat_prices(conn, c.event_id, [c.seat_ids[0], "seat_Z9", "bad id"]) == {
        c.seat_ids[0]: (2500, "GBP")
    }
    assert await repo.get_event(conn, "evnt_missing") is None


async def test_upcoming_and_venue_listings(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn)
    event = await repo.get_event(conn, c.event_id)
    assert event is not None
    now = datetime.now(UTC)
    listed, total = await repo.list_upcoming(
        conn,
        now=now,
        venue_id=event.venue_id,
        starts_from=None,
        starts_before=None,
        limit=10,
        offset=0,
    )
    assert [e.id for e in listed] == [c.event_id] and total == 1
    assert [e.id for e in await repo.list_by_venue(conn, venue_id=event.venue_id, now=now)] == [
        c.event_id
    ]
    later, _ = await repo.list_upcoming(
        conn,
        now=event.starts_at + timedelta(hours=1),
        venue_id=event.venue_id,
        starts_from=None,
        starts_before=None,
        limit=10,
        offset=0,
    )
    assert later == []


async def test_edits_move_rename_and_replace_the_seat_map(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn)
    other = await repo.add_venue(
        conn,
        name=f"Annex {secrets.token_hex(6)}",
        address="2 Road",
        city="Leeds",
        country="GB",
        capacity=50,
    )
    assert await repo.lock_event(conn, c.event_id) and not await repo.lock_event(
        conn, "evnt_missing"
    )
    starts = datetime.now(UTC) + timedelta(days=60)
    await repo.update_event_fields(
        conn,
        event_id=c.event_id,
        name="Renamed",
        description="d",
        starts_at=starts,
        ends_at=starts + timedelta(hours=2),
        sales_start_at=starts - timedelta(days=1),
        waiting_room=WaitingRoomSettings(enabled=True, admit_per_minute=90),
    )
    await repo.move_event(conn, event_id=c.event_id, venue_id=other.id)
    tiers = [TicketTier(tier="VIP", price=9000, currency="GBP", capacity=2)]
    await repo.replace_seat_map(
        conn, event_id=c.event_id, tiers=tiers, seats=generate_layout(tiers, seats_per_row=10)
    )
    event = await repo.get_event(conn, c.event_id)
    assert event is not None and event.name == "Renamed" and event.venue_id == other.id
    assert event.sales_start_at == starts - timedelta(days=1)
    assert event.waiting_room == WaitingRoomSettings(enabled=True, admit_per_minute=90)
    assert [t.tier for t in event.tiers] == ["VIP"] and len(
        await repo.seat_ids_of(conn, c.event_id)
    ) == 2


async def test_held_seats_and_counts_come_from_sales_and_live_locks(
    conn: asyncpg.Connection,
) -> None:
    c = await make_catalog(conn)
    assert not await repo.has_active_bookings(conn, c.event_id)
    sold, locked = new_id("bkg"), new_id("bkg")
    for booking_id, seat in ((sold, c.seat_ids[0]), (locked, c.seat_ids[1])):
        await booking_repository.add(
            conn,
            booking_id=booking_id,
            user_id=c.user_id,
            event_id=c.event_id,
            seat_ids=[seat],
            saga_slot=0,
            payment_token="t",
            idempotency_key=None,
            request_hash=None,
        )
    assert await repo.has_active_bookings(conn, c.event_id)
    await booking_repository.record_sales(conn, event_id=c.event_id, sales=[(sold, c.seat_ids[:1])])
    await booking_repository.mark_charging(
        conn, [(locked, datetime.now(UTC) + timedelta(minutes=5))]
    )
    assert await repo.held_seats(conn, c.event_id) == {c.seat_ids[0]: True, c.seat_ids[1]: False}
    assert await repo.held_counts(conn, [c.event_id]) == {
        c.event_id: {"GENERAL": HeldCounts(reserved=1, locked=1)}
    }
    assert await repo.held_counts(conn, []) == {}


async def test_the_warmer_finds_sales_open_and_opening(conn: asyncpg.Connection) -> None:
    now = datetime.now(UTC)
    open_now, opening, opened, hot_over, tomorrow, started = [
        (await make_catalog(conn, starts_in=timedelta(days=2))).event_id for _ in range(6)
    ]
    for event_id, opens in [
        (opening, now + timedelta(seconds=30)),
        (opened, now - timedelta(seconds=30)),
        (hot_over, now - timedelta(hours=2)),
        (tomorrow, now + timedelta(days=1)),
    ]:
        await conn.execute("UPDATE events SET sales_start_at = $2 WHERE id = $1", event_id, opens)
    await conn.execute(
        "UPDATE events SET starts_at = $2, sales_start_at = NULL WHERE id = $1",
        started,
        now - timedelta(minutes=1),
    )
    mine = {open_now, opening, opened, hot_over, tomorrow, started}

    on_sale = await repo.events_on_sale(conn, now=now, limit=10_000)
    assert set(on_sale) & mine == {open_now, opened, hot_over}

    warm = await repo.sales_opening(
        conn, now=now, lead=timedelta(minutes=1), hot=timedelta(minutes=30), limit=10_000
    )
    assert [e for e in warm if e in mine] == [opened, opening]  # the earliest opening first


async def test_room_sales_count_the_shops_recent_failures_only(conn: asyncpg.Connection) -> None:
    c = await make_catalog(conn, seats=4)
    await conn.execute("UPDATE events SET waiting_room = true WHERE id = $1", c.event_id)
    reasons = [
        FailureReason.LOCK_EXPIRED,
        FailureReason.INTERNAL_ERROR,
        FailureReason.LOCK_EXPIRED,  # failed a minute ago: outside the window
        FailureReason.PAYMENT_DECLINED,  # the card's answer, not the shop's trouble
        FailureReason.SEATS_UNAVAILABLE,  # another buyer was faster
    ]
    ids = [new_id("bkg") for _ in reasons]
    for booking_id in ids:
        added = await booking_repository.add(
            conn,
            booking_id=booking_id,
            user_id=c.user_id,
            event_id=c.event_id,
            seat_ids=[c.seat_ids[0]],
            saga_slot=0,
            payment_token="t",
            idempotency_key=None,
            request_hash=None,
            admitted=True,
        )
        assert added.booking_id == booking_id
    await booking_repository.fail(
        conn, [(b, reason, None) for b, reason in zip(ids, reasons, strict=True)]
    )
    await conn.execute(
        "UPDATE bookings SET failed_at = now() - interval '1 minute' WHERE id = $1", ids[2]
    )

    sales = await repo.room_sales(
        conn, now=datetime.now(UTC), limit=10_000, window_seconds=600, failures_seconds=10
    )

    (sale,) = [s for s in sales if s.event_id == c.event_id]
    assert (sale.failed, sale.in_flight, sale.confirmed) == (2, 0, 0)


async def test_the_shops_failures_are_counted_from_their_own_index(
    conn: asyncpg.Connection,
) -> None:
    # The tables are nearly empty here, so the planner would scan them anyway; with scans made
    # expensive, the plan shows the count can use the index of migration 0009 (and which one).
    await conn.execute("SET LOCAL enable_seqscan = off")
    now = datetime.now(UTC)
    plan = "\n".join(
        r[0]
        for r in await conn.fetch(
            "EXPLAIN " + q.SELECT_ROOM_SALES,
            now,
            10,
            now - timedelta(minutes=10),
            now - timedelta(seconds=10),
        )
    )
    assert "bookings_shop_failures_idx" in plan, plan


async def test_started_room_events_are_those_of_the_last_day_with_a_room(
    conn: asyncpg.Connection,
) -> None:
    now = datetime.now(UTC)
    started, long_ago, upcoming, no_room = [
        (await make_catalog(conn, starts_in=timedelta(days=2))).event_id for _ in range(4)
    ]
    for event_id, starts_at, room in [
        (started, now - timedelta(minutes=1), True),
        (long_ago, now - timedelta(days=2), True),
        (upcoming, now + timedelta(minutes=1), True),
        (no_room, now - timedelta(minutes=1), False),
    ]:
        await conn.execute(
            "UPDATE events SET starts_at = $2, waiting_room = $3 WHERE id = $1",
            event_id,
            starts_at,
            room,
        )
    mine = {started, long_ago, upcoming, no_room}

    found = await repo.started_room_events(
        conn, now=now, since=now - timedelta(days=1), limit=10_000
    )

    assert [e for e in found if e in mine] == [started]
    sales = await repo.room_sales(
        conn, now=now, limit=10_000, window_seconds=600, failures_seconds=10
    )
    assert {s.event_id for s in sales} & mine == {upcoming}
