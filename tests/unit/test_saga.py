"""BookingSagaRunner against small, honest in-memory fakes of its four ports and a manual clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from domain.best_available import SeatRequest
from domain.bookings import (
    BookingStatus,
    CancelStep,
    FailureReason,
    SagaStep,
    charge_key,
    refund_key,
)
from domain.inventory import SeatMap, SeatStatus
from domain.saga import (
    CHARGE_MARGIN,
    BookingSagaRunner,
    Cancellation,
    CancellationRunner,
    CancelOutcome,
    Charge,
    Priced,
    SagaBooking,
    SagaOutcome,
    SeatChoice,
    SeatLock,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EVENT_ID = "evnt_01"
SEATS = ("seat_A1", "seat_A2", "seat_A3", "seat_A4")
BOOKED = ("seat_A1", "seat_A2")
PRICES = {"seat_A1": 10_000, "seat_A2": 5_000, "seat_A3": 5_000, "seat_A4": 5_000}
BOOKING_ID = "bkg_01"
LOCK_TTL = 300.0
DEADLINE = timedelta(minutes=10)
STEP_TIMEOUT = 0.05
HANG_SECONDS = (
    2.0  # far past STEP_TIMEOUT, yet short enough that a missing timeout fails, not hangs
)
CARD = "pm_card_visa"
DECLINED_CARD = "pm_card_chargeDeclined"


# -- fakes --------------------------------------------------------------------------------------


class Outage(ConnectionError):
    """A dependency that cannot be reached right now."""


class Faults:
    """Per-method fault injection shared by the fakes: raise an Outage, or hang."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.hanging: set[str] = set()
        self.calls: list[str] = []

    async def enter(self, method: str) -> None:
        self.calls.append(method)
        if method in self.failing:
            raise Outage(method)
        if method in self.hanging:
            await asyncio.sleep(HANG_SECONDS)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)

    def timestamp(self) -> float:
        return self.current.timestamp()


class FakeSeats(Faults):
    """The seat actor's behaviour over a real SeatMap (a reserve is begin + settle, as it is there)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.ttl = LOCK_TTL
        self.map = SeatMap(SEATS)

    async def lock(self, *, event_id: str, booking_id: str, seat_ids: tuple[str, ...]) -> SeatLock:
        await self.enter("lock")
        assert event_id == EVENT_ID
        result = self.map.lock(
            booking_id, tuple(seat_ids), ttl=self.ttl, now=self.clock.timestamp()
        )
        if not result.ok:
            return SeatLock(ok=False, conflicts=result.conflicts + result.unknown)
        return SeatLock(ok=True, expires_at=datetime.fromtimestamp(result.expires_at, tz=UTC))

    async def lock_best(
        self, *, event_id: str, booking_id: str, request: SeatRequest
    ) -> SeatChoice:
        """Stands in for the seat actor's choosing (tested on its own): the first free seats in
        order, all or none; the seats a live lock of this booking holds, when asked again."""
        await self.enter("lock_best")
        assert event_id == EVENT_ID
        now = self.clock.timestamp()
        held = self.map.lock_of(booking_id)
        if held is not None and held[1] > now:
            return SeatChoice(
                ok=True, seat_ids=held[0], expires_at=datetime.fromtimestamp(held[1], tz=UTC)
            )
        free = [s for s, status in self.map.statuses(now).items() if status is SeatStatus.AVAILABLE]
        if len(free) < request.quantity:
            return SeatChoice(ok=False, message=f"{len(free)} seats left")
        chosen = tuple(free[: request.quantity])
        result = self.map.lock(booking_id, chosen, ttl=self.ttl, now=now)
        assert result.ok
        return SeatChoice(
            ok=True, seat_ids=chosen, expires_at=datetime.fromtimestamp(result.expires_at, tz=UTC)
        )

    async def release(self, *, event_id: str, booking_id: str) -> None:
        await self.enter("release")
        assert event_id == EVENT_ID
        self.map.release(booking_id)

    async def reserve(self, *, event_id: str, booking_id: str) -> bool:
        await self.enter("reserve")
        assert event_id == EVENT_ID
        begun = self.map.begin_reserve(booking_id, now=self.clock.timestamp())
        if not begun.ok:
            return False
        self.map.settle_reserve(booking_id)
        return True

    # -- test helpers --
    def hold(
        self, booking_id: str, seat_ids: tuple[str, ...] = BOOKED, ttl: float = LOCK_TTL
    ) -> datetime:
        """A lock taken directly on the map (by an earlier, interrupted run or another buyer)."""
        result = self.map.lock(booking_id, seat_ids, ttl=ttl, now=self.clock.timestamp())
        assert result.ok, result
        return datetime.fromtimestamp(result.expires_at, tz=UTC)

    def status(self, seat_id: str) -> SeatStatus:
        return self.map.statuses(self.clock.timestamp())[seat_id]

    def sold_to(self, booking_id: str) -> tuple[str, ...]:
        """The booking's seats that are sold to it (begin_reserve is idempotent once sold)."""
        if self.map.lock_of(booking_id) is not None:
            return ()
        result = self.map.begin_reserve(booking_id, now=self.clock.timestamp())
        return result.seat_ids if result.ok else ()


@dataclass(frozen=True)
class ChargeRequest:
    booking_id: str
    user_id: str
    amount: int
    currency: str
    token: str


