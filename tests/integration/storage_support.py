"""A small catalog for the repository tests (a user and an event with seats), made through the
repositories themselves; the fixtures `migrated_url` and `conn` are in tests/integration/conftest.py."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from domain.seating import TicketTier, generate_layout
from storage import catalog_repository, user_repository


@dataclass(frozen=True)
class Catalog:
    user_id: str
    user_email: str
    event_id: str
    seat_ids: tuple[str, ...]
    price: int


async def make_catalog(
    conn: asyncpg.Connection, *, seats: int = 4, starts_in: timedelta = timedelta(days=30)
) -> Catalog:
    email = f"repo-{secrets.token_hex(6)}@example.com"
    user = await user_repository.add(conn, name="Repo Tester", email=email, password_hash="x")
    assert user is not None
    venue = await catalog_repository.add_venue(
        conn,
        name=f"Hall {secrets.token_hex(6)}",
        address="1 Road",
        city="London",
        country="GB",
        capacity=100,
    )
    tiers = [TicketTier(tier="GENERAL", price=2500, currency="GBP", capacity=seats)]
    layout = generate_layout(tiers, seats_per_row=10)
    starts_at = datetime.now(UTC) + starts_in
    event_id, _ = await catalog_repository.add_event(
        conn,
        venue_id=venue.id,
        name="Repo Night",
        description="",
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=3),
        tiers=tiers,
        seats=layout,
    )
    return Catalog(user.id, email, event_id, tuple(s.id for s in layout), 2500)
