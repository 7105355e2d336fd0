"""Reading `Prefer: wait=N` (RFC 7240) off a request."""

from __future__ import annotations

import pytest

from api.booking_waiters import MAX_WAIT_SECONDS, requested_wait


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("wait=5", 5),
        ("WAIT=3", 3),
        ("respond-async, wait=7", 7),
        ("wait=7, respond-async", 7),
        ("handling=lenient; wait=2", 2),
        ('wait="4"', 4),
        ("wait = 6", 6),
        ("wait=0", 0),
        ("wait=11", MAX_WAIT_SECONDS),
        ("wait=999999999", MAX_WAIT_SECONDS),
    ],
)
def test_the_wait_asked_for_capped_at_ten_seconds(header: str, seconds: int) -> None:
    assert requested_wait(header) == seconds


@pytest.mark.parametrize(
    "header", [None, "", "respond-async", "wait=", "wait=soon", "wait=-1", "nowait=5", "wait=1.5"]
)
def test_no_wait_or_one_not_understood_is_ignored(header: str | None) -> None:
    assert requested_wait(header) is None