class FakePayments(Faults):
    """A card processor with idempotency keys: a replayed key returns the first outcome."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, Charge] = {}  # charge idempotency key -> outcome
        self.requests: dict[str, ChargeRequest] = {}
        self.refunds: dict[str, str] = {}  # refund idempotency key -> payment id
        self.lose_next_response = False  # the charge goes through but its answer is lost
        self.on_new_charge: Callable[[], None] | None = None

    async def charge(
        self,
        *,
        booking_id: str,
        user_id: str,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
    ) -> Charge:
        await self.enter("charge")
        request = ChargeRequest(booking_id, user_id, amount, currency, token)
        outcome = self.outcomes.get(idempotency_key)
        if outcome is None:
            payment_id = f"pay_{len(self.outcomes) + 1:02d}"
            if token == DECLINED_CARD:
                outcome = Charge(
                    payment_id=payment_id, succeeded=False, decline_code="generic_decline"
                )
            else:
                outcome = Charge(payment_id=payment_id, succeeded=True)
            self.outcomes[idempotency_key] = outcome
            self.requests[idempotency_key] = request
            if self.on_new_charge is not None:
                self.on_new_charge()
        elif self.requests[idempotency_key] != request:
            raise ValueError("idempotency key reused with different parameters")
        if self.lose_next_response:
            self.lose_next_response = False
            raise Outage("charge response lost")
        return outcome

    async def charge_if_attempted(
        self,
        *,
        booking_id: str,
        user_id: str,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
    ) -> Charge | None:
        await self.enter("charge_if_attempted")
        if idempotency_key not in self.outcomes:
            return None
        return await self.charge(
            booking_id=booking_id,
            user_id=user_id,
            amount=amount,
            currency=currency,
            token=token,
            idempotency_key=idempotency_key,
        )

    async def refund(self, *, payment_id: str, idempotency_key: str) -> None:
        await self.enter("refund")
        if payment_id not in {c.payment_id for c in self.outcomes.values() if c.succeeded}:
            raise ValueError(f"no successful charge {payment_id} to refund")
        if self.refunds.setdefault(idempotency_key, payment_id) != payment_id:
            raise ValueError("idempotency key reused with different parameters")

    # -- test helpers --
    def money_taken(self) -> list[Charge]:
        return [c for c in self.outcomes.values() if c.succeeded]

    def refunded(self) -> set[str]:
        return set(self.refunds.values())


class FakeStore(Faults):
    """Bookings as persisted; every write is guarded like the SQL: only PENDING bookings move."""

    def __init__(self, seats: FakeSeats) -> None:
        super().__init__()
        self.seats = seats
        self.bookings: dict[str, SagaBooking] = {}
        self.steps: dict[str, list[SagaStep]] = {}
        self.failure_reasons: dict[str, FailureReason] = {}
        self.failure_messages: dict[str, str | None] = {}

    def add(self, booking: SagaBooking) -> None:
        self.bookings[booking.id] = booking
        self.steps[booking.id] = [booking.step]

    def _move(self, booking_id: str, **changes: object) -> bool:
        booking = self.bookings.get(booking_id)
        if booking is None or booking.status is not BookingStatus.PENDING:
            return False
        moved = replace(booking, **changes)  # type: ignore[arg-type]
        self.bookings[booking_id] = moved
        self.steps[booking_id].append(moved.step)
        return True

    async def load(self, booking_id: str) -> SagaBooking | None:
        await self.enter("load")
        return self.bookings.get(booking_id)

    async def mark_charging(self, booking_id: str, lock_expires_at: datetime) -> bool:
        await self.enter("mark_charging")
        return self._move(booking_id, step=SagaStep.CHARGING, lock_expires_at=lock_expires_at)

    async def mark_charging_chosen(
        self, booking_id: str, lock_expires_at: datetime, seat_ids: tuple[str, ...]
    ) -> Priced | None:
        await self.enter("mark_charging_chosen")
        amount = sum(PRICES[s] for s in seat_ids)
        moved = self._move(
            booking_id,
            step=SagaStep.CHARGING,
            lock_expires_at=lock_expires_at,
            seat_ids=seat_ids,
            amount=amount,
        )
        return Priced(amount, "GBP") if moved else None

    async def mark_charged(self, booking_id: str, payment_id: str) -> bool:
        await self.enter("mark_charged")
        return self._move(booking_id, step=SagaStep.CHARGED, payment_id=payment_id)

    async def confirm(self, booking_id: str) -> bool:
        await self.enter("confirm")
        return self._move(
            booking_id,
            status=BookingStatus.CONFIRMED,
            step=SagaStep.CONFIRMED,
            lock_expires_at=None,
        )

    async def fail(
        self, booking_id: str, reason: FailureReason, message: str | None = None
    ) -> bool:
        await self.enter("fail")
        done = self._move(
            booking_id, status=BookingStatus.FAILED, step=SagaStep.FAILED, lock_expires_at=None
        )
        if done:
            self.failure_reasons[booking_id] = reason
            self.failure_messages[booking_id] = message
        return done

    async def has_sale(self, booking_id: str) -> bool:
        await self.enter("has_sale")
        return bool(self.seats.sold_to(booking_id))


class FakeNotifier(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.pokes = 0

    async def poke(self) -> None:
        await self.enter("poke")
        self.pokes += 1


@dataclass
class World:
    clock: FakeClock
    seats: FakeSeats
    payments: FakePayments
    store: FakeStore
    notifier: FakeNotifier
    runner: BookingSagaRunner

    def add_booking(
        self,
        *,
        booking_id: str = BOOKING_ID,
        step: SagaStep = SagaStep.STARTED,
        status: BookingStatus = BookingStatus.PENDING,
        token: str = CARD,
        payment_id: str | None = None,
        lock_expires_at: datetime | None = None,
        best: SeatRequest | None = None,
    ) -> SagaBooking:
        booking = SagaBooking(
            id=booking_id,
            user_id="usr_01",
            event_id=EVENT_ID,
            seat_ids=() if best else BOOKED,
            amount=0 if best else 15_000,
            currency="GBP",
            payment_token=token,
            status=status,
            step=step,
            payment_id=payment_id,
            lock_expires_at=lock_expires_at,
            created_at=self.clock.now(),
            seat_request=best,
        )
        self.store.add(booking)
        return booking

    def booking(self, booking_id: str = BOOKING_ID) -> SagaBooking:
        return self.store.bookings[booking_id]

    async def charge_directly(self, booking: SagaBooking) -> Charge:
        """A charge an earlier run made (with the saga's key) before it was interrupted."""
        return await self.payments.charge(
            booking_id=booking.id,
            user_id=booking.user_id,
            amount=booking.amount,
            currency=booking.currency,
            token=booking.payment_token,
            idempotency_key=charge_key(booking.id),
        )

    def assert_confirmed_once(self, booking_id: str = BOOKING_ID) -> None:
        booking = self.booking(booking_id)
        assert booking.status is BookingStatus.CONFIRMED
        assert booking.step is SagaStep.CONFIRMED
        assert booking.lock_expires_at is None
        [charge] = self.payments.money_taken()
        assert booking.payment_id == charge.payment_id
        assert self.payments.refunds == {}
        assert self.seats.sold_to(booking_id) == BOOKED
        assert all(self.seats.status(s) is SeatStatus.RESERVED for s in BOOKED)


@pytest.fixture
def world() -> World:
    clock = FakeClock(T0)
    seats, payments, notifier = FakeSeats(clock), FakePayments(), FakeNotifier()
    store = FakeStore(seats)
    runner = BookingSagaRunner(
        seats=seats,
        payments=payments,
        store=store,
        notifier=notifier,
        clock=clock,
        step_timeout=STEP_TIMEOUT,
        deadline=DEADLINE,
    )
    return World(clock, seats, payments, store, notifier, runner)


def past_deadline(world: World) -> None:
    world.clock.current = world.booking().created_at + DEADLINE + timedelta(seconds=1)


# -- the straight paths -------------------------------------------------------------------------


async def test_happy_path_confirms_after_one_charge(world: World) -> None:
    world.add_booking()

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()
    assert world.store.steps[BOOKING_ID] == [
        SagaStep.STARTED,
        SagaStep.CHARGING,
        SagaStep.CHARGED,
        SagaStep.CONFIRMED,
    ]
    assert world.payments.requests == {
        charge_key(BOOKING_ID): ChargeRequest(BOOKING_ID, "usr_01", 15_000, "GBP", CARD)
    }
    assert world.seats.calls == ["lock", "reserve"]
    # One write per step: the lock's expiry goes with CHARGING, the sale's outcome with CONFIRMED.
    assert world.store.calls == ["load", "mark_charging", "mark_charged", "confirm"]
    assert world.notifier.pokes == 1
    assert world.seats.status("seat_A3") is SeatStatus.AVAILABLE


async def test_the_persisted_lock_expiry_is_the_seat_actors(world: World) -> None:
    world.add_booking()
    seen: list[datetime | None] = []
    world.payments.on_new_charge = lambda: seen.append(world.booking().lock_expires_at)
    await world.runner.run(BOOKING_ID)
    assert seen == [T0 + timedelta(seconds=LOCK_TTL)]


async def test_seats_unavailable_fails_without_charging(world: World) -> None:
    world.seats.hold("bkg_other", ("seat_A2", "seat_A3"))
    world.add_booking()

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.SEATS_UNAVAILABLE)
    assert world.booking().status is BookingStatus.FAILED
    assert world.store.failure_reasons[BOOKING_ID] is FailureReason.SEATS_UNAVAILABLE
    assert world.store.steps[BOOKING_ID] == [SagaStep.STARTED, SagaStep.FAILED]
    assert world.payments.calls == []
    assert world.seats.status("seat_A1") is SeatStatus.AVAILABLE
    assert world.seats.map.lock_of("bkg_other") is not None
    assert world.notifier.pokes == 1


