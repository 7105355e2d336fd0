"""/api/bookings and /api/payments."""

from __future__ import annotations

import logging
import math
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response

from api.adapters import utc_now
from api.auth import Principal
from api.booking_waiters import requested_wait
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
from application import bookings
from application.bookings import BookSeats
from domain.bookings import Booking, BookingStatus
from domain.errors import AdmissionRequired, PaymentNotFound
from domain.payments import Payment, PaymentStatus
from storage import booking_repository, payment_repository

logger = logging.getLogger(__name__)
router = APIRouter(tags=["bookings"])


def accepted(booking_id: str) -> JSONResponse:
    body = BookingAccepted(
        bookingId=booking_id,
        status="PENDING",
        message=f"Booking is being processed. Poll GET /api/bookings/{booking_id} for status.",
    )
    return JSONResponse(body.model_dump(), status_code=202)


def booking_item(b: Booking) -> BookingItem:
    return BookingItem(
        id=b.id,
        eventId=b.event_id,
        eventName=b.event_name,
        eventDate=b.event_date,
        seatIds=list(b.seat_ids),
        status=b.status.value,
        totalAmount=b.total_amount,
        currency=b.currency,
        createdAt=b.created_at,
        confirmedAt=b.confirmed_at,
        failureReason=b.failure_reason.value if b.failure_reason else None,
        failureMessage=b.failure_message,
    )


def booking_detail(b: Booking) -> BookingDetail:
    return BookingDetail(
        **booking_item(b).model_dump(),
        userId=b.user_id,
        venueName=b.venue_name,
        paymentId=b.payment_id,
        cancelledAt=b.cancelled_at,
    )


PreferHeader = Annotated[
    str | None,
    Header(
        alias="Prefer",
        description="`wait=N` (RFC 7240, N <= 10): wait up to N s for the booking to be final",
    ),
]


AdmissionHeader = Annotated[
    str | None,
    Header(
        alias="X-Admission-Token",
        description="For an event with a waiting room: the admission token from "
        "`GET /api/queue/{ticket}` once admitted",
    ),
]


def check_admission(
    svc: ServicesDep, token: str | None, *, user_id: str, event_id: str
) -> tuple[bool, AdmissionRequired | None]:
    """Whether `token` lets the caller book the event now, by its signature alone (no state read);
    with the refusal when it does not. Only an event with a waiting room asks: the booking insert
    decides with the answer, so a booking without a room costs nothing more."""
    if token is None:
        return False, None
    try:
        svc.admission.verify(token, user_id=user_id, event_id=event_id)
    except AdmissionRequired as refusal:
        return False, refusal
    return True, None


def _is_final(b: Booking) -> bool:
    return b.status is not BookingStatus.PENDING


async def _wait_final(
    svc: ServicesDep, principal: Principal, booking_id: str, seconds: int
) -> Booking | None:
    """The booking once final or after `seconds`; None when this replica cannot wait now."""
    return await svc.booking_waiters().wait_final(
        booking_id,
        seconds,
        lambda: bookings.visible_booking(
            svc.database,
            booking_id=booking_id,
            user_id=principal.user_id,
            is_admin=principal.is_admin,
        ),
        _is_final,
    )


def _applied(seconds: int) -> dict[str, str]:
    return {"Preference-Applied": f"wait={seconds}", "Vary": "Prefer"}


