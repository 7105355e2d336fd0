from __future__ import annotations

import base64
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from api.auth import (
    ALGORITHM,
    PasswordService,
    Principal,
    TokenService,
    make_hasher,
)
from config.settings import Settings
from domain.errors import Unauthorized
from domain.users import Role, User, clean_name, normalize_email, password_problem
from tests.fakes.clock import FakeClock

SECRET = "unit-test-secret-long-enough-for-hs512-too-0123456789abcdefghijklmn"
DAY = 24 * 3600
USER = User(
    id="usr_01HZ3ABCDEFGHJKMNPQRSTVWXY",
    name="Ada Lovelace",
    email="ada@example.com",
    role=Role.USER,
    created_at=datetime(2024, 1, 1, tzinfo=UTC),
)


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Ada Lovelace", "Ada Lovelace"),
        ("  Ada  ", "Ada"),
        ("Al", "Al"),
        ("x" * 100, "x" * 100),
        ("\tZoë Ångström\n", "Zoë Ångström"),
        ("Zoe\u0308", "Zo\u00eb"),  # NFC-normalised
    ],
)
def test_clean_name_trims_and_accepts_2_to_100_characters(raw: str, clean: str) -> None:
    assert clean_name(raw) == clean


@pytest.mark.parametrize("raw", ["", "A", "   A   ", "     ", "x" * 101, " " + "x" * 101])
def test_clean_name_refuses_too_short_or_too_long(raw: str) -> None:
    with pytest.raises(ValueError, match="name must be 2-100 characters"):
        clean_name(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "Ada\x00Lovelace",
        "Ada\nLovelace",
        "Ada\tL",
        "Ada\x7f",
        "Ada\u200bL",
        "Ada\u202eL",
        "Ada\x1b[31m",
    ],
)
def test_clean_name_refuses_control_characters(raw: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        clean_name(raw)


# -- emails -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Ada@Example.COM", "ada@example.com"),
        ("  ada@example.com  ", "ada@example.com"),
        ("first.last+tag@mail.example.co.uk", "first.last+tag@mail.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("a@b-c.io", "a@b-c.io"),
    ],
)
def test_normalize_email_lower_cases_and_trims(raw: str, normal: str) -> None:
    assert normalize_email(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ada.example.com",  # no @
        "ada@@example.com",
        "ada@ex@ample.com",
        "ada lovelace@example.com",  # space
        "ada@exa mple.com",
        "ada..lovelace@example.com",  # double dot in the local part
        "ada@example..com",  # double dot in the domain
        ".ada@example.com",
        "ada.@example.com",
        "ada@.example.com",
        "ada@example.com.",
        "ada@example",  # no dot in the domain
        "ada@-example.com",
        "ada@example-.com",
        "@example.com",
        "ada@",
        "ada@example.com\nbcc@evil.com",
        "ada\x00@example.com",
        "ada@exämple.com",
        "x" * 65 + "@example.com",  # local part over 64
    ],
)
def test_normalize_email_refuses_malformed_addresses(raw: str) -> None:
    with pytest.raises(ValueError, match="email must be a valid email address"):
        normalize_email(raw)


def test_normalize_email_accepts_254_characters_and_refuses_255() -> None:
    domain = "d" * 63 + "." + "d" * 63 + "." + "d" * 61 + ".com"  # 193 characters
    local = "l" * (254 - 1 - len(domain))
    assert len(local) == 60
    longest = f"{local}@{domain}"
    assert len(longest) == 254
    assert normalize_email(longest) == longest
    with pytest.raises(ValueError):
        normalize_email("l" + longest)


# -- passwords ----------------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["Passw0rd", "PASSWORD1", "A1234567", "Aa1" + "x" * 125])
def test_acceptable_passwords(password: str) -> None:
    assert password_problem(password) is None


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("", "password must be at least 8 characters"),
        ("Passw0r", "password must be at least 8 characters"),
        ("Aa1" + "x" * 126, "password must be at most 128 characters"),
        ("passw0rd", "password must contain an uppercase letter"),
        ("12345678", "password must contain an uppercase letter"),
        ("Password", "password must contain a number"),
        ("PASSWORD!", "password must contain a number"),
    ],
)
def test_weak_passwords_are_explained(password: str, problem: str) -> None:
    assert password_problem(password) == problem


# -- tokens -------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": USER.id,
        "name": USER.name,
        "email": USER.email,
        "role": "USER",
        "iat": now,
        "exp": now + 3600,
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(secret=SECRET, ttl_seconds=DAY)


def test_the_configured_token_lifetime_is_24_hours() -> None:
    assert Settings.model_fields["jwt_ttl_seconds"].default == DAY