async def test_a_declined_card_fails_and_releases_the_locks(world: World) -> None:
    world.add_booking(token=DECLINED_CARD)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.PAYMENT_DECLINED)
    assert world.store.steps[BOOKING_ID] == [
        SagaStep.STARTED,
        SagaStep.CHARGING,
        SagaStep.FAILED,
    ]
    assert world.booking().payment_id is None
    assert world.booking().lock_expires_at is None
    assert world.payments.money_taken() == []
    assert world.payments.refunds == {}
    assert world.seats.map.lock_of(BOOKING_ID) is None
    assert all(world.seats.status(s) is SeatStatus.AVAILABLE for s in SEATS)
    assert world.notifier.pokes == 1


async def test_a_lock_lapsing_during_the_charge_refunds_and_fails(world: World) -> None:
    world.add_booking()

    def slow_charge_while_someone_else_locks() -> None:
        world.clock.advance(LOCK_TTL + 1)
        world.seats.hold("bkg_other", ("seat_A1",))

    world.payments.on_new_charge = slow_charge_while_someone_else_locks

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.LOCK_EXPIRED)
    [charge] = world.payments.money_taken()
    assert world.payments.refunds == {refund_key(BOOKING_ID): charge.payment_id}
    assert world.seats.sold_to(BOOKING_ID) == ()
    assert world.seats.map.lock_of("bkg_other") is not None
    assert world.seats.status("seat_A1") is SeatStatus.LOCKED
    assert world.seats.status("seat_A2") is SeatStatus.AVAILABLE
    assert world.store.steps[BOOKING_ID][-2:] == [SagaStep.CHARGED, SagaStep.FAILED]
    assert world.notifier.pokes == 1


