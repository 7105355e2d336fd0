"""Venues and events as read models (plain dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from domain.seating import Seat, TicketTier


@dataclass(frozen=True)
class Venue:
    id: str
    name: str
    address: str
    city: str
    country: str
    capacity: int
    created_at: datetime


@dataclass(frozen=True)
class TierAvailability:
    tier: str
    price: int
    currency: str
    capacity: int
    available: int


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    description: str
    venue_id: str
    venue_name: str
    venue_city: str
    venue_capacity: int
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    updated_at: datetime
    tiers: list[TicketTier] = field(default_factory=list)


@dataclass(frozen=True)
class SeatWithPrice:
    seat: Seat
    price: int
    currency: str


@dataclass(frozen=True)
class HeldCounts:
    """Seats of one tier held right now: sold, or locked by a live lock."""

    reserved: int = 0
    locked: int = 0


def tier_availability(
    tiers: list[TicketTier], held: dict[str, HeldCounts]
) -> list[TierAvailability]:
    result = []
    for t in tiers:
        h = held.get(t.tier, HeldCounts())
        result.append(
            TierAvailability(
                t.tier, t.price, t.currency, t.capacity, t.capacity - h.reserved - h.locked
            )
        )
    return result
