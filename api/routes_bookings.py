"""/api/bookings and /api/payments."""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from actors.saga_client import BookingSagaClient
from api.auth import Principal
from api.deps import PrincipalDep, ServicesDep
from api.http import current_request_id
from api.schemas import (
    BookingAccepted,
    BookingDetail,
    BookingItem,
    BookingList,
    CancelResponse,
    CreateBookingRequest,
    Pagination,
    PaymentResponse,
)
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
    BookingNotCancellable,
    BookingNotFound,
    EventNotFound,
    EventNotOnSale,
    IdempotencyKeyMismatch,
    InvalidSeatCount,
    PaymentNotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from domain.ids import new_id
from domain.payments import Payment, PaymentStatus
from domain.saga import CancelOutcome
from domain.seating import SEAT_ID_RE
from storage import booking_repository, catalog_repository, payment_repository

logger = logging.getLogger(__name__)
router = APIRouter(tags=["bookings"])
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")
# How long POST /api/bookings/:id/cancel waits for the cancellation it recorded to finish (the
# refund is one processor call); past it the answer is 503 and the saga actor finishes the work.
CANCEL_WAIT_SECONDS = 15.0
_sagas = BookingSagaClient()


def accepted(booking_id: str) -> JSONResponse:
    body = BookingAccepted(
        bookingId=booking_id, status="PENDING",
        message=f"Booking is being processed. Poll GET /api/bookings/{booking_id} for status.",
    )
    return JSONResponse(body.model_dump(), status_code=202)


def booking_item(b: Booking) -> BookingItem:
    return BookingItem(
        id=b.id, eventId=b.event_id, eventName=b.event_name, eventDate=b.event_date, seatIds=list(b.seat_ids),
        status=b.status.value, totalAmount=b.total_amount, currency=b.currency, createdAt=b.created_at,
        confirmedAt=b.confirmed_at, failureReason=b.failure_reason.value if b.failure_reason else None,
    )


def booking_detail(b: Booking) -> BookingDetail:
    return BookingDetail(
        **booking_item(b).model_dump(), userId=b.user_id, venueName=b.venue_name, paymentId=b.payment_id,
        cancelledAt=b.cancelled_at,
    )


def _check_seats(seat_ids: list[str]) -> list[str]:
    if not MIN_SEATS <= len(seat_ids) <= MAX_SEATS:
        raise InvalidSeatCount(f"Must book between {MIN_SEATS} and {MAX_SEATS} seats; got {len(seat_ids)}")
    bad = [s for s in seat_ids if not SEAT_ID_RE.match(s)]
    if bad:
        raise ValidationFailed(f"seatIds: not seat ids of the form seat_A1: {', '.join(s[:20] for s in bad[:5])}")
    if len(set(seat_ids)) != len(seat_ids):
        raise ValidationFailed("seatIds: each seat may appear only once")
    return seat_ids


