"""The payment port: what the saga needs from a card processor, free of any SDK."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from domain.errors import ServiceUnavailable


@dataclass(frozen=True)
class ChargeRequest:
    booking_id: str
    amount: int  # minor units
    currency: str  # ISO 4217, upper case
    payment_token: str  # e.g. "pm_card_visa"
    idempotency_key: str  # derived from (booking_id, step); the same key never charges twice


@dataclass(frozen=True)
class ChargeCard:
    """A booking's charge as the saga asks the payment actor for it."""

    booking_id: str
    user_id: str
    amount: int
    currency: str
    payment_token: str
    idempotency_key: str
    # Of the HTTP request that made the booking, for the payment actor's log lines; "" if unknown.
    request_id: str = ""

    def request(self) -> ChargeRequest:
        return ChargeRequest(
            booking_id=self.booking_id,
            amount=self.amount,
            currency=self.currency,
            payment_token=self.payment_token,
            idempotency_key=self.idempotency_key,
        )


class PaymentStatus(StrEnum):
    PROCESSING = "PROCESSING"  # attempt recorded, the processor's answer not yet
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"  # declined
    REFUNDED = "REFUNDED"


@dataclass(frozen=True)
class Payment:
    """One charge attempt of a booking, as recorded (its idempotency key makes it durable)."""

    id: str
    booking_id: str
    user_id: str
    amount: int  # minor units
    currency: str
    status: PaymentStatus
    provider: str
    provider_transaction_id: str | None
    decline_code: str | None
    refund_id: str | None
    idempotency_key: str
    created_at: datetime
    processed_at: datetime | None
    refunded_at: datetime | None

    @property
    def settled(self) -> bool:
        """The processor's answer is recorded."""
        return self.status is not PaymentStatus.PROCESSING

    @property
    def charged(self) -> bool:
        """The card was charged (and perhaps refunded since)."""
        return self.status in (PaymentStatus.SUCCESS, PaymentStatus.REFUNDED)


@dataclass(frozen=True)
class ChargeOutcome:
    succeeded: bool
    provider_transaction_id: str | None  # "ch_..."/"pi_..." when the provider created one
    decline_code: str | None = (
        None  # e.g. "generic_decline", "insufficient_funds", "invalid_payment_method"
    )
    message: str = ""


@dataclass(frozen=True)
class RefundOutcome:
    succeeded: bool
    refund_id: str | None  # "re_..."
    message: str = ""


class PaymentProviderUnavailable(ServiceUnavailable):
    """The provider could not be reached or answered 5xx: the outcome is unknown, retry with the same key."""


class PaymentProcessor(Protocol):
    name: str

    async def charge(self, request: ChargeRequest) -> ChargeOutcome: ...

    async def refund(
        self, *, provider_transaction_id: str, amount: int, idempotency_key: str
    ) -> RefundOutcome: ...
