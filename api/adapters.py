"""The application's ports, as the API process fills them: storage repositories bound to a pooled
connection, and thin wrappers over today's actor calls.

The actor wrappers are deliberately small: typed actor clients (actors/) replace them, one line
each, when they arrive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import asyncpg

from actors.saga_client import BookingSagaClient
from domain.best_available import SeatRequest
from domain.bookings import Booking
from domain.catalog import Event, Venue, WaitingRoomSettings
from domain.saga import CancelOutcome
from domain.seating import Seat, TicketTier
from domain.users import Role, User
from storage import booking_repository, catalog_repository, user_repository
from storage.pool import Conn


def utc_now() -> datetime:
    return datetime.now(UTC)


class Connection:
    """`async with Connection(get_pool) as conn:` borrows a pooled connection for the block.

    A class rather than an @asynccontextmanager generator: it runs on every request.
    """

    __slots__ = ("_get_pool", "_timeout", "_acquire")

    def __init__(
        self, get_pool: Callable[[], Awaitable[asyncpg.Pool]], *, timeout: float | None = None
    ) -> None:
        self._get_pool = get_pool
        self._timeout = timeout
        self._acquire: Any = None

    async def __aenter__(self) -> Conn:
        pool = await self._get_pool()
        self._acquire = pool.acquire(timeout=self._timeout)
        conn: Conn = await self._acquire.__aenter__()
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._acquire.__aexit__(exc_type, exc, tb)


class PgBookings:
    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

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
    ) -> booking_repository.Added:
        return await booking_repository.add(
            self._conn,
            admitted=admitted,
            booking_id=booking_id,
            user_id=user_id,
            event_id=event_id,
            seat_ids=seat_ids,
            saga_slot=saga_slot,
            payment_token=payment_token,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            request_id=request_id,
        )

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
    ) -> booking_repository.AddedBest:
        return await booking_repository.add_best(
            self._conn,
            admitted=admitted,
            booking_id=booking_id,
            user_id=user_id,
            event_id=event_id,
            request=request,
            saga_slot=saga_slot,
            payment_token=payment_token,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            request_id=request_id,
        )

    async def get_by_idempotency_key(
        self, *, user_id: str, key: str
    ) -> booking_repository.KeyedBooking | None:
        return await booking_repository.get_by_idempotency_key(self._conn, user_id=user_id, key=key)

    async def get(self, booking_id: str) -> Booking | None:
        return await booking_repository.get(self._conn, booking_id)

    async def request_cancellation(self, booking_id: str) -> bool:
        return await booking_repository.request_cancellation(self._conn, booking_id)


class PgCatalog:
    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def get_venue(self, venue_id: str) -> Venue | None:
        return await catalog_repository.get_venue(self._conn, venue_id)

    async def get_event(self, event_id: str) -> Event | None:
        return await catalog_repository.get_event(self._conn, event_id)

    async def seat_prices(self, event_id: str, seat_ids: list[str]) -> dict[str, tuple[int, str]]:
        return await catalog_repository.seat_prices(self._conn, event_id, seat_ids)

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
    ) -> tuple[str, datetime]:
        return await catalog_repository.add_event(
            self._conn,
            venue_id=venue_id,
            name=name,
            description=description,
            starts_at=starts_at,
            ends_at=ends_at,
            tiers=tiers,
            seats=seats,
            sales_start_at=sales_start_at,
            waiting_room=waiting_room,
        )

    async def lock_event(self, event_id: str) -> bool:
        return await catalog_repository.lock_event(self._conn, event_id)

    async def has_active_bookings(self, event_id: str) -> bool:
        return await catalog_repository.has_active_bookings(self._conn, event_id)

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
    ) -> None:
        await catalog_repository.update_event_fields(
            self._conn,
            event_id=event_id,
            name=name,
            description=description,
            starts_at=starts_at,
            ends_at=ends_at,
            sales_start_at=sales_start_at,
            waiting_room=waiting_room,
        )

    async def move_event(self, *, event_id: str, venue_id: str) -> None:
        await catalog_repository.move_event(self._conn, event_id=event_id, venue_id=venue_id)

    async def replace_seat_map(
        self, *, event_id: str, tiers: list[TicketTier], seats: list[Seat]
    ) -> None:
        await catalog_repository.replace_seat_map(
            self._conn, event_id=event_id, tiers=tiers, seats=seats
        )


class PgUsers:
    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add(
        self, *, name: str, email: str, password_hash: str, role: Role = Role.USER
    ) -> User | None:
        return await user_repository.add(
            self._conn, name=name, email=email, password_hash=password_hash, role=role
        )

    async def get_login(self, email: str) -> user_repository.LoginRecord | None:
        return await user_repository.get_login(self._conn, email)


class PgSession:
    """One pooled connection and the repositories bound to it (application.ports.Session)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    @property
    def bookings(self) -> PgBookings:
        return PgBookings(self._conn)

    @property
    def catalog(self) -> PgCatalog:
        return PgCatalog(self._conn)

    @property
    def users(self) -> PgUsers:
        return PgUsers(self._conn)

    def transaction(self) -> AbstractAsyncContextManager[None]:
        tx: AbstractAsyncContextManager[None] = self._conn.transaction()
        return tx


class _PgSessionScope:
    """Borrows a pooled connection for a session (what Connection does, one object less: per request)."""

    __slots__ = ("_get_pool", "_acquire")

    def __init__(self, get_pool: Callable[[], Awaitable[asyncpg.Pool]]) -> None:
        self._get_pool = get_pool
        self._acquire: Any = None

    async def __aenter__(self) -> PgSession:
        pool = await self._get_pool()
        self._acquire = pool.acquire()
        return PgSession(await self._acquire.__aenter__())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._acquire.__aexit__(exc_type, exc, tb)


class PgDatabase:
    """application.ports.Database over the replica's lazily opened pool."""

    __slots__ = ("_get_pool",)

    def __init__(self, get_pool: Callable[[], Awaitable[asyncpg.Pool]]) -> None:
        self._get_pool = get_pool

    def session(self) -> _PgSessionScope:
        return _PgSessionScope(self._get_pool)


class RaySagas:
    """application.ports.BookingSagas over the booking saga actors."""

    def __init__(self, pool_size: int) -> None:
        self._client = BookingSagaClient(pool_size)

    async def cancel(
        self, *, booking_id: str, saga_slot: int, request_id: str = ""
    ) -> CancelOutcome | None:
        # A slot beyond today's pool (it was recorded under a larger one) goes to actor 0.
        return await self._client.cancel(
            slot=self._client.slot_of(saga_slot), booking_id=booking_id, request_id=request_id
        )
