"""The actor clients' own logic, without Ray: retries, and the request id a saga's charge carries."""

from __future__ import annotations

from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from actors import clients, factory
from actors.booking_saga import _Payments
from domain.payments import ChargeCard
from domain.saga import Charge


class _FakePayments:
    def __init__(self) -> None:
        self.orders: list[ChargeCard] = []

    async def charge(self, order: ChargeCard) -> Charge:
        self.orders.append(order)
        return Charge(f"pay_{order.booking_id}", True)


async def test_a_saga_charge_carries_the_request_id_of_its_booking() -> None:
    fake = _FakePayments()
    payments = _Payments(fake, {"bkg_1": "req_abc"})  # type: ignore[arg-type]
    charge = await payments.charge(
        booking_id="bkg_1",
        user_id="usr_1",
        amount=100,
        currency="GBP",
        token="t",
        idempotency_key="bkg_1:charge",
    )
    await payments.charge(
        booking_id="bkg_2",
        user_id="usr_1",
        amount=100,
        currency="GBP",
        token="t",
        idempotency_key="bkg_2:charge",
    )
    assert charge.succeeded
    assert [(o.booking_id, o.request_id) for o in fake.orders] == [
        ("bkg_1", "req_abc"),
        ("bkg_2", ""),
    ]


async def test_a_restarting_actor_is_retried_and_a_dead_handle_looked_up_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clients.asyncio, "sleep", _no_sleep)
    forgotten: list[str] = []
    monkeypatch.setattr(factory, "forget", forgotten.append)
    failures: list[BaseException] = [ActorUnavailableError("restarting", None), ActorDiedError()]
    handles: list[str] = []

    async def call(handle: Any) -> str:
        handles.append(handle)
        if failures:
            raise failures.pop(0)
        return "answer"

    assert await clients.call_with_retries("payment-gateway", lambda: "h", call) == "answer"
    assert handles == ["h", "h", "h"] and forgotten == ["payment-gateway"]


async def test_retries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients.asyncio, "sleep", _no_sleep)
    calls = 0

    async def call(_handle: Any) -> str:
        nonlocal calls
        calls += 1
        raise ActorUnavailableError("down", None)

    with pytest.raises(ActorUnavailableError):
        await clients.call_with_retries("notifier", lambda: "h", call, attempts=3)
    assert calls == 3


async def _no_sleep(_seconds: float) -> None:
    return None
