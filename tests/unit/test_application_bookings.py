"""The booking use cases (application/bookings.py) with in-memory ports: no Ray, HTTP or Postgres."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from application.bookings import BookSeats, book, cancel, visible_booking
from domain.best_available import SeatRequest
from domain.bookings import BookingStatus, SagaStep, saga_slot
from domain.catalog import WaitingRoomSettings
from domain.errors import (
    AdmissionRequired,
    AdmissionTokenForged,
    BookingNotCancellable,
    BookingNotFound,
    CancellationWindowExpired,
    EventNotFound,
    EventNotOnSale,
    IdempotencyKeyMismatch,
    InvalidSeatCount,
    ServiceUnavailable,
    ValidationFailed,
)
from tests.fakes.application import NOW, FakeDatabase, FakeSagas, FixedClock, KeyedBooking

POOL = 8


def _db() -> tuple[FakeDatabase, str]:
    db = FakeDatabase()
    event = db.add_event(db.add_venue())
    return db, event.id


def _cmd(event_id: str, seats: list[str] | None = None, **kw: str | None) -> BookSeats:
    return BookSeats(
        user_id=str(kw.pop("user_id", "usr_1")),
        event_id=event_id,
        seat_ids=seats or ["seat_A1", "seat_A2"],
        payment_type="card",
        payment_token=str(kw.pop("token", "pm_card_visa")),
        idempotency_key=kw.pop("key", None),
    )


# -- book -----------------------------------------------------------------------------------------
async def test_book_records_a_pending_booking_priced_from_the_tiers() -> None:
    db, event_id = _db()
    booking_id = await book(_cmd(event_id), db=db, saga_pool_size=POOL)
    booking = db.state.bookings[booking_id]
    assert booking_id.startswith("bkg_")
    assert booking.status is BookingStatus.PENDING
    assert booking.total_amount == 2 * 15000  # row A is VIP
    assert booking.saga_slot == saga_slot(booking_id, POOL)
    assert db.sessions == 1


@pytest.mark.parametrize("count", [0, 11])
async def test_book_refuses_fewer_than_one_or_more_than_ten_seats(count: int) -> None:
    db, event_id = _db()
    seats = [f"seat_B{n}" for n in range(1, count + 1)]
    with pytest.raises(InvalidSeatCount):
        await book(
            BookSeats("usr_1", event_id, seats, "card", "pm_card_visa"), db=db, saga_pool_size=POOL
        )
    assert not db.state.bookings and db.sessions == 0


async def test_book_refuses_malformed_seat_ids() -> None:
    db, event_id = _db()
    with pytest.raises(ValidationFailed, match="not seat ids"):
        await book(_cmd(event_id, ["seat_A1", "A2"]), db=db, saga_pool_size=POOL)


async def test_book_refuses_a_seat_named_twice() -> None:
    db, event_id = _db()
    with pytest.raises(ValidationFailed, match="only once"):
        await book(_cmd(event_id, ["seat_A1", "seat_A1"]), db=db, saga_pool_size=POOL)


async def test_book_refuses_a_malformed_idempotency_key() -> None:
    db, event_id = _db()
    with pytest.raises(ValidationFailed, match="Idempotency-Key"):
        await book(_cmd(event_id, key="has space"), db=db, saga_pool_size=POOL)
    assert db.sessions == 0


async def test_book_answers_a_repeated_request_with_the_first_booking() -> None:
    db, event_id = _db()
    first = await book(_cmd(event_id, key="k1"), db=db, saga_pool_size=POOL)
    again = await book(_cmd(event_id, ["seat_A2", "seat_A1"], key="k1"), db=db, saga_pool_size=POOL)
    assert again == first
    assert list(db.state.bookings) == [first]


async def test_book_refuses_a_key_reused_for_another_request() -> None:
    db, event_id = _db()
    await book(_cmd(event_id, key="k1"), db=db, saga_pool_size=POOL)
    with pytest.raises(IdempotencyKeyMismatch):
        await book(_cmd(event_id, ["seat_A3"], key="k1"), db=db, saga_pool_size=POOL)
    with pytest.raises(IdempotencyKeyMismatch):
        await book(_cmd(event_id, key="k1", token="pm_card_mastercard"), db=db, saga_pool_size=POOL)
    assert len(db.state.bookings) == 1


async def test_book_keys_belong_to_one_user() -> None:
    db, event_id = _db()
    mine = await book(_cmd(event_id, key="k1"), db=db, saga_pool_size=POOL)
    theirs = await book(
        _cmd(event_id, ["seat_A3"], key="k1", user_id="usr_2"), db=db, saga_pool_size=POOL
    )
    assert theirs != mine


async def test_book_refuses_an_event_that_has_started() -> None:
    db = FakeDatabase()
    event = db.add_event(db.add_venue(), starts_in=-timedelta(minutes=1))
    with pytest.raises(EventNotOnSale):
        await book(_cmd(event.id), db=db, saga_pool_size=POOL)


async def test_book_refuses_an_unknown_event() -> None:
    db, _ = _db()
    with pytest.raises(EventNotFound):
        await book(_cmd("evnt_nope"), db=db, saga_pool_size=POOL)


async def test_book_names_the_seats_the_event_does_not_have() -> None:
    db, event_id = _db()
    with pytest.raises(ValidationFailed, match="seat_Z9"):
        await book(_cmd(event_id, ["seat_A1", "seat_Z9"]), db=db, saga_pool_size=POOL)
    assert not db.state.bookings


async def test_book_asks_for_a_retry_when_the_key_expired_between_two_statements() -> None:
    db, event_id = _db()
    await book(_cmd(event_id, key="k1"), db=db, saga_pool_size=POOL)
    db.expire_keys_after_insert = True
    with pytest.raises(ValidationFailed, match="retry"):
        await book(_cmd(event_id, key="k1"), db=db, saga_pool_size=POOL)


# -- see ------------------------------------------------------------------------------------------
async def test_a_booking_is_visible_to_its_owner_and_admins_only() -> None:
    db, event_id = _db()
    booking = db.add_booking(db.state.events[event_id], user_id="usr_1")
    assert (
        await visible_booking(db, booking_id=booking.id, user_id="usr_1", is_admin=False)
    ) == booking
    assert (
        await visible_booking(db, booking_id=booking.id, user_id="usr_admin", is_admin=True)
    ) == booking
    with pytest.raises(BookingNotFound):
        await visible_booking(db, booking_id=booking.id, user_id="usr_2", is_admin=False)
    with pytest.raises(BookingNotFound):
        await visible_booking(db, booking_id="bkg_nope", user_id="usr_1", is_admin=True)


# -- cancel ---------------------------------------------------------------------------------------
async def test_cancel_records_the_intent_then_lets_the_saga_refund() -> None:
    db, event_id = _db()
    booking = db.add_booking(db.state.events[event_id], user_id="usr_1", saga_slot=5)
    sagas = FakeSagas(cancelled_at=NOW)
    done = await cancel(booking.id, user_id="usr_1", db=db, sagas=sagas, clock=FixedClock())
    assert done.cancelled_at == NOW and done.booking.id == booking.id
    assert db.state.cancellations == [booking.id]
    assert db.state.bookings[booking.id].saga_step is SagaStep.CANCELLING
    assert sagas.calls == [(booking.id, 5)]


async def test_cancel_of_another_users_booking_says_not_found_even_to_an_admin() -> None:
    db, event_id = _db()
    booking = db.add_booking(db.state.events[event_id], user_id="usr_1")
    sagas = FakeSagas()
    with pytest.raises(BookingNotFound):
        await cancel(booking.id, user_id="usr_admin", db=db, sagas=sagas, clock=FixedClock())
    assert not sagas.calls and not db.state.cancellations


@pytest.mark.parametrize(
    "status", [BookingStatus.PENDING, BookingStatus.FAILED, BookingStatus.CANCELLED]
)
async def test_cancel_refuses_a_booking_that_is_not_confirmed(status: BookingStatus) -> None:
    db, event_id = _db()
    booking = db.add_booking(db.state.events[event_id], user_id="usr_1", status=status)
    with pytest.raises(BookingNotCancellable):
        await cancel(booking.id, user_id="usr_1", db=db, sagas=FakeSagas(), clock=FixedClock())


async def test_cancel_refuses_within_24_hours_of_the_start() -> None:
    db = FakeDatabase()
    event = db.add_event(db.add_venue(), starts_in=timedelta(hours=23))
    booking = db.add_booking(event, user_id="usr_1")
    with pytest.raises(CancellationWindowExpired):
        await cancel(booking.id, user_id="usr_1", db=db, sagas=FakeSagas(), clock=FixedClock())
    assert not db.state.cancellations


async def test_cancel_refuses_a_booking_without_a_payment() -> None:
    db, event_id = _db()
    booking = db.add_booking(db.state.events[event_id], user_id="usr_1", payment_id=None)
    with pytest.raises(BookingNotCancellable, match="no payment"):
        await cancel(booking.id, user_id="usr_1", db=db, sagas=FakeSagas(), clock=FixedClock())


async def test_cancel_refuses_when_the_saga_finds_it_no_longer_confirmed() -> None:
    db, event_id = _db()
    booking = db.add_booking(db.state.events[event_id], user_id="usr_1")
    with pytest.raises(BookingNotCancellable, match="no longer CONFIRMED"):
        await cancel(
            booking.id, user_id="usr_1", db=db, sagas=FakeSagas(finished=False), clock=FixedClock()
        )


async def test_cancel_answers_unavailable_while_the_refund_is_pending() -> None:
    db, event_id = _db()
    booking = db.add_booking(db.state.events[event_id], user_id="usr_1")
    with pytest.raises(ServiceUnavailable, match="recorded"):
        await cancel(
            booking.id,
            user_id="usr_1",
            db=db,
            sagas=FakeSagas(cancelled_at=None),
            clock=FixedClock(),
        )


async def test_cancel_answers_unavailable_when_the_saga_is_slow() -> None:
    db, event_id = _db()
    booking = db.add_booking(db.state.events[event_id], user_id="usr_1")
    with pytest.raises(ServiceUnavailable):
        await cancel(
            booking.id,
            user_id="usr_1",
            db=db,
            sagas=FakeSagas(delay=1.0),
            clock=FixedClock(),
            wait_seconds=0.01,
        )
    assert db.state.cancellations == [booking.id]  # recorded: the saga actor finishes it


async def test_cancel_joins_a_cancellation_in_progress_without_checking_again() -> None:
    db = FakeDatabase()
    # Inside the 24-hour window by now: a cancellation recorded earlier is still finished.
    event = db.add_event(db.add_venue(), starts_in=timedelta(hours=1))
    booking = db.add_booking(event, user_id="usr_1", step=SagaStep.CANCELLING)
    sagas = FakeSagas()
    done = await cancel(booking.id, user_id="usr_1", db=db, sagas=sagas, clock=FixedClock())
    assert done.cancelled_at == NOW
    assert not db.state.cancellations and len(sagas.calls) == 1


async def test_book_answers_a_key_stored_before_request_hashes_with_its_booking() -> None:
    db, event_id = _db()
    first = await book(_cmd(event_id, key="old"), db=db, saga_pool_size=POOL)
    db.state.keys[("usr_1", "old")] = KeyedBooking(first, None)  # written before hashes were kept
    assert await book(_cmd(event_id, ["seat_A3"], key="old"), db=db, saga_pool_size=POOL) == first


# -- best available -------------------------------------------------------------------------------
def _best(event_id: str, quantity: int | None = 2, **kw: object) -> BookSeats:
    return BookSeats(
        user_id="usr_1",
        event_id=event_id,
        seat_ids=None,
        payment_type="card",
        payment_token="pm_card_visa",
        quantity=quantity,
        **kw,  # type: ignore[arg-type]
    )


async def test_a_best_available_booking_is_recorded_without_seats_for_its_saga_to_choose() -> None:
    db, event_id = _db()
    booking_id = await book(
        _best(event_id, 3, tier="GENERAL", together=False), db=db, saga_pool_size=POOL
    )
    booking = db.state.bookings[booking_id]
    assert (
        booking.status is BookingStatus.PENDING
        and booking.seat_ids == ()
        and booking.total_amount == 0
    )
    assert booking.seat_request == SeatRequest(quantity=3, tier="GENERAL", together=False)


@pytest.mark.parametrize(
    "fields",
    [
        {"seat_ids": ["seat_A1"], "quantity": 1},  # both
        {"seat_ids": None, "quantity": None},  # neither
        {"seat_ids": ["seat_A1"], "quantity": None, "tier": "VIP"},  # a tier for named seats
    ],
)
async def test_exactly_one_of_seats_and_quantity(fields: dict[str, object]) -> None:
    db, event_id = _db()
    cmd = BookSeats(
        user_id="usr_1",
        event_id=event_id,
        payment_type="card",
        payment_token="pm_card_visa",
        **fields,
    )  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed):
        await book(cmd, db=db, saga_pool_size=POOL)
    assert not db.state.bookings and db.sessions == 0


@pytest.mark.parametrize("quantity", [0, 11])
async def test_a_quantity_outside_one_to_ten_is_refused(quantity: int) -> None:
    db, event_id = _db()
    with pytest.raises(InvalidSeatCount):
        await book(_best(event_id, quantity), db=db, saga_pool_size=POOL)
    assert db.sessions == 0


async def test_best_available_refuses_a_missing_event_a_started_one_and_an_unsold_tier() -> None:
    db, event_id = _db()
    with pytest.raises(EventNotFound):
        await book(_best("evnt_missing"), db=db, saga_pool_size=POOL)
    with pytest.raises(ValidationFailed, match="STANDING"):
        await book(_best(event_id, tier="STANDING"), db=db, saga_pool_size=POOL)
    started = db.add_event(db.add_venue(), starts_in=timedelta(minutes=-1))
    with pytest.raises(EventNotOnSale):
        await book(_best(started.id), db=db, saga_pool_size=POOL)
    assert not db.state.bookings


async def test_an_idempotency_key_covers_the_quantity_asked_for() -> None:
    db, event_id = _db()
    first = await book(_best(event_id, 2, idempotency_key="k1"), db=db, saga_pool_size=POOL)
    assert await book(_best(event_id, 2, idempotency_key="k1"), db=db, saga_pool_size=POOL) == first
    with pytest.raises(IdempotencyKeyMismatch):
        await book(_best(event_id, 3, idempotency_key="k1"), db=db, saga_pool_size=POOL)
    assert list(db.state.bookings) == [first]


# -- the sale's opening and the waiting room --------------------------------------------------------
def _room_event(db: FakeDatabase, **settings: object) -> str:
    event = db.add_event(db.add_venue())
    db.state.events[event.id] = replace(event, **settings)  # type: ignore[arg-type]
    return event.id


async def test_book_refuses_an_event_whose_sale_has_not_opened() -> None:
    db = FakeDatabase()
    event_id = _room_event(db, sales_start_at=NOW + timedelta(minutes=5))
    with pytest.raises(EventNotOnSale, match="not opened"):
        await book(_cmd(event_id), db=db, saga_pool_size=POOL)
    best = replace(_cmd(event_id), seat_ids=None, quantity=1)
    with pytest.raises(EventNotOnSale):
        await book(best, db=db, saga_pool_size=POOL)
    assert not db.state.bookings


async def test_book_needs_an_admission_for_an_event_with_a_waiting_room() -> None:
    db = FakeDatabase()
    event_id = _room_event(db, waiting_room=WaitingRoomSettings(enabled=True))
    forged = AdmissionTokenForged()
    with pytest.raises(AdmissionRequired):
        await book(_cmd(event_id), db=db, saga_pool_size=POOL)
    with pytest.raises(AdmissionTokenForged):  # the refusal the Gateway found, for the logs
        await book(replace(_cmd(event_id), refusal=forged), db=db, saga_pool_size=POOL)
    with pytest.raises(AdmissionRequired):
        await book(replace(_cmd(event_id), seat_ids=None, quantity=1), db=db, saga_pool_size=POOL)
    assert not db.state.bookings
    admitted = replace(_cmd(event_id), admitted=True)
    assert await book(admitted, db=db, saga_pool_size=POOL) in db.state.bookings
    best = replace(admitted, seat_ids=None, quantity=2)
    assert await book(best, db=db, saga_pool_size=POOL) in db.state.bookings


async def test_an_admission_is_not_asked_of_an_event_without_a_waiting_room() -> None:
    db, event_id = _db()
    assert await book(_cmd(event_id), db=db, saga_pool_size=POOL) in db.state.bookings
