"""Booking a few seats, and cancelling a booking."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime

from application.ports import BookingSagas, Clock, Database, Session
from domain.best_available import SeatRequest
from domain.bookings import (
    MAX_SEATS,
    MIN_SEATS,
    Booking,
    SagaStep,
    check_cancellable,
    request_fingerprint,
    saga_slot,
)
from domain.errors import (
    AdmissionRequired,
    BookingNotCancellable,
    BookingNotFound,
    EventNotFound,
    EventNotOnSale,
    IdempotencyKeyMismatch,
    InvalidSeatCount,
    ServiceUnavailable,
    ValidationFailed,
)
from domain.ids import new_id
from domain.saga import CancelOutcome
from domain.seating import SEAT_ID_RE

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")
# How long a cancel request waits for the cancellation it recorded to finish (the refund is one
# processor call); past it the answer is 503 and the saga actor finishes the work.
CANCEL_WAIT_SECONDS = 15.0


@dataclass(frozen=True)
class BookSeats:
    """A buyer's request for seats of one event: named (`seat_ids`), or the best available
    (`quantity`, optionally of one `tier`, `together` or not); exactly one of the two."""

    user_id: str
    event_id: str
    seat_ids: list[str] | None
    payment_type: str
    payment_token: str
    idempotency_key: str | None = None
    quantity: int | None = None
    tier: str | None = None
    together: bool = True
    request_id: str | None = None  # the HTTP request's, stored with the booking for its log lines
    # The caller's admission token was verified for this user and event (the Gateway checks it by
    # its signature); only an event with a waiting room asks. `refusal`: why it was not (logs).
    admitted: bool = False
    refusal: AdmissionRequired | None = None


@dataclass(frozen=True)
class Cancelled:
    booking: Booking  # as it was before the cancellation (CONFIRMED)
    cancelled_at: datetime


def seat_request(cmd: BookSeats) -> SeatRequest | None:
    """The best-available request of a command that asks for a quantity; None when it names seats.

    Raises:
        ValidationFailed: Both or neither of seat ids and quantity, or a tier with seat ids.
        InvalidSeatCount: A quantity outside 1-10.
    """
    if (cmd.seat_ids is None) == (cmd.quantity is None):
        raise ValidationFailed(
            "Give exactly one of seatIds (the seats to book) and quantity (the best available)"
        )
    if cmd.quantity is None:
        if cmd.tier is not None:
            raise ValidationFailed(
                "tier applies to a best-available request (quantity), not to seatIds"
            )
        return None
    if not MIN_SEATS <= cmd.quantity <= MAX_SEATS:
        raise InvalidSeatCount(
            f"Must book between {MIN_SEATS} and {MAX_SEATS} seats; got {cmd.quantity}"
        )
    return SeatRequest(quantity=cmd.quantity, tier=cmd.tier, together=cmd.together)


def not_on_sale(event_id: str) -> EventNotOnSale:
    return EventNotOnSale(
        f"Event {event_id} is not on sale: its sale has not opened yet (salesStartAt) or it has started"
    )


def not_admitted(cmd: BookSeats) -> AdmissionRequired:
    """The refusal for a caller the event's waiting room has not admitted (the token's problem)."""
    return cmd.refusal or AdmissionRequired(
        f"Event {cmd.event_id} has a waiting room: send the admission token from its queue "
        "(POST /api/events/{id}/queue) in X-Admission-Token"
    )


def check_seats(seat_ids: list[str]) -> list[str]:
    """Refuses a seat list that no event could sell: wrong count, malformed ids, duplicates."""
    if not MIN_SEATS <= len(seat_ids) <= MAX_SEATS:
        raise InvalidSeatCount(
            f"Must book between {MIN_SEATS} and {MAX_SEATS} seats; got {len(seat_ids)}"
        )
    bad = [s for s in seat_ids if not SEAT_ID_RE.match(s)]
    if bad:
        raise ValidationFailed(
            f"seatIds: not seat ids of the form seat_A1: {', '.join(s[:20] for s in bad[:5])}"
        )
    if len(set(seat_ids)) != len(seat_ids):
        raise ValidationFailed("seatIds: each seat may appear only once")
    return seat_ids


async def book(cmd: BookSeats, *, db: Database, saga_pool_size: int) -> str:
    """Records a PENDING booking; its saga actor takes it from there (lock, charge, reserve).

    One statement on the hot path: the insert prices the seats from their tiers (never from the
    client), refuses an event not on sale (before `salesStartAt`, or started) and a caller its
    waiting room has not admitted (`cmd.admitted`), and announces the booking to its saga actor.
    Only a refused insert costs more queries, to say why.

    Args:
        cmd: The request.
        db: Where bookings are recorded.
        saga_pool_size: How many saga actors share the bookings (fixes the booking's slot).

    Returns:
        The booking's id; with an Idempotency-Key already used for this request, the first one's.

    A best-available request (a quantity) is recorded the same way with no seats yet: its saga's
    seat actor chooses and locks them, and the saga writes them with their price before any charge.

    Raises:
        InvalidSeatCount: Fewer than 1 or more than 10 seats.
        ValidationFailed: Malformed or repeated seat ids, both or neither of seat ids and a
            quantity, a tier the event does not sell, a malformed Idempotency-Key, seats that are
            not the event's, or a key that expired between two statements.
        IdempotencyKeyMismatch: The key was used before with a different request.
        EventNotOnSale: The sale has not opened yet, or the event has started.
        AdmissionRequired: The event has a waiting room and the caller is not admitted.
        EventNotFound: No such event.
    """
    request = seat_request(cmd)
    key = cmd.idempotency_key
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise ValidationFailed("Idempotency-Key must be 1-255 characters of [A-Za-z0-9_.:-]")
    if request is not None:
        return await _book_best(cmd, request, db=db, saga_pool_size=saga_pool_size)
    assert cmd.seat_ids is not None
    seat_ids = check_seats(cmd.seat_ids)
    booking_id = new_id("bkg")
    # Stored with the key: the same key with another request is refused, never answered with
    # the first request's booking. Computed only when a key is given (microseconds).
    request_hash = (
        None
        if key is None
        else request_fingerprint(
            event_id=cmd.event_id,
            seat_ids=seat_ids,
            payment_type=cmd.payment_type,
            payment_token=cmd.payment_token,
        )
    )
    async with db.session() as s:
        added = await s.bookings.add(
            booking_id=booking_id,
            user_id=cmd.user_id,
            event_id=cmd.event_id,
            seat_ids=seat_ids,
            saga_slot=saga_slot(booking_id, saga_pool_size),
            payment_token=cmd.payment_token,
            idempotency_key=key,
            request_hash=request_hash,
            request_id=cmd.request_id,
            admitted=cmd.admitted,
        )
        if added.booking_id is None and key is not None:
            # A repeat of an accepted request answers with its booking, whatever the token says now.
            original = await _keyed_booking(
                s, user_id=cmd.user_id, key=key, request_hash=request_hash
            )
            if original is not None:
                return original
        if added.on_sale is False:
            raise not_on_sale(cmd.event_id)
        if added.admitted is False:
            raise not_admitted(cmd)
        if added.seats_found != len(seat_ids):
            if await s.catalog.get_event(cmd.event_id) is None:
                raise EventNotFound(f"Event {cmd.event_id} does not exist")
            known = await s.catalog.seat_prices(cmd.event_id, seat_ids)
            unknown = [seat for seat in seat_ids if seat not in known]
            raise ValidationFailed(
                f"seatIds: not seats of event {cmd.event_id}: {', '.join(unknown)}"
            )
        if added.booking_id is None:  # the first request's key expired between the two statements
            raise ValidationFailed("Idempotency-Key collided with an expiring key; retry")
    return booking_id


async def _book_best(
    cmd: BookSeats, request: SeatRequest, *, db: Database, saga_pool_size: int
) -> str:
    """Records a best-available booking: no seats and no price until its saga's seat actor chose."""
    key = cmd.idempotency_key
    booking_id = new_id("bkg")
    request_hash = (
        None
        if key is None
        else request_fingerprint(
            event_id=cmd.event_id,
            seat_ids=[],
            payment_type=cmd.payment_type,
            payment_token=cmd.payment_token,
            seat_request=request,
        )
    )
    async with db.session() as s:
        added = await s.bookings.add_best(
            booking_id=booking_id,
            user_id=cmd.user_id,
            event_id=cmd.event_id,
            request=request,
            saga_slot=saga_slot(booking_id, saga_pool_size),
            payment_token=cmd.payment_token,
            idempotency_key=key,
            request_hash=request_hash,
            request_id=cmd.request_id,
            admitted=cmd.admitted,
        )
        if added.booking_id is None and key is not None:
            original = await _keyed_booking(
                s, user_id=cmd.user_id, key=key, request_hash=request_hash
            )
            if original is not None:
                return original
    if added.on_sale is None:
        raise EventNotFound(f"Event {cmd.event_id} does not exist")
    if added.on_sale is False:
        raise not_on_sale(cmd.event_id)
    if added.admitted is False:
        raise not_admitted(cmd)
    if not added.tier_sold:
        raise ValidationFailed(f"tier: event {cmd.event_id} has no {request.tier} seats")
    if added.booking_id is None:  # the first request's key expired between the two statements
        raise ValidationFailed("Idempotency-Key collided with an expiring key; retry")
    return booking_id


async def _keyed_booking(
    s: Session, *, user_id: str, key: str, request_hash: str | None
) -> str | None:
    """The booking an Idempotency-Key already made, if it did (None: the key is free again).

    A key (per user) answers for its first request only, whatever has happened since (even if the
    event has started meanwhile); the same key with another request is refused."""
    original = await s.bookings.get_by_idempotency_key(user_id=user_id, key=key)
    if original is None:
        return None
    if original.request_hash is not None and original.request_hash != request_hash:
        raise IdempotencyKeyMismatch(
            f"Idempotency-Key {key} was already used with a different request "
            f"(booking {original.booking_id}); use a new key for a new booking"
        )
    return original.booking_id


async def visible_booking(
    db: Database, *, booking_id: str, user_id: str, is_admin: bool
) -> Booking:
    """The booking, if the caller may see it: its owner, or an admin.

    Raises:
        BookingNotFound: No such booking, or another user's (never reveal that it exists).
    """
    async with db.session() as s:
        booking = await s.bookings.get(booking_id)
    if booking is None or not (booking.user_id == user_id or is_admin):
        raise BookingNotFound(f"Booking {booking_id} does not exist")
    return booking


async def cancel(
    booking_id: str,
    *,
    user_id: str,
    db: Database,
    sagas: BookingSagas,
    clock: Clock,
    wait_seconds: float = CANCEL_WAIT_SECONDS,
    request_id: str = "",
) -> Cancelled:
    """Cancels a CONFIRMED booking of the caller's: a persisted workflow, never two loose steps.

    The intent is written first (the booking stays CONFIRMED, saga step CANCELLING); the
    booking's saga actor then refunds, marks it CANCELLED with its sale released and its
    notification, and frees the seats. A crash anywhere is resumed by the saga actor's recovery
    sweep. A request that arrives while a cancellation runs joins it and gets the same answer.

    Args:
        booking_id: The booking to cancel.
        user_id: The caller; only the owner may cancel (admins too are refused another's).
        db: Where the intent is recorded.
        sagas: The saga actors that carry the cancellation out.
        clock: The current time (for the 24-hour window).
        wait_seconds: How long to wait for the refund before answering 503.

    Returns:
        The booking as it was, and when it became CANCELLED.

    Raises:
        BookingNotFound: No such booking of the caller's.
        BookingNotCancellable: Not CONFIRMED, no payment to refund, or finished meanwhile.
        CancellationWindowExpired: The event starts within 24 hours.
        ServiceUnavailable: The cancellation is recorded but the refund has not gone through in
            time; the saga actor completes it.
    """
    booking = await visible_booking(db, booking_id=booking_id, user_id=user_id, is_admin=False)
    if booking.saga_step is not SagaStep.CANCELLING:  # one in progress is joined, not re-checked
        check_cancellable(booking, now=clock())
        if booking.payment_id is None:
            raise BookingNotCancellable(f"Booking {booking_id} has no payment to refund")
        async with db.session() as s:
            # False when a concurrent request finished it meanwhile: the saga actor answers that.
            await s.bookings.request_cancellation(booking_id)
    try:
        outcome = await asyncio.wait_for(
            sagas.cancel(booking_id=booking_id, saga_slot=booking.saga_slot, request_id=request_id),
            timeout=wait_seconds,
        )
    except TimeoutError:
        outcome = CancelOutcome(booking_id, None)
    if outcome is None:
        raise BookingNotCancellable(f"Booking {booking_id} is no longer CONFIRMED")
    if outcome.cancelled_at is None:
        raise ServiceUnavailable(
            f"The cancellation of booking {booking_id} is recorded and will complete once the refund goes "
            f"through; the booking stays CONFIRMED until then. Retry, or poll GET /api/bookings/{booking_id}"
        )
    return Cancelled(booking=booking, cancelled_at=outcome.cancelled_at)