async def test_a_lock_that_lapses_before_reserve_is_not_sold_even_if_nobody_took_it(
    world: World,
) -> None:
    world.add_booking()
    world.payments.on_new_charge = lambda: world.clock.advance(LOCK_TTL)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome is not None and outcome.failure_reason is FailureReason.LOCK_EXPIRED
    assert world.payments.refunded() == {c.payment_id for c in world.payments.money_taken()}
    assert all(world.seats.status(s) is SeatStatus.AVAILABLE for s in SEATS)


async def test_a_lock_too_close_to_its_expiry_is_not_charged(world: World) -> None:
    world.seats.ttl = CHARGE_MARGIN.total_seconds() - 1
    world.add_booking()

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.LOCK_EXPIRED)
    assert world.payments.calls == []
    assert world.seats.map.lock_of(BOOKING_ID) is None
    assert world.store.steps[BOOKING_ID] == [SagaStep.STARTED, SagaStep.FAILED]


async def test_a_resumed_lock_near_its_expiry_is_released_not_charged(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID)
    world.add_booking(step=SagaStep.SEATS_LOCKED, lock_expires_at=expires)
    world.clock.advance(LOCK_TTL - CHARGE_MARGIN.total_seconds() + 1)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome is not None and outcome.failure_reason is FailureReason.LOCK_EXPIRED
    assert world.payments.calls == []
    assert world.seats.map.lock_of(BOOKING_ID) is None


async def test_a_lock_exactly_at_the_margin_is_charged(world: World) -> None:
    world.seats.ttl = CHARGE_MARGIN.total_seconds()
    world.add_booking()
    outcome = await world.runner.run(BOOKING_ID)
    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)


async def test_a_seats_locked_booking_without_a_lock_expiry_fails_lock_expired(
    world: World,
) -> None:
    world.seats.hold(BOOKING_ID)
    world.add_booking(step=SagaStep.SEATS_LOCKED, lock_expires_at=None)
    outcome = await world.runner.run(BOOKING_ID)
    assert outcome is not None and outcome.failure_reason is FailureReason.LOCK_EXPIRED
    assert world.payments.calls == []
    assert world.seats.map.lock_of(BOOKING_ID) is None


async def test_an_unreachable_notifier_does_not_change_the_outcome(world: World) -> None:
    world.notifier.failing.add("poke")
    world.add_booking()
    outcome = await world.runner.run(BOOKING_ID)
    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()


# -- resuming -----------------------------------------------------------------------------------


async def test_resume_from_started_with_the_lock_already_taken(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID)  # locked, but mark_charging never ran
    world.add_booking(step=SagaStep.STARTED)
    world.clock.advance(20)
    persisted: list[datetime | None] = []
    world.payments.on_new_charge = lambda: persisted.append(world.booking().lock_expires_at)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()
    assert world.store.steps[BOOKING_ID] == [
        SagaStep.STARTED,
        SagaStep.CHARGING,
        SagaStep.CHARGED,
        SagaStep.CONFIRMED,
    ]
    # The repeated lock kept the first expiry, and that is what was persisted.
    assert persisted == [expires]
    assert world.seats.calls == ["lock", "reserve"]


async def test_resume_from_seats_locked_does_not_lock_again(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID)
    world.add_booking(step=SagaStep.SEATS_LOCKED, lock_expires_at=expires)
    world.clock.advance(20)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()
    assert world.seats.calls == ["reserve"]
    assert world.store.steps[BOOKING_ID] == [
        SagaStep.SEATS_LOCKED,
        SagaStep.CHARGING,
        SagaStep.CHARGED,
        SagaStep.CONFIRMED,
    ]


async def test_resume_from_charging_when_no_charge_happened(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID)
    world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()
    assert world.store.steps[BOOKING_ID] == [
        SagaStep.CHARGING,
        SagaStep.CHARGED,
        SagaStep.CONFIRMED,
    ]


async def test_resume_from_charging_replays_an_unrecorded_charge_without_charging_twice(
    world: World,
) -> None:
    expires = world.seats.hold(BOOKING_ID)
    booking = world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    earlier = await world.charge_directly(booking)  # charged, but mark_charged never ran
    assert world.booking().payment_id is None

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()
    assert world.booking().payment_id == earlier.payment_id
    assert world.payments.calls == ["charge", "charge"]  # the earlier one and its replay


async def test_resume_from_charged_reserves_without_charging(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID)
    booking = world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    earlier = await world.charge_directly(booking)
    world.store.add(replace(booking, step=SagaStep.CHARGED, payment_id=earlier.payment_id))
    world.payments.calls.clear()

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()
    assert world.payments.calls == []
    assert world.seats.calls == ["reserve"]
    assert world.store.steps[BOOKING_ID] == [SagaStep.CHARGED, SagaStep.CONFIRMED]


