"""The event use cases (application/events.py) with in-memory ports: no Ray, HTTP or Postgres."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.events import EventChanges, NewEvent, create_event, update_event
from domain.errors import (
    CapacityExceeded,
    EventHasBookings,
    EventNotFound,
    ValidationFailed,
    VenueNotFound,
)
from domain.seating import ExplicitRow, TicketTier
from tests.fakes.application import NOW, FakeDatabase, FakeInventories, FixedClock

ROW = 10
TIERS = [TicketTier("VIP", 15000, "GBP", 10), TicketTier("GENERAL", 5000, "GBP", 25)]


def _new(venue_id: str, **kw: object) -> NewEvent:
    fields: dict[str, object] = {
        "venue_id": venue_id,
        "name": "Gig",
        "description": "",
        "starts_at": NOW + timedelta(days=10),
        "ends_at": NOW + timedelta(days=10, hours=2),
        "tiers": TIERS,
        "seat_map": None,
    }
    fields.update(kw)
    return NewEvent(**fields)  # type: ignore[arg-type]


# -- create ---------------------------------------------------------------------------------------
async def test_create_event_lays_out_each_tier_in_rows() -> None:
    db = FakeDatabase()
    venue = db.add_venue(capacity=35)
    seats_actors = FakeInventories()
    created = await create_event(
        _new(venue.id), db=db, clock=FixedClock(), seats_per_row=ROW, inventories=seats_actors
    )
    seats = db.state.seats[created.id]
    assert len(seats) == 35
    assert [s.row for s in seats if s.tier == "VIP"] == ["A"] * 10
    assert {s.row for s in seats if s.tier == "GENERAL"} == {"B", "C", "D"}
    assert created.created_at == NOW
    # Its sale is open from now: the seat actor is started before the first buyer needs it.
    assert seats_actors.warmed == [created.id]


async def test_create_event_takes_an_explicit_seat_map() -> None:
    db = FakeDatabase()
    venue = db.add_venue()
    rows = [
        ExplicitRow("A", "VIP", 10),
        ExplicitRow("B", "GENERAL", 20),
        ExplicitRow("C", "GENERAL", 5),
    ]
    created = await create_event(
        _new(venue.id, seat_map=rows),
        db=db,
        clock=FixedClock(),
        seats_per_row=ROW,
        inventories=FakeInventories(),
    )
    assert [s.id for s in db.state.seats[created.id]][-1] == "seat_C5"


async def test_create_event_refuses_an_end_not_after_the_start() -> None:
    db = FakeDatabase()
    venue = db.add_venue()
    with pytest.raises(ValidationFailed, match="endsAt"):
        await create_event(
            _new(venue.id, ends_at=NOW + timedelta(days=10)),
            db=db,
            clock=FixedClock(),
            seats_per_row=ROW,
            inventories=FakeInventories(),
        )


async def test_create_event_refuses_a_start_in_the_past() -> None:
    db = FakeDatabase()
    venue = db.add_venue()
    with pytest.raises(ValidationFailed, match="future"):
        await create_event(
            _new(venue.id, starts_at=NOW - timedelta(seconds=1)),
            db=db,
            clock=FixedClock(),
            seats_per_row=ROW,
            inventories=FakeInventories(),
        )


async def test_create_event_refuses_a_tier_named_twice() -> None:
    db = FakeDatabase()
    venue = db.add_venue()
    with pytest.raises(ValidationFailed, match="only once"):
        await create_event(
            _new(venue.id, tiers=[*TIERS, TIERS[0]]),
            db=db,
            clock=FixedClock(),
            seats_per_row=ROW,
            inventories=FakeInventories(),
        )


async def test_create_event_refuses_tiers_in_two_currencies() -> None:
    db = FakeDatabase()
    venue = db.add_venue()
    tiers = [TIERS[0], TicketTier("GENERAL", 5000, "EUR", 25)]
    with pytest.raises(ValidationFailed, match="currency"):
        await create_event(
            _new(venue.id, tiers=tiers),
            db=db,
            clock=FixedClock(),
            seats_per_row=ROW,
            inventories=FakeInventories(),
        )


async def test_create_event_refuses_a_seat_map_that_does_not_match_the_tiers() -> None:
    db = FakeDatabase()
    venue = db.add_venue()
    rows = [ExplicitRow("A", "VIP", 10), ExplicitRow("B", "GENERAL", 3)]
    with pytest.raises(ValidationFailed, match="seatMap"):
        await create_event(
            _new(venue.id, seat_map=rows),
            db=db,
            clock=FixedClock(),
            seats_per_row=ROW,
            inventories=FakeInventories(),
        )


async def test_create_event_refuses_an_unknown_venue() -> None:
    db = FakeDatabase()
    seat_actors = FakeInventories()
    with pytest.raises(VenueNotFound):
        await create_event(
            _new("ven_nope"), db=db, clock=FixedClock(), seats_per_row=ROW, inventories=seat_actors
        )
    assert not db.state.events
    assert seat_actors.warmed == []  # nothing created, nothing warmed


async def test_create_event_refuses_more_seats_than_the_venue_holds() -> None:
    db = FakeDatabase()
    venue = db.add_venue(capacity=34)
    with pytest.raises(CapacityExceeded):
        await create_event(
            _new(venue.id),
            db=db,
            clock=FixedClock(),
            seats_per_row=ROW,
            inventories=FakeInventories(),
        )
    assert not db.state.events


# -- update ---------------------------------------------------------------------------------------
def _with_event(*, capacity: int = 1000) -> tuple[FakeDatabase, str]:
    db = FakeDatabase()
    event = db.add_event(db.add_venue(capacity=capacity))
    return db, event.id


async def test_update_changes_only_the_fields_given() -> None:
    db, event_id = _with_event()
    before = db.state.events[event_id]
    inventories = FakeInventories()
    await update_event(
        event_id,
        EventChanges(name="Renamed"),
        db=db,
        inventories=inventories,
        seats_per_row=ROW,
        clock=FixedClock(),
    )
    after = db.state.events[event_id]
    assert after.name == "Renamed"
    assert (after.description, after.starts_at, after.ends_at, after.tiers) == (
        before.description,
        before.starts_at,
        before.ends_at,
        before.tiers,
    )
    assert inventories.retired == []


async def test_update_may_change_name_and_dates_of_an_event_with_bookings() -> None:
    db, event_id = _with_event()
    db.state.active_bookings.add(event_id)
    later = db.state.events[event_id].starts_at + timedelta(days=1)
    changes = EventChanges(name="Moved", starts_at=later, ends_at=later + timedelta(hours=1))
    await update_event(
        event_id,
        changes,
        db=db,
        inventories=FakeInventories(),
        seats_per_row=ROW,
        clock=FixedClock(),
    )
    assert db.state.events[event_id].starts_at == later


async def test_update_refuses_an_unknown_event() -> None:
    db, _ = _with_event()
    with pytest.raises(EventNotFound):
        await update_event(
            "evnt_nope",
            EventChanges(name="x"),
            db=db,
            inventories=FakeInventories(),
            seats_per_row=ROW,
            clock=FixedClock(),
        )


async def test_update_refuses_an_end_before_the_existing_start() -> None:
    db, event_id = _with_event()
    start = db.state.events[event_id].starts_at
    with pytest.raises(ValidationFailed, match="endsAt"):
        await update_event(
            event_id,
            EventChanges(ends_at=start - timedelta(hours=1)),
            db=db,
            inventories=FakeInventories(),
            seats_per_row=ROW,
            clock=FixedClock(),
        )


async def test_update_refuses_an_unknown_venue() -> None:
    db, event_id = _with_event()
    with pytest.raises(VenueNotFound):
        await update_event(
            event_id,
            EventChanges(venue_id="ven_nope"),
            db=db,
            inventories=FakeInventories(),
            seats_per_row=ROW,
            clock=FixedClock(),
        )


@pytest.mark.parametrize(
    "changes",
    [
        EventChanges(tiers=[TicketTier("VIP", 1, "GBP", 5)]),
        EventChanges(seat_map=[ExplicitRow("A", "VIP", 10), ExplicitRow("B", "GENERAL", 20)]),
        "venue",
    ],
)
async def test_update_refuses_layout_changes_once_seats_are_locked_or_sold(
    changes: EventChanges | str,
) -> None:
    db, event_id = _with_event()
    db.state.active_bookings.add(event_id)
    if changes == "venue":
        changes = EventChanges(venue_id=db.add_venue(name="Other").id)
    assert isinstance(changes, EventChanges)
    before = db.state.events[event_id]
    inventories = FakeInventories()
    with pytest.raises(EventHasBookings):
        await update_event(
            event_id, changes, db=db, inventories=inventories, seats_per_row=ROW, clock=FixedClock()
        )
    assert db.state.events[event_id] == before and inventories.retired == []


async def test_update_replaces_the_seat_map_and_retires_the_live_seat_actor() -> None:
    db, event_id = _with_event()
    inventories = FakeInventories()
    tiers = [TicketTier("FLOOR", 4000, "GBP", 12)]
    await update_event(
        event_id,
        EventChanges(tiers=tiers),
        db=db,
        inventories=inventories,
        seats_per_row=ROW,
        clock=FixedClock(),
    )
    assert db.state.events[event_id].tiers == tiers
    assert [s.id for s in db.state.seats[event_id]][-1] == "seat_B2"
    assert inventories.retired == [event_id]


async def test_update_moves_the_event_to_another_venue() -> None:
    db, event_id = _with_event()
    other = db.add_venue(name="Other")
    inventories = FakeInventories()
    await update_event(
        event_id,
        EventChanges(venue_id=other.id),
        db=db,
        inventories=inventories,
        seats_per_row=ROW,
        clock=FixedClock(),
    )
    assert db.state.events[event_id].venue_name == "Other"
    assert inventories.retired == []  # the seats stay as they are


async def test_update_refuses_tiers_the_venue_cannot_hold() -> None:
    db, event_id = _with_event(capacity=40)
    with pytest.raises(CapacityExceeded):
        await update_event(
            event_id,
            EventChanges(tiers=[TicketTier("GENERAL", 5000, "GBP", 41)]),
            db=db,
            inventories=FakeInventories(),
            seats_per_row=ROW,
            clock=FixedClock(),
        )


async def test_update_refuses_bad_tiers_and_seat_maps() -> None:
    db, event_id = _with_event()
    twice = [TIERS[0], TIERS[0]]
    with pytest.raises(ValidationFailed, match="only once"):
        await update_event(
            event_id,
            EventChanges(tiers=twice),
            db=db,
            inventories=FakeInventories(),
            seats_per_row=ROW,
            clock=FixedClock(),
        )
    with pytest.raises(ValidationFailed, match="seatMap"):
        await update_event(
            event_id,
            EventChanges(seat_map=[ExplicitRow("A", "NOPE", 3)]),
            db=db,
            inventories=FakeInventories(),
            seats_per_row=ROW,
            clock=FixedClock(),
        )


async def test_a_refused_update_changes_nothing() -> None:
    db, event_id = _with_event()
    before = db.state.events[event_id]
    # The name is written before the seat map is laid out; the bad map must undo it.
    changes = EventChanges(name="Half-done", seat_map=[ExplicitRow("A", "VIP", 3)])
    with pytest.raises(ValidationFailed):
        await update_event(
            event_id,
            changes,
            db=db,
            inventories=FakeInventories(),
            seats_per_row=ROW,
            clock=FixedClock(),
        )
    assert db.state.events[event_id] == before


async def test_a_sale_that_opens_later_is_not_warmed_at_creation() -> None:
    db = FakeDatabase()
    venue = db.add_venue(capacity=35)
    seat_actors = FakeInventories()
    await create_event(
        _new(venue.id, sales_start_at=NOW + timedelta(days=1)),
        db=db,
        clock=FixedClock(),
        seats_per_row=ROW,
        inventories=seat_actors,
    )
    assert seat_actors.warmed == []  # the warmer starts it ahead of the opening


async def test_an_update_that_opens_the_sale_warms_the_seat_actor() -> None:
    db, event_id = _with_event()
    seat_actors = FakeInventories()
    later = EventChanges(sales_start_at=NOW + timedelta(days=1))
    await update_event(
        event_id, later, db=db, inventories=seat_actors, seats_per_row=ROW, clock=FixedClock()
    )
    assert seat_actors.warmed == []  # the sale closed until tomorrow: the warmer's job then
    renamed = EventChanges(name="Renamed")
    await update_event(
        event_id, renamed, db=db, inventories=seat_actors, seats_per_row=ROW, clock=FixedClock()
    )
    assert seat_actors.warmed == []  # still closed
    opened = EventChanges(clear_sales_start=True)
    await update_event(
        event_id, opened, db=db, inventories=seat_actors, seats_per_row=ROW, clock=FixedClock()
    )
    assert seat_actors.warmed == [event_id]  # opened now: warmed at once
    await update_event(
        event_id, renamed, db=db, inventories=seat_actors, seats_per_row=ROW, clock=FixedClock()
    )
    assert seat_actors.warmed == [event_id]  # a rename of an open sale starts nothing new
