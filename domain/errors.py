"""One error type for every expected failure; each maps to the spec's error envelope.

Constructors take exactly one message argument: exceptions with more positional
arguments fail to unpickle when Ray carries them back from an actor.
"""

from __future__ import annotations

from typing import ClassVar


class TicketFlowError(Exception):
    code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "An unexpected error occurred"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.default_message


class ValidationFailed(TicketFlowError):
    code = "VALIDATION_ERROR"
    http_status = 400
    default_message = "The request is not valid"


class InvalidSeatCount(TicketFlowError):
    code = "INVALID_SEAT_COUNT"
    http_status = 400
    default_message = "Must book between 1 and 10 seats"


class Unauthorized(TicketFlowError):
    code = "UNAUTHORIZED"
    http_status = 401
    default_message = "A valid bearer token is required"


class InvalidCredentials(TicketFlowError):
    code = "INVALID_CREDENTIALS"
    http_status = 401
    default_message = "Email/password combination incorrect"


class Forbidden(TicketFlowError):
    code = "FORBIDDEN"
    http_status = 403
    default_message = "You do not have permission to do this"


class NotFound(TicketFlowError):
    code = "NOT_FOUND"
    http_status = 404
    default_message = "The requested resource does not exist"


class UserNotFound(NotFound):
    code = "USER_NOT_FOUND"


class EventNotFound(NotFound):
    code = "EVENT_NOT_FOUND"
    default_message = "Event does not exist"


class VenueNotFound(NotFound):
    code = "VENUE_NOT_FOUND"
    default_message = "Venue does not exist"


class BookingNotFound(NotFound):
    code = "BOOKING_NOT_FOUND"
    default_message = "Booking does not exist"


class PaymentNotFound(NotFound):
    code = "PAYMENT_NOT_FOUND"
    default_message = "No payment found"


class EmailAlreadyExists(TicketFlowError):
    code = "EMAIL_ALREADY_EXISTS"
    http_status = 409
    default_message = "Email is already registered"


class EventNotOnSale(TicketFlowError):
    code = "EVENT_NOT_ON_SALE"
    http_status = 409
    default_message = "This event is not on sale"


class IdempotencyKeyMismatch(TicketFlowError):
    """An Idempotency-Key of POST /api/bookings came back with a different body."""

    code = "IDEMPOTENCY_KEY_REUSED"
    http_status = 409
    default_message = "This Idempotency-Key was already used with a different request"


class BusinessRuleViolation(TicketFlowError):
    http_status = 422


class BookingNotCancellable(BusinessRuleViolation):
    code = "BOOKING_NOT_CANCELLABLE"
    default_message = "Booking is not in CONFIRMED status"


class CancellationWindowExpired(BusinessRuleViolation):
    code = "CANCELLATION_WINDOW_EXPIRED"
    default_message = "Event is less than 24 hours away"


class EventHasBookings(BusinessRuleViolation):
    code = "EVENT_HAS_BOOKINGS"
    default_message = "Tiers and seat map cannot change once seats are locked or sold"


class CapacityExceeded(BusinessRuleViolation):
    code = "CAPACITY_EXCEEDED"
    default_message = "Tier capacities exceed the venue's capacity"


class AdmissionRequired(TicketFlowError):
    """Booking an event with a waiting room needs the caller's admission token for that event.

    The subclasses say why a token was refused (for logs and tests); clients see one code.
    """

    code = "ADMISSION_REQUIRED"
    http_status = 403
    default_message = "An admission token from this event's waiting room is required"


class AdmissionTokenMalformed(AdmissionRequired):
    default_message = "The admission token is not valid"


class AdmissionTokenForged(AdmissionRequired):
    default_message = "The admission token is not valid"


class AdmissionExpired(AdmissionRequired):
    default_message = "The admission token has expired"


class AdmissionForAnotherUser(AdmissionRequired):
    default_message = "The admission token was issued to another user"


class AdmissionForAnotherEvent(AdmissionRequired):
    default_message = "The admission token is for another event"


class QueueTicketNotFound(NotFound):
    """No such queue ticket, or another user's (never reveal that it exists)."""

    code = "QUEUE_TICKET_NOT_FOUND"
    default_message = "Queue ticket does not exist"


class WaitingRoomNotEnabled(TicketFlowError):
    code = "WAITING_ROOM_NOT_ENABLED"
    http_status = 409
    default_message = "This event has no waiting room; book directly"


class WaitingRoomClosed(TicketFlowError):
    """The event's waiting room closed (sold out): nobody else gets in."""

    code = "WAITING_ROOM_CLOSED"
    http_status = 409
    default_message = "The waiting room is closed: the event is sold out"


class RefundFailed(TicketFlowError):
    code = "REFUND_FAILED"
    http_status = 502
    default_message = "The refund could not be processed; the booking is unchanged"


class PayloadTooLarge(TicketFlowError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413
    default_message = "Request body is too large"


class RateLimited(TicketFlowError):
    code = "RATE_LIMITED"
    http_status = 429
    default_message = "Too many requests"


class ServiceUnavailable(TicketFlowError):
    code = "SERVICE_UNAVAILABLE"
    http_status = 503
    default_message = "A dependency is unavailable; retry shortly"


def all_error_types() -> list[type[TicketFlowError]]:
    """Every concrete error class (for the pickling round-trip test and the docs)."""
    found: list[type[TicketFlowError]] = []
    stack: list[type[TicketFlowError]] = [TicketFlowError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found
