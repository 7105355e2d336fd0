"""In-memory fills for the application's ports (application/ports.py): no Ray, HTTP or Postgres.

`FakeDatabase` keeps everything in dicts; `session().transaction()` snapshots them and restores
the snapshot when the block raises, so a use case that forgets its transaction is caught by a
rollback test. Each fake records the calls a test may want to assert.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from domain.best_available import SeatRequest
from domain.bookings import Booking, BookingStatus, SagaStep
from domain.catalog import Event, Venue, WaitingRoomSettings
from domain.ids import new_id
from domain.saga import CancelOutcome
from domain.seating import Seat, TicketTier, generate_layout
from domain.users import Role, User

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class FixedClock:
    """A clock that says what the test tells it to."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Added:
    seats_found: int
    on_sale: bool | None
    admitted: bool | None
    booking_id: str | None


@dataclass(frozen=True)
class AddedBest:
    on_sale: bool | None
    admitted: bool | None
    tier_sold: bool
    booking_id: str | None


@dataclass(frozen=True)
class KeyedBooking:
    booking_id: str
    request_hash: str | None


@dataclass(frozen=True)
class LoginRecord:
    user: User
    password_hash: str


@dataclass
class State:
    venues: dict[str, Venue] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)
    seats: dict[str, list[Seat]] = field(default_factory=dict)
    bookings: dict[str, Booking] = field(default_factory=dict)
    keys: dict[tuple[str, str], KeyedBooking] = field(default_factory=dict)
    active_bookings: set[str] = field(default_factory=set)  # event ids with seats locked or sold
    users: dict[str, User] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # user id -> password hash
    cancellations: list[str] = field(default_factory=list)


class FakeBookings:
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db

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
    ) -> Added:
        # As the one INSERT ... SELECT does: price from the tiers, refuse an event not on sale
        # and a caller the event's waiting room has not admitted.
        st = self._db.state
        event = st.events.get(event_id)
        on_sale = None if event is None else event.on_sale(self._db.clock())
        may = None if event is None else (not event.waiting_room.enabled or admitted)
        known = {s.id: s for s in st.seats.get(event_id, [])}
        found = sum(1 for s in seat_ids if s in known)
        key_taken = idempotency_key is not None and (user_id, idempotency_key) in st.keys
        if event is None or not on_sale or not may or found != len(seat_ids) or key_taken:
            if key_taken and self._db.expire_keys_after_insert:
                del st.keys[(user_id, idempotency_key or "")]
            return Added(seats_found=found, on_sale=on_sale, admitted=may, booking_id=None)
        prices = {t.tier: t.price for t in event.tiers}
        now = self._db.clock()
        st.bookings[booking_id] = Booking(
            id=booking_id,
            user_id=user_id,
            event_id=event_id,
            event_name=event.name,
            event_date=event.starts_at,
            venue_name=event.venue_name,
            seat_ids=tuple(seat_ids),
            status=BookingStatus.PENDING,
            saga_step=SagaStep.STARTED,
            saga_slot=saga_slot,
            failure_reason=None,
            total_amount=sum(prices[known[s].tier] for s in seat_ids),
            currency=event.tiers[0].currency,
            payment_token=payment_token,
            payment_id=None,
            lock_expires_at=None,
            created_at=now,
            updated_at=now,
            confirmed_at=None,
            failed_at=None,
            cancelled_at=None,
        )
        if idempotency_key is not None:
            st.keys[(user_id, idempotency_key)] = KeyedBooking(booking_id, request_hash)
        return Added(seats_found=found, on_sale=True, admitted=True, booking_id=booking_id)

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
    ) -> AddedBest:
        # As INSERT_BEST_BOOKING does: no seats and no price yet, the currency of the tier asked for.
        st = self._db.state
        event = st.events.get(event_id)
        if event is None:
            return AddedBest(on_sale=None, admitted=None, tier_sold=False, booking_id=None)
        on_sale = event.on_sale(self._db.clock())
        may = not event.waiting_room.enabled or admitted
        tiers = [t for t in event.tiers if request.tier is None or t.tier == request.tier]
        key_taken = idempotency_key is not None and (user_id, idempotency_key) in st.keys
        if not on_sale or not may or not tiers or key_taken:
            return AddedBest(on_sale=on_sale, admitted=may, tier_sold=bool(tiers), booking_id=None)
        now = self._db.clock()
        st.bookings[booking_id] = Booking(
            id=booking_id,
            user_id=user_id,
            event_id=event_id,
            event_name=event.name,
            event_date=event.starts_at,
            venue_name=event.venue_name,
            seat_ids=(),
            status=BookingStatus.PENDING,
            saga_step=SagaStep.STARTED,
            saga_slot=saga_slot,
            failure_reason=None,
            total_amount=0,
            currency=tiers[0].currency,
            payment_token=payment_token,
            payment_id=None,
            lock_expires_at=None,
            created_at=now,
            updated_at=now,
            confirmed_at=None,
            failed_at=None,
            cancelled_at=None,
            seat_request=request,
        )
        if idempotency_key is not None:
            st.keys[(user_id, idempotency_key)] = KeyedBooking(booking_id, request_hash)
        return AddedBest(on_sale=True, admitted=True, tier_sold=True, booking_id=booking_id)

    async def get_by_idempotency_key(self, *, user_id: str, key: str) -> KeyedBooking | None:
        return self._db.state.keys.get((user_id, key))

    async def get(self, booking_id: str) -> Booking | None:
        return self._db.state.bookings.get(booking_id)

    async def request_cancellation(self, booking_id: str) -> bool:
        st = self._db.state
        booking = st.bookings[booking_id]
        if booking.status is not BookingStatus.CONFIRMED:
            return False
        st.bookings[booking_id] = replace(booking, saga_step=SagaStep.CANCELLING)
        st.cancellations.append(booking_id)
        return True