def test_issue_and_verify_round_trip_with_exactly_the_reference_claims(
    tokens: TokenService,
) -> None:
    now = int(time.time())
    issued = tokens.issue(USER, now=now)

    payload = jwt.decode(issued.token, SECRET, algorithms=[ALGORITHM])
    assert payload == {
        "sub": USER.id,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "role": "USER",
        "iat": now,
        "exp": now + DAY,
    }
    assert jwt.get_unverified_header(issued.token) == {"alg": "HS256", "typ": "JWT"}
    assert issued.expires_at == datetime.fromtimestamp(now + DAY, tz=UTC)
    assert tokens.verify(issued.token) == Principal(
        user_id=USER.id, name="Ada Lovelace", email="ada@example.com", role=Role.USER
    )


def test_an_admin_token_verifies_as_admin(tokens: TokenService) -> None:
    admin = User("usr_admin", "Root", "root@example.com", Role.ADMIN, USER.created_at)
    principal = tokens.verify(tokens.issue(admin).token)
    assert principal.role is Role.ADMIN
    assert principal.is_admin
    assert not tokens.verify(tokens.issue(USER).token).is_admin


def test_issue_without_now_uses_the_current_time(tokens: TokenService) -> None:
    before = int(time.time())
    payload = jwt.decode(tokens.issue(USER).token, SECRET, algorithms=[ALGORITHM])
    after = int(time.time())
    assert before <= payload["iat"] <= after
    assert payload["exp"] - payload["iat"] == DAY


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenService(secret="", ttl_seconds=DAY)


def test_an_expired_token_is_unauthorized(tokens: TokenService) -> None:
    issued = tokens.issue(USER, now=time.time() - DAY - 5)
    with pytest.raises(Unauthorized, match="Token has expired"):
        tokens.verify(issued.token)


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    clock = FakeClock(time.time())
    tokens = TokenService(secret=SECRET, ttl_seconds=DAY, clock=clock)
    issued = tokens.issue(USER)
    clock.advance(DAY - 1)
    assert tokens.verify(issued.token).user_id == USER.id  # verified, and now remembered
    clock.advance(1)
    with pytest.raises(Unauthorized, match="Token has expired"):
        tokens.verify(issued.token)


def test_a_refused_token_stays_refused_after_a_valid_one_was_remembered(
    tokens: TokenService,
) -> None:
    good = tokens.issue(USER).token
    tokens.verify(good)
    header, payload, signature = good.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    for _ in range(2):
        with pytest.raises(Unauthorized):
            tokens.verify(forged)


def test_a_tampered_payload_is_unauthorized(tokens: TokenService) -> None:
    header, _payload, signature = tokens.issue(USER).token.split(".")
    forged = f"{header}.{segment(claims(role='ADMIN'))}.{signature}"
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(forged)


def test_a_tampered_signature_is_unauthorized(tokens: TokenService) -> None:
    token = tokens.issue(USER).token
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(Unauthorized):
        tokens.verify(f"{header}.{payload}.{flipped}")


def test_a_token_signed_with_another_secret_is_unauthorized(tokens: TokenService) -> None:
    other = TokenService(secret="another-secret-of-a-reasonable-length-987654", ttl_seconds=DAY)
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(other.issue(USER).token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_alg_none_token_is_unauthorized(tokens: TokenService, alg: str) -> None:
    unsigned = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims(role='ADMIN'))}."
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(unsigned)


def test_a_token_with_another_hmac_algorithm_is_unauthorized(tokens: TokenService) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(token)


def test_an_rs256_token_is_unauthorized(tokens: TokenService) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), key, algorithm="RS256")
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(token)


@pytest.mark.parametrize("missing", ["sub", "name", "email", "role", "iat", "exp"])
def test_a_token_missing_a_claim_is_unauthorized(tokens: TokenService, missing: str) -> None:
    payload = claims()
    del payload[missing]
    token = jwt.encode(payload, SECRET, algorithm=ALGORITHM)
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(token)


@pytest.mark.parametrize("role", ["SUPERUSER", "admin", "", 1])
def test_a_token_with_an_unknown_role_is_unauthorized(tokens: TokenService, role: object) -> None:
    token = jwt.encode(claims(role=role), SECRET, algorithm=ALGORITHM)
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(token)


@pytest.mark.parametrize(("claim", "value"), [("sub", 42), ("name", None), ("email", ["a@b.co"])])
def test_a_token_with_non_string_identity_claims_is_unauthorized(
    tokens: TokenService, claim: str, value: object
) -> None:
    payload = claims()
    payload[claim] = value
    token = jwt.encode(payload, SECRET, algorithm=ALGORITHM)
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(token)


