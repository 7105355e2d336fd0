"""Password hashing and JWT issuing/verification (HS256, payload exactly as the reference shows)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from domain.errors import Unauthorized
from domain.users import Role, User

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "name", "email", "role", "iat", "exp")
VERIFIED_TOKENS_KEPT = 10_000
TIME_CLAIMS = ("iat", "nbf", "exp")
# Clocks of the issuing and verifying replicas may differ a little: `iat` and `nbf` may be this
# far in the future. Not applied to `exp`: an expired token is refused at once.
CLOCK_LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the verified token says."""

    user_id: str
    name: str
    email: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


def make_hasher(*, memory_kib: int, time_cost: int) -> PasswordHasher:
    # argon2id at OWASP's minimum by default (m=19 MiB, t=2, p=1): argon2-cffi's own defaults cost
    # ~190 ms of CPU per hash on these 2-core machines.
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


class PasswordService:
    """Hashes and verifies off the event loop; unknown emails cost as much as wrong passwords."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher
        self._dummy_hash = hasher.hash("dummy-password-for-timing")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self._verify_sync, password_hash, password)

    def _verify_sync(self, password_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(password_hash or self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return password_hash is not None


class TokenService:
    """Issues tokens with the current secret; verifies with it, or with the previous one during a
    rotation (docs/operations.md, "Rotating the JWT secret"). `clock` tells the time (tests
    pass a fake one)."""

    def __init__(
        self,
        *,
        secret: str,
        ttl_seconds: int,
        previous_secret: str | None = None,
        now: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("JWT secret must not be empty")
        self._secret = secret
        self._previous = previous_secret or None
        self._ttl = ttl_seconds
        self._clock = clock
        # A token signed with the previous secret after this moment was not issued by us (we sign
        # with the new one since): with `exp - iat <= ttl` this bounds what the previous secret can
        # ever validate to one token lifetime from the rotation.
        self._rotated_at = now if now is not None else clock()
        # token -> (principal, exp). Decoding and checking the signature is a tenth of the
        # gateway's CPU in an on-sale, where each buyer sends the same token again and again.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def issue(self, user: User, *, now: float | None = None) -> IssuedToken:
        issued_at = int(now if now is not None else self._clock())
        expires = issued_at + self._ttl
        payload = {
            "sub": user.id,
            "name": user.name,
            "email": user.email,
            "role": user.role.value,
            "iat": issued_at,
            "exp": expires,
        }
        token = jwt.encode(payload, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token=token, expires_at=datetime.fromtimestamp(expires, tz=UTC))

    def verify(self, token: str) -> Principal:
        """Raises Unauthorized for anything but a well-formed, unexpired HS256 token of ours.

        Only tokens that passed every check are remembered, keyed by their exact text, and a
        remembered one is still refused once its `exp` has passed.
        """
        known = self._verified.get(token)
        if known is not None and self._clock() < known[1]:
            return known[0]
        principal, expires = self._decode(token)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        claims = self._claims_signed_by_us(token)
        try:
            role = Role(claims["role"])
        except ValueError:
            raise Unauthorized("Token is invalid")
        if not all(isinstance(claims[k], str) for k in ("sub", "name", "email")):
            raise Unauthorized("Token is invalid")
        principal = Principal(
            user_id=claims["sub"], name=claims["name"], email=claims["email"], role=role
        )
        return principal, float(claims["exp"])

    def _claims_signed_by_us(self, token: str) -> dict[str, Any]:
        try:
            return self._verified_claims(token, self._secret)
        except jwt.InvalidSignatureError:
            if self._previous is None:
                raise Unauthorized("Token is invalid") from None
        try:
            claims = self._verified_claims(token, self._previous)
        except jwt.InvalidSignatureError:
            raise Unauthorized("Token is invalid") from None
        if (
            claims["iat"] > self._rotated_at + CLOCK_LEEWAY_SECONDS
            or claims["exp"] - claims["iat"] > self._ttl
        ):
            raise Unauthorized("Token is invalid")
        return claims

    def _verified_claims(self, token: str, secret: str) -> dict[str, Any]:
        """The claims of a token signed with `secret`, every check passed; InvalidSignatureError
        when only the signature is wrong (the caller may try the previous secret)."""
        try:
            # algorithms pins HS256: "none" and RS/ES confusion are refused by PyJWT itself.
            # PyJWT checks iat (not in the future) and nbf with the leeway; exp is checked below,
            # without leeway, once it is known to be a number (PyJWT takes "9999999999" too).
            decoded = jwt.decode_complete(
                token,
                secret,
                algorithms=[ALGORITHM],
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False},
                leeway=CLOCK_LEEWAY_SECONDS,
            )
        except jwt.InvalidSignatureError:
            raise
        except jwt.PyJWTError:
            raise Unauthorized("Token is invalid")
        typ = decoded["header"].get("typ", "JWT")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise Unauthorized("Token is invalid")  # another kind of token signed with our key
        claims: dict[str, Any] = decoded["payload"]
        if not all(_is_time(claims[k]) for k in TIME_CLAIMS if k in claims):
            raise Unauthorized("Token is invalid")
        if claims["exp"] <= self._clock():
            raise Unauthorized("Token has expired")
        return claims


def _is_time(value: object) -> bool:
    """A JSON number of seconds: not a string, not a boolean, not infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
