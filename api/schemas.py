"""Request and response models of the public API (field names as api-reference.txt gives them).

Why ~490 lines in one module: one short model per request and response shape of the reference,
kept in one place that reads side by side with api-reference.txt.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from domain.catalog import MAX_ADMIT_PER_MINUTE, MIN_ADMIT_PER_MINUTE
from domain.codes import COUNTRIES, CURRENCIES
from domain.seating import TIERS
from domain.users import has_control_chars


def _utc_z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


UtcTime = Annotated[datetime, PlainSerializer(_utc_z, return_type=str)]


def _in_utc(value: datetime) -> datetime:
    # 0001-01-01T00:00+01:00 and 9999-12-31T23:00-01:00 parse, but have no UTC equivalent.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def _require_tz(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must include a timezone (e.g. 2025-09-15T19:30:00Z)")
    return _in_utc(value)


def _naive_as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else _in_utc(value)


AwareDatetime = Annotated[datetime, AfterValidator(_require_tz)]
# A query parameter's time: one without a timezone is read as UTC.
QueryDatetime = Annotated[datetime, AfterValidator(_naive_as_utc)]


def _text(max_length: int, min_length: int = 1) -> Callable[[str], str]:
    def check(value: str) -> str:
        value = value.strip()
        if not min_length <= len(value) <= max_length:
            raise ValueError(f"must be {min_length}-{max_length} characters")
        if has_control_chars(value):
            raise ValueError("must not contain control characters")
        return value

    return check


Name200 = Annotated[str, AfterValidator(_text(200))]
Description = Annotated[str, AfterValidator(_text(5000, 0))]
Line200 = Annotated[str, AfterValidator(_text(200))]


MAX_BODY_DEPTH = 32


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored as text (Postgres refuses NUL; UTF-8 has no lone surrogates)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain unpaired surrogates"
    return None


def body_problem(data: object) -> str | None:
    """The first string in a parsed JSON body (keys included) that is not storable text, or a body
    nested deeper than any request of ours; iterative, so no depth can exhaust the stack."""
    pending: list[tuple[object, int]] = [(data, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, str):
            problem = text_problem(node)
            if problem:
                return f"strings {problem}"
        elif isinstance(node, dict | list):
            if depth > MAX_BODY_DEPTH:
                return f"must not be nested more than {MAX_BODY_DEPTH} levels deep"
            items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            pending.extend((item, depth + 1) for item in items)
    return None


class Strict(BaseModel):
    """A request body: strict about its text, lenient about fields it does not know.

    Unknown fields are ignored (clients send extras such as `eventName` or `totalAmount`): no
    model here has a field for a price, a status or an owner, so an extra field can never set
    one; the server takes those from its own records.
    """

    model_config = ConfigDict(extra="ignore", str_max_length=10_000)

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: object) -> object:
        problem = body_problem(data)
        if problem:
            raise ValueError(problem)
        return data


# -- users --------------------------------------------------------------------------------------
class RegisterUserRequest(Strict):
    name: str
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)


class LoginRequest(Strict):
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)


class UserResponse(BaseModel):
    id: str
    name: str
    email: str
    role: str
    createdAt: UtcTime


class LoginUser(BaseModel):
    id: str
    name: str
    email: str
    role: str


class LoginResponse(BaseModel):
    token: str
    expiresAt: UtcTime
    user: LoginUser


# -- common -------------------------------------------------------------------------------------
class Pagination(BaseModel):
    page: int
    perPage: int
    total: int
    totalPages: int


class HealthResponse(BaseModel):
    status: str
    version: str
    uptime: int


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    requestId: str
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# -- venues and events --------------------------------------------------------------------------
class CreateVenueRequest(Strict):
    name: Name200
    address: Line200
    city: Line200
    country: str
    capacity: int = Field(gt=0, le=1_000_000)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        if value not in COUNTRIES:
            raise ValueError("must be an ISO 3166-1 alpha-2 country code (e.g. GB, US)")
        return value


class VenueResponse(BaseModel):
    id: str
    name: str
    address: str
    city: str
    country: str
    capacity: int


class TierRequest(Strict):
    tier: Literal["GENERAL", "VIP", "STANDING"]
    price: int = Field(gt=0, le=100_000_000)
    currency: str
    capacity: int = Field(gt=0, le=100_000)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if value not in CURRENCIES:
            raise ValueError("must be an ISO 4217 currency code (e.g. GBP, USD)")
        return value


class SeatMapRowRequest(Strict):
    row: str = Field(pattern=r"^[A-Z]{1,3}$")
    tier: Literal["GENERAL", "VIP", "STANDING"]
    seats: int = Field(gt=0, le=1000)


class SeatMapRequest(Strict):
    rows: list[SeatMapRowRequest] = Field(min_length=1, max_length=2000)


AdmitRate = Annotated[int, Field(ge=MIN_ADMIT_PER_MINUTE, le=MAX_ADMIT_PER_MINUTE)]


class WaitingRoomRequest(Strict):
    """An event's virtual waiting room (docs/waiting-room.md): when `enabled`, booking needs an
    admission token from the event's queue; `admitPerMinute` is the admission rate, or `auto`."""

    enabled: bool
    admitPerMinute: AdmitRate | Literal["auto"] = "auto"


