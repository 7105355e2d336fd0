"""/api/venues, /api/events and /api/inventory."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from redis.exceptions import RedisError

from actors.clients import SeatInventoryClient
from api.adapters import utc_now
from api.deps import AdminDep, Services, ServicesDep
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
    WaitingRoomRequest,
    WaitingRoomView,
)
from application import events as event_use_cases
from application.events import EventChanges, NewEvent
from domain.catalog import Event, HeldCounts, Venue, WaitingRoomSettings, tier_availability
from domain.errors import (
    EventNotFound,
    ServiceUnavailable,
    VenueNotFound,
)
from domain.inventory import Summary
from domain.seating import (
    ExplicitRow,
    TicketTier,
    group_rows,
)
from storage import catalog_repository
from storage.pool import Conn

router = APIRouter(tags=["events"])
logger = logging.getLogger(__name__)
_seats = SeatInventoryClient()


# -- views --------------------------------------------------------------------------------------
def event_item(event: Event, held: dict[str, HeldCounts]) -> EventItem:
    tiers = tier_availability(event.tiers, held)
    return EventItem(
        id=event.id,
        name=event.name,
        description=event.description,
        venue=EventVenue(id=event.venue_id, name=event.venue_name, city=event.venue_city),
        startsAt=event.starts_at,
        endsAt=event.ends_at,
        availableSeats=sum(t.available for t in tiers),
        totalSeats=sum(t.capacity for t in tiers),
        ticketTiers=[
            TierView(
                tier=t.tier,
                price=t.price,
                currency=t.currency,
                capacity=t.capacity,
                available=t.available,
            )
            for t in tiers
        ],
        salesStartAt=event.sales_start_at,
        waitingRoom=WaitingRoomView(
            enabled=event.waiting_room.enabled,
            admitPerMinute=event.waiting_room.admit_per_minute or "auto",
        ),
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
        SeatMapRow(
            row=row,
            tier=tier,
            seats=[
                SeatView(
                    id=s.id,
                    row=s.row,
                    number=s.number,
                    tier=s.tier,
                    price=price[s.id][0],
                    currency=price[s.id][1],
                )
                for s in row_seats
            ],
        )
        for row, tier, row_seats in group_rows([s.seat for s in seats])
    ]
    return EventDetail(**item.model_dump(), seatMap=SeatMapView(rows=rows))


def venue_response(venue: Venue) -> VenueResponse:
    return VenueResponse(
        id=venue.id,
        name=venue.name,
        address=venue.address,
        city=venue.city,
        country=venue.country,
        capacity=venue.capacity,
    )


def _tiers(body: list[TierRequest]) -> list[TicketTier]:
    return [TicketTier(t.tier, t.price, t.currency, t.capacity) for t in body]


def _seat_map(body: SeatMapRequest | None) -> list[ExplicitRow] | None:
    return None if body is None else [ExplicitRow(r.row, r.tier, r.seats) for r in body.rows]


def _waiting_room(body: WaitingRoomRequest | None) -> WaitingRoomSettings | None:
    if body is None:
        return None
    rate = body.admitPerMinute
    return WaitingRoomSettings(
        enabled=body.enabled, admit_per_minute=None if rate == "auto" else rate
    )


# -- venues -------------------------------------------------------------------------------------
@router.post("/api/venues", status_code=201, response_model=VenueResponse, tags=["venues"])
async def create_venue(
    body: CreateVenueRequest, _admin: AdminDep, svc: ServicesDep
) -> VenueResponse:
    """Create a venue (admin only); `capacity` bounds the seats of every event held there."""
    async with svc.connection() as conn:
        venue = await catalog_repository.add_venue(
            conn,
            name=body.name,
            address=body.address,
            city=body.city,
            country=body.country,
            capacity=body.capacity,
        )
    return venue_response(venue)


@router.get("/api/venues/{venue_id}", response_model=VenueDetail, tags=["venues"])
async def get_venue(venue_id: str, svc: ServicesDep) -> VenueDetail:
    """A venue and its upcoming events (as list items, without seat maps)."""
    async with svc.connection() as conn:
        venue = await catalog_repository.get_venue(conn, venue_id)
        if venue is None:
            raise VenueNotFound(f"Venue {venue_id} does not exist")
        events = await catalog_repository.list_by_venue(
            conn, venue_id=venue_id, now=datetime.now(UTC)
        )
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
    """Upcoming events (starting now or later), soonest first, with seats available per tier.

    `venueId` filters by venue; `from` (inclusive) and `to` (exclusive) filter on `startsAt`.
    Availability counts AVAILABLE seats only and may lag the inventory by up to a second.
    """
    async with svc.connection() as conn:
        events, total = await catalog_repository.list_upcoming(
            conn,
            now=datetime.now(UTC),
            venue_id=venueId,
            starts_from=from_,
            starts_before=to,
            limit=perPage,
            offset=(page - 1) * perPage,
        )
        items = await event_items(conn, events)
    return EventList(
        data=items,
        pagination=Pagination(
            page=page,
            perPage=perPage,
            total=total,
            totalPages=math.ceil(total / perPage) if total else 0,
        ),
    )


@router.get("/api/events/{event_id}", response_model=EventDetail)
async def get_event(event_id: str, svc: ServicesDep) -> EventDetail:
    """One event as in the list, plus its seat map: rows and seats with tier and price.

    Seat status (available, locked, reserved) is in `GET /api/inventory/events/{event_id}/seats`.
    """
    async with svc.connection() as conn:
        return await event_detail(conn, event_id)


@router.post("/api/events", status_code=201, response_model=EventCreatedResponse)
async def create_event(
    body: CreateEventRequest, _admin: AdminDep, svc: ServicesDep
) -> EventCreatedResponse:
    """Create an event at a venue (admin only), with its ticket tiers and seat map.

    Without `seatMap`, each tier's `capacity` seats are laid out in rows (A, B, ..., Z, AA, ...)
    in tier order. `startsAt` must be in the future and before `endsAt`. An unknown venue: 404
    `VENUE_NOT_FOUND`; tiers holding more seats than the venue: 422 `CAPACITY_EXCEEDED`.

    `salesStartAt` (optional, before `startsAt`): bookings before it get 409 `EVENT_NOT_ON_SALE`.
    `waitingRoom` (optional): `{"enabled": true, "admitPerMinute": 600}` (1-1000000, or `"auto"`)
    puts buyers in the event's queue (`POST /api/events/{id}/queue`), and booking then needs the
    admission token the queue hands out (`X-Admission-Token`).
    """
    created = await event_use_cases.create_event(
        NewEvent(
            venue_id=body.venueId,
            name=body.name,
            description=body.description,
            starts_at=body.startsAt,
            ends_at=body.endsAt,
            tiers=_tiers(body.ticketTiers),
            seat_map=_seat_map(body.seatMap),
            sales_start_at=body.salesStartAt,
            waiting_room=_waiting_room(body.waitingRoom) or WaitingRoomSettings(),
        ),
        db=svc.database,
        clock=utc_now,
        seats_per_row=svc.settings.seats_per_row,
        inventories=svc.inventories,
    )
    return EventCreatedResponse(id=created.id, name=body.name, createdAt=created.created_at)


@router.put("/api/events/{event_id}", response_model=EventDetail)
async def update_event(
    event_id: str, body: UpdateEventRequest, _admin: AdminDep, svc: ServicesDep
) -> EventDetail:
    """Change an event (admin only); fields left out stay as they are.

    Name, description, dates (`salesStartAt` too; `null` puts the event on sale at once) and the
    waiting room may change at any time. Tiers, seat map and venue are fixed once a seat is
    locked or sold: 422 `EVENT_HAS_BOOKINGS`. Answers with the event as changed.
    """
    await event_use_cases.update_event(
        event_id,
        EventChanges(
            name=body.name,
            description=body.description,
            starts_at=body.startsAt,
            ends_at=body.endsAt,
            venue_id=body.venueId,
            tiers=None if body.ticketTiers is None else _tiers(body.ticketTiers),
            seat_map=_seat_map(body.seatMap),
            sales_start_at=body.salesStartAt,
            # Sent as null (not left out): the sale opens at once.
            clear_sales_start="salesStartAt" in body.model_fields_set and body.salesStartAt is None,
            waiting_room=_waiting_room(body.waitingRoom),
        ),
        db=svc.database,
        inventories=svc.inventories,
        seats_per_row=svc.settings.seats_per_row,
        clock=utc_now,
    )
    async with svc.connection() as conn:
        detail = await event_detail(conn, event_id)
    await _tell_waiting_room(svc, detail)
    return detail


async def _tell_waiting_room(svc: Services, detail: EventDetail) -> None:
    """A moved opening or a new rate reaches the waiters' hints of when to look (next_look).

    Best effort: the admitter opens the room at `salesStartAt` from Postgres either way; with
    Redis away, waiters far back learn of an earlier opening within one horizon instead."""
    room = detail.waitingRoom
    if not room.enabled:
        return
    rate = room.admitPerMinute
    try:
        await svc.waiting_room().set_opening(
            event_id=detail.id,
            opens_at=None if detail.salesStartAt is None else detail.salesStartAt.timestamp(),
            per_minute=None if rate == "auto" else int(rate),
        )
    except (RedisError, OSError, TimeoutError, ServiceUnavailable) as exc:
        logger.warning(
            "waiting room not told of the event's change (%s)",
            type(exc).__name__,
            extra={"event_id": detail.id},
        )


# -- inventory ----------------------------------------------------------------------------------
@router.get(
    "/api/inventory/events/{event_id}/seats", response_model=InventoryResponse, tags=["inventory"]
)
async def event_seats(event_id: str, svc: ServicesDep) -> InventoryResponse:
    """Every seat of an event with its live status (AVAILABLE, LOCKED or RESERVED), a summary,
    and whether the event is on sale (from `salesStartAt`, until the event starts)."""
    async with svc.connection() as conn:
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
        InventorySeat(
            id=s.seat.id,
            row=s.seat.row,
            number=s.seat.number,
            tier=s.seat.tier,
            price=s.price,
            currency=s.currency,
            status=statuses.get(s.seat.id, "AVAILABLE"),
        )
        for s in seats
    ]
    counts = Summary(
        total=len(views),
        available=sum(1 for v in views if v.status == "AVAILABLE"),
        locked=sum(1 for v in views if v.status == "LOCKED"),
        reserved=sum(1 for v in views if v.status == "RESERVED"),
    )
    # Open from salesStartAt until the event starts (else POST /api/bookings answers 409
    # EVENT_NOT_ON_SALE, decided by the booking insert with the same rule).
    on_sale = event.on_sale(datetime.now(UTC))
    return InventoryResponse(
        eventId=event_id,
        onSale=on_sale,
        seats=views,
        summary=InventorySummary(
            total=counts.total,
            available=counts.available,
            locked=counts.locked,
            reserved=counts.reserved,
        ),
    )
