"""What both card processors answer alike: decline outcomes and their messages, unknown charges,
and the error for an idempotency key reused with other parameters."""

from __future__ import annotations

from domain.errors import TicketFlowError
from domain.payments import ChargeOutcome, RefundOutcome

DECLINE_MESSAGES: dict[str, str] = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "invalid_payment_method": "The payment method is invalid.",
    "authentication_required": "The card requires authentication, which is not supported.",
}
_FALLBACK_DECLINE_MESSAGE = "The payment was declined."


class IdempotencyKeyReused(TicketFlowError):
    """The same idempotency key came with different parameters: a caller bug, never retry it."""

    default_message = "A payment idempotency key was reused with different parameters"


def declined(
    decline_code: str, *, transaction_id: str | None = None, message: str | None = None
) -> ChargeOutcome:
    return ChargeOutcome(
        succeeded=False,
        provider_transaction_id=transaction_id,
        decline_code=decline_code,
        message=message or DECLINE_MESSAGES.get(decline_code, _FALLBACK_DECLINE_MESSAGE),
    )


def unknown_transaction(provider_transaction_id: str) -> RefundOutcome | None:
    if provider_transaction_id.startswith(("ch_", "pi_")):
        return None
    return RefundOutcome(succeeded=False, refund_id=None, message="Unknown payment transaction")
