"""Card processors behind the `PaymentProcessor` port: an offline simulator (here) and Stripe
(providers/stripe_payments.py), and the choice between them.

Both may be called again with the same idempotency key and then return the
original outcome, but only for as long as the provider remembers the key
(Stripe: 24 h; the simulator: this process). Durable "charge at most once" is the
payment actor's job: it records each attempt and its outcome in Postgres and only
ever re-sends the same `ChargeRequest` with the same key.

Card tokens, API keys and provider payloads are never logged and never put in
outcome messages.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from domain.payments import ChargeOutcome, ChargeRequest, PaymentProcessor, RefundOutcome
from providers.payment_outcomes import (
    DECLINE_MESSAGES,
    IdempotencyKeyReused,
    declined,
    unknown_transaction,
)
from providers.stripe_payments import StripeProcessor

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_ID_ALPHABET = string.ascii_letters + string.digits


def _provider_id(prefix: str) -> str:
    """Return a Stripe-shaped object id: the prefix (`ch_`, `re_`) and 24 alphanumerics."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


# --------------------------------------------------------------------------- simulated

_SIMULATED_SUCCESS_TOKENS = frozenset({"pm_card_visa", "pm_card_mastercard", "tok_visa"})
_SIMULATED_DECLINE_TOKENS: dict[str, str] = {
    "pm_card_chargeDeclined": "generic_decline",
    "tok_chargeDeclined": "generic_decline",
    "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
}


@dataclass(frozen=True)
class _Remembered(Generic[_T]):
    fingerprint: tuple[object, ...]
    outcome: _T


class SimulatedProcessor:
    """Offline processor that answers Stripe's test-mode tokens the way Stripe would.

    Idempotency keys live in memory only (bounded, oldest forgotten first): enough
    for a retry within one process to get the same outcome and the same `ch_`/`re_`
    id. Durable idempotency across restarts is the payment actor's job via Postgres.

    Args:
        latency_ms: Simulated provider latency added to every charge and refund.
        max_remembered_keys: How many idempotency keys charges and refunds each keep.
    """

    name: str = "simulated"

    def __init__(self, latency_ms: int = 0, *, max_remembered_keys: int = 100_000) -> None:
        if latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        self._latency_s = latency_ms / 1000
        self._max_keys = max_remembered_keys
        self._charges: OrderedDict[str, _Remembered[ChargeOutcome]] = OrderedDict()
        self._refunds: OrderedDict[str, _Remembered[RefundOutcome]] = OrderedDict()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Charge a test token.

        Args:
            request: The charge; `idempotency_key` makes a repeat return the original outcome.

        Returns:
            Success with a `ch_` id, or a decline with Stripe's decline code.

        Raises:
            IdempotencyKeyReused: The key was used before for a different request.
        """
        fingerprint = (
            request.booking_id,
            request.amount,
            request.currency.upper(),
            request.payment_token,
        )
        # Decide and remember before the first await, so two concurrent calls with
        # the same key cannot both mint a charge.
        outcome = self._remember(
            self._charges,
            key=request.idempotency_key,
            fingerprint=fingerprint,
            decide=lambda: self._decide_charge(request.payment_token),
        )
        await self._simulate_latency()
        return outcome

    async def refund(
        self, *, provider_transaction_id: str, amount: int, idempotency_key: str
    ) -> RefundOutcome:
        """Refund a `ch_`/`pi_` transaction.

        Args:
            provider_transaction_id: The id a successful charge returned.
            amount: Minor units to refund.
            idempotency_key: A repeat with the same key returns the original refund.

        Returns:
            Success with a `re_` id, or a failure for an unknown id or a non-positive amount.

        Raises:
            IdempotencyKeyReused: The key was used before for a different refund.
        """
        outcome = self._remember(
            self._refunds,
            key=idempotency_key,
            fingerprint=(provider_transaction_id, amount),
            decide=lambda: self._decide_refund(provider_transaction_id, amount),
        )
        await self._simulate_latency()
        return outcome

    @staticmethod
    def _decide_charge(token: str) -> ChargeOutcome:
        if token in _SIMULATED_SUCCESS_TOKENS:
            return ChargeOutcome(succeeded=True, provider_transaction_id=_provider_id("ch_"))
        decline_code = _SIMULATED_DECLINE_TOKENS.get(token)
        if decline_code is not None:
            # Stripe records a failed charge for a card decline (never refundable),
            # but none for a payment method it does not know.
            return declined(decline_code, transaction_id=_provider_id("ch_"))
        return declined("invalid_payment_method")

    @staticmethod
    def _decide_refund(provider_transaction_id: str, amount: int) -> RefundOutcome:
        unknown = unknown_transaction(provider_transaction_id)
        if unknown is not None:
            return unknown
        if amount <= 0:
            return RefundOutcome(
                succeeded=False, refund_id=None, message="Refund amount must be positive"
            )
        return RefundOutcome(succeeded=True, refund_id=_provider_id("re_"))

    def _remember(
        self,
        store: OrderedDict[str, _Remembered[_T]],
        *,
        key: str,
        fingerprint: tuple[object, ...],
        decide: Callable[[], _T],
    ) -> _T:
        seen = store.get(key)
        if seen is not None:
            if seen.fingerprint != fingerprint:
                raise IdempotencyKeyReused()
            return seen.outcome
        outcome = decide()
        store[key] = _Remembered(fingerprint, outcome)
        while len(store) > self._max_keys:
            store.popitem(last=False)
        return outcome

    async def _simulate_latency(self) -> None:
        if self._latency_s > 0:
            await asyncio.sleep(self._latency_s)


# --------------------------------------------------------------------------- factory


def processor_from_settings(
    *,
    stripe_api_key: str | None,
    stripe_api_base: str | None,
    latency_ms: int,
    timeout: float = 10.0,
) -> PaymentProcessor:
    """Pick Stripe when a key is configured, else the offline simulator.

    Args:
        stripe_api_key: The unwrapped secret, or None/empty for the simulator.
        stripe_api_base: Override for the Stripe API base URL (tests, proxies).
        latency_ms: Simulated latency; the simulator only.
        timeout: Seconds a Stripe request may take before it counts as unanswered.

    Returns:
        The processor the payment actor should use.
    """
    if stripe_api_key:
        logger.info("Payments go to Stripe (api_base=%s)", stripe_api_base or "default")
        return StripeProcessor(stripe_api_key, api_base=stripe_api_base, timeout=timeout)
    logger.info("Payments use the simulated processor (latency_ms=%s)", latency_ms)
    return SimulatedProcessor(latency_ms)


__all__ = [
    "DECLINE_MESSAGES",
    "IdempotencyKeyReused",
    "SimulatedProcessor",
    "StripeProcessor",
    "processor_from_settings",
]
