"""Both payment processors: the offline simulator, and Stripe via the real SDK against a fake API."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from domain.payments import ChargeRequest, PaymentProcessor, PaymentProviderUnavailable
from providers.payments import (
    IdempotencyKeyReused,
    SimulatedProcessor,
    StripeProcessor,
    processor_from_settings,
)
from tests.fakes.stripe_api import FakeStripe

CHARGE_ID = re.compile(r"^ch_[A-Za-z0-9]{24}$")
REFUND_ID = re.compile(r"^re_[A-Za-z0-9]{24}$")
INTENT_ID = re.compile(r"^pi_[A-Za-z0-9]{24}$")


def charge_request(
    token: str = "pm_card_visa", *, amount: int = 5000, currency: str = "USD"
) -> ChargeRequest:
    booking_id = f"bkg_{uuid.uuid4().hex}"
    return ChargeRequest(
        booking_id=booking_id,
        amount=amount,
        currency=currency,
        payment_token=token,
        idempotency_key=f"{booking_id}:charge",
    )


# --------------------------------------------------------------------------- simulated


@pytest.mark.parametrize("token", ["pm_card_visa", "pm_card_mastercard", "tok_visa"])
async def test_simulated_charge_succeeds_for_stripe_test_cards(token: str) -> None:
    outcome = await SimulatedProcessor().charge(charge_request(token))

    assert outcome.succeeded
    assert outcome.provider_transaction_id is not None
    assert CHARGE_ID.match(outcome.provider_transaction_id)
    assert outcome.decline_code is None


@pytest.mark.parametrize(
    ("token", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("tok_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
async def test_simulated_charge_declines_decline_cards(token: str, decline_code: str) -> None:
    outcome = await SimulatedProcessor().charge(charge_request(token))

    assert not outcome.succeeded
    assert outcome.decline_code == decline_code
    assert outcome.message
    assert token not in outcome.message


@pytest.mark.parametrize(
    "token", ["pm_card_unknown", "tok_mastercard_typo", "", "4242424242424242"]
)
async def test_simulated_charge_declines_unknown_token_as_invalid_payment_method(
    token: str,
) -> None:
    outcome = await SimulatedProcessor().charge(charge_request(token))

    assert not outcome.succeeded
    assert outcome.decline_code == "invalid_payment_method"
    assert outcome.provider_transaction_id is None
    assert "payment method is invalid" in outcome.message.lower()


@pytest.mark.parametrize("token", ["pm_card_visa", "pm_card_chargeDeclined"])
async def test_simulated_charge_replays_same_outcome_for_same_key(token: str) -> None:
    processor = SimulatedProcessor()
    request = charge_request(token)

    first = await processor.charge(request)
    second = await processor.charge(request)

    assert second == first


async def test_simulated_charge_mints_distinct_ids_for_distinct_keys() -> None:
    processor = SimulatedProcessor()

    ids = {(await processor.charge(charge_request())).provider_transaction_id for _ in range(20)}

    assert len(ids) == 20


async def test_simulated_concurrent_charges_with_one_key_charge_once() -> None:
    processor = SimulatedProcessor(latency_ms=20)
    request = charge_request()

    outcomes = await asyncio.gather(*(processor.charge(request) for _ in range(5)))

    assert len({o.provider_transaction_id for o in outcomes}) == 1


async def test_simulated_charge_rejects_key_reused_for_another_request() -> None:
    processor = SimulatedProcessor()
    request = charge_request()
    await processor.charge(request)

    with pytest.raises(IdempotencyKeyReused):
        await processor.charge(
            ChargeRequest(
                booking_id=request.booking_id,
                amount=request.amount + 1,
                currency=request.currency,
                payment_token=request.payment_token,
                idempotency_key=request.idempotency_key,
            )
        )


async def test_simulated_charge_and_refund_wait_for_configured_latency() -> None:
    processor = SimulatedProcessor(latency_ms=60)

    started = time.perf_counter()
    outcome = await processor.charge(charge_request())
    charged = time.perf_counter()
    assert outcome.provider_transaction_id is not None
    await processor.refund(
        provider_transaction_id=outcome.provider_transaction_id,
        amount=5000,
        idempotency_key="refund-latency",
    )
    refunded = time.perf_counter()

    assert charged - started >= 0.055
    assert refunded - charged >= 0.055


async def test_simulated_latency_does_not_block_the_event_loop() -> None:
    processor = SimulatedProcessor(latency_ms=100)

    started = time.perf_counter()
    await asyncio.gather(*(processor.charge(charge_request()) for _ in range(10)))

    assert time.perf_counter() - started < 0.5


async def test_simulated_refund_returns_stripe_shaped_id_and_replays_by_key() -> None:
    processor = SimulatedProcessor()
    charge = await processor.charge(charge_request())
    assert charge.provider_transaction_id is not None

    first = await processor.refund(
        provider_transaction_id=charge.provider_transaction_id,
        amount=5000,
        idempotency_key="refund-1",
    )
    again = await processor.refund(
        provider_transaction_id=charge.provider_transaction_id,
        amount=5000,
        idempotency_key="refund-1",
    )

    assert first.succeeded
    assert first.refund_id is not None
    assert REFUND_ID.match(first.refund_id)
    assert again == first


async def test_simulated_refund_fails_for_unknown_transaction_id() -> None:
    outcome = await SimulatedProcessor().refund(
        provider_transaction_id="bkg_123", amount=100, idempotency_key="refund-unknown"
    )

    assert not outcome.succeeded
    assert outcome.refund_id is None


def test_processor_from_settings_without_key_is_simulated() -> None:
    processor = processor_from_settings(stripe_api_key=None, stripe_api_base=None, latency_ms=5)
    assert isinstance(processor, SimulatedProcessor)
    assert processor.name == "simulated"

    empty = processor_from_settings(stripe_api_key="", stripe_api_base=None, latency_ms=0)
    assert isinstance(empty, SimulatedProcessor)


def test_processor_from_settings_with_key_is_stripe() -> None:
    processor = processor_from_settings(
        stripe_api_key="sk_test_123", stripe_api_base="http://127.0.0.1:1", latency_ms=0
    )

    assert isinstance(processor, StripeProcessor)
    assert processor.name == "stripe"
    assert "sk_test_123" not in repr(processor)


def test_processors_satisfy_the_port() -> None:
    processors: list[PaymentProcessor] = [SimulatedProcessor(), StripeProcessor("sk_test_x")]
    assert [p.name for p in processors] == ["simulated", "stripe"]


# --------------------------------------------------------------------------- stripe


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
async def stripe_processor(fake_stripe: FakeStripe) -> AsyncIterator[StripeProcessor]:
    processor = StripeProcessor(
        fake_stripe.api_key, api_base=fake_stripe.url, timeout=2.0, max_network_retries=0
    )
    yield processor
    await processor.aclose()


async def test_stripe_charge_creates_confirmed_payment_intent(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor
) -> None:
    request = charge_request("pm_card_visa", amount=4250, currency="EUR")

    outcome = await stripe_processor.charge(request)

    assert outcome.succeeded
    assert outcome.provider_transaction_id is not None
    assert CHARGE_ID.match(outcome.provider_transaction_id)
    [sent] = fake_stripe.requests
    assert (sent.method, sent.path) == ("POST", "/v1/payment_intents")
    assert sent.form == {
        "amount": "4250",
        "currency": "eur",
        "payment_method": "pm_card_visa",
        "confirm": "true",
        "automatic_payment_methods[enabled]": "true",
        "automatic_payment_methods[allow_redirects]": "never",
        "metadata[booking_id]": request.booking_id,
    }
    assert sent.idempotency_key == request.idempotency_key
    assert sent.authorization == f"Bearer {fake_stripe.api_key}"
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "stripe-version" in sent.headers
    [intent] = fake_stripe.payment_intents.values()
    assert intent["latest_charge"] == outcome.provider_transaction_id
    assert intent["status"] == "succeeded"


async def test_stripe_charge_succeeds_with_mastercard(
    stripe_processor: StripeProcessor,
) -> None:
    outcome = await stripe_processor.charge(charge_request("pm_card_mastercard"))

    assert outcome.succeeded


@pytest.mark.parametrize(
    ("token", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
async def test_stripe_card_decline_is_a_declined_outcome(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor, token: str, decline_code: str
) -> None:
    request = charge_request(token)

    outcome = await stripe_processor.charge(request)

    assert not outcome.succeeded
    assert outcome.decline_code == decline_code
    assert outcome.provider_transaction_id is not None
    assert CHARGE_ID.match(outcome.provider_transaction_id)  # the failed charge, for support
    assert outcome.message
    [sent] = fake_stripe.requests
    assert sent.status == 402
    assert sent.form["payment_method"] == token
    assert sent.idempotency_key == request.idempotency_key


@pytest.mark.parametrize(
    ("token", "succeeded", "decline_code"),
    [
        ("tok_visa", True, None),
        ("tok_mastercard", True, None),
        ("tok_chargeDeclined", False, "generic_decline"),
        ("tok_chargeDeclinedInsufficientFunds", False, "insufficient_funds"),
    ],
)
async def test_stripe_card_tokens_go_as_payment_method_data(
    fake_stripe: FakeStripe,
    stripe_processor: StripeProcessor,
    token: str,
    succeeded: bool,
    decline_code: str | None,
) -> None:
    outcome = await stripe_processor.charge(charge_request(token))

    assert outcome.succeeded is succeeded
    assert outcome.decline_code == decline_code
    [sent] = fake_stripe.requests
    assert "payment_method" not in sent.form  # Stripe: "No such PaymentMethod: 'tok_visa'"
    assert sent.form["payment_method_data[type]"] == "card"
    assert sent.form["payment_method_data[card][token]"] == token


@pytest.mark.parametrize("token", ["pm_card_doesNotExist", "tok_doesNotExist"])
async def test_stripe_unknown_payment_method_or_card_token_declines_as_invalid(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor, token: str
) -> None:
    outcome = await stripe_processor.charge(charge_request(token))

    assert not outcome.succeeded
    assert outcome.decline_code == "invalid_payment_method"
    assert outcome.provider_transaction_id is None
    assert token not in outcome.message
    assert fake_stripe.requests[0].status == 400


async def test_stripe_charge_needing_authentication_declines(
    stripe_processor: StripeProcessor,
) -> None:
    outcome = await stripe_processor.charge(charge_request("pm_card_authenticationRequired"))

    assert not outcome.succeeded
    assert outcome.decline_code == "authentication_required"
    assert outcome.provider_transaction_id is not None
    assert INTENT_ID.match(outcome.provider_transaction_id)


async def test_stripe_charge_retry_with_same_key_replays_the_original(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor
) -> None:
    request = charge_request()

    first = await stripe_processor.charge(request)
    second = await stripe_processor.charge(request)

    assert second == first
    assert len(fake_stripe.payment_intents) == 1
    assert [r.replayed for r in fake_stripe.requests] == [False, True]
    assert {r.idempotency_key for r in fake_stripe.requests} == {request.idempotency_key}


async def test_stripe_decline_replays_by_key(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor
) -> None:
    request = charge_request("pm_card_chargeDeclined")

    first = await stripe_processor.charge(request)
    second = await stripe_processor.charge(request)

    assert second == first
    assert len(fake_stripe.payment_intents) == 1


async def test_stripe_key_reused_with_other_parameters_is_a_bug_not_an_outage(
    stripe_processor: StripeProcessor,
) -> None:
    request = charge_request(amount=1000)
    await stripe_processor.charge(request)

    with pytest.raises(IdempotencyKeyReused):
        await stripe_processor.charge(
            ChargeRequest(
                booking_id=request.booking_id,
                amount=2000,
                currency=request.currency,
                payment_token=request.payment_token,
                idempotency_key=request.idempotency_key,
            )
        )


async def test_stripe_refund_of_charge_posts_to_refunds_api(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor
) -> None:
    charge = await stripe_processor.charge(charge_request(amount=5000))
    assert charge.provider_transaction_id is not None

    outcome = await stripe_processor.refund(
        provider_transaction_id=charge.provider_transaction_id,
        amount=5000,
        idempotency_key="bkg_1:refund",
    )

    assert outcome.succeeded
    assert outcome.refund_id is not None
    assert REFUND_ID.match(outcome.refund_id)
    [sent] = fake_stripe.requests_to("/v1/refunds")
    assert sent.form == {"charge": charge.provider_transaction_id, "amount": "5000"}
    assert sent.idempotency_key == "bkg_1:refund"
    assert sent.authorization == f"Bearer {fake_stripe.api_key}"
    assert fake_stripe.refunds[outcome.refund_id]["charge"] == charge.provider_transaction_id


async def test_stripe_refund_of_payment_intent_uses_payment_intent_param(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor
) -> None:
    await stripe_processor.charge(charge_request(amount=700))
    [intent_id] = fake_stripe.payment_intents

    outcome = await stripe_processor.refund(
        provider_transaction_id=intent_id, amount=700, idempotency_key="bkg_2:refund"
    )

    assert outcome.succeeded
    [sent] = fake_stripe.requests_to("/v1/refunds")
    assert sent.form == {"payment_intent": intent_id, "amount": "700"}


async def test_stripe_refund_replays_by_key_and_tolerates_an_earlier_full_refund(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor
) -> None:
    charge = await stripe_processor.charge(charge_request(amount=900))
    assert charge.provider_transaction_id is not None
    charge_id = charge.provider_transaction_id

    first = await stripe_processor.refund(
        provider_transaction_id=charge_id, amount=900, idempotency_key="k1"
    )
    replay = await stripe_processor.refund(
        provider_transaction_id=charge_id, amount=900, idempotency_key="k1"
    )
    other_key = await stripe_processor.refund(
        provider_transaction_id=charge_id, amount=900, idempotency_key="k2"
    )

    assert replay == first
    assert len(fake_stripe.refunds) == 1
    assert other_key.succeeded
    assert other_key.refund_id is None


async def test_stripe_refund_of_unknown_charge_fails(
    stripe_processor: StripeProcessor,
) -> None:
    outcome = await stripe_processor.refund(
        provider_transaction_id="ch_000000000000000000000000", amount=100, idempotency_key="k"
    )

    assert not outcome.succeeded
    assert outcome.refund_id is None


async def test_stripe_down_raises_provider_unavailable(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor
) -> None:
    fake_stripe.stop()

    with pytest.raises(PaymentProviderUnavailable):
        await stripe_processor.charge(charge_request())
    with pytest.raises(PaymentProviderUnavailable):
        await stripe_processor.refund(
            provider_transaction_id="ch_x", amount=100, idempotency_key="k"
        )


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_stripe_server_error_or_rate_limit_raises_provider_unavailable(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor, status: int
) -> None:
    fake_stripe.fail_next(status, times=None)

    with pytest.raises(PaymentProviderUnavailable):
        await stripe_processor.charge(charge_request())
    with pytest.raises(PaymentProviderUnavailable):
        await stripe_processor.refund(
            provider_transaction_id="ch_x", amount=100, idempotency_key="k"
        )


async def test_stripe_timeout_raises_provider_unavailable(fake_stripe: FakeStripe) -> None:
    processor = StripeProcessor(
        fake_stripe.api_key, api_base=fake_stripe.url, timeout=0.2, max_network_retries=0
    )
    fake_stripe.delay(1.0)
    try:
        with pytest.raises(PaymentProviderUnavailable):
            await processor.charge(charge_request())
    finally:
        await processor.aclose()


async def test_stripe_sdk_retries_a_500_with_the_same_idempotency_key(
    fake_stripe: FakeStripe,
) -> None:
    processor = StripeProcessor(
        fake_stripe.api_key, api_base=fake_stripe.url, timeout=2.0, max_network_retries=2
    )
    fake_stripe.fail_next(500, times=1)
    request = charge_request()
    try:
        outcome = await processor.charge(request)
    finally:
        await processor.aclose()

    assert outcome.succeeded
    assert [r.status for r in fake_stripe.requests] == [500, 200]
    assert {r.idempotency_key for r in fake_stripe.requests} == {request.idempotency_key}
    assert len(fake_stripe.payment_intents) == 1


async def test_stripe_wrong_key_raises_unavailable_without_leaking_the_key(
    fake_stripe: FakeStripe, caplog: pytest.LogCaptureFixture
) -> None:
    wrong_key = "sk_test_wrongwrongwrong1234"
    processor = StripeProcessor(wrong_key, api_base=fake_stripe.url, max_network_retries=0)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(PaymentProviderUnavailable) as raised:
            await processor.charge(charge_request())
    finally:
        await processor.aclose()

    assert "misconfiguration" in raised.value.message
    assert wrong_key not in raised.value.message
    assert fake_stripe.requests[0].status == 401
    assert fake_stripe.requests[0].bearer_key == wrong_key
    assert wrong_key not in caplog.text


async def test_stripe_processor_never_logs_tokens_or_keys(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    await stripe_processor.charge(charge_request("pm_card_visa"))
    await stripe_processor.charge(charge_request("pm_card_chargeDeclined"))
    await stripe_processor.charge(charge_request("pm_card_doesNotExist"))

    assert "pm_card_" not in caplog.text
    assert fake_stripe.api_key not in caplog.text


async def test_stripe_processor_survives_aclose_and_reuse(
    fake_stripe: FakeStripe, stripe_processor: StripeProcessor
) -> None:
    await stripe_processor.charge(charge_request())
    await stripe_processor.aclose()

    outcome = await stripe_processor.charge(charge_request())

    assert outcome.succeeded
    assert len(fake_stripe.payment_intents) == 2
