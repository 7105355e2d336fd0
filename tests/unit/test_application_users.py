"""The account use cases (application/users.py) with in-memory ports: no Ray, HTTP or Postgres."""

from __future__ import annotations

import pytest

from application.users import login, register
from domain.errors import EmailAlreadyExists, InvalidCredentials, ValidationFailed
from domain.users import Role
from tests.fakes.application import FakeDatabase, FakePasswords, FakeTokens

PASSWORD = "Secret123"


async def test_register_stores_a_user_with_a_lowercased_email_and_a_hash() -> None:
    db, passwords = FakeDatabase(), FakePasswords()
    user = await register(
        name="  Ada  ", email="Ada@Example.COM", password=PASSWORD, db=db, passwords=passwords
    )
    assert (user.name, user.email, user.role) == ("Ada", "ada@example.com", Role.USER)
    assert db.state.hashes[user.id] == f"hashed:{PASSWORD}"


@pytest.mark.parametrize(
    ("name", "email", "password", "why"),
    [
        ("A", "a@example.com", PASSWORD, "name"),
        ("Ada\x00", "a@example.com", PASSWORD, "control"),
        ("Ada", "not-an-email", PASSWORD, "email"),
        ("Ada", "a@example.com", "Short1", "at least"),
        ("Ada", "a@example.com", "nouppercase1", "uppercase"),
        ("Ada", "a@example.com", "NoDigitsHere", "number"),
    ],
)
async def test_register_refuses_bad_names_emails_and_passwords(
    name: str, email: str, password: str, why: str
) -> None:
    db = FakeDatabase()
    with pytest.raises(ValidationFailed, match=why):
        await register(name=name, email=email, password=password, db=db, passwords=FakePasswords())
    assert not db.state.users


async def test_register_refuses_an_email_taken_in_any_case() -> None:
    db, passwords = FakeDatabase(), FakePasswords()
    await register(
        name="Ada", email="ada@example.com", password=PASSWORD, db=db, passwords=passwords
    )
    with pytest.raises(EmailAlreadyExists):
        await register(
            name="Other", email="ADA@example.com", password=PASSWORD, db=db, passwords=passwords
        )
    assert len(db.state.users) == 1


async def _registered() -> tuple[FakeDatabase, str]:
    db = FakeDatabase()
    user = await register(
        name="Ada", email="ada@example.com", password=PASSWORD, db=db, passwords=FakePasswords()
    )
    return db, user.id


async def test_login_issues_a_token_for_the_user() -> None:
    db, user_id = await _registered()
    done = await login(
        email=" Ada@Example.com ",
        password=PASSWORD,
        db=db,
        passwords=FakePasswords(),
        tokens=FakeTokens(),
    )
    assert done.user.id == user_id
    assert done.token.token == f"token-for-{user_id}"


async def test_login_refuses_a_wrong_password() -> None:
    db, _ = await _registered()
    with pytest.raises(InvalidCredentials):
        await login(
            email="ada@example.com",
            password="Wrong1234",
            db=db,
            passwords=FakePasswords(),
            tokens=FakeTokens(),
        )


async def test_login_refuses_an_unknown_email_after_the_same_work() -> None:
    db, _ = await _registered()
    passwords = FakePasswords()
    with pytest.raises(InvalidCredentials):
        await login(
            email="bob@example.com",
            password=PASSWORD,
            db=db,
            passwords=passwords,
            tokens=FakeTokens(),
        )
    assert passwords.verified == [
        None
    ]  # verified against the dummy hash: same time as a wrong password


async def test_login_refuses_a_malformed_email_without_a_lookup() -> None:
    db, _ = await _registered()
    passwords = FakePasswords()
    with pytest.raises(InvalidCredentials):
        await login(
            email="not an email", password=PASSWORD, db=db, passwords=passwords, tokens=FakeTokens()
        )
    assert db.logins_looked_up == [] and passwords.verified == [None]