@router.post(
    "/api/bookings",
    status_code=202,
    response_model=BookingAccepted,
    responses={
        202: {"model": BookingAccepted},
        200: {"model": BookingDetail, "description": "Final (Prefer: wait)"},
    },
)
async def create_booking(
    body: CreateBookingRequest,
    principal: PrincipalDep,
    svc: ServicesDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    prefer: PreferHeader = None,
    admission_token: AdmissionHeader = None,
) -> JSONResponse:
    """Book 1-10 seats of an event: answers 202 with a PENDING booking at once.

    Name the seats (`seatIds`), or ask for the best available ones (`quantity`, optionally `tier`
    and `together`, default true): the event's seat actor then chooses and locks them, front and
    centre first, and the booking shows them once chosen. The price comes from the seats' tiers,
    never from the request. The booking then goes through its saga (lock the seats, charge the
    card, reserve the seats) and ends CONFIRMED or FAILED with a `failureReason`: poll `GET
    /api/bookings/{id}`, or send `Prefer: wait=N` (N <= 10) to get the final booking in this answer
    (200, `Preference-Applied`) when it is final within N s. With an `Idempotency-Key` header, a
    repeat of the same request within 24 h answers with the first booking and starts nothing; the
    same key with a different request is refused (409 `IDEMPOTENCY_KEY_REUSED`). An event whose
    sale has not opened (`salesStartAt`) or that has started is refused (409 `EVENT_NOT_ON_SALE`);
    seats not of the event are a 400 `VALIDATION_ERROR`. An event with a waiting room needs the
    caller's admission token for it in `X-Admission-Token` (from `GET /api/queue/{ticket}`):
    missing, expired, forged, or another user's or event's: 403 `ADMISSION_REQUIRED`. An admitted
    buyer may book (and retry) until the token expires.
    """
    admitted, refusal = check_admission(
        svc, admission_token, user_id=principal.user_id, event_id=body.eventId
    )
    booking_id = await bookings.book(
        BookSeats(
            user_id=principal.user_id,
            event_id=body.eventId,
            seat_ids=body.seatIds,
            payment_type=body.paymentMethod.type,
            payment_token=body.paymentMethod.token,
            idempotency_key=idempotency_key,
            quantity=body.quantity,
            tier=body.tier,
            together=body.together,
            request_id=current_request_id(),
            admitted=admitted,
            refusal=refusal,
        ),
        db=svc.database,
        saga_pool_size=svc.settings.saga_pool_size,
    )
    # The insert announced the booking to its saga actor, which persists every step; if the
    # announcement is lost (the actor was not listening), its recovery sweep drives the booking.
    if logger.isEnabledFor(logging.INFO):  # the line's fields are built only when it is written
        logger.info(
            "booking accepted",
            extra={
                "request_id": current_request_id(),
                "booking_id": booking_id,
                "event_id": body.eventId,
                "user_id": principal.user_id,
                "seats": len(body.seatIds) if body.seatIds is not None else body.quantity,
            },
        )
    wait = requested_wait(prefer)
    if wait is not None:
        final = await _wait_final(svc, principal, booking_id, wait)
        if final is not None and _is_final(final):
            return JSONResponse(
                booking_detail(final).model_dump(mode="json"), headers=_applied(wait)
            )
    return accepted(booking_id)


