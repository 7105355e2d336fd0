"""What a booking notification says, and when to try sending it again.

Pure rules only: composing the text never touches SMTP, and delivery lives in
``providers/email.py``. That keeps wording changes testable in milliseconds.
"""

from __future__ import annotations

import html
import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class NotificationType(StrEnum):
    BOOKING_CONFIRMED = "BOOKING_CONFIRMED"
    BOOKING_FAILED = "BOOKING_FAILED"
    BOOKING_CANCELLED = "BOOKING_CANCELLED"


SUBJECTS: dict[NotificationType, str] = {
    NotificationType.BOOKING_CONFIRMED: "Your booking is confirmed!",
    NotificationType.BOOKING_FAILED: "Your booking could not be completed",
    NotificationType.BOOKING_CANCELLED: "Your booking has been cancelled",
}

# Every failed booking ends with no money kept: the saga refunds any charge it made
# before it gives up, so each sentence tells the customer so in plain words.
FAILURE_SENTENCES: dict[str, str] = {
    "SEATS_UNAVAILABLE": (
        "One or more of the seats you chose were taken by someone else before we could "
        "hold them for you. You have not been charged."
    ),
    "PAYMENT_DECLINED": (
        "Your payment was declined by your card issuer. You have not been charged."
    ),
    "LOCK_EXPIRED": (
        "Your seats were held for a limited time, and the hold ran out before your payment "
        "finished. You have not been charged: any amount taken from your card has been "
        "refunded in full."
    ),
    "INTERNAL_ERROR": (
        "Something went wrong on our side while processing your booking. You have not been "
        "charged: any amount taken from your card has been refunded in full."
    ),
}
# A reason this module does not know yet (say a newer saga version) must still yield an
# honest email rather than no email at all.
GENERIC_FAILURE_SENTENCE = (
    "We could not complete your booking. You have not been charged: any amount taken from "
    "your card has been refunded in full."
)

# ISO 4217 minor-unit exponents that differ from the usual 2. Sending "JPY 15.00" for
# 1500 yen would misstate the price a hundredfold.
_CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0
    ),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
}

# Spelled out rather than strftime("%A %B") so the text does not depend on the process locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = tuple(
    "January February March April May June July August September October November December".split()
)


@dataclass(frozen=True)
class BookingSummary:
    """Everything a booking email shows, gathered by the caller before composing."""

    booking_id: str
    user_name: str
    user_email: str
    event_name: str
    event_starts_at: datetime  # tz-aware
    venue_name: str
    seat_ids: tuple[str, ...]
    amount: int  # minor units
    currency: str  # ISO 4217
    failure_reason: str | None = None

    def __post_init__(self) -> None:
        if self.event_starts_at.utcoffset() is None:
            raise ValueError("event_starts_at must be timezone-aware")
        if self.amount < 0:
            raise ValueError("amount must not be negative")
        if len(self.currency) != 3 or not self.currency.isalpha():
            raise ValueError(f"currency must be an ISO 4217 code, got {self.currency!r}")


@dataclass(frozen=True)
class ComposedEmail:
    to: str
    subject: str
    text: str
    html: str


def format_amount(amount: int, currency: str) -> str:
    """Formats minor units for people, e.g. ``format_amount(15000, "GBP") == "GBP 150.00"``.

    Args:
        amount: The amount in the currency's minor units.
        currency: ISO 4217 code, any case.

    Returns:
        The code, a space, and the major-unit amount with thousands separators.
    """
    code = currency.upper()
    exponent = _CURRENCY_EXPONENTS.get(code, 2)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**exponent)
    text = f"{major:,}"
    if exponent:
        text += f".{minor:0{exponent}d}"
    return f"{code} {sign}{text}"


def format_when(moment: datetime) -> str:
    """Formats a timestamp in UTC, e.g. "Saturday 15 June 2024, 19:30 UTC".

    Args:
        moment: A timezone-aware datetime.

    Returns:
        The moment converted to UTC, spelled out in English.
    """
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("moment must be timezone-aware")
    utc = (moment - offset).replace(tzinfo=None)
    return (
        f"{_WEEKDAYS[utc.weekday()]} {utc.day} {_MONTHS[utc.month - 1]} {utc.year}, {utc:%H:%M} UTC"
    )


