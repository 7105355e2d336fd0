"""/api/venues, /api/events and /api/inventory."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from actors.clients import SeatInventoryClient
from api.deps import AdminDep, ServicesDep
from api.schemas import (
    CreateEventRequest,
    CreateVenueRequest,
    EventCreatedResponse,
    EventDetail,
    EventItem,
    EventList,
    EventVenue,
    InventoryResponse,
    InventorySeat,
    InventorySummary,
    Pagination,
    QueryDatetime,
    SeatMapRequest,
    SeatMapRow,
    SeatMapView,
    SeatView,
    TierRequest,
    TierView,
    UpdateEventRequest,
    VenueDetail,
    VenueResponse,
)
from domain.catalog import Event, HeldCounts, Venue, tier_availability
from domain.errors import (
    CapacityExceeded,
    EventHasBookings,
    EventNotFound,
    ValidationFailed,
    VenueNotFound,
)
from domain.inventory import Summary
from domain.seating import (
    ExplicitRow,
    Seat,
    TicketTier,
    explicit_layout,
    generate_layout,
    group_rows,
)
from storage import catalog_repository
from storage.pool import Conn

router = APIRouter(tags=["events"])
_seats = SeatInventoryClient()


# -- views --------------------------------------------------------------------------------------
def event_item(event: Event, held: dict[str, HeldCounts]) -> EventItem:
    tiers = tier_availability(event.tiers, held)
    return EventItem(
        id=event.id, name=event.name, description=event.description,
        venue=EventVenue(id=event.venue_id, name=event.venue_name, city=event.venue_city),
        startsAt=event.starts_at, endsAt=event.ends_at,
        availableSeats=sum(t.available for t in tiers), totalSeats=sum(t.capacity for t in tiers),
        ticketTiers=[TierView(tier=t.tier, price=t.price, currency=t.currency, capacity=t.capacity, available=t.available) for t in tiers],
    )


async def event_items(conn: Conn, events: list[Event]) -> list[EventItem]:
    held = await catalog_repository.held_counts(conn, [e.id for e in events])
    return [event_item(e, held[e.id]) for e in events]


async def event_detail(conn: Conn, event_id: str) -> EventDetail:
    event = await catalog_repository.get_event(conn, event_id)
    if event is None:
        raise EventNotFound(f"Event {event_id} does not exist")
    item = (await event_items(conn, [event]))[0]
    seats = await catalog_repository.seats_of(conn, event_id)
    price = {s.seat.id: (s.price, s.currency) for s in seats}
    rows = [
        SeatMapRow(row=row, tier=tier, seats=[
            SeatView(id=s.id, row=s.row, number=s.number, tier=s.tier, price=price[s.id][0], currency=price[s.id][1])
            for s in row_seats
        ])
        for row, tier, row_seats in group_rows([s.seat for s in seats])
    ]
    return EventDetail(**item.model_dump(), seatMap=SeatMapView(rows=rows))


def venue_response(venue: Venue) -> VenueResponse:
    return VenueResponse(id=venue.id, name=venue.name, address=venue.address, city=venue.city,
                         country=venue.country, capacity=venue.capacity)


def _tiers(body: list[TierRequest]) -> list[TicketTier]:
    names = [t.tier for t in body]
    if len(set(names)) != len(names):
        raise ValidationFailed("ticketTiers: each tier may appear only once")
    currencies = {t.currency for t in body}
    if len(currencies) > 1:
        raise ValidationFailed("ticketTiers: all tiers of an event must use the same currency")
    return [TicketTier(t.tier, t.price, t.currency, t.capacity) for t in body]


def _layout(tiers: list[TicketTier], seat_map: SeatMapRequest | None, seats_per_row: int) -> list[Seat]:
    if seat_map is None:
        return generate_layout(tiers, seats_per_row=seats_per_row)
    try:
        return explicit_layout([ExplicitRow(r.row, r.tier, r.seats) for r in seat_map.rows], tiers)
    except ValueError as exc:
        raise ValidationFailed(f"seatMap: {exc}")


def _check_dates(starts_at: datetime, ends_at: datetime) -> None:
    if ends_at <= starts_at:
        raise ValidationFailed("endsAt must be after startsAt")


def _check_capacity(tiers: list[TicketTier], venue: Venue) -> None:
    total = sum(t.capacity for t in tiers)
    if total > venue.capacity:
        raise CapacityExceeded(f"Tier capacities total {total} seats; venue {venue.id} holds {venue.capacity}")


# -- venues -------------------------------------------------------------------------------------
@router.post("/api/venues", status_code=201, response_model=VenueResponse, tags=["venues"])
async def create_venue(body: CreateVenueRequest, _admin: AdminDep, svc: ServicesDep) -> VenueResponse:
    pool = await svc.db()
    async with pool.acquire() as conn:
        venue = await catalog_repository.add_venue(
            conn, name=body.name, address=body.address, city=body.city, country=body.country, capacity=body.capacity
        )
    return venue_response(venue)


@router.get("/api/venues/{venue_id}", response_model=VenueDetail, tags=["venues"])
async def get_venue(venue_id: str, svc: ServicesDep) -> VenueDetail:
    pool = await svc.db()
    async with pool.acquire() as conn:
        venue = await catalog_repository.get_venue(conn, venue_id)
        if venue is None:
            raise VenueNotFound(f"Venue {venue_id} does not exist")
        events = await catalog_repository.list_by_venue(conn, venue_id=venue_id, now=datetime.now(UTC))
        items = await event_items(conn, events)
    return VenueDetail(**venue_response(venue).model_dump(), events=items)


# -- events -------------------------------------------------------------------------------------
@router.get("/api/events", response_model=EventList)
async def list_events(
    svc: ServicesDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    perPage: Annotated[int, Query(ge=1, le=100)] = 20,
    venueId: Annotated[str | None, Query(max_length=64)] = None,
    from_: Annotated[QueryDatetime | None, Query(alias="from")] = None,
    to: Annotated[QueryDatetime | None, Query()] = None,
) -> EventList:
    pool = await svc.db()
    async with pool.acquire() as conn:
        events, total = await catalog_repository.list_upcoming(
            conn, now=datetime.now(UTC), venue_id=venueId, starts_from=from_, starts_before=to,
            limit=perPage, offset=(page - 1) * perPage,
        )
        items = await event_items(conn, events)
    return EventList(data=items, pagination=Pagination(
        page=page, perPage=perPage, total=total, totalPages=math.ceil(total / perPage) if total else 0
    ))


@router.get("/api/events/{event_id}", response_model=EventDetail)
async def get_event(event_id: str, svc: ServicesDep) -> EventDetail:
    pool = await svc.db()
    async with pool.acquire() as conn:
        return await event_detail(conn, event_id)


@router.post("/api/events", status_code=201, response_model=EventCreatedResponse)
async def create_event(body: CreateEventRequest, _admin: AdminDep, svc: ServicesDep) -> EventCreatedResponse:
    _check_dates(body.startsAt, body.endsAt)
    if body.startsAt < datetime.now(UTC):
        raise ValidationFailed("startsAt must be in the future")
    tiers = _tiers(body.ticketTiers)
    seats = _layout(tiers, body.seatMap, svc.settings.seats_per_row)
    pool = await svc.db()
    async with pool.acquire() as conn:
        venue = await catalog_repository.get_venue(conn, body.venueId)
        if venue is None:
            raise VenueNotFound(f"Venue {body.venueId} does not exist")
        _check_capacity(tiers, venue)
        async with conn.transaction():
            event_id, created_at = await catalog_repository.add_event(
                conn, venue_id=venue.id, name=body.name, description=body.description,
                starts_at=body.startsAt, ends_at=body.endsAt, tiers=tiers, seats=seats,
            )
    return EventCreatedResponse(id=event_id, name=body.name, createdAt=created_at)


@router.put("/api/events/{event_id}", response_model=EventDetail)
async def update_event(event_id: str, body: UpdateEventRequest, _admin: AdminDep, svc: ServicesDep) -> EventDetail:
    pool = await svc.db()
    seat_map_changed = False
    async with pool.acquire() as conn:
        async with conn.transaction():
            # FOR UPDATE conflicts with the key-share lock a booking insert takes on the event,
            # so no booking can slip in while the seat map is being replaced.
            if not await catalog_repository.lock_event(conn, event_id):
                raise EventNotFound(f"Event {event_id} does not exist")
            event = await catalog_repository.get_event(conn, event_id)
            assert event is not None
            starts_at = body.startsAt or event.starts_at
            ends_at = body.endsAt or event.ends_at
            _check_dates(starts_at, ends_at)
            venue_id = body.venueId or event.venue_id
            venue = await catalog_repository.get_venue(conn, venue_id)
            if venue is None:
                raise VenueNotFound(f"Venue {venue_id} does not exist")
            changes_layout = body.ticketTiers is not None or body.seatMap is not None or venue_id != event.venue_id
            if changes_layout and await catalog_repository.has_active_bookings(conn, event_id):
                raise EventHasBookings(f"Event {event_id} has seats locked or sold; its tiers, seat map and venue are fixed")
            tiers = _tiers(body.ticketTiers) if body.ticketTiers is not None else event.tiers
            _check_capacity(tiers, venue)
            await catalog_repository.update_event_fields(
                conn, event_id=event_id, name=body.name or event.name,
                description=body.description if body.description is not None else event.description,
                starts_at=starts_at, ends_at=ends_at,
            )
            if venue_id != event.venue_id:
                await catalog_repository.move_event(conn, event_id=event_id, venue_id=venue_id)
            if body.ticketTiers is not None or body.seatMap is not None:
                seats = _layout(tiers, body.seatMap, svc.settings.seats_per_row)
                await catalog_repository.replace_seat_map(conn, event_id=event_id, tiers=tiers, seats=seats)
                seat_map_changed = True
        if seat_map_changed:
            # The live actor holds the old map; nothing is locked or sold, so it can simply go.
            await _seats.retire(event_id)
        return await event_detail(conn, event_id)


# -- inventory ----------------------------------------------------------------------------------
@router.get("/api/inventory/events/{event_id}/seats", response_model=InventoryResponse, tags=["inventory"])
async def event_seats(event_id: str, svc: ServicesDep) -> InventoryResponse:
    pool = await svc.db()
    async with pool.acquire() as conn:
        event = await catalog_repository.get_event(conn, event_id)
        if event is None:
            raise EventNotFound(f"Event {event_id} does not exist")
        seats = await catalog_repository.seats_of(conn, event_id)
        # A live seat actor knows the locks; without one (or while it retires) Postgres answers.
        statuses = await _seats.snapshot_if_live(event_id)
        if statuses is None:
            held = await catalog_repository.held_seats(conn, event_id)
            statuses = {seat: ("RESERVED" if sold else "LOCKED") for seat, sold in held.items()}
    views = [
        InventorySeat(id=s.seat.id, row=s.seat.row, number=s.seat.number, tier=s.seat.tier, price=s.price,
                      currency=s.currency, status=statuses.get(s.seat.id, "AVAILABLE"))
        for s in seats
    ]
    counts = Summary(
        total=len(views),
        available=sum(1 for v in views if v.status == "AVAILABLE"),
        locked=sum(1 for v in views if v.status == "LOCKED"),
        reserved=sum(1 for v in views if v.status == "RESERVED"),
    )
    # The sale closes when the event starts (POST /api/bookings answers 409 EVENT_NOT_ON_SALE).
    on_sale = event.starts_at > datetime.now(UTC)
    return InventoryResponse(eventId=event_id, onSale=on_sale, seats=views, summary=InventorySummary(
        total=counts.total, available=counts.available, locked=counts.locked, reserved=counts.reserved
    ))