@router.get("/api/bookings/my", response_model=BookingList)
async def my_bookings(
    principal: PrincipalDep,
    svc: ServicesDep,
    status: Literal["PENDING", "CONFIRMED", "FAILED", "CANCELLED"] | None = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    perPage: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BookingList:
    """The caller's own bookings, newest first, optionally only those in one `status`."""
    async with svc.connection() as conn:
        found, total = await booking_repository.list_by_user(
            conn,
            user_id=principal.user_id,
            status=status,
            limit=perPage,
            offset=(page - 1) * perPage,
        )
    return BookingList(
        data=[booking_item(b) for b in found],
        pagination=Pagination(
            page=page,
            perPage=perPage,
            total=total,
            totalPages=math.ceil(total / perPage) if total else 0,
        ),
    )


@router.get("/api/bookings/{booking_id}", response_model=BookingDetail)
async def get_booking(
    booking_id: str,
    principal: PrincipalDep,
    svc: ServicesDep,
    response: Response,
    prefer: PreferHeader = None,
) -> BookingDetail:
    """One booking with its status, seats, amount and payment: the caller's own, or any for an admin.

    Another user's booking answers 404 `BOOKING_NOT_FOUND`, as if it did not exist. With `Prefer:
    wait=N` (N <= 10) a PENDING booking is answered when it becomes final or after N s, whichever
    is first; a final one carries `Preference-Applied: wait=N`.
    """
    wait = requested_wait(prefer)
    booking = None if wait is None else await _wait_final(svc, principal, booking_id, wait)
    if booking is None:
        booking = await bookings.visible_booking(
            svc.database,
            booking_id=booking_id,
            user_id=principal.user_id,
            is_admin=principal.is_admin,
        )
    elif _is_final(booking):
        response.headers.update(_applied(wait or 0))
    return booking_detail(booking)


@router.post("/api/bookings/{booking_id}/cancel", response_model=CancelResponse)
async def cancel_booking(
    booking_id: str, principal: PrincipalDep, svc: ServicesDep
) -> CancelResponse:
    """Cancel one of the caller's CONFIRMED bookings: the full amount is refunded and the seats
    become AVAILABLE again.

    Within 24 h of the event's start: 422 `CANCELLATION_WINDOW_EXPIRED`; a booking that is not
    CONFIRMED: 422 `BOOKING_NOT_CANCELLABLE`. The cancellation is recorded before the refund: if
    the refund takes longer than a few seconds the answer is 503 and the cancellation completes
    in the background (the booking stays CONFIRMED until then); retrying joins it.
    """
    done = await bookings.cancel(
        booking_id,
        user_id=principal.user_id,
        db=svc.database,
        sagas=svc.sagas,
        clock=utc_now,
        request_id=current_request_id(),
    )
    logger.info(
        "booking cancelled",
        extra={
            "request_id": current_request_id(),
            "booking_id": booking_id,
            "event_id": done.booking.event_id,
        },
    )
    return CancelResponse(
        bookingId=booking_id,
        status="CANCELLED",
        refundAmount=done.booking.total_amount,
        currency=done.booking.currency,
        cancelledAt=done.cancelled_at,
    )


def payment_response(p: Payment) -> PaymentResponse:
    return PaymentResponse(
        id=p.id,
        bookingId=p.booking_id,
        userId=p.user_id,
        amount=p.amount,
        currency=p.currency,
        status=p.status.value,
        providerTransactionId=p.provider_transaction_id,
        processedAt=p.processed_at,
    )


def _visible_payment(p: Payment | None, principal: Principal, what: str) -> Payment:
    # A charge still in flight has no outcome to show yet.
    if (
        p is None
        or p.status is PaymentStatus.PROCESSING
        or not (p.user_id == principal.user_id or principal.is_admin)
    ):
        raise PaymentNotFound(f"No payment found for {what}")
    return p


@router.get("/api/payments/booking/{booking_id}", response_model=PaymentResponse, tags=["payments"])
async def payment_of_booking(
    booking_id: str, principal: PrincipalDep, svc: ServicesDep
) -> PaymentResponse:
    """The payment of a booking (`SUCCESS`, `FAILED` or `REFUNDED`): the caller's own, or any for an
    admin. None yet, or another user's: 404 `PAYMENT_NOT_FOUND`."""
    async with svc.connection() as conn:
        payment = await payment_repository.get_of_booking(conn, booking_id)
    return payment_response(_visible_payment(payment, principal, f"booking {booking_id}"))


@router.get("/api/payments/{payment_id}", response_model=PaymentResponse, tags=["payments"])
async def get_payment(
    payment_id: str, principal: PrincipalDep, svc: ServicesDep
) -> PaymentResponse:
    """One payment: the caller's own, or any for an admin. Another user's: 404 `PAYMENT_NOT_FOUND`."""
    async with svc.connection() as conn:
        payment = await payment_repository.get(conn, payment_id)
    return payment_response(_visible_payment(payment, principal, f"payment {payment_id}"))
