"""The payment port: what the saga needs from a card processor, free of any SDK."""

from __future__ import annotations

from dataclasses import dataclass
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

    def request(self) -> ChargeRequest:
        return ChargeRequest(
            booking_id=self.booking_id, amount=self.amount, currency=self.currency,
            payment_token=self.payment_token, idempotency_key=self.idempotency_key,
        )


@dataclass(frozen=True)
class ChargeOutcome:
    succeeded: bool
    provider_transaction_id: str | None  # "ch_..."/"pi_..." when the provider created one
    decline_code: str | None = None  # e.g. "generic_decline", "insufficient_funds", "invalid_payment_method"
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