def test_a_token_issued_in_the_future_is_unauthorized(tokens: TokenService) -> None:
    # PyJWT (2.15 here) refuses an `iat` in the future with ImmatureSignatureError.
    future = tokens.issue(USER, now=time.time() + 3600)
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(future.token)


def test_a_token_not_valid_before_a_future_time_is_unauthorized(tokens: TokenService) -> None:
    token = jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, algorithm=ALGORITHM)
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(token)


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "a.b", "....", "Bearer x.y.z"])
def test_garbage_is_unauthorized(tokens: TokenService, garbage: str) -> None:
    with pytest.raises(Unauthorized):
        tokens.verify(garbage)


def test_unauthorized_maps_to_401() -> None:
    assert Unauthorized.code == "UNAUTHORIZED"
    assert Unauthorized.http_status == 401


# -- passwords hashing --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passwords() -> PasswordService:
    return PasswordService(make_hasher(memory_kib=64, time_cost=1))


async def test_hash_then_verify(passwords: PasswordService) -> None:
    hashed = await passwords.hash("Passw0rdX")
    assert hashed.startswith("$argon2id$")
    assert "m=64,t=1,p=1" in hashed
    assert "Passw0rdX" not in hashed
    assert await passwords.verify(hashed, "Passw0rdX")


async def test_the_same_password_hashes_differently_each_time(passwords: PasswordService) -> None:
    assert await passwords.hash("Passw0rdX") != await passwords.hash("Passw0rdX")


async def test_a_wrong_password_does_not_verify(passwords: PasswordService) -> None:
    hashed = await passwords.hash("Passw0rdX")
    assert not await passwords.verify(hashed, "Passw0rdY")
    assert not await passwords.verify(hashed, "passw0rdx")
    assert not await passwords.verify(hashed, "")


async def test_an_unknown_user_never_verifies(passwords: PasswordService) -> None:
    assert await passwords.verify(None, "Passw0rdX") is False
    # Not even with the password behind the dummy hash used to equalise timing.
    assert await passwords.verify(None, "dummy-password-for-timing") is False


async def test_a_corrupt_stored_hash_does_not_verify(passwords: PasswordService) -> None:
    assert await passwords.verify("not-an-argon2-hash", "Passw0rdX") is False
    assert await passwords.verify("", "Passw0rdX") is False


# -- strict time claims, typ, and the previous secret during a rotation (issue 17) -------------


def signed(
    payload: dict[str, Any], *, secret: str = SECRET, headers: dict[str, Any] | None = None
) -> str:
    return jwt.encode(payload, secret, algorithm=ALGORITHM, headers=headers)


@pytest.mark.parametrize(
    "exp", ["9999999999", "never", True, float("inf"), [9999999999], {"at": 1}]
)
def test_a_token_whose_exp_is_not_a_number_is_unauthorized(
    tokens: TokenService, exp: object
) -> None:
    # PyJWT alone takes the string "9999999999" (int() of it): a token that would never expire.
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(signed(claims(exp=exp)))


@pytest.mark.parametrize("claim", ["iat", "nbf"])
@pytest.mark.parametrize("value", ["1700000000", False, float("nan")])
def test_a_token_whose_iat_or_nbf_is_not_a_number_is_unauthorized(
    tokens: TokenService, claim: str, value: object
) -> None:
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(signed(claims(**{claim: value})))


def test_a_fractional_exp_is_a_number_and_accepted(tokens: TokenService) -> None:
    assert tokens.verify(signed(claims(exp=time.time() + 3600.5))).user_id == USER.id


def test_a_token_expired_a_second_ago_is_refused_without_leeway(tokens: TokenService) -> None:
    now = int(time.time())
    with pytest.raises(Unauthorized, match="Token has expired"):
        tokens.verify(signed(claims(iat=now - 3600, exp=now - 1)))


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_iat_and_nbf_a_little_ahead_are_within_the_clock_leeway(
    tokens: TokenService, claim: str
) -> None:
    # Another replica's clock may run a few seconds ahead of ours: 30 s of leeway.
    assert tokens.verify(signed(claims(**{claim: int(time.time()) + 20}))).user_id == USER.id


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_iat_and_nbf_beyond_the_clock_leeway_are_unauthorized(
    tokens: TokenService, claim: str
) -> None:
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(signed(claims(**{claim: int(time.time()) + 60})))


def test_an_nbf_in_the_past_is_accepted(tokens: TokenService) -> None:
    assert tokens.verify(signed(claims(nbf=int(time.time()) - 60))).user_id == USER.id


@pytest.mark.parametrize("typ", ["JWT", "jwt"])
def test_a_jwt_typ_header_is_accepted(tokens: TokenService, typ: str) -> None:
    assert tokens.verify(signed(claims(), headers={"typ": typ})).user_id == USER.id