async def test_resume_from_charged_after_the_seats_were_already_sold(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID)
    booking = world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    earlier = await world.charge_directly(booking)
    world.store.add(replace(booking, step=SagaStep.CHARGED, payment_id=earlier.payment_id))
    assert await world.seats.reserve(
        event_id=EVENT_ID, booking_id=BOOKING_ID
    )  # but confirm never ran
    world.clock.advance(LOCK_TTL * 1.5)  # long after the lock's expiry: the sale stands

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()


async def test_running_a_finished_saga_again_changes_nothing(world: World) -> None:
    world.add_booking()
    await world.runner.run(BOOKING_ID)
    steps = list(world.store.steps[BOOKING_ID])
    world.seats.calls.clear()
    world.payments.calls.clear()

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    assert world.store.steps[BOOKING_ID] == steps
    assert world.seats.calls == [] and world.payments.calls == []
    assert world.notifier.pokes == 1


@pytest.mark.parametrize(
    "status", [BookingStatus.CONFIRMED, BookingStatus.FAILED, BookingStatus.CANCELLED]
)
async def test_a_booking_that_is_not_pending_is_left_alone(
    world: World, status: BookingStatus
) -> None:
    world.add_booking(status=status, step=SagaStep(status.value))

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, status)
    assert world.seats.calls == []
    assert world.payments.calls == []
    assert world.store.calls == ["load"]
    assert world.notifier.pokes == 0


async def test_an_unknown_booking_is_ignored(world: World) -> None:
    assert await world.runner.run("bkg_missing") is None
    assert world.seats.calls == [] and world.payments.calls == []


# -- transient failures -------------------------------------------------------------------------


RAISING = [
    ("seats", "lock", SagaStep.STARTED),
    ("store", "mark_charging", SagaStep.STARTED),
    ("payments", "charge", SagaStep.CHARGING),
    ("store", "mark_charged", SagaStep.CHARGING),
    ("seats", "reserve", SagaStep.CHARGED),
    ("store", "confirm", SagaStep.CHARGED),
]
# Calls to the seat actors and the payment actor are bounded by step_timeout (store writes are
# bounded by the pool's command timeout instead).
HANGING = [case for case in RAISING if case[0] != "store"]


@pytest.mark.parametrize(
    ("fault", "port", "method", "left_at"),
    [("failing", *case) for case in RAISING] + [("hanging", *case) for case in HANGING],
)
async def test_a_transient_failure_before_the_deadline_leaves_the_booking_to_resume(
    world: World, fault: str, port: str, method: str, left_at: SagaStep
) -> None:
    faults: Faults = getattr(world, port)
    getattr(faults, fault).add(method)
    world.add_booking()

    started = time.monotonic()
    outcome = await world.runner.run(BOOKING_ID)

    assert time.monotonic() - started < 1.0
    assert outcome is None
    assert world.booking().status is BookingStatus.PENDING
    assert world.booking().step is left_at
    assert world.payments.refunds == {}
    assert world.notifier.pokes == 0

    getattr(faults, fault).discard(method)
    world.clock.advance(30)
    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()


async def test_a_lost_charge_response_is_resumed_by_replaying_the_key(world: World) -> None:
    world.payments.lose_next_response = True
    world.add_booking()

    assert await world.runner.run(BOOKING_ID) is None
    assert world.booking().step is SagaStep.CHARGING
    assert len(world.payments.money_taken()) == 1

    assert await world.runner.run(BOOKING_ID) == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()


async def test_a_failure_just_before_the_deadline_is_still_transient(world: World) -> None:
    world.add_booking()
    world.seats.failing.add("lock")
    world.clock.current = T0 + DEADLINE - timedelta(seconds=1)
    assert await world.runner.run(BOOKING_ID) is None
    assert world.booking().status is BookingStatus.PENDING
    assert "release" not in world.seats.calls


# -- the deadline -------------------------------------------------------------------------------


async def test_after_the_deadline_a_recorded_charge_is_refunded_and_the_booking_fails(
    world: World,
) -> None:
    expires = world.seats.hold(BOOKING_ID, ttl=DEADLINE.total_seconds() * 2)
    booking = world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    charge = await world.charge_directly(booking)
    world.store.add(replace(booking, step=SagaStep.CHARGED, payment_id=charge.payment_id))
    world.seats.failing.add("reserve")
    past_deadline(world)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.INTERNAL_ERROR)
    assert world.payments.refunds == {refund_key(BOOKING_ID): charge.payment_id}
    assert len(world.payments.money_taken()) == 1
    assert world.seats.map.lock_of(BOOKING_ID) is None
    assert all(world.seats.status(s) is SeatStatus.AVAILABLE for s in SEATS)
    assert world.booking().step is SagaStep.FAILED
    assert world.notifier.pokes == 1


async def test_after_the_deadline_an_unrecorded_charge_is_found_and_refunded(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID, ttl=DEADLINE.total_seconds() * 2)
    world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    world.store.failing.add("mark_charged")
    past_deadline(world)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.INTERNAL_ERROR)
    [charge] = world.payments.money_taken()
    assert world.booking().payment_id is None
    assert world.payments.refunds == {refund_key(BOOKING_ID): charge.payment_id}
    assert world.seats.map.lock_of(BOOKING_ID) is None


