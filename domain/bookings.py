"""Bookings: statuses, failure reasons, saga steps and the booking read model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from domain.best_available import SeatRequest
from domain.errors import BookingNotCancellable, CancellationWindowExpired

MIN_SEATS, MAX_SEATS = 1, 10
CANCELLATION_WINDOW = timedelta(hours=24)


class BookingStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class FailureReason(StrEnum):
    SEATS_UNAVAILABLE = "SEATS_UNAVAILABLE"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    LOCK_EXPIRED = "LOCK_EXPIRED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class SagaStep(StrEnum):
    """Where a saga stands; persisted before the next step starts."""

    STARTED = "STARTED"  # booking written, nothing held yet
    SEATS_LOCKED = "SEATS_LOCKED"  # the seat actor holds the seats until lock_expires_at
    CHARGING = "CHARGING"  # a charge may be in flight: resume by replaying its idempotency key
    CHARGED = "CHARGED"  # money taken: either the seats are sold or the money is refunded
    CONFIRMED = "CONFIRMED"
    # A cancellation was requested: the booking stays CONFIRMED (and charged) until its refund
    # went through, then becomes CANCELLED; the steps in between are a CancelStep.
    CANCELLING = "CANCELLING"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class CancelStep(StrEnum):
    """Where a cancellation stands (`booking_cancellations.step`); persisted before the next step."""

    REFUNDING = "REFUNDING"  # the booking is CONFIRMED and charged; its refund may be in flight
    RELEASING = "RELEASING"  # refunded, CANCELLED, sale released in Postgres; the live seat actor's copy next
    DONE = "DONE"


def seat_request_json(request: SeatRequest) -> dict[str, object]:
    """A best-available request as stored with its booking (`bookings.seat_request`)."""
    return {"quantity": request.quantity, "tier": request.tier, "together": request.together}


def seat_request_from_json(value: dict[str, object]) -> SeatRequest:
    tier = value.get("tier")
    return SeatRequest(
        quantity=int(str(value["quantity"])),
        tier=None if tier is None else str(tier),
        together=bool(value.get("together", True)),
    )


@dataclass(frozen=True)
class Booking:
    id: str
    user_id: str
    event_id: str
    event_name: str
    event_date: datetime
    venue_name: str
    seat_ids: tuple[str, ...]
    status: BookingStatus
    saga_step: SagaStep
    saga_slot: int
    failure_reason: FailureReason | None
    total_amount: int
    currency: str
    payment_token: str
    payment_id: str | None
    lock_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None
    failed_at: datetime | None
    cancelled_at: datetime | None
    # Best available: what was asked for (None: the seats were named), and why it failed.
    seat_request: SeatRequest | None = None
    failure_message: str | None = None


def charge_key(booking_id: str) -> str:
    return f"{booking_id}:charge"


def refund_key(booking_id: str) -> str:
    return f"{booking_id}:refund"


def request_fingerprint(
    *,
    event_id: str,
    seat_ids: list[str],
    payment_type: str,
    payment_token: str,
    seat_request: SeatRequest | None = None,
) -> str:
    """The hash stored with an Idempotency-Key: what makes two booking requests the same request.

    Seat order does not matter (the same seats are the same booking); everything that changes what
    is bought or who pays does. Canonical JSON, so the hash never depends on formatting (and a
    request naming its seats hashes as it did before best available existed).
    """
    fields: dict[str, object] = {
        "eventId": event_id,
        "seatIds": sorted(seat_ids),
        "paymentMethod": {"type": payment_type, "token": payment_token},
    }
    if seat_request is not None:
        fields["seatRequest"] = seat_request_json(seat_request)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def saga_slot(booking_id: str, pool_size: int) -> int:
    """Which saga actor drives a booking: stable for a booking id, spread evenly by its random part."""
    return sum(booking_id.encode()) % pool_size


# The Postgres channel on which the saga announces each booking that became CONFIRMED or FAILED
# (the Gateway replicas' `Prefer: wait` waiters listen on it).
BOOKING_FINAL_CHANNEL = "tf_booking_final"


def saga_channel(slot: int) -> str:
    """The Postgres channel on which a new booking of this saga slot is announced."""
    return f"tf_saga_{slot}"


def check_cancellable(booking: Booking, *, now: datetime) -> None:
    if booking.status is not BookingStatus.CONFIRMED:
        raise BookingNotCancellable(
            f"Booking {booking.id} is {booking.status.value}, not CONFIRMED"
        )
    if booking.event_date - now < CANCELLATION_WINDOW:
        raise CancellationWindowExpired(
            f"Booking {booking.id} cannot be cancelled: the event starts in less than 24 hours"
        )