class FakeCatalog:
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db

    async def get_venue(self, venue_id: str) -> Venue | None:
        return self._db.state.venues.get(venue_id)

    async def get_event(self, event_id: str) -> Event | None:
        return self._db.state.events.get(event_id)

    async def seat_prices(self, event_id: str, seat_ids: list[str]) -> dict[str, tuple[int, str]]:
        event = self._db.state.events[event_id]
        tiers = {t.tier: t for t in event.tiers}
        return {
            s.id: (tiers[s.tier].price, tiers[s.tier].currency)
            for s in self._db.state.seats.get(event_id, [])
            if s.id in seat_ids
        }

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
        st = self._db.state
        venue = st.venues[venue_id]
        event_id, now = new_id("evnt"), self._db.clock()
        st.events[event_id] = Event(
            id=event_id,
            name=name,
            description=description,
            venue_id=venue_id,
            venue_name=venue.name,
            venue_city=venue.city,
            venue_capacity=venue.capacity,
            starts_at=starts_at,
            ends_at=ends_at,
            created_at=now,
            updated_at=now,
            tiers=list(tiers),
            sales_start_at=sales_start_at,
            waiting_room=waiting_room,
        )
        st.seats[event_id] = list(seats)
        return event_id, now

    async def lock_event(self, event_id: str) -> bool:
        assert self._db.in_transaction, "a row lock outside a transaction is released at once"
        return event_id in self._db.state.events

    async def has_active_bookings(self, event_id: str) -> bool:
        return event_id in self._db.state.active_bookings

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
        st = self._db.state
        st.events[event_id] = replace(
            st.events[event_id],
            name=name,
            description=description,
            starts_at=starts_at,
            ends_at=ends_at,
            sales_start_at=sales_start_at,
            waiting_room=waiting_room,
        )

    async def move_event(self, *, event_id: str, venue_id: str) -> None:
        st = self._db.state
        venue = st.venues[venue_id]
        st.events[event_id] = replace(
            st.events[event_id],
            venue_id=venue_id,
            venue_name=venue.name,
            venue_city=venue.city,
            venue_capacity=venue.capacity,
        )

    async def replace_seat_map(
        self, *, event_id: str, tiers: list[TicketTier], seats: list[Seat]
    ) -> None:
        st = self._db.state
        st.events[event_id] = replace(st.events[event_id], tiers=list(tiers))
        st.seats[event_id] = list(seats)


class FakeUsers:
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db

    async def add(
        self, *, name: str, email: str, password_hash: str, role: Role = Role.USER
    ) -> User | None:
        st = self._db.state
        if any(u.email == email for u in st.users.values()):
            return None
        user = User(
            id=new_id("usr"), name=name, email=email, role=role, created_at=self._db.clock()
        )
        st.users[user.id] = user
        st.hashes[user.id] = password_hash
        return user

    async def get_login(self, email: str) -> LoginRecord | None:
        self._db.logins_looked_up.append(email)
        st = self._db.state
        for user in st.users.values():
            if user.email == email:
                return LoginRecord(user, st.hashes[user.id])
        return None