@router.post("/api/bookings", status_code=202, response_model=BookingAccepted, responses={202: {"model": BookingAccepted}})
async def create_booking(
    body: CreateBookingRequest, principal: PrincipalDep, svc: ServicesDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    seat_ids = _check_seats(body.seatIds)
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ValidationFailed("Idempotency-Key must be 1-255 characters of [A-Za-z0-9_.:-]")
    booking_id = new_id("bkg")
    # Stored with the key: the same key with another request is refused, never answered with
    # the first request's booking. Computed only when a key is given (microseconds).
    request_hash = None if idempotency_key is None else request_fingerprint(
        event_id=body.eventId, seat_ids=seat_ids, payment_type=body.paymentMethod.type,
        payment_token=body.paymentMethod.token,
    )
    pool = await svc.db()
    async with pool.acquire() as conn:
        # The price comes from the seats' tiers on the server, never from the client; the same
        # statement refuses an event that has started (no extra query on the hot path).
        added = await booking_repository.add(
            conn, booking_id=booking_id, user_id=principal.user_id, event_id=body.eventId, seat_ids=seat_ids,
            saga_slot=saga_slot(booking_id, svc.settings.saga_pool_size), payment_token=body.paymentMethod.token,
            idempotency_key=idempotency_key, request_hash=request_hash, request_id=current_request_id(),
        )
        if added.booking_id is None and idempotency_key is not None:
            # A key already used (by this user: keys are per user) answers for its first request
            # only, whatever has happened since (even if the event has started meanwhile).
            original = await booking_repository.get_by_idempotency_key(conn, user_id=principal.user_id, key=idempotency_key)
            if original is not None:
                if original.request_hash is not None and original.request_hash != request_hash:
                    raise IdempotencyKeyMismatch(
                        f"Idempotency-Key {idempotency_key} was already used with a different request "
                        f"(booking {original.booking_id}); use a new key for a new booking"
                    )
                return accepted(original.booking_id)
        if added.on_sale is False:
            raise EventNotOnSale(f"Event {body.eventId} has started; its tickets are no longer on sale")
        if added.seats_found != len(seat_ids):
            if await catalog_repository.get_event(conn, body.eventId) is None:
                raise EventNotFound(f"Event {body.eventId} does not exist")
            known = await catalog_repository.seat_prices(conn, body.eventId, seat_ids)
            unknown = [s for s in seat_ids if s not in known]
            raise ValidationFailed(f"seatIds: not seats of event {body.eventId}: {', '.join(unknown)}")
        if added.booking_id is None:  # the first request's key expired between the two statements
            raise ValidationFailed("Idempotency-Key collided with an expiring key; retry")
    # The insert announced the booking to its saga actor, which persists every step; if the
    # announcement is lost (the actor was not listening), its recovery sweep drives the booking.
    if logger.isEnabledFor(logging.INFO):  # the line's fields are built only when it is written
        logger.info("booking accepted", extra={
            "request_id": current_request_id(), "booking_id": booking_id, "event_id": body.eventId,
            "user_id": principal.user_id, "seats": len(seat_ids),
        })
    return accepted(booking_id)


@router.get("/api/bookings/my", response_model=BookingList)
async def my_bookings(
    principal: PrincipalDep, svc: ServicesDep,
    status: Literal["PENDING", "CONFIRMED", "FAILED", "CANCELLED"] | None = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    perPage: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BookingList:
    pool = await svc.db()
    async with pool.acquire() as conn:
        bookings, total = await booking_repository.list_by_user(
            conn, user_id=principal.user_id, status=status, limit=perPage, offset=(page - 1) * perPage
        )
    return BookingList(data=[booking_item(b) for b in bookings], pagination=Pagination(
        page=page, perPage=perPage, total=total, totalPages=math.ceil(total / perPage) if total else 0
    ))


async def _visible_booking(svc: ServicesDep, principal: Principal, booking_id: str, *, owner_only: bool = False) -> Booking:
    pool = await svc.db()
    async with pool.acquire() as conn:
        booking = await booking_repository.get(conn, booking_id)
    allowed = booking is not None and (
        booking.user_id == principal.user_id or (principal.is_admin and not owner_only)
    )
    if booking is None or not allowed:
        # Never reveal that another user's booking exists.
        raise BookingNotFound(f"Booking {booking_id} does not exist")
    return booking


@router.get("/api/bookings/{booking_id}", response_model=BookingDetail)
async def get_booking(booking_id: str, principal: PrincipalDep, svc: ServicesDep) -> BookingDetail:
    return booking_detail(await _visible_booking(svc, principal, booking_id))


@router.post("/api/bookings/{booking_id}/cancel", response_model=CancelResponse)
async def cancel_booking(booking_id: str, principal: PrincipalDep, svc: ServicesDep) -> CancelResponse:
    """Cancels a CONFIRMED booking: a persisted workflow, never two loose steps.

    The intent is written first (the booking stays CONFIRMED, saga step CANCELLING); the booking's
    saga actor then refunds (key `<bookingId>:refund`), marks it CANCELLED with its sale released
    and its notification, and frees the seats in the seat actor. A crash anywhere (this replica,
    the saga or payment actor, the client going away) is resumed by the saga actor's recovery
    sweep. Requests that arrive while a cancellation runs join it and get the same answer; one
    after it finished gets 422 BOOKING_NOT_CANCELLABLE, as for any booking not CONFIRMED.
    """
    booking = await _visible_booking(svc, principal, booking_id, owner_only=True)
    if booking.saga_step is not SagaStep.CANCELLING:  # one in progress is joined, not re-checked
        check_cancellable(booking, now=datetime.now(UTC))
        if booking.payment_id is None:
            raise BookingNotCancellable(f"Booking {booking_id} has no payment to refund")
        pool = await svc.db()
        async with pool.acquire() as conn:
            # False when a concurrent request finished it meanwhile: the saga actor answers that.
            await booking_repository.request_cancellation(conn, booking_id)
    try:
        outcome = await _sagas.cancel(
            slot=_sagas.slot_of(booking.saga_slot), booking_id=booking_id, request_id=current_request_id(),
            timeout=CANCEL_WAIT_SECONDS,
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
    logger.info("booking cancelled", extra={
        "request_id": current_request_id(), "booking_id": booking_id, "event_id": booking.event_id,
    })
    return CancelResponse(
        bookingId=booking_id, status="CANCELLED", refundAmount=booking.total_amount, currency=booking.currency,
        cancelledAt=outcome.cancelled_at,
    )


def payment_response(p: Payment) -> PaymentResponse:
    return PaymentResponse(
        id=p.id, bookingId=p.booking_id, userId=p.user_id, amount=p.amount, currency=p.currency, status=p.status.value,
        providerTransactionId=p.provider_transaction_id, processedAt=p.processed_at,
    )


def _visible_payment(p: Payment | None, principal: Principal, what: str) -> Payment:
    # A charge still in flight has no outcome to show yet.
    if p is None or p.status is PaymentStatus.PROCESSING or not (p.user_id == principal.user_id or principal.is_admin):
        raise PaymentNotFound(f"No payment found for {what}")
    return p


@router.get("/api/payments/booking/{booking_id}", response_model=PaymentResponse, tags=["payments"])
async def payment_of_booking(booking_id: str, principal: PrincipalDep, svc: ServicesDep) -> PaymentResponse:
    pool = await svc.db()
    async with pool.acquire() as conn:
        payment = await payment_repository.get_of_booking(conn, booking_id)
    return payment_response(_visible_payment(payment, principal, f"booking {booking_id}"))


@router.get("/api/payments/{payment_id}", response_model=PaymentResponse, tags=["payments"])
async def get_payment(payment_id: str, principal: PrincipalDep, svc: ServicesDep) -> PaymentResponse:
    pool = await svc.db()
    async with pool.acquire() as conn:
        payment = await payment_repository.get(conn, payment_id)
    return payment_response(_visible_payment(payment, principal, f"payment {payment_id}"))
