from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.notifications import (
    FAILURE_SENTENCES,
    BookingSummary,
    ComposedEmail,
    NotificationType,
    compose,
    format_amount,
    format_when,
    retry_delay,
)

STARTS_AT = datetime(2024, 6, 15, 19, 30, tzinfo=UTC)


def make_summary(**changes: object) -> BookingSummary:
    summary = BookingSummary(
        booking_id="bkg_01HZ3ABCDEFGHJKMNPQRSTVWXY",
        user_name="Ada Lovelace",
        user_email="ada@example.com",
        event_name="Coldplay: Music of the Spheres",
        event_starts_at=STARTS_AT,
        venue_name="O2 Arena, London",
        seat_ids=("seat_A1", "seat_A2"),
        amount=15000,
        currency="GBP",
    )
    return dataclasses.replace(summary, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        (NotificationType.BOOKING_CONFIRMED, "Your booking is confirmed!"),
        (NotificationType.BOOKING_FAILED, "Your booking could not be completed"),
        (NotificationType.BOOKING_CANCELLED, "Your booking has been cancelled"),
    ],
)
def test_compose_uses_the_contract_subject(kind: NotificationType, subject: str) -> None:
    email = compose(kind, make_summary(failure_reason="PAYMENT_DECLINED"))
    assert email.subject == subject
    assert email.to == "ada@example.com"


def test_notification_types_are_the_contract_strings() -> None:
    assert [t.value for t in NotificationType] == [
        "BOOKING_CONFIRMED",
        "BOOKING_FAILED",
        "BOOKING_CANCELLED",
    ]
    assert NotificationType("BOOKING_FAILED") is NotificationType.BOOKING_FAILED


def test_confirmation_lists_every_booking_detail_in_both_bodies() -> None:
    email = compose(NotificationType.BOOKING_CONFIRMED, make_summary())
    for body in (email.text, email.html):
        assert "Coldplay: Music of the Spheres" in body
        assert "O2 Arena, London" in body
        assert "Saturday 15 June 2024, 19:30 UTC" in body
        assert "seat_A1, seat_A2" in body
        assert "GBP 150.00" in body
        assert "bkg_01HZ3ABCDEFGHJKMNPQRSTVWXY" in body
        assert "Ada Lovelace" in body


def test_compose_shows_the_date_in_utc_whatever_the_input_zone() -> None:
    new_york = timezone(timedelta(hours=-4))
    starts = datetime(2024, 6, 15, 22, 0, tzinfo=new_york)
    email = compose(NotificationType.BOOKING_CONFIRMED, make_summary(event_starts_at=starts))
    assert "Sunday 16 June 2024, 02:00 UTC" in email.text


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (15000, "GBP", "GBP 150.00"),
        (5, "USD", "USD 0.05"),
        (0, "EUR", "EUR 0.00"),
        (123456789, "usd", "USD 1,234,567.89"),
        (1500, "JPY", "JPY 1,500"),
        (50000, "KRW", "KRW 50,000"),
        (1500, "KWD", "KWD 1.500"),
    ],
)
def test_format_amount_uses_the_currency_minor_unit(
    amount: int, currency: str, expected: str
) -> None:
    assert format_amount(amount, currency) == expected


def test_yen_amounts_have_no_decimals_in_the_email() -> None:
    email = compose(NotificationType.BOOKING_CONFIRMED, make_summary(amount=12000, currency="JPY"))
    assert "JPY 12,000" in email.text
    assert "JPY 120.00" not in email.text
    assert "JPY 12,000" in email.html


def test_html_escapes_every_user_provided_value() -> None:
    email = compose(
        NotificationType.BOOKING_CONFIRMED,
        make_summary(
            event_name="<script>alert('x')</script>",
            venue_name='Hall "A" & <b>B</b>',
            user_name="<img src=x onerror=alert(1)>",
            seat_ids=("seat_A1<i>",),
            booking_id="bkg_<u>",
        ),
    )
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in email.html
    assert "Hall &quot;A&quot; &amp; &lt;b&gt;B&lt;/b&gt;" in email.html
    assert "<img" not in email.html
    assert "<i>" not in email.html
    assert "<u>" not in email.html
    # The plain-text part is not HTML, so it shows the names as typed.
    assert "<script>alert('x')</script>" in email.text


