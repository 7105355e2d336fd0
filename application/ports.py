"""What the use cases need from the world, as Protocols.

The adapters live at the edges: api/adapters.py binds the storage repositories to a pooled
connection and wraps today's actor calls. Repositories here are bound to one connection (a
`Session`), so a use case decides what runs on one connection and what in one transaction.
Result shapes that storage defines (`Added`, `KeyedBooking`, `LoginRecord`) appear as read-only
Protocols, so this package imports nothing from storage.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from domain.best_available import SeatRequest
from domain.bookings import Booking
from domain.catalog import Event, Venue, WaitingRoomSettings
from domain.saga import CancelOutcome
from domain.seating import Seat, TicketTier
from domain.users import Role, User

# The current time, tz-aware UTC. Production passes `utc_now`; tests a fixed or stepped clock.
Clock = Callable[[], datetime]


# -- result shapes ------------------------------------------------------------------------------
class AddedBooking(Protocol):
    """What inserting a booking reports (storage.booking_repository.Added)."""

    @property
    def seats_found(self) -> int: ...  # how many of the requested seats are seats of the event
    @property
    def on_sale(self) -> bool | None: ...  # sale open, not started (None: no such event)
    @property
    def admitted(self) -> bool | None: ...  # no waiting room, or an admitted caller
    @property
    def booking_id(self) -> str | None: ...  # None: nothing inserted


class AddedBestBooking(Protocol):
    """What inserting a best-available booking reports (storage.booking_repository.AddedBest)."""

    @property
    def on_sale(self) -> bool | None: ...  # sale open, not started (None: no such event)
    @property
    def admitted(self) -> bool | None: ...  # no waiting room, or an admitted caller
    @property
    def tier_sold(self) -> bool: ...  # the event sells the tier asked for (any, when none was)
    @property
    def booking_id(self) -> str | None: ...  # None: nothing inserted


class KeyedBooking(Protocol):
    """The booking an idempotency key already names (storage.booking_repository.KeyedBooking)."""

    @property
    def booking_id(self) -> str: ...
    @property
    def request_hash(self) -> str | None: ...


class LoginRecord(Protocol):
    """A user with its password hash (storage.user_repository.LoginRecord)."""

    @property
    def user(self) -> User: ...
    @property
    def password_hash(self) -> str: ...


class SignedToken(Protocol):
    """A bearer token and when it expires (api.auth.IssuedToken)."""

    @property
    def token(self) -> str: ...
    @property
    def expires_at(self) -> datetime: ...


# -- repositories, bound to one connection ------------------------------------------------------
class BookingRepository(Protocol):
    async def add(
        self,
        *,
        booking_id: str,
        user_id: str,
        event_id: str,
        seat_ids: list[str],
        saga_slot: int,
        payment_token: str,
        idempotency_key: str | None,
        request_hash: str | None,
        request_id: str | None = None,
        admitted: bool = False,
    ) -> AddedBooking: ...

    async def add_best(
        self,
        *,
        booking_id: str,
        user_id: str,
        event_id: str,
        request: SeatRequest,
        saga_slot: int,
        payment_token: str,
        idempotency_key: str | None,
        request_hash: str | None,
        request_id: str | None = None,
        admitted: bool = False,
    ) -> AddedBestBooking: ...

    async def get_by_idempotency_key(self, *, user_id: str, key: str) -> KeyedBooking | None: ...

    async def get(self, booking_id: str) -> Booking | None: ...

    async def request_cancellation(self, booking_id: str) -> bool: ...


class CatalogRepository(Protocol):
    async def get_venue(self, venue_id: str) -> Venue | None: ...

    async def get_event(self, event_id: str) -> Event | None: ...

    async def seat_prices(
        self, event_id: str, seat_ids: list[str]
    ) -> dict[str, tuple[int, str]]: ...

    async def add_event(
        self,
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
    ) -> tuple[str, datetime]: ...

    async def lock_event(self, event_id: str) -> bool: ...

    async def has_active_bookings(self, event_id: str) -> bool: ...

    async def update_event_fields(
        self,
        *,
        event_id: str,
        name: str,
        description: str,
        starts_at: datetime,
        ends_at: datetime,
        sales_start_at: datetime | None,
        waiting_room: WaitingRoomSettings,
    ) -> None: ...

    async def move_event(self, *, event_id: str, venue_id: str) -> None: ...

    async def replace_seat_map(
        self, *, event_id: str, tiers: list[TicketTier], seats: list[Seat]
    ) -> None: ...


class UserRepository(Protocol):
    async def add(
        self, *, name: str, email: str, password_hash: str, role: Role = Role.USER
    ) -> User | None: ...

    async def get_login(self, email: str) -> LoginRecord | None: ...


class Session(Protocol):
    """One database connection and the repositories bound to it."""

    @property
    def bookings(self) -> BookingRepository: ...
    @property
    def catalog(self) -> CatalogRepository: ...
    @property
    def users(self) -> UserRepository: ...

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """Everything inside commits together or not at all."""
        ...


class Database(Protocol):
    def session(self) -> AbstractAsyncContextManager[Session]:
        """Borrows a connection for the block (give it back before any long wait)."""
        ...


# -- actors and services ------------------------------------------------------------------------
class BookingSagas(Protocol):
    async def cancel(
        self, *, booking_id: str, saga_slot: int, request_id: str = ""
    ) -> CancelOutcome | None:
        """Drives a recorded cancellation to its end (the saga actor of the booking's slot).

        Returns:
            The outcome, or None when the booking is no longer CONFIRMED.
        """
        ...


class SeatInventories(Protocol):
    async def retire(self, event_id: str) -> None:
        """Stops the event's live seat actor, if any: the next use rebuilds it from Postgres."""
        ...

    def warm_soon(self, event_id: str) -> None:
        """Starts the event's seat actor in the background, within the per-node cap, so that the
        first buyers do not wait for it; never fails the caller."""
        ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when the password matches; None (an unknown user) costs as much and is False."""
        ...


class TokenSigner(Protocol):
    def issue(self, user: User) -> SignedToken: ...