class CreateEventRequest(Strict):
    name: Name200
    description: Description = ""
    venueId: str = Field(max_length=64)
    startsAt: AwareDatetime
    endsAt: AwareDatetime
    ticketTiers: list[TierRequest] = Field(min_length=1, max_length=len(TIERS))
    seatMap: SeatMapRequest | None = None
    salesStartAt: AwareDatetime | None = Field(
        default=None, description="Bookings open at this time (before startsAt); none: at once"
    )
    waitingRoom: WaitingRoomRequest | None = None


class UpdateEventRequest(Strict):
    name: Name200 | None = None
    description: Description | None = None
    venueId: str | None = Field(default=None, max_length=64)
    startsAt: AwareDatetime | None = None
    endsAt: AwareDatetime | None = None
    ticketTiers: list[TierRequest] | None = Field(default=None, min_length=1, max_length=len(TIERS))
    seatMap: SeatMapRequest | None = None
    salesStartAt: AwareDatetime | None = Field(
        default=None, description="null: on sale at once; left out: unchanged"
    )
    waitingRoom: WaitingRoomRequest | None = None


class EventCreatedResponse(BaseModel):
    id: str
    name: str
    createdAt: UtcTime


class EventVenue(BaseModel):
    id: str
    name: str
    city: str


class TierView(BaseModel):
    tier: str
    price: int
    currency: str
    capacity: int
    available: int


class WaitingRoomView(BaseModel):
    enabled: bool
    admitPerMinute: int | Literal["auto"]


class EventItem(BaseModel):
    id: str
    name: str
    description: str
    venue: EventVenue
    startsAt: UtcTime
    endsAt: UtcTime
    availableSeats: int
    totalSeats: int
    ticketTiers: list[TierView]
    # Extensions (issue 15): when bookings open (null: on sale), and the waiting room.
    salesStartAt: UtcTime | None = None
    waitingRoom: WaitingRoomView = WaitingRoomView(enabled=False, admitPerMinute="auto")


class SeatView(BaseModel):
    id: str
    row: str
    number: int
    tier: str
    price: int
    currency: str


class SeatMapRow(BaseModel):
    row: str
    tier: str
    seats: list[SeatView]


class SeatMapView(BaseModel):
    rows: list[SeatMapRow]


class EventDetail(EventItem):
    seatMap: SeatMapView


class EventList(BaseModel):
    data: list[EventItem]
    pagination: Pagination


class VenueDetail(VenueResponse):
    events: list[EventItem]


# -- inventory ----------------------------------------------------------------------------------
class InventorySeat(SeatView):
    status: Literal["AVAILABLE", "LOCKED", "RESERVED"]