@pytest.mark.parametrize(
    "reason", ["SEATS_UNAVAILABLE", "PAYMENT_DECLINED", "LOCK_EXPIRED", "INTERNAL_ERROR"]
)
def test_failure_email_explains_the_reason_and_says_no_money_was_kept(reason: str) -> None:
    email = compose(NotificationType.BOOKING_FAILED, make_summary(failure_reason=reason))
    sentence = FAILURE_SENTENCES[reason]
    assert sentence in email.text
    assert "You have not been charged" in email.text
    assert "You have not been charged" in email.html
    assert "Amount paid" not in email.text


def test_failure_sentences_differ_per_reason() -> None:
    assert len(set(FAILURE_SENTENCES.values())) == 4
    assert "declined" in FAILURE_SENTENCES["PAYMENT_DECLINED"]
    assert "taken by someone else" in FAILURE_SENTENCES["SEATS_UNAVAILABLE"]
    assert "refunded" in FAILURE_SENTENCES["LOCK_EXPIRED"]


@pytest.mark.parametrize("reason", [None, "SOMETHING_NEW"])
def test_failure_email_without_a_known_reason_still_says_no_money_was_kept(
    reason: str | None,
) -> None:
    email = compose(NotificationType.BOOKING_FAILED, make_summary(failure_reason=reason))
    assert "You have not been charged" in email.text


def test_cancellation_email_states_the_refund_amount() -> None:
    email = compose(NotificationType.BOOKING_CANCELLED, make_summary(amount=7550, currency="EUR"))
    assert "A refund of EUR 75.50 has been issued" in email.text
    assert "A refund of EUR 75.50 has been issued" in email.html


def test_composed_email_is_frozen() -> None:
    email = compose(NotificationType.BOOKING_CONFIRMED, make_summary())
    assert isinstance(email, ComposedEmail)
    with pytest.raises(dataclasses.FrozenInstanceError):
        email.subject = "changed"  # type: ignore[misc]


def test_summary_rejects_naive_datetimes_and_negative_amounts() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_summary(event_starts_at=datetime(2024, 6, 15, 19, 30))
    with pytest.raises(ValueError, match="negative"):
        make_summary(amount=-1)
    with pytest.raises(ValueError, match="ISO 4217"):
        make_summary(currency="POUNDS")


def test_format_when_is_locale_independent_english() -> None:
    assert (
        format_when(datetime(2025, 1, 1, 0, 5, tzinfo=UTC)) == "Wednesday 1 January 2025, 00:05 UTC"
    )


def test_retry_delay_doubles_until_the_cap() -> None:
    ceiling = [retry_delay(n, 2.0, 60.0, random=lambda: 1.0) for n in range(7)]
    assert ceiling == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_retry_delay_default_cap_is_five_minutes() -> None:
    assert retry_delay(20, 1.0, random=lambda: 1.0) == 300.0


def test_retry_delay_survives_huge_attempt_numbers() -> None:
    assert retry_delay(10_000, 2.0, 60.0, random=lambda: 1.0) == 60.0


def test_retry_delay_applies_full_jitter_below_the_ceiling() -> None:
    assert retry_delay(3, 2.0, 60.0, random=lambda: 0.0) == 0.0
    assert retry_delay(3, 2.0, 60.0, random=lambda: 0.25) == 4.0
    for _ in range(200):
        assert 0.0 <= retry_delay(3, 2.0, 60.0) <= 16.0


def test_retry_delay_rejects_negative_input() -> None:
    with pytest.raises(ValueError):
        retry_delay(-1, 2.0)
    with pytest.raises(ValueError):
        retry_delay(0, -2.0)
