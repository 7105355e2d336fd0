"""User rules: names, emails, passwords and roles (pure, no I/O)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

NAME_MIN, NAME_MAX = 2, 100
PASSWORD_MIN, PASSWORD_MAX = 8, 128
EMAIL_MAX = 254
# Deliberately simple: one @, a dotted domain, no spaces or control characters. Deliverability is
# proven by the confirmation email, not by a regex.
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


class Role(StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"


@dataclass(frozen=True)
class User:
    id: str
    name: str
    email: str
    role: Role
    created_at: datetime


# ZERO WIDTH NON-JOINER and JOINER are format characters that real names need (Persian, Hindi
# and other scripts; emoji sequences too); every other invisible or control character is refused.
JOINERS = frozenset("\u200c\u200d")


def has_control_chars(value: str) -> bool:
    return any(
        unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and ch not in JOINERS
        for ch in value
    )


def clean_name(name: str) -> str:
    """Trimmed display name; raises ValueError with a client-safe message."""
    value = unicodedata.normalize("NFC", name).strip()
    if not NAME_MIN <= len(value) <= NAME_MAX:
        raise ValueError(f"name must be {NAME_MIN}-{NAME_MAX} characters")
    if has_control_chars(value):
        raise ValueError("name must not contain control characters")
    return value


def normalize_email(email: str) -> str:
    """Lower-cased email (emails are unique case-insensitively); raises ValueError if malformed."""
    value = email.strip().lower()
    if len(value) > EMAIL_MAX or not _EMAIL_RE.match(value):
        raise ValueError("email must be a valid email address")
    local = value.split("@", 1)[0]
    if len(local) > 64 or local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError("email must be a valid email address")
    return value


def password_problem(password: str) -> str | None:
    """Why a password is too weak, or None when it is acceptable."""
    if len(password) < PASSWORD_MIN:
        return f"password must be at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"password must be at most {PASSWORD_MAX} characters"
    if not any(ch.isupper() for ch in password):
        return "password must contain an uppercase letter"
    if not any(ch.isdigit() for ch in password):
        return "password must contain a number"
    return None
