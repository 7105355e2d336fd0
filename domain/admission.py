"""Waiting-room rules: admission tokens and admission pacing (pure; docs/waiting-room.md).

An admission token says "this user may book this event until this moment". It is an HMAC-SHA256
signed string, checked by its signature alone, so the booking path reads no state to check it:

    adm1.<base64url(payload JSON)>.<base64url(HMAC-SHA256(key, "adm1." + payload part))>

with the payload `{"e": event id, "exp": unix seconds, "iat": unix seconds, "u": user id}`. Its
window starts at the admission (not at the read that hands the token out), so reading the token
again yields the same token and never extends the window.

The pacing says how many people may be admitted now, given the configured rate, the time since
the opening, what was admitted so far, and the seats left.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

from domain.errors import (
    AdmissionExpired,
    AdmissionForAnotherEvent,
    AdmissionForAnotherUser,
    AdmissionRequired,
    AdmissionTokenForged,
    AdmissionTokenMalformed,
)

DEFAULT_WINDOW_SECONDS = 600
TOKEN_VERSION = "adm1"
# Longer than any token we issue (ids are at most 64 characters each); refused before any work.
MAX_TOKEN_LENGTH = 512
# Domain separation: the admission key is derived from the JWT secret, so neither kind of token
# can pass for the other (a JWT is signed with the secret itself, not with this derived key).
_KEY_LABEL = b"ticketflow/admission-token/v1"
_MAC_BYTES = hashlib.sha256().digest_size


def admission_key(secret: str) -> bytes:
    """The key admission tokens are signed with, derived from a server secret (`JWT_SECRET`)."""
    if not secret:
        raise ValueError("the admission key needs a non-empty secret")
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True)
class AdmissionClaims:
    """What a valid admission token grants: `user_id` may book `event_id` until `expires_at`."""

    user_id: str
    event_id: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class AdmissionToken:
    token: str
    claims: AdmissionClaims


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64url")
    # validate=True refuses characters outside the alphabet instead of skipping them.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


class AdmissionTokens:
    """Issues and verifies admission tokens (stateless; safe to share across requests).

    Args:
        key: the signing key (`admission_key(JWT_SECRET)`).
        window_seconds: how long a token stays valid after the admission.
        previous_keys: keys accepted when verifying, never for signing (a secret rotation: tokens
            live minutes, so these can go one window after the rotation).
        clock: seconds since the epoch; tests inject a fake one.
    """

    def __init__(
        self,
        *,
        key: bytes,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        previous_keys: Sequence[bytes] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < 16:
            raise ValueError("the admission key must be at least 16 bytes")
        if window_seconds < 1:
            raise ValueError("the admission window must be at least one second")
        self._key = key
        self._verify_keys = (key, *previous_keys)
        self._window = window_seconds
        self._clock = clock

    @property
    def window_seconds(self) -> int:
        return self._window

    def issue(
        self, *, user_id: str, event_id: str, admitted_at: float | None = None
    ) -> AdmissionToken:
        """The token for a buyer admitted at `admitted_at` (default: now); valid for the window.

        Deterministic: the same admission always yields the same token.
        """
        if not user_id or not event_id:
            raise ValueError("an admission token needs a user id and an event id")
        issued_at = math.floor(self._clock() if admitted_at is None else admitted_at)
        claims = AdmissionClaims(
            user_id=user_id,
            event_id=event_id,
            issued_at=issued_at,
            expires_at=issued_at + self._window,
        )
        payload = {"e": event_id, "exp": claims.expires_at, "iat": issued_at, "u": user_id}
        body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        signed = f"{TOKEN_VERSION}.{body}"
        return AdmissionToken(
            token=f"{signed}.{_b64encode(self._mac(self._key, signed))}", claims=claims
        )

    def verify(self, token: str | None, *, user_id: str, event_id: str) -> AdmissionClaims:
        """The token's claims when it lets `user_id` book `event_id` now.

        Raises:
            AdmissionRequired: no token.
            AdmissionTokenMalformed: not a token of this format.
            AdmissionTokenForged: the signature is not ours (a forged or tampered token).
            AdmissionForAnotherEvent: signed by us, for another event.
            AdmissionForAnotherUser: signed by us, for another user.
            AdmissionExpired: signed by us, for this user and event, but its window has passed.
        """
        if not token:
            raise AdmissionRequired()
        if len(token) > MAX_TOKEN_LENGTH:
            raise AdmissionTokenMalformed()
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_VERSION:
            raise AdmissionTokenMalformed()
        try:
            mac = _b64decode(parts[2])
        except (ValueError, binascii.Error):
            raise AdmissionTokenMalformed()
        if len(mac) != _MAC_BYTES:
            raise AdmissionTokenMalformed()
        signed = f"{parts[0]}.{parts[1]}"
        # Every key is tried (no early exit on the first): the time taken says nothing of which.
        matches = [hmac.compare_digest(self._mac(key, signed), mac) for key in self._verify_keys]
        if not any(matches):
            raise AdmissionTokenForged()
        claims = self._claims(parts[1])
        if claims.event_id != event_id:
            raise AdmissionForAnotherEvent()
        if claims.user_id != user_id:
            raise AdmissionForAnotherUser()
        if self._clock() >= claims.expires_at:
            raise AdmissionExpired()
        return claims

    @staticmethod
    def _mac(key: bytes, signed: str) -> bytes:
        return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()

    @staticmethod
    def _claims(body: str) -> AdmissionClaims:
        """The payload of a token whose signature is ours (so only our own bugs end up malformed)."""
        try:
            payload = json.loads(_b64decode(body))
        except (ValueError, binascii.Error):
            raise AdmissionTokenMalformed()
        if not isinstance(payload, dict):
            raise AdmissionTokenMalformed()
        user, event, iat, exp = (payload.get(k) for k in ("u", "e", "iat", "exp"))
        if isinstance(user, str) and isinstance(event, str) and _is_int(iat) and _is_int(exp):
            return AdmissionClaims(user_id=user, event_id=event, issued_at=iat, expires_at=exp)
        raise AdmissionTokenMalformed()


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


PACING_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class AdmissionPacer:
    """How many people may be admitted now, for a configured rate of `per_minute` admissions.

    Two bounds on the rate, both needed:
    - the schedule: by `elapsed` seconds after the opening, at most `per_minute * elapsed / 60`
      admitted in all (admissions run smoothly, a few per tick, never ahead of the schedule);
    - the sliding minute: at most `per_minute` admitted in any 60 seconds, so an admitter that
      stalled (or a restart) catches up by at most one minute's worth, never in one burst of
      everything it missed. Given the admissions in (now - 60 s, now], admitting no more than
      `per_minute` minus those keeps every 60-second window at or under `per_minute`.

    And the cap by seats: every admitted buyer needs at least one seat, so admitted buyers whose
    window is still open (`holding`) plus the new ones never exceed `seats_left`.
    """

    per_minute: int

    def __post_init__(self) -> None:
        if self.per_minute < 1:
            raise ValueError("the admission rate must be at least 1 per minute")

    def allowance(
        self,
        *,
        elapsed_seconds: float,
        admitted: int,
        admitted_last_minute: int,
        seats_left: int,
        holding: int = 0,
    ) -> int:
        """How many may be admitted now (0 or more).

        Args:
            elapsed_seconds: seconds since the opening (negative: not open yet).
            admitted: everyone admitted since the opening.
            admitted_last_minute: those admitted in the last `PACING_WINDOW_SECONDS`, this
                instant included.
            seats_left: seats still for sale.
            holding: admitted buyers whose admission window is still open (they may still buy).
        """
        if elapsed_seconds < 0:
            return 0
        by_schedule = (
            math.floor(self.per_minute * elapsed_seconds / PACING_WINDOW_SECONDS) - admitted
        )
        by_window = self.per_minute - admitted_last_minute
        by_seats = seats_left - holding
        return max(0, min(by_schedule, by_window, by_seats))

    def estimated_wait_seconds(self, ahead: int) -> float:
        """Roughly how long someone with `ahead` people in front of them waits at this rate."""
        return (max(ahead, 0) + 1) * PACING_WINDOW_SECONDS / self.per_minute