class InventorySummary(BaseModel):
    total: int
    available: int
    locked: int
    reserved: int


class InventoryResponse(BaseModel):
    eventId: str
    # An extension: false before salesStartAt and once the event has started (bookings get 409
    # EVENT_NOT_ON_SALE).
    onSale: bool
    seats: list[InventorySeat]
    summary: InventorySummary


# -- the waiting room -----------------------------------------------------------------------------
class QueuePlace(BaseModel):
    """A buyer's place in an event's waiting room (docs/waiting-room.md)."""

    ticket: str
    eventId: str
    status: Literal["WAITING", "QUEUED", "ADMITTED", "CLOSED"] = Field(
        description="WAITING: before the opening (in the lottery, no position yet); QUEUED: in "
        "line; ADMITTED: may book with `admissionToken` until `admissionExpiresAt`; CLOSED: sold out"
    )
    position: int | None = Field(default=None, description="1-based, while QUEUED")
    ahead: int | None = Field(default=None, description="people ahead, while QUEUED")
    waiting: int = Field(description="people in line (not yet admitted)")
    estimatedWaitSeconds: int | None = Field(
        default=None, description="at the current admission rate, while QUEUED"
    )
    retryAfterSeconds: int | None = Field(
        default=None,
        description="until the place is final: when the next look can bring news (about the "
        "buyer's turn, at most the room's horizon); also sent as the Retry-After header",
    )
    admissionToken: str | None = Field(
        default=None, description="once ADMITTED: send it as X-Admission-Token when booking"
    )
    admissionExpiresAt: UtcTime | None = None


# -- bookings -----------------------------------------------------------------------------------
class PaymentMethod(Strict):
    type: Literal["card"]
    token: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_]+$")


class CreateBookingRequest(Strict):
    """Name the seats (`seatIds`), or ask for the best available ones (`quantity`, optionally
    `tier` and `together`): exactly one of `seatIds` and `quantity`."""

    eventId: str = Field(max_length=64)
    seatIds: list[str] | None = None
    quantity: int | None = Field(default=None, description="Best available: how many seats (1-10)")
    tier: Literal["GENERAL", "VIP", "STANDING"] | None = Field(
        default=None, description="Best available: only seats of this tier (default: any)"
    )
    together: bool = Field(
        default=True, description="Best available: side by side in one row (default true)"
    )
    paymentMethod: PaymentMethod


class BookingAccepted(BaseModel):
    bookingId: str
    status: str
    message: str


class BookingItem(BaseModel):
    id: str
    eventId: str
    eventName: str
    eventDate: UtcTime
    seatIds: list[str]
    status: str
    totalAmount: int
    currency: str
    createdAt: UtcTime
    confirmedAt: UtcTime | None = None
    failureReason: str | None = None
    # An extension: for a best-available request that no seats could serve, what was left.
    failureMessage: str | None = None


class BookingDetail(BookingItem):
    userId: str
    venueName: str
    paymentId: str | None = None
    cancelledAt: UtcTime | None = None


class BookingList(BaseModel):
    data: list[BookingItem]
    pagination: Pagination


class CancelResponse(BaseModel):
    bookingId: str
    status: str
    refundAmount: int
    currency: str
    cancelledAt: UtcTime


class PaymentResponse(BaseModel):
    id: str
    bookingId: str
    userId: str
    amount: int
    currency: str
    status: str
    providerTransactionId: str | None
    processedAt: UtcTime | None


# -- notifications ------------------------------------------------------------------------------
class NotificationItem(BaseModel):
    id: str
    type: str
    subject: str
    sentAt: UtcTime
    bookingId: str | None
    status: str
    createdAt: UtcTime


class NotificationList(BaseModel):
    data: list[NotificationItem]


class NotificationHealth(BaseModel):
    status: Literal["ok", "degraded"]
    ray: str
    postgres: str
    smtp: str