async def test_after_the_deadline_a_declined_charge_is_not_refunded(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID)
    booking = world.add_booking(
        step=SagaStep.CHARGING, lock_expires_at=expires, token=DECLINED_CARD
    )
    await world.charge_directly(booking)
    world.seats.hanging.add("release")  # the seat actor does not answer the release...
    past_deadline(world)

    outcome = await world.runner.run(BOOKING_ID)

    # ...the buyer still gets a final answer; the lock lapses by itself.
    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.INTERNAL_ERROR)
    assert world.payments.refunds == {}
    assert world.payments.money_taken() == []
    world.seats.map.expire(expires.timestamp() + 1)
    assert world.seats.map.lock_of(BOOKING_ID) is None


async def test_after_the_deadline_before_any_charge_the_seats_are_released(world: World) -> None:
    world.add_booking()
    world.seats.hold(BOOKING_ID)  # the lock went through; its answer did not
    world.store.failing.add("mark_charging")
    past_deadline(world)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.INTERNAL_ERROR)
    assert world.payments.calls == []
    assert world.seats.map.lock_of(BOOKING_ID) is None
    assert world.store.failure_reasons[BOOKING_ID] is FailureReason.INTERNAL_ERROR


async def test_after_the_deadline_a_charge_never_attempted_is_not_made_to_learn_its_outcome(
    world: World,
) -> None:
    expires = world.seats.hold(BOOKING_ID, ttl=DEADLINE.total_seconds() * 2)
    world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    world.payments.hanging.add("charge")  # the payment actor never takes the saga's charge
    past_deadline(world)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.INTERNAL_ERROR)
    assert world.payments.calls == ["charge", "charge_if_attempted"]
    assert world.payments.requests == {}  # the card was never charged, so nothing to refund
    assert world.seats.map.lock_of(BOOKING_ID) is None


async def test_a_booking_resumed_after_its_lock_lapsed_is_not_charged(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID)
    world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    world.clock.advance(LOCK_TTL + 1)  # the server was down longer than the lock lived

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.LOCK_EXPIRED)
    assert world.payments.calls == ["charge_if_attempted"]
    assert world.payments.requests == {}
    assert world.seats.map.lock_of(BOOKING_ID) is None


async def test_a_booking_resumed_after_its_lock_lapsed_settles_the_charge_it_made(
    world: World,
) -> None:
    expires = world.seats.hold(BOOKING_ID)
    booking = world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    charge = await world.charge_directly(booking)  # charged; the saga died before recording it
    world.clock.advance(LOCK_TTL + 1)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.LOCK_EXPIRED)
    assert world.payments.refunds == {refund_key(BOOKING_ID): charge.payment_id}
    assert len(world.payments.money_taken()) == 1


async def test_after_the_deadline_an_unanswered_refund_is_left_to_reconciliation(
    world: World,
) -> None:
    expires = world.seats.hold(BOOKING_ID, ttl=DEADLINE.total_seconds() * 2)
    booking = world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    charge = await world.charge_directly(booking)
    world.store.add(replace(booking, step=SagaStep.CHARGED, payment_id=charge.payment_id))
    world.seats.failing.add("reserve")
    world.payments.failing.add("refund")
    past_deadline(world)

    outcome = await world.runner.run(BOOKING_ID)

    # The buyer is told at once; the successful charge of a FAILED booking is exactly what the
    # payment actor's reconciliation refunds (tested against the real actor in tests/e2e).
    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.INTERNAL_ERROR)
    assert world.payments.refunds == {}
    assert [c.payment_id for c in world.payments.money_taken()] == [charge.payment_id]
    assert world.seats.map.lock_of(BOOKING_ID) is None


async def test_a_give_up_cut_short_never_leaves_a_confirmed_booking_without_its_money(
    world: World,
) -> None:
    expires = world.seats.hold(BOOKING_ID, ttl=DEADLINE.total_seconds() * 2)
    booking = world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    charge = await world.charge_directly(booking)
    world.store.add(replace(booking, step=SagaStep.CHARGED, payment_id=charge.payment_id))
    world.seats.failing.add("reserve")
    # The give-up is cut short: it cannot record FAILED nor release (a crash, Postgres away).
    world.store.failing.add("fail")
    world.seats.failing.add("release")
    past_deadline(world)

    assert await world.runner.run(BOOKING_ID) is None  # left for the next run
    # The outage is over; the lock still lives, so the resumed saga can deliver the seats.
    world.seats.failing.difference_update({"reserve", "release"})
    world.store.failing.discard("fail")
    outcome = await world.runner.run(BOOKING_ID)

    # Had the refund come before the FAILED write, this booking would be CONFIRMED and refunded.
    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    assert world.payments.refunds == {}
    assert [c.payment_id for c in world.payments.money_taken()] == [charge.payment_id]


async def test_after_the_deadline_a_failed_booking_keeps_no_sold_seats(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID, ttl=DEADLINE.total_seconds() * 2)
    booking = world.add_booking(step=SagaStep.CHARGING, lock_expires_at=expires)
    charge = await world.charge_directly(booking)
    world.store.add(replace(booking, step=SagaStep.CHARGED, payment_id=charge.payment_id))
    world.store.failing.add("confirm")  # the sale is written; the CONFIRMED update is not
    past_deadline(world)

    outcome = await world.runner.run(BOOKING_ID)

    refunded = charge.payment_id in world.payments.refunded()
    sold = world.seats.sold_to(BOOKING_ID)
    assert not (refunded and sold), (
        f"outcome={outcome}, booking={world.booking().status}, refunded={refunded}, seats still sold={sold}"
    )