class FakeSession:
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.bookings = FakeBookings(db)
        self.catalog = FakeCatalog(db)
        self.users = FakeUsers(db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        saved = copy.deepcopy(self._db.state)
        self._db.in_transaction = True
        try:
            yield
        except BaseException:
            self._db.state = saved
            raise
        finally:
            self._db.in_transaction = False


class FakeDatabase:
    """The application's Database port, in memory."""

    def __init__(self, clock: FixedClock | None = None) -> None:
        self.state = State()
        self.clock = clock or FixedClock()
        self.in_transaction = False
        self.sessions = 0
        self.logins_looked_up: list[str] = []
        # Simulates an Idempotency-Key whose 24 h ran out between the insert and the look-up.
        self.expire_keys_after_insert = False

    @asynccontextmanager
    async def session(self) -> AsyncIterator[FakeSession]:
        self.sessions += 1
        yield FakeSession(self)

    # -- seeding, for tests ---------------------------------------------------------------------
    def add_venue(self, *, capacity: int = 1000, name: str = "Hall") -> Venue:
        venue = Venue(
            id=new_id("ven"),
            name=name,
            address="1 Road",
            city="London",
            country="GB",
            capacity=capacity,
            created_at=self.clock(),
        )
        self.state.venues[venue.id] = venue
        return venue

    def add_event(
        self,
        venue: Venue,
        *,
        starts_in: timedelta = timedelta(days=30),
        tiers: list[TicketTier] | None = None,
        seats_per_row: int = 10,
    ) -> Event:
        tiers = tiers or [
            TicketTier("VIP", 15000, "GBP", 10),
            TicketTier("GENERAL", 5000, "GBP", 20),
        ]
        starts_at = self.clock() + starts_in
        event = Event(
            id=new_id("evnt"),
            name="Concert",
            description="Loud",
            venue_id=venue.id,
            venue_name=venue.name,
            venue_city=venue.city,
            venue_capacity=venue.capacity,
            starts_at=starts_at,
            ends_at=starts_at + timedelta(hours=3),
            created_at=self.clock(),
            updated_at=self.clock(),
            tiers=tiers,
        )
        self.state.events[event.id] = event
        self.state.seats[event.id] = generate_layout(tiers, seats_per_row=seats_per_row)
        return event

    def add_booking(
        self,
        event: Event,
        *,
        user_id: str,
        status: BookingStatus = BookingStatus.CONFIRMED,
        step: SagaStep | None = None,
        payment_id: str | None = "pay_1",
        saga_slot: int = 3,
    ) -> Booking:
        now = self.clock()
        booking = Booking(
            id=new_id("bkg"),
            user_id=user_id,
            event_id=event.id,
            event_name=event.name,
            event_date=event.starts_at,
            venue_name=event.venue_name,
            seat_ids=("seat_A1",),
            status=status,
            saga_step=step
            or (SagaStep.STARTED if status is BookingStatus.PENDING else SagaStep(status.value)),
            saga_slot=saga_slot,
            failure_reason=None,
            total_amount=15000,
            currency="GBP",
            payment_token="pm_card_visa",
            payment_id=payment_id,
            lock_expires_at=None,
            created_at=now,
            updated_at=now,
            confirmed_at=now,
            failed_at=None,
            cancelled_at=None,
        )
        self.state.bookings[booking.id] = booking
        return booking


class FakeSagas:
    """The saga actors: answers each cancel with what the test set (or waits `delay` first)."""

    def __init__(
        self, *, cancelled_at: datetime | None = NOW, finished: bool = True, delay: float = 0.0
    ) -> None:
        self.cancelled_at = cancelled_at
        self.finished = finished  # False: the booking was no longer CONFIRMED (None answer)
        self.delay = delay
        self.calls: list[tuple[str, int]] = []

    async def cancel(
        self, *, booking_id: str, saga_slot: int, request_id: str = ""
    ) -> CancelOutcome | None:
        self.calls.append((booking_id, saga_slot))
        if self.delay:
            await asyncio.sleep(self.delay)
        return CancelOutcome(booking_id, self.cancelled_at) if self.finished else None


class FakeInventories:
    def __init__(self) -> None:
        self.retired: list[str] = []
        self.warmed: list[str] = []

    async def retire(self, event_id: str) -> None:
        self.retired.append(event_id)

    def warm_soon(self, event_id: str) -> None:
        self.warmed.append(event_id)


class FakePasswords:
    """'hashed:<password>' hashes; counts verifications (an unknown user must cost one too)."""

    def __init__(self) -> None:
        self.verified: list[str | None] = []

    async def hash(self, password: str) -> str:
        return f"hashed:{password}"

    async def verify(self, password_hash: str | None, password: str) -> bool:
        self.verified.append(password_hash)
        return password_hash is not None and password_hash == f"hashed:{password}"


@dataclass(frozen=True)
class FakeToken:
    token: str
    expires_at: datetime


class FakeTokens:
    def issue(self, user: User) -> FakeToken:
        return FakeToken(token=f"token-for-{user.id}", expires_at=NOW + timedelta(hours=24))
