from __future__ import annotations

import pickle
import re

import pytest

import domain.payments  # noqa: F401 - registers PaymentProviderUnavailable
import providers.payments  # noqa: F401 - registers IdempotencyKeyReused
from domain import errors
from domain.errors import TicketFlowError, all_error_types

ERROR_TYPES = all_error_types()
SCREAMING_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")


def test_all_error_types_finds_every_subclass_once() -> None:
    assert len(ERROR_TYPES) == len(set(ERROR_TYPES))
    assert TicketFlowError in ERROR_TYPES
    defined_here = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, TicketFlowError)
    }
    assert defined_here <= set(ERROR_TYPES)
    names = {cls.__name__ for cls in ERROR_TYPES}
    assert {"PaymentProviderUnavailable", "IdempotencyKeyReused"} <= names


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda cls: cls.__name__)
def test_every_error_round_trips_through_pickle(cls: type[TicketFlowError]) -> None:
    original = cls("Seat seat_A1 is taken")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is cls
    assert str(copy) == "Seat seat_A1 is taken"
    assert copy.message == "Seat seat_A1 is taken"
    assert copy.args == original.args
    assert copy.code == cls.code
    assert copy.http_status == cls.http_status


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda cls: cls.__name__)
def test_every_error_keeps_its_default_message_through_pickle(cls: type[TicketFlowError]) -> None:
    copy = pickle.loads(pickle.dumps(cls()))
    assert type(copy) is cls
    assert copy.message == cls.default_message
    assert copy.message


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda cls: cls.__name__)
def test_codes_are_screaming_snake_and_statuses_are_http_errors(cls: type[TicketFlowError]) -> None:
    assert SCREAMING_SNAKE.match(cls.code), cls.code
    assert 400 <= cls.http_status <= 599


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("EMAIL_ALREADY_EXISTS", 409),
        ("INVALID_CREDENTIALS", 401),
        ("UNAUTHORIZED", 401),
        ("FORBIDDEN", 403),
        ("EVENT_NOT_FOUND", 404),
        ("VENUE_NOT_FOUND", 404),
        ("BOOKING_NOT_FOUND", 404),
        ("PAYMENT_NOT_FOUND", 404),
        ("VALIDATION_ERROR", 400),
        ("INVALID_SEAT_COUNT", 400),
        ("BOOKING_NOT_CANCELLABLE", 422),
        ("CANCELLATION_WINDOW_EXPIRED", 422),
        ("EVENT_HAS_BOOKINGS", 422),
        ("CAPACITY_EXCEEDED", 422),
        ("EVENT_NOT_ON_SALE", 409),
        ("IDEMPOTENCY_KEY_REUSED", 409),
        ("RATE_LIMITED", 429),
        ("SERVICE_UNAVAILABLE", 503),
    ],
)
def test_the_spec_codes_have_the_spec_statuses(code: str, status: int) -> None:
    matching = [cls for cls in ERROR_TYPES if cls.code == code]
    assert matching, f"no error type has code {code}"
    assert {cls.http_status for cls in matching} == {status}


def test_the_base_error_is_an_internal_error() -> None:
    error = TicketFlowError()
    assert error.code == "INTERNAL_ERROR"
    assert error.http_status == 500
    assert error.message == "An unexpected error occurred"


def test_an_empty_message_falls_back_to_the_default() -> None:
    assert errors.EventNotFound("").message == "Event does not exist"
