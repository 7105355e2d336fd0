"""Prefixed ULID identifiers (usr_, ven_, evnt_, bkg_, pay_, notif_, req_)."""

from __future__ import annotations

import re

from ulid import ULID

PREFIXES = ("usr", "ven", "evnt", "bkg", "pay", "notif", "req")
# What a client may send as X-Request-Id and have echoed back.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{ULID()}"


def request_id_from(incoming: str) -> str:
    """The client's X-Request-Id when it is a sane token, else a new `req_<ULID>`."""
    return incoming if _SANE_REQUEST_ID.match(incoming) else new_id("req")
