"""Seat map layout: tiers to rows and seats (row letters A..Z, AA, AB, ...; numbers from 1)."""

from __future__ import annotations

import re
from dataclasses import dataclass

TIERS = ("GENERAL", "VIP", "STANDING")
SEAT_ID_RE = re.compile(r"^seat_([A-Z]{1,4})([1-9][0-9]{0,3})$")
MAX_SEATS_PER_EVENT = 100_000


@dataclass(frozen=True)
class TicketTier:
    tier: str
    price: int  # minor units
    currency: str
    capacity: int


@dataclass(frozen=True)
class Seat:
    id: str
    row: str
    number: int
    tier: str
    position: int


def row_label(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, 27 -> AB (bijective base 26, like spreadsheet columns)."""
    if index < 0:
        raise ValueError("row index must be >= 0")
    label = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        label = chr(ord("A") + rem) + label
    return label


def seat_id(row: str, number: int) -> str:
    return f"seat_{row}{number}"


def parse_seat_id(value: str) -> tuple[str, int] | None:
    match = SEAT_ID_RE.match(value)
    if not match:
        return None
    return match.group(1), int(match.group(2))


def generate_layout(tiers: list[TicketTier], *, seats_per_row: int) -> list[Seat]:
    """Lays tiers out in order; each tier starts on a fresh row so rows never mix tiers."""
    seats: list[Seat] = []
    row_index = 0
    for tier in tiers:
        remaining = tier.capacity
        while remaining > 0:
            label = row_label(row_index)
            in_row = min(seats_per_row, remaining)
            for number in range(1, in_row + 1):
                seats.append(Seat(seat_id(label, number), label, number, tier.tier, len(seats)))
            remaining -= in_row
            row_index += 1
    return seats


@dataclass(frozen=True)
class ExplicitRow:
    row: str
    tier: str
    seats: int


def explicit_layout(rows: list[ExplicitRow], tiers: list[TicketTier]) -> list[Seat]:
    """A seat map given row by row; each tier's capacity must equal its seats in the map."""
    known = {t.tier for t in tiers}
    seen_rows: set[str] = set()
    seats: list[Seat] = []
    for row in rows:
        if row.row in seen_rows:
            raise ValueError(f"row {row.row} appears twice in seatMap")
        if row.tier not in known:
            raise ValueError(f"row {row.row} uses tier {row.tier} that ticketTiers does not define")
        seen_rows.add(row.row)
        for number in range(1, row.seats + 1):
            seats.append(Seat(seat_id(row.row, number), row.row, number, row.tier, len(seats)))
    for tier in tiers:
        count = sum(1 for s in seats if s.tier == tier.tier)
        if count != tier.capacity:
            raise ValueError(
                f"tier {tier.tier} has capacity {tier.capacity} but the seatMap gives it {count} seats"
            )
    return seats


def group_rows(seats: list[Seat]) -> list[tuple[str, str, list[Seat]]]:
    """(row, tier, seats) in layout order, for the event's seatMap view."""
    rows: list[tuple[str, str, list[Seat]]] = []
    for seat in seats:
        if rows and rows[-1][0] == seat.row:
            rows[-1][2].append(seat)
        else:
            rows.append((seat.row, seat.tier, [seat]))
    return rows
