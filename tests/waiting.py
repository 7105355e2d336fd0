"""The suite's one way to wait for something: poll a probe until its value is what we want.

A test that waits names what it waits for (`what`), and when the time is up it fails with that
name, how long it waited and the last value it saw, instead of a bare `assert` on a deadline.

    body = await wait_until(lambda: get_booking(b), until=lambda b: b["status"] in FINAL,
                            timeout=60, what=f"booking {b} to finish")
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

NOTHING_SEEN = "<no value: the probe never returned>"


class WaitedTooLong(AssertionError):
    """What was awaited did not happen in time; `last` is the probe's last value (or exception)."""

    def __init__(self, what: str, timeout: float, last: Any, explain: str = "") -> None:
        super().__init__(
            f"waited {timeout:g} s for {what}; last seen: {last!r}"
            + (f"\n{explain}" if explain else "")
        )
        self.what = what
        self.last = last


async def wait_until(
    probe: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    until: Callable[[T], object] = bool,
    timeout: float,
    interval: float = 0.2,
    what: str,
    ignoring: tuple[type[BaseException], ...] = (),
    explain: Callable[[], str] | None = None,
) -> T:
    """Calls `probe` (sync or async) every `interval` seconds until `until(value)` holds.

    Args:
        probe: what to look at; its return value is what `until` judges.
        until: when the wait is over (default: the value is truthy).
        timeout: seconds to wait at most; the probe runs at least once.
        interval: seconds between two looks.
        what: what is awaited, as the failure message should say it ("the refund to be asked for").
        ignoring: exceptions of the probe that mean "not yet" (a server that is coming back).
        explain: called once the time is up; its text joins the message (a process's log, say).

    Returns:
        The probe's value that satisfied `until`.

    Raises:
        WaitedTooLong: with `what` and the last value seen, once `timeout` has passed.
    """
    deadline = time.monotonic() + timeout
    last: Any = NOTHING_SEEN
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as exc:
            last = exc
        else:
            if until(value):  # type: ignore[arg-type]
                return value  # type: ignore[return-value]
            last = value
        if time.monotonic() >= deadline:
            raise WaitedTooLong(what, timeout, last, explain() if explain else "")
        await asyncio.sleep(interval)


def wait_until_sync(
    probe: Callable[[], T],
    *,
    until: Callable[[T], object] = bool,
    timeout: float,
    interval: float = 0.2,
    what: str,
    ignoring: tuple[type[BaseException], ...] = (),
    explain: Callable[[], str] | None = None,
) -> T:
    """`wait_until` for code outside an event loop (subprocesses, blocking clients)."""
    deadline = time.monotonic() + timeout
    last: Any = NOTHING_SEEN
    while True:
        try:
            value = probe()
        except ignoring as exc:
            last = exc
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitedTooLong(what, timeout, last, explain() if explain else "")
        time.sleep(interval)
