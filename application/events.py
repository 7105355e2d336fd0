"""Creating and changing an event and its seat map (admin work)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from application.ports import Clock, Database, SeatInventories
from domain.catalog import Venue, WaitingRoomSettings
from domain.errors import (
    CapacityExceeded,
    EventHasBookings,
    EventNotFound,
    ValidationFailed,
    VenueNotFound,
)
from domain.seating import ExplicitRow, Seat, TicketTier, explicit_layout, generate_layout


@dataclass(frozen=True)
class NewEvent:
    venue_id: str
    name: str
    description: str
    starts_at: datetime
    ends_at: datetime
    tiers: list[TicketTier]
    seat_map: list[ExplicitRow] | None = None  # None: rows generated from the tiers
    sales_start_at: datetime | None = None  # None: on sale at once
    waiting_room: WaitingRoomSettings = WaitingRoomSettings()


@dataclass(frozen=True)
class EventChanges:
    """What an update changes; None leaves a field as it is."""

    name: str | None = None
    description: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    venue_id: str | None = None
    tiers: list[TicketTier] | None = None
    seat_map: list[ExplicitRow] | None = None
    sales_start_at: datetime | None = None
    clear_sales_start: bool = False  # salesStartAt sent as null: on sale at once
    waiting_room: WaitingRoomSettings | None = None


@dataclass(frozen=True)
class CreatedEvent:
    id: str
    created_at: datetime


def check_tiers(tiers: list[TicketTier]) -> list[TicketTier]:
    """Refuses a tier named twice, and tiers in more than one currency."""
    names = [t.tier for t in tiers]
    if len(set(names)) != len(names):
        raise ValidationFailed("ticketTiers: each tier may appear only once")
    if len({t.currency for t in tiers}) > 1:
        raise ValidationFailed("ticketTiers: all tiers of an event must use the same currency")
    return tiers


def layout(
    tiers: list[TicketTier], seat_map: list[ExplicitRow] | None, *, seats_per_row: int
) -> list[Seat]:
    """The event's seats: the explicit map, or rows generated from the tiers."""
    if seat_map is None:
        return generate_layout(tiers, seats_per_row=seats_per_row)
    try:
        return explicit_layout(seat_map, tiers)
    except ValueError as exc:
        raise ValidationFailed(f"seatMap: {exc}")


def check_dates(
    starts_at: datetime, ends_at: datetime, sales_start_at: datetime | None = None
) -> None:
    if ends_at <= starts_at:
        raise ValidationFailed("endsAt must be after startsAt")
    # A sale that opens once the event has started would never open (bookings close at startsAt).
    if sales_start_at is not None and sales_start_at >= starts_at:
        raise ValidationFailed("salesStartAt must be before startsAt")


def check_capacity(tiers: list[TicketTier], venue: Venue) -> None:
    total = sum(t.capacity for t in tiers)
    if total > venue.capacity:
        raise CapacityExceeded(
            f"Tier capacities total {total} seats; venue {venue.id} holds {venue.capacity}"
        )


async def create_event(
    cmd: NewEvent,
    *,
    db: Database,
    clock: Clock,
    seats_per_row: int,
    inventories: SeatInventories,
) -> CreatedEvent:
    """Creates an upcoming event with its tiers and seat map, at a venue that can hold it.

    Args:
        cmd: The event.
        db: Where events are kept.
        clock: The current time (an event cannot start in the past).
        seats_per_row: Row width when the seats are generated from the tiers.
        inventories: The seat actors: when the sale is open from now, the new event's is started
            in the background, so the first buyers meet a warm one (a later opening is warmed
            by `actors.warmer`).

    Returns:
        The new event's id and creation time.

    Raises:
        ValidationFailed: endsAt not after startsAt, salesStartAt not before startsAt, startsAt
            in the past, a tier named twice, mixed currencies, or a seat map that does not match
            the tiers.
        VenueNotFound: No such venue.
        CapacityExceeded: The tiers hold more seats than the venue.
    """
    check_dates(cmd.starts_at, cmd.ends_at, cmd.sales_start_at)
    if cmd.starts_at < clock():
        raise ValidationFailed("startsAt must be in the future")
    tiers = check_tiers(cmd.tiers)
    seats = layout(tiers, cmd.seat_map, seats_per_row=seats_per_row)
    async with db.session() as s:
        venue = await s.catalog.get_venue(cmd.venue_id)
        if venue is None:
            raise VenueNotFound(f"Venue {cmd.venue_id} does not exist")
        check_capacity(tiers, venue)
        async with s.transaction():
            event_id, created_at = await s.catalog.add_event(
                venue_id=venue.id,
                name=cmd.name,
                description=cmd.description,
                starts_at=cmd.starts_at,
                ends_at=cmd.ends_at,
                tiers=tiers,
                seats=seats,
                sales_start_at=cmd.sales_start_at,
                waiting_room=cmd.waiting_room,
            )
    if cmd.sales_start_at is None or cmd.sales_start_at <= clock():
        inventories.warm_soon(event_id)  # on sale now; a later opening is the warmer's
    return CreatedEvent(id=event_id, created_at=created_at)


