"""Stripe behind the `PaymentProcessor` port, through the official SDK's async API.

Card tokens, API keys and provider payloads are never logged and never put in outcome messages
(see providers/payments.py for the idempotency contract both processors keep).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import stripe

from domain.payments import (
    ChargeOutcome,
    ChargeRequest,
    PaymentProviderUnavailable,
    RefundOutcome,
)
from providers.payment_outcomes import IdempotencyKeyReused, declined, unknown_transaction

if TYPE_CHECKING:
    from stripe.params import PaymentIntentCreateParams, RefundCreateParams

logger = logging.getLogger(__name__)


def _keep_sdk_logs_free_of_card_data() -> None:
    # The SDK logs request bodies at DEBUG and Stripe's error messages (which echo
    # payment method ids, e.g. "No such PaymentMethod: 'pm_...'") at INFO. Pin the
    # logger's own level: inheriting would let a DEBUG root logger turn them back on.
    sdk_logger = logging.getLogger("stripe")
    if sdk_logger.level < logging.WARNING:
        sdk_logger.setLevel(logging.WARNING)


def _charge_id(value: str | stripe.Charge | None) -> str | None:
    """Return the id of an expandable charge field, whether Stripe sent the id or the object."""
    if value is None or isinstance(value, str):
        return value
    return value.id


class StripeProcessor:
    """Stripe through the official SDK's async API: PaymentIntents and Refunds.

    Every call carries the caller's idempotency key, so the SDK's own retries
    (`max_network_retries`, on connection errors, 409 and 5xx) and the caller's
    retries after `PaymentProviderUnavailable` never charge or refund twice.

    Args:
        api_key: Secret key (`sk_...`/`rk_...`); never logged.
        api_base: Base URL of the API, e.g. a local fake; None for api.stripe.com.
        timeout: Seconds per HTTP attempt.
        max_network_retries: Retries the SDK makes before giving up.
    """

    name: str = "stripe"

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        timeout: float = 10.0,
        *,
        max_network_retries: int = 2,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self._api_key = api_key
        self._api_base = api_base.rstrip("/") if api_base else None
        self._timeout = timeout
        self._max_network_retries = max_network_retries
        self._client: stripe.StripeClient | None = None
        self._http: stripe.HTTPXClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        _keep_sdk_logs_free_of_card_data()

    def __repr__(self) -> str:
        return f"StripeProcessor(api_base={self._api_base!r})"

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Create a PaymentIntent confirmed at creation.

        Args:
            request: The charge; `idempotency_key` goes to Stripe as `Idempotency-Key`.

        Returns:
            Success with the PaymentIntent's latest charge (`ch_`, else its `pi_` id),
            or a decline with Stripe's decline code.

        Raises:
            PaymentProviderUnavailable: Stripe could not be reached, answered 5xx or
                429, or rejected our key; retry with the same request.
            IdempotencyKeyReused: Stripe saw the key before with other parameters.
        """
        client = self._stripe()
        params: PaymentIntentCreateParams = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "confirm": True,
            # Cards only, no redirects: confirming server-side needs no return_url.
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": {"booking_id": request.booking_id},
        }
        if request.payment_token.startswith("tok_"):
            # A card token (Stripe.js v2, legacy Checkout) is not a PaymentMethod: Stripe
            # refuses it as `payment_method` ("No such PaymentMethod") and creates the
            # PaymentMethod itself from `payment_method_data[card][token]` (the SDK's typed
            # params omit `card`, which the API still takes for tokens).
            params["payment_method_data"] = {
                "type": "card",
                "card": {"token": request.payment_token},  # type: ignore[typeddict-unknown-key]
            }
        else:
            params["payment_method"] = request.payment_token
        try:
            intent = await client.v1.payment_intents.create_async(
                params=params,
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.CardError as err:
            return self._card_declined(err, booking_id=request.booking_id)
        except stripe.IdempotencyError:
            logger.error(
                "Stripe refused a reused idempotency key (booking_id=%s, idempotency_key=%s)",
                request.booking_id,
                request.idempotency_key,
            )
            raise IdempotencyKeyReused()
        except stripe.InvalidRequestError as err:
            return self._invalid_charge(err, booking_id=request.booking_id)
        except stripe.StripeError as err:
            raise self._unavailable(err, operation="charge", booking_id=request.booking_id)

        if intent.status == "succeeded":
            return ChargeOutcome(
                succeeded=True,
                provider_transaction_id=_charge_id(intent.latest_charge) or intent.id,
            )
        if intent.status == "processing":
            # Neither paid nor declined yet; a decline here could drop money that settles later.
            logger.warning(
                "Stripe PaymentIntent still processing (booking_id=%s, payment_intent=%s)",
                request.booking_id,
                intent.id,
            )
            raise PaymentProviderUnavailable("The payment is still processing; retry shortly")
        logger.info(
            "Stripe PaymentIntent not completed (booking_id=%s, payment_intent=%s, status=%s)",
            request.booking_id,
            intent.id,
            intent.status,
        )
        return declined("authentication_required", transaction_id=intent.id)

    async def refund(
        self, *, provider_transaction_id: str, amount: int, idempotency_key: str
    ) -> RefundOutcome:
        """Refund a charge (`ch_`) or PaymentIntent (`pi_`) through the Refunds API.

        Args:
            provider_transaction_id: The id `charge` returned.
            amount: Minor units to refund.
            idempotency_key: Sent as `Idempotency-Key`.

        Returns:
            Success (refund `succeeded` or `pending`, or the charge was already fully
            refunded), or a failure Stripe will not change its mind about.

        Raises:
            PaymentProviderUnavailable: Stripe could not be reached, answered 5xx or
                429, or rejected our key; retry with the same key.
            IdempotencyKeyReused: Stripe saw the key before with other parameters.
        """
        unknown = unknown_transaction(provider_transaction_id)
        if unknown is not None:
            return unknown
        params: RefundCreateParams = {"amount": amount}
        if provider_transaction_id.startswith("ch_"):
            params["charge"] = provider_transaction_id
        else:
            params["payment_intent"] = provider_transaction_id

        client = self._stripe()
        try:
            refund = await client.v1.refunds.create_async(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except stripe.IdempotencyError:
            logger.error(
                "Stripe refused a reused idempotency key (idempotency_key=%s)", idempotency_key
            )
            raise IdempotencyKeyReused()
        except (stripe.InvalidRequestError, stripe.CardError) as err:
            if err.code == "charge_already_refunded":
                # An earlier refund under another key already did the job.
                return RefundOutcome(succeeded=True, refund_id=None, message="Already refunded")
            logger.warning(
                "Stripe rejected a refund (idempotency_key=%s, code=%s, request_id=%s)",
                idempotency_key,
                err.code,
                err.request_id,
            )
            return RefundOutcome(
                succeeded=False, refund_id=None, message="The payment provider rejected the refund"
            )
        except stripe.StripeError as err:
            raise self._unavailable(err, operation="refund", idempotency_key=idempotency_key)

        if refund.status in ("succeeded", "pending"):
            return RefundOutcome(succeeded=True, refund_id=refund.id)
        logger.warning(
            "Stripe refund not successful (idempotency_key=%s, refund=%s, status=%s)",
            idempotency_key,
            refund.id,
            refund.status,
        )
        return RefundOutcome(
            succeeded=False, refund_id=refund.id, message=f"The refund is {refund.status}"
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool; the processor reopens one if used again."""
        http, self._http, self._client, self._loop = self._http, None, None, None
        if http is not None:
            await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated

    def _stripe(self) -> stripe.StripeClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # An httpx pool belongs to the event loop that first used it, so a new
            # loop (another test, a restarted actor) gets a new client.
            self._http = stripe.HTTPXClient(timeout=self._timeout)
            self._client = stripe.StripeClient(
                self._api_key,
                base_addresses={"api": self._api_base} if self._api_base else {},
                http_client=self._http,
                max_network_retries=self._max_network_retries,
            )
            self._loop = loop
        return self._client

    @staticmethod
    def _card_declined(err: stripe.CardError, *, booking_id: str) -> ChargeOutcome:
        details = err.error
        decline_code = (details.decline_code if details else None) or err.code or "card_declined"
        failed_charge = details.charge if details else None
        logger.info(
            "Stripe declined a charge (booking_id=%s, decline_code=%s, request_id=%s)",
            booking_id,
            decline_code,
            err.request_id,
        )
        return declined(decline_code, transaction_id=failed_charge)

    @staticmethod
    def _invalid_charge(err: stripe.InvalidRequestError, *, booking_id: str) -> ChargeOutcome:
        # A 400 is final for these parameters: no charge was made and a retry would
        # be refused the same way, so it is a decline, not an outage.
        param = err.param or ""
        if param == "payment_method" or param.startswith(
            ("payment_method[", "payment_method_data[")
        ):
            decline_code = "invalid_payment_method"
        else:
            decline_code = err.code or "invalid_request"
        logger.warning(
            "Stripe rejected a charge request (booking_id=%s, code=%s, param=%s, request_id=%s)",
            booking_id,
            err.code,
            err.param,
            err.request_id,
        )
        return declined(decline_code)

    @staticmethod
    def _unavailable(
        err: stripe.StripeError,
        *,
        operation: str,
        booking_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> PaymentProviderUnavailable:
        if isinstance(err, stripe.AuthenticationError | stripe.PermissionError):
            logger.error(
                "Stripe rejected the configured API key; check STRIPE_API_KEY "
                "(operation=%s, booking_id=%s, idempotency_key=%s, http_status=%s)",
                operation,
                booking_id,
                idempotency_key,
                err.http_status,
            )
            return PaymentProviderUnavailable(
                "The payment provider rejected our credentials (server misconfiguration)"
            )
        logger.warning(
            "Stripe unavailable (operation=%s, booking_id=%s, idempotency_key=%s, "
            "error=%s, http_status=%s, request_id=%s)",
            operation,
            booking_id,
            idempotency_key,
            type(err).__name__,
            err.http_status,
            err.request_id,
        )
        return PaymentProviderUnavailable(
            "The payment provider is unavailable; the outcome is unknown, retry with the same key"
        )
