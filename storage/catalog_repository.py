"""Venues, events, tiers and seats in Postgres."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from domain.catalog import Event, HeldCounts, SeatWithPrice, Venue, WaitingRoomSettings
from domain.ids import new_id
from domain.seating import SEAT_ID_RE, Seat, TicketTier
from storage import queries as q
from storage.pool import Conn


def _venue(row: asyncpg.Record) -> Venue:
    return Venue(
        id=row["id"],
        name=row["name"],
        address=row["address"],
        city=row["city"],
        country=row["country"],
        capacity=row["capacity"],
        created_at=row["created_at"],
    )


def _event(row: asyncpg.Record, tiers: list[TicketTier]) -> Event:
    return Event(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        venue_id=row["venue_id"],
        venue_name=row["venue_name"],
        venue_city=row["venue_city"],
        venue_capacity=row["venue_capacity"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        tiers=tiers,
        sales_start_at=row["sales_start_at"],
        waiting_room=WaitingRoomSettings(
            enabled=row["waiting_room"], admit_per_minute=row["admit_per_minute"]
        ),
    )


async def add_venue(
    conn: Conn, *, name: str, address: str, city: str, country: str, capacity: int
) -> Venue:
    row = await conn.fetchrow(q.INSERT_VENUE, new_id("ven"), name, address, city, country, capacity)
    assert row is not None
    return _venue(row)


async def get_venue(conn: Conn, venue_id: str) -> Venue | None:
    row = await conn.fetchrow(q.SELECT_VENUE_BY_ID, venue_id)
    return _venue(row) if row else None


async def get_venue_by_name(conn: Conn, name: str) -> Venue | None:
    row = await conn.fetchrow(q.SELECT_VENUE_BY_NAME, name)
    return _venue(row) if row else None


async def _tiers_of(conn: Conn, event_ids: list[str]) -> dict[str, list[TicketTier]]:
    tiers: dict[str, list[TicketTier]] = {eid: [] for eid in event_ids}
    for row in await conn.fetch(q.SELECT_TIERS_FOR_EVENTS, event_ids):
        tiers[row["event_id"]].append(
            TicketTier(row["tier"], row["price"], row["currency"], row["capacity"])
        )
    return tiers


async def _events(conn: Conn, rows: list[asyncpg.Record]) -> list[Event]:
    tiers = await _tiers_of(conn, [r["id"] for r in rows])
    return [_event(r, tiers[r["id"]]) for r in rows]


async def add_event(
    conn: Conn,
    *,
    venue_id: str,
    name: str,
    description: str,
    starts_at: datetime,
    ends_at: datetime,
    tiers: list[TicketTier],
    seats: list[Seat],
    sales_start_at: datetime | None = None,
    waiting_room: WaitingRoomSettings = WaitingRoomSettings(),
) -> tuple[str, datetime]:
    """Inserts the event, its tiers and its seats; the caller owns the transaction."""
    row = await conn.fetchrow(
        q.INSERT_EVENT,
        new_id("evnt"),
        venue_id,
        name,
        description,
        starts_at,
        ends_at,
        sales_start_at,
        waiting_room.enabled,
        waiting_room.admit_per_minute,
    )
    assert row is not None
    await replace_seat_map(conn, event_id=row["id"], tiers=tiers, seats=seats, clear=False)
    return row["id"], row["created_at"]


async def replace_seat_map(
    conn: Conn, *, event_id: str, tiers: list[TicketTier], seats: list[Seat], clear: bool = True
) -> None:
    if clear:
        await conn.execute(q.DELETE_SEATS_OF_EVENT, event_id)
        await conn.execute(q.DELETE_TIERS_OF_EVENT, event_id)
    await conn.executemany(
        q.INSERT_TIER,
        [(event_id, t.tier, i, t.price, t.currency, t.capacity) for i, t in enumerate(tiers)],
    )
    # COPY: a 20 000-seat event is one round trip instead of 20 000 inserts.
    await conn.copy_records_to_table(
        "seats",
        columns=list(q.SEAT_COLUMNS),
        records=[(event_id, s.id, s.row, s.number, s.tier, s.position) for s in seats],
    )


async def lock_event(conn: Conn, event_id: str) -> bool:
    return await conn.fetchval(q.LOCK_EVENT_FOR_UPDATE, event_id) is not None


async def update_event_fields(
    conn: Conn,
    *,
    event_id: str,
    name: str,
    description: str,
    starts_at: datetime,
    ends_at: datetime,
    sales_start_at: datetime | None,
    waiting_room: WaitingRoomSettings,
) -> None:
    await conn.execute(
        q.UPDATE_EVENT_FIELDS,
        event_id,
        name,
        description,
        starts_at,
        ends_at,
        sales_start_at,
        waiting_room.enabled,
        waiting_room.admit_per_minute,
    )


async def move_event(conn: Conn, *, event_id: str, venue_id: str) -> None:
    await conn.execute(q.UPDATE_EVENT_VENUE, event_id, venue_id)


async def has_active_bookings(conn: Conn, event_id: str) -> bool:
    return bool(await conn.fetchval(q.EVENT_HAS_ACTIVE_BOOKINGS, event_id))


async def get_event(conn: Conn, event_id: str) -> Event | None:
    row = await conn.fetchrow(q.SELECT_EVENT_BY_ID, event_id)
    if row is None:
        return None
    return (await _events(conn, [row]))[0]


async def list_upcoming(
    conn: Conn,
    *,
    now: datetime,
    venue_id: str | None,
    starts_from: datetime | None,
    starts_before: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[Event], int]:
    rows = await conn.fetch(
        q.SELECT_UPCOMING_EVENTS, now, venue_id, starts_from, starts_before, limit, offset
    )
    total = await conn.fetchval(q.COUNT_UPCOMING_EVENTS, now, venue_id, starts_from, starts_before)
    return await _events(conn, list(rows)), int(total)


async def list_by_venue(conn: Conn, *, venue_id: str, now: datetime) -> list[Event]:
    return await _events(conn, list(await conn.fetch(q.SELECT_EVENTS_OF_VENUE, venue_id, now)))


async def held_counts(conn: Conn, event_ids: list[str]) -> dict[str, dict[str, HeldCounts]]:
    """event -> tier -> seats held now (sold, or under a live lock), straight from Postgres."""
    result: dict[str, dict[str, HeldCounts]] = {eid: {} for eid in event_ids}
    if not event_ids:
        return result
    for row in await conn.fetch(q.SELECT_HELD_COUNTS_BY_TIER, event_ids):
        result[row["event_id"]][row["tier"]] = HeldCounts(
            reserved=row["reserved"], locked=row["locked"]
        )
    return result


async def held_seats(conn: Conn, event_id: str) -> dict[str, bool]:
    """seat -> True if sold, False if locked (seats not in the map are available)."""
    return {
        row["seat_id"]: row["sold"] for row in await conn.fetch(q.SELECT_HELD_SEATS, [event_id])
    }


async def seats_of(conn: Conn, event_id: str) -> list[SeatWithPrice]:
    return [
        SeatWithPrice(
            Seat(r["seat_id"], r["row_label"], r["number"], r["tier"], r["position"]),
            r["price"],
            r["currency"],
        )
        for r in await conn.fetch(q.SELECT_SEATS_OF_EVENT, event_id)
    ]


async def seat_prices(conn: Conn, event_id: str, seat_ids: list[str]) -> dict[str, tuple[int, str]]:
    valid = [s for s in seat_ids if SEAT_ID_RE.match(s)]
    rows = await conn.fetch(q.SELECT_SEAT_PRICES, event_id, valid)
    return {r["seat_id"]: (r["price"], r["currency"]) for r in rows}


async def seat_ids_of(conn: Conn, event_id: str) -> list[str]:
    return [r["seat_id"] for r in await conn.fetch(q.SELECT_SEAT_IDS_OF_EVENT, event_id)]


async def events_on_sale(conn: Conn, *, now: datetime, limit: int) -> list[str]:
    """Ids of the events whose sale is open and that have not started, the soonest first."""
    return [r["id"] for r in await conn.fetch(q.SELECT_EVENTS_ON_SALE_SOONEST, now, limit)]


async def sales_opening(
    conn: Conn, *, now: datetime, lead: timedelta, hot: timedelta, limit: int
) -> list[str]:
    """Ids of the events whose sale opens within `lead` or opened less than `hot` ago (and that
    have not started), the earliest opening first."""
    rows = await conn.fetch(q.SELECT_SALES_OPENING, now, lead, hot, limit)
    return [r["id"] for r in rows]


@dataclass(frozen=True)
class RoomSale:
    """An open sale with a waiting room, as the admitter sees it each tick."""

    event_id: str
    sales_start_at: datetime | None
    admit_per_minute: int | None  # None: auto
    seats: int
    sold: int  # seats with an active sale
    confirmed: int  # bookings holding those sales
    locked: int  # seats under a live lock of a PENDING booking
    in_flight: int  # PENDING bookings
    recent_buyers: int = 0  # distinct users whose bookings made in the window hold seats
    failed: int = 0  # bookings failed on the shop's account (LOCK_EXPIRED, INTERNAL_ERROR) lately

    @property
    def seats_left(self) -> int:
        return max(0, self.seats - self.sold - self.locked)

    @property
    def seats_for_pacing(self) -> int:
        """The seats the pacer may count admitted buyers against.

        The pacer keeps `holding` (buyers admitted within the admission window) at or below the
        seats it is given. A buyer who has booked holds seats already (sold or locked, so no longer
        in `seats_left`) and would be counted twice: the seats left plus the buyers who booked in
        the window is what the admitted buyers who have not booked yet can still take. Without it
        a sale of 2-seat bookings stalls once a third of its seats' worth of buyers is admitted.
        """
        return self.seats_left + self.recent_buyers

    @property
    def sold_out(self) -> bool:
        """Every seat is sold (a locked seat may still come back; a sold one only by a refund)."""
        return self.sold >= self.seats


async def room_sales(
    conn: Conn, *, now: datetime, limit: int, window_seconds: float, failures_seconds: float
) -> list[RoomSale]:
    """The open sales with a waiting room (the soonest events first), with their counts;
    `window_seconds`: the admission window (how far back `recent_buyers` looks);
    `failures_seconds`: how far back `failed` looks (the auto rate's sample window)."""
    return [
        RoomSale(
            event_id=r["id"],
            sales_start_at=r["sales_start_at"],
            admit_per_minute=r["admit_per_minute"],
            seats=r["seats"],
            sold=r["sold"],
            confirmed=r["confirmed"],
            locked=r["locked"],
            in_flight=r["in_flight"],
            recent_buyers=r["recent_buyers"],
            failed=r["failed"],
        )
        for r in await conn.fetch(
            q.SELECT_ROOM_SALES,
            now,
            limit,
            now - timedelta(seconds=window_seconds),
            now - timedelta(seconds=failures_seconds),
        )
    ]


async def started_room_events(
    conn: Conn, *, now: datetime, since: datetime, limit: int
) -> list[str]:
    """The events with a waiting room that started after `since` and by `now`, soonest first."""
    return [r["id"] for r in await conn.fetch(q.SELECT_STARTED_ROOM_EVENTS, now, since, limit)]
