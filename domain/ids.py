"""Prefixed ULID identifiers (usr_, ven_, evnt_, bkg_, pay_, notif_, req_)."""

from __future__ import annotations

import re

from ulid import ULID

PREFIXES = ("usr", "ven", "evnt", "bkg", "pay", "notif", "req")
_ID_RE = re.compile(r"^[a-z]{3,5}_[0-9A-HJKMNP-TV-Z]{26}$")


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{ULID()}"


def looks_like(prefix: str, value: str) -> bool:
    """True when value is shaped like an id of this kind (cheap pre-check before a query)."""
    return value.startswith(prefix + "_") and bool(_ID_RE.match(value))