async def update_event(
    event_id: str,
    changes: EventChanges,
    *,
    db: Database,
    inventories: SeatInventories,
    seats_per_row: int,
    clock: Clock,
) -> None:
    """Changes an event: name, description and dates at any time; venue, tiers and seat map only
    while no seat is locked or sold.

    All in one transaction that holds the event's row lock, which conflicts with the key-share
    lock a booking insert takes, so no booking slips in while the seat map is replaced. A new
    seat map retires the event's live seat actor, which holds the old one. A change that opens
    the sale now (`salesStartAt` cleared or moved to the past), or a new seat map of a sale that
    is open, warms the event's seat actor in the background, as a creation does.

    Args:
        event_id: The event.
        changes: What to change.
        db: Where events are kept.
        inventories: The live seat actors.
        seats_per_row: Row width when the seats are generated from the tiers.
        clock: The current time (whether the sale is open after the change).

    Raises:
        EventNotFound: No such event.
        ValidationFailed: endsAt not after startsAt or salesStartAt not before it (as changed), a
            tier named twice, mixed currencies, or a seat map that does not match the tiers.
        VenueNotFound: The new venue does not exist.
        EventHasBookings: Venue, tiers or seat map change while seats are locked or sold.
        CapacityExceeded: The tiers hold more seats than the (new) venue.
    """
    seat_map_changed = False
    now = clock()
    async with db.session() as s, s.transaction():
        if not await s.catalog.lock_event(event_id):
            raise EventNotFound(f"Event {event_id} does not exist")
        event = await s.catalog.get_event(event_id)
        if event is None:  # locked a moment ago, in this transaction
            raise EventNotFound(f"Event {event_id} does not exist")
        starts_at = changes.starts_at or event.starts_at
        ends_at = changes.ends_at or event.ends_at
        sales_start_at = (
            None if changes.clear_sales_start else changes.sales_start_at or event.sales_start_at
        )
        check_dates(starts_at, ends_at, sales_start_at)
        venue_id = changes.venue_id or event.venue_id
        venue = await s.catalog.get_venue(venue_id)
        if venue is None:
            raise VenueNotFound(f"Venue {venue_id} does not exist")
        new_seat_map = changes.tiers is not None or changes.seat_map is not None
        if (new_seat_map or venue_id != event.venue_id) and await s.catalog.has_active_bookings(
            event_id
        ):
            raise EventHasBookings(
                f"Event {event_id} has seats locked or sold; its tiers, seat map and venue are fixed"
            )
        tiers = check_tiers(changes.tiers) if changes.tiers is not None else event.tiers
        check_capacity(tiers, venue)
        await s.catalog.update_event_fields(
            event_id=event_id,
            name=changes.name or event.name,
            description=changes.description
            if changes.description is not None
            else event.description,
            starts_at=starts_at,
            ends_at=ends_at,
            sales_start_at=sales_start_at,
            waiting_room=changes.waiting_room or event.waiting_room,
        )
        if venue_id != event.venue_id:
            await s.catalog.move_event(event_id=event_id, venue_id=venue_id)
        if new_seat_map:
            seats = layout(tiers, changes.seat_map, seats_per_row=seats_per_row)
            await s.catalog.replace_seat_map(event_id=event_id, tiers=tiers, seats=seats)
            seat_map_changed = True
        was_open = event.sales_start_at is None or event.sales_start_at <= now
        open_now = (sales_start_at is None or sales_start_at <= now) and starts_at > now
    if seat_map_changed:
        # The live actor holds the old map; nothing is locked or sold, so it can simply go.
        await inventories.retire(event_id)
    if open_now and (seat_map_changed or not was_open):
        inventories.warm_soon(event_id)  # a later opening is the warmer's