def failure_sentence(reason: str | None) -> str:
    """The customer-facing explanation of a saga failure reason (always says no money was kept)."""
    if reason is None:
        return GENERIC_FAILURE_SENTENCE
    return FAILURE_SENTENCES.get(reason, GENERIC_FAILURE_SENTENCE)


def compose(kind: NotificationType, summary: BookingSummary) -> ComposedEmail:
    """Builds the subject and the plain-text and HTML bodies of a booking email.

    Args:
        kind: Which booking outcome to announce.
        summary: The booking details to show.

    Returns:
        The email, addressed to the booking's user.
    """
    subject = SUBJECTS[kind]
    amount = format_amount(summary.amount, summary.currency)
    if kind is NotificationType.BOOKING_CONFIRMED:
        lead = "Your booking is confirmed. We look forward to seeing you there!"
        closing = [f"Amount paid: {amount}"]
    elif kind is NotificationType.BOOKING_FAILED:
        lead = "Unfortunately we could not complete your booking."
        closing = [failure_sentence(summary.failure_reason)]
    else:
        lead = "Your booking has been cancelled and your seats have been released."
        closing = [
            f"A refund of {amount} has been issued to your original payment method. "
            "It can take a few business days to appear on your statement."
        ]

    details = [
        ("Event", summary.event_name),
        ("Venue", summary.venue_name),
        ("Date", format_when(summary.event_starts_at)),
        ("Seats", ", ".join(summary.seat_ids)),
        ("Amount", amount),
        ("Booking reference", summary.booking_id),
    ]
    return ComposedEmail(
        to=summary.user_email,
        subject=subject,
        text=_text_body(summary.user_name, lead, details, closing),
        html=_html_body(subject, summary.user_name, lead, details, closing),
    )


def _text_body(name: str, lead: str, details: list[tuple[str, str]], closing: list[str]) -> str:
    lines = [f"Hi {name},", "", lead, ""]
    lines += [f"{label}: {value}" for label, value in details]
    lines.append("")
    lines += closing
    lines += ["", "The TicketFlow team", ""]
    return "\n".join(lines)


def _html_body(
    subject: str, name: str, lead: str, details: list[tuple[str, str]], closing: list[str]
) -> str:
    # Every interpolated value is escaped, including our own constants: event and venue
    # names come from admins and user names from sign-up, and none of them is trusted markup.
    esc = html.escape
    rows = "\n".join(
        f'<tr><th align="left" style="padding:4px 12px 4px 0">{esc(label)}</th>'
        f'<td style="padding:4px 0">{esc(value)}</td></tr>'
        for label, value in details
    )
    paragraphs = "\n".join(f"<p>{esc(text)}</p>" for text in closing)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        f'<head><meta charset="utf-8"><title>{esc(subject)}</title></head>\n'
        '<body style="font-family:Arial,Helvetica,sans-serif;color:#222">\n'
        f'<h1 style="font-size:20px">{esc(subject)}</h1>\n'
        f"<p>Hi {esc(name)},</p>\n"
        f"<p>{esc(lead)}</p>\n"
        f"<table>\n{rows}\n</table>\n"
        f"{paragraphs}\n"
        "<p>The TicketFlow team</p>\n"
        "</body>\n"
        "</html>\n"
    )


# Past 2**62 the ceiling is far beyond any sane cap, and float(2**1100) would overflow.
_MAX_EXPONENT = 62


def retry_delay(
    attempt: int,
    base_seconds: float,
    cap_seconds: float = 300.0,
    *,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds to wait before the next delivery attempt: exponential backoff, full jitter.

    Full jitter (a uniform draw below the exponential ceiling) spreads retries out so
    that many emails failing together against one SMTP outage do not return in lockstep.

    Args:
        attempt: How many retries came before this one (0 for the first retry).
        base_seconds: The ceiling for the first retry; it doubles with every attempt.
        cap_seconds: The largest ceiling.
        random: Returns a float in [0, 1); pass ``lambda: 1.0`` for the ceiling itself.

    Returns:
        ``random() * min(cap_seconds, base_seconds * 2**attempt)``.

    Raises:
        ValueError: If attempt is negative or a duration is negative.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if base_seconds < 0 or cap_seconds < 0:
        raise ValueError("base_seconds and cap_seconds must be >= 0")
    ceiling = min(cap_seconds, base_seconds * 2.0 ** min(attempt, _MAX_EXPONENT))
    return random() * ceiling
