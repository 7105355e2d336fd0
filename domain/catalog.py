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


MIN_ADMIT_PER_MINUTE = 1
MAX_ADMIT_PER_MINUTE = 1_000_000


@dataclass(frozen=True)
class WaitingRoomSettings:
    """An event's waiting room: off, or on with a fixed rate (`admit_per_minute`, None: auto)."""

    enabled: bool = False
    admit_per_minute: int | None = None  # None: "auto" (domain.admission_rate)

    def __post_init__(self) -> None:
        rate = self.admit_per_minute
        if rate is not None and not MIN_ADMIT_PER_MINUTE <= rate <= MAX_ADMIT_PER_MINUTE:
            raise ValueError(
                f"admitPerMinute must be {MIN_ADMIT_PER_MINUTE}-{MAX_ADMIT_PER_MINUTE} or auto"
            )


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
    sales_start_at: datetime | None = None  # None: on sale from its creation
    waiting_room: WaitingRoomSettings = field(default_factory=WaitingRoomSettings)

    def on_sale(self, now: datetime) -> bool:
        """Bookable now: the sale has opened and the event has not started."""
        return self.starts_at > now and (self.sales_start_at is None or self.sales_start_at <= now)


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