# -- the sale closes when the event starts -------------------------------------------------------


async def test_a_booking_for_an_event_that_started_while_it_waited_fails_before_any_lock_or_charge(
    world: World,
) -> None:
    booking = world.add_booking()
    world.store.bookings[BOOKING_ID] = replace(booking, event_starts_at=T0 - timedelta(seconds=1))

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.SEATS_UNAVAILABLE)
    assert world.seats.calls == [] and world.payments.calls == []
    assert all(world.seats.status(s) is SeatStatus.AVAILABLE for s in BOOKED)


async def test_a_locked_booking_whose_event_started_is_released_not_charged(world: World) -> None:
    expires = world.seats.hold(BOOKING_ID)
    booking = world.add_booking(step=SagaStep.SEATS_LOCKED, lock_expires_at=expires)
    world.store.bookings[BOOKING_ID] = replace(booking, event_starts_at=T0 + timedelta(seconds=10))
    world.clock.advance(11)

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.SEATS_UNAVAILABLE)
    assert world.payments.money_taken() == [] and "charge" not in world.payments.calls
    assert all(world.seats.status(s) is SeatStatus.AVAILABLE for s in BOOKED)


async def test_an_event_starting_later_does_not_stop_the_saga(world: World) -> None:
    booking = world.add_booking()
    world.store.bookings[BOOKING_ID] = replace(booking, event_starts_at=T0 + timedelta(days=1))

    assert await world.runner.run(BOOKING_ID) == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)


# -- cancellation ---------------------------------------------------------------------------------


class FakeReleasingSeats(FakeSeats):
    async def unreserve(self, *, event_id: str, booking_id: str) -> None:
        await self.enter("unreserve")
        assert event_id == EVENT_ID
        self.map.unreserve(booking_id)


