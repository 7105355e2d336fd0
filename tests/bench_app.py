"""The on-sale benchmark pointed at the session's Serve app (the `server` fixture), for the tests
that run it for seconds against the real app so that it cannot rot."""

from __future__ import annotations

from typing import Any

from benchmarks.onsale import OnsaleConfig
from tests.helpers import ADMIN


def app_onsale_config(server: str, **scenario: Any) -> OnsaleConfig:
    """A run against `server` as the app's admin, labelled ticketflow, without progress lines.

    Args:
        server: the app's base URL.
        scenario: the rest of OnsaleConfig (seats, buyers, concurrency, ...).
    """
    return OnsaleConfig(
        url=server,
        admin_email=ADMIN[0],
        admin_password=ADMIN[1],
        progress=False,
        label="ticketflow",
        **scenario,
    )
