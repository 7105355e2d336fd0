"""The suite's polling helper says what it waited for and what it saw last."""

from __future__ import annotations

import itertools

import pytest

from tests.waiting import WaitedTooLong, wait_until, wait_until_sync


async def test_returns_the_first_value_that_satisfies_until() -> None:
    counter = itertools.count()
    assert (
        await wait_until(
            lambda: next(counter), until=lambda n: n >= 3, timeout=5, interval=0, what="three"
        )
        == 3
    )


async def test_awaits_an_async_probe() -> None:
    counter = itertools.count()

    async def probe() -> int:
        return next(counter)

    assert await wait_until(probe, timeout=5, interval=0, what="a truthy count") == 1


async def test_a_timeout_names_what_was_awaited_and_the_last_value() -> None:
    with pytest.raises(
        WaitedTooLong, match=r"waited 0.05 s for the door to open; last seen: 'closed'"
    ) as caught:
        await wait_until(
            lambda: "closed",
            until=lambda s: s == "open",
            timeout=0.05,
            interval=0.01,
            what="the door to open",
        )
    assert caught.value.last == "closed"
    assert isinstance(caught.value, AssertionError)  # pytest reports it as a failed assertion


async def test_ignored_exceptions_mean_not_yet_and_are_reported_last() -> None:
    def probe() -> int:
        raise ConnectionError("refused")

    with pytest.raises(WaitedTooLong, match="ConnectionError") as caught:
        await wait_until(
            probe, timeout=0.02, interval=0.01, what="a server", ignoring=(ConnectionError,)
        )
    assert isinstance(caught.value.last, ConnectionError)


async def test_other_exceptions_propagate() -> None:
    def probe() -> int:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await wait_until(probe, timeout=5, what="nothing", ignoring=(ConnectionError,))


def test_the_sync_twin_waits_and_fails_alike() -> None:
    counter = itertools.count()
    assert (
        wait_until_sync(
            lambda: next(counter), until=lambda n: n == 2, timeout=5, interval=0, what="two"
        )
        == 2
    )
    with pytest.raises(WaitedTooLong, match="for never; last seen: False"):
        wait_until_sync(lambda: False, timeout=0.02, interval=0.01, what="never")


def test_explain_adds_its_text_to_the_timeout_message() -> None:
    with pytest.raises(
        WaitedTooLong, match="(?s)for the log line; last seen: 0\nthe server said: boom"
    ):
        wait_until_sync(
            lambda: 0, timeout=0, what="the log line", explain=lambda: "the server said: boom"
        )