class FakeCancellations(Faults):
    """booking_cancellations and the booking's status, guarded like the SQL."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, Cancellation] = {}
        self.status: dict[str, BookingStatus] = {}
        self.notifications: list[str] = []

    def request(self, booking_id: str, payment_id: str) -> None:
        self.status[booking_id] = BookingStatus.CONFIRMED
        self.rows[booking_id] = Cancellation(
            booking_id, EVENT_ID, payment_id, CancelStep.REFUNDING, None
        )

    async def load_cancellation(self, booking_id: str) -> Cancellation | None:
        await self.enter("load_cancellation")
        return self.rows.get(booking_id)

    async def mark_cancelled(self, booking_id: str) -> datetime | None:
        await self.enter("mark_cancelled")
        if self.status[booking_id] is not BookingStatus.CONFIRMED:
            return None
        self.status[booking_id] = BookingStatus.CANCELLED
        self.rows[booking_id] = replace(
            self.rows[booking_id], step=CancelStep.RELEASING, cancelled_at=T0
        )
        self.notifications.append(booking_id)
        return T0

    async def mark_released(self, booking_id: str) -> None:
        await self.enter("mark_released")
        if self.rows[booking_id].step is CancelStep.RELEASING:
            self.rows[booking_id] = replace(self.rows[booking_id], step=CancelStep.DONE)


@dataclass
class CancelWorld:
    seats: FakeReleasingSeats
    payments: FakePayments
    store: FakeCancellations
    runner: CancellationRunner
    payment_id: str

    def assert_cancelled_once(self) -> None:
        assert self.store.status[BOOKING_ID] is BookingStatus.CANCELLED
        assert self.store.rows[BOOKING_ID].step is CancelStep.DONE
        assert self.payments.refunds == {refund_key(BOOKING_ID): self.payment_id}
        assert self.store.notifications == [BOOKING_ID]
        assert all(self.seats.status(s) is SeatStatus.AVAILABLE for s in BOOKED)


@pytest.fixture
async def cancel_world() -> CancelWorld:
    """A CONFIRMED, charged booking whose seats are sold, and its cancellation requested."""
    clock = FakeClock(T0)
    seats, payments, store = FakeReleasingSeats(clock), FakePayments(), FakeCancellations()
    seats.hold(BOOKING_ID)
    assert await seats.reserve(event_id=EVENT_ID, booking_id=BOOKING_ID)
    charge = await payments.charge(
        booking_id=BOOKING_ID,
        user_id="usr_01",
        amount=15_000,
        currency="GBP",
        token=CARD,
        idempotency_key=charge_key(BOOKING_ID),
    )
    store.request(BOOKING_ID, charge.payment_id)
    seats.calls.clear()
    payments.calls.clear()
    runner = CancellationRunner(
        seats=seats,
        payments=payments,
        store=store,
        notifier=FakeNotifier(),
        step_timeout=STEP_TIMEOUT,
    )
    return CancelWorld(seats, payments, store, runner, charge.payment_id)


async def test_a_cancellation_refunds_then_cancels_then_frees_the_seats(
    cancel_world: CancelWorld,
) -> None:
    w = cancel_world

    outcome = await w.runner.run(BOOKING_ID)

    assert outcome == CancelOutcome(BOOKING_ID, T0)
    w.assert_cancelled_once()
    assert w.payments.calls == ["refund"] and w.seats.calls == ["unreserve"]


async def test_no_cancellation_requested_is_no_outcome(cancel_world: CancelWorld) -> None:
    assert await cancel_world.runner.run("bkg_other") is None


@pytest.mark.parametrize("how", ["failing", "hanging"])
async def test_a_refund_that_fails_leaves_the_booking_confirmed_and_charged_until_resumed(
    cancel_world: CancelWorld,
    how: str,
) -> None:
    w = cancel_world
    getattr(w.payments, how).add("refund")

    outcome = await w.runner.run(BOOKING_ID)

    assert outcome == CancelOutcome(BOOKING_ID, None)
    assert w.store.status[BOOKING_ID] is BookingStatus.CONFIRMED
    assert w.store.rows[BOOKING_ID].step is CancelStep.REFUNDING
    assert w.seats.sold_to(BOOKING_ID) == BOOKED and w.store.notifications == []
    getattr(w.payments, how).clear()
    assert await w.runner.run(BOOKING_ID) == CancelOutcome(BOOKING_ID, T0)
    w.assert_cancelled_once()


async def test_a_crash_between_the_refund_and_cancelled_replays_the_same_refund_key(
    cancel_world: CancelWorld,
) -> None:
    w = cancel_world
    w.store.failing.add("mark_cancelled")  # refunded, then the database (or the process) goes

    assert await w.runner.run(BOOKING_ID) == CancelOutcome(BOOKING_ID, None)
    assert w.payments.refunds == {refund_key(BOOKING_ID): w.payment_id}
    w.store.failing.clear()
    assert await w.runner.run(BOOKING_ID) == CancelOutcome(BOOKING_ID, T0)
    w.assert_cancelled_once()
    assert w.payments.calls == [
        "refund",
        "refund",
    ]  # replayed with its key: one refund at the processor


async def test_a_crash_before_the_seat_actor_release_is_finished_by_the_next_run(
    cancel_world: CancelWorld,
) -> None:
    w = cancel_world
    w.seats.failing.add("unreserve")

    assert await w.runner.run(BOOKING_ID) == CancelOutcome(BOOKING_ID, T0)  # refunded and CANCELLED
    assert w.store.rows[BOOKING_ID].step is CancelStep.RELEASING
    w.seats.failing.clear()
    assert await w.runner.run(BOOKING_ID) == CancelOutcome(BOOKING_ID, T0)
    w.assert_cancelled_once()
    assert w.payments.calls == ["refund"]  # a resumed release does not refund again


async def test_concurrent_runs_of_one_cancellation_end_cancelled_once(
    cancel_world: CancelWorld,
) -> None:
    w = cancel_world

    outcomes = await asyncio.gather(*(w.runner.run(BOOKING_ID) for _ in range(5)))

    assert {o.cancelled_at for o in outcomes if o is not None} == {T0}
    w.assert_cancelled_once()


# -- best available: the seat actor chooses, the saga persists the choice with its price ----------


async def test_best_available_charges_the_price_of_the_seats_chosen(world: World) -> None:
    world.add_booking(best=SeatRequest(quantity=2))

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()  # the chosen seats (A1, A2 here) sold, one charge, no refund
    assert world.booking().seat_ids == BOOKED and world.booking().amount == 15_000
    assert world.payments.requests == {
        charge_key(BOOKING_ID): ChargeRequest(BOOKING_ID, "usr_01", 15_000, "GBP", CARD)
    }
    # The choice and its price are persisted with CHARGING, in one write, before any charge.
    assert world.store.calls == ["load", "mark_charging_chosen", "mark_charged", "confirm"]
    assert world.seats.calls == ["lock_best", "reserve"]


async def test_best_available_with_too_few_seats_fails_saying_what_is_left(world: World) -> None:
    world.seats.hold("bkg_other", ("seat_A1", "seat_A2", "seat_A3"))
    world.add_booking(best=SeatRequest(quantity=2))

    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.FAILED, FailureReason.SEATS_UNAVAILABLE)
    assert world.store.failure_messages[BOOKING_ID] == "1 seats left"
    assert world.payments.calls == [] and world.booking().seat_ids == ()
    assert world.seats.status("seat_A4") is SeatStatus.AVAILABLE


async def test_a_choice_not_persisted_is_the_same_choice_when_resumed(world: World) -> None:
    world.add_booking(best=SeatRequest(quantity=2))
    world.store.failing.add("mark_charging_chosen")  # the saga dies between choosing and persisting

    assert await world.runner.run(BOOKING_ID) is None
    assert world.booking().step is SagaStep.STARTED and world.booking().seat_ids == ()
    held = world.seats.map.lock_of(BOOKING_ID)
    assert held is not None and held[0] == BOOKED

    world.store.failing.clear()
    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()  # the seats it already held, no second lock, one charge


async def test_a_persisted_choice_is_resumed_like_named_seats(world: World) -> None:
    world.add_booking(best=SeatRequest(quantity=2))
    world.payments.failing.add(
        "charge"
    )  # the processor is unreachable after the choice was written

    assert await world.runner.run(BOOKING_ID) is None
    assert world.booking().step is SagaStep.CHARGING and world.booking().seat_ids == BOOKED

    world.payments.failing.clear()
    outcome = await world.runner.run(BOOKING_ID)

    assert outcome == SagaOutcome(BOOKING_ID, BookingStatus.CONFIRMED)
    world.assert_confirmed_once()
    assert world.seats.calls.count("lock_best") == 1
