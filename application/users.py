"""Registering an account and logging in."""

from __future__ import annotations

from dataclasses import dataclass

from application.ports import Database, PasswordHasher, SignedToken, TokenSigner
from domain.errors import EmailAlreadyExists, InvalidCredentials, ValidationFailed
from domain.users import User, clean_name, normalize_email, password_problem


@dataclass(frozen=True)
class LoggedIn:
    token: SignedToken
    user: User


async def register(
    *, name: str, email: str, password: str, db: Database, passwords: PasswordHasher
) -> User:
    """Creates a USER account; the email is stored lower-cased and unique case-insensitively.

    Args:
        name: The display name (2-100 characters, no control characters).
        email: The login email.
        password: At least 8 characters, one uppercase letter, one digit.
        db: Where users are kept.
        passwords: Hashes the password (argon2id, off the event loop).

    Returns:
        The new user.

    Raises:
        ValidationFailed: A bad name, email or password.
        EmailAlreadyExists: The email is taken.
    """
    try:
        name = clean_name(name)
        email = normalize_email(email)
    except ValueError as exc:
        raise ValidationFailed(str(exc))
    problem = password_problem(password)
    if problem:
        raise ValidationFailed(problem)
    password_hash = await passwords.hash(password)
    async with db.session() as s:
        user = await s.users.add(name=name, email=email, password_hash=password_hash)
    if user is None:
        raise EmailAlreadyExists(f"Email {email} is already registered")
    return user


async def login(
    *, email: str, password: str, db: Database, passwords: PasswordHasher, tokens: TokenSigner
) -> LoggedIn:
    """Checks an email and password and issues a bearer token.

    An unknown email and a wrong password fail alike, in the same time: the password is verified
    against a dummy hash when there is no user.

    Raises:
        InvalidCredentials: Unknown email or wrong password.
    """
    try:
        email = normalize_email(email)
    except ValueError:
        email = ""
    record = None
    if email:
        async with db.session() as s:
            record = await s.users.get_login(email)
    ok = await passwords.verify(record.password_hash if record else None, password)
    if record is None or not ok:
        raise InvalidCredentials()
    return LoggedIn(token=tokens.issue(record.user), user=record.user)