def test_a_token_without_typ_header_is_accepted(tokens: TokenService) -> None:
    token = f"{segment({'alg': ALGORITHM})}.{segment(claims())}"
    signature = b64url(hmac.new(SECRET.encode(), token.encode(), "sha256").digest())
    assert jwt.get_unverified_header(f"{token}.{signature}") == {"alg": ALGORITHM}
    assert tokens.verify(f"{token}.{signature}").user_id == USER.id


@pytest.mark.parametrize("typ", ["at+jwt", "JWS", "refresh", 1, ["JWT"]])
def test_a_token_of_another_typ_is_unauthorized(tokens: TokenService, typ: object) -> None:
    # Another kind of token signed with the same key (an access-token profile, a refresh token).
    with pytest.raises(Unauthorized, match="Token is invalid"):
        tokens.verify(signed(claims(), headers={"typ": typ}))


PREVIOUS = "the-secret-before-the-rotation-0123456789abcdefghijklmnopqrstuvw"


def test_during_a_rotation_tokens_of_the_previous_secret_still_verify() -> None:
    before = TokenService(secret=PREVIOUS, ttl_seconds=DAY)
    old_token = before.issue(USER, now=time.time() - 3600).token
    rotated = TokenService(secret=SECRET, ttl_seconds=DAY, previous_secret=PREVIOUS)
    assert rotated.verify(old_token).user_id == USER.id
    # ...but nothing is signed with it any more.
    new_token = rotated.issue(USER).token
    jwt.decode(new_token, SECRET, algorithms=[ALGORITHM])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(new_token, PREVIOUS, algorithms=[ALGORITHM])


def test_without_the_previous_secret_its_tokens_are_unauthorized() -> None:
    old_token = TokenService(secret=PREVIOUS, ttl_seconds=DAY).issue(USER).token
    with pytest.raises(Unauthorized, match="Token is invalid"):
        TokenService(secret=SECRET, ttl_seconds=DAY).verify(old_token)


def test_the_previous_secret_validates_nothing_issued_after_the_rotation() -> None:
    rotated_at = time.time() - 600
    rotated = TokenService(secret=SECRET, ttl_seconds=DAY, previous_secret=PREVIOUS, now=rotated_at)
    minted_since = (
        TokenService(secret=PREVIOUS, ttl_seconds=DAY).issue(USER, now=rotated_at + 300).token
    )
    with pytest.raises(Unauthorized, match="Token is invalid"):
        rotated.verify(minted_since)


def test_the_previous_secret_validates_nothing_living_longer_than_one_token_lifetime() -> None:
    # So one token lifetime after the rotation the previous secret validates nothing at all.
    now = int(time.time())
    rotated = TokenService(secret=SECRET, ttl_seconds=DAY, previous_secret=PREVIOUS)
    long_lived = signed(claims(iat=now - 60, exp=now - 60 + DAY + 3600), secret=PREVIOUS)
    with pytest.raises(Unauthorized, match="Token is invalid"):
        rotated.verify(long_lived)
    with pytest.raises(Unauthorized, match="Token is invalid"):
        rotated.verify(
            signed(claims(), secret="yet-another-secret-neither-current-nor-previous-012345")
        )


def test_an_expired_token_of_the_previous_secret_is_unauthorized() -> None:
    old = (
        TokenService(secret=PREVIOUS, ttl_seconds=DAY).issue(USER, now=time.time() - DAY - 5).token
    )
    rotated = TokenService(secret=SECRET, ttl_seconds=DAY, previous_secret=PREVIOUS)
    with pytest.raises(Unauthorized, match="Token has expired"):
        rotated.verify(old)


def test_the_previous_secret_setting_is_read_bare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_PREVIOUS_SECRET", PREVIOUS)
    settings = Settings(_env_file=None)
    assert settings.jwt_previous_secret is not None
    assert settings.jwt_previous_secret.get_secret_value() == PREVIOUS


def test_the_gateway_verifies_with_the_configured_previous_secret() -> None:
    from pydantic import SecretStr

    from api.deps import Services

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        jwt_secret=SecretStr(SECRET),
        jwt_previous_secret=SecretStr(PREVIOUS),
        password_hash_memory_kib=64,
        password_hash_time_cost=1,
        rate_limit_enabled=False,
    )
    services = Services.from_settings(settings)
    old_token = (
        TokenService(secret=PREVIOUS, ttl_seconds=DAY).issue(USER, now=time.time() - 60).token
    )
    assert services.tokens.verify(old_token).user_id == USER.id
    jwt.decode(services.tokens.issue(USER).token, SECRET, algorithms=[ALGORITHM])
