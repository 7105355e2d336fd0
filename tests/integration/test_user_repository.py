"""storage/user_repository.py against real Postgres."""

from __future__ import annotations

import secrets

import asyncpg

from domain.users import Role
from storage import user_repository as repo


async def test_a_user_is_added_once_per_email_and_read_back(conn: asyncpg.Connection) -> None:
    email = f"user-{secrets.token_hex(6)}@example.com"
    user = await repo.add(conn, name="Ada", email=email, password_hash="hash-1", role=Role.ADMIN)
    assert user is not None and user.id.startswith("usr_") and user.role is Role.ADMIN
    assert await repo.add(conn, name="Other", email=email, password_hash="hash-2") is None
    assert await repo.get(conn, user.id) == user
    assert await repo.get_by_email(conn, email) == user
    login = await repo.get_login(conn, email)
    assert login is not None and login.user == user and login.password_hash == "hash-1"
    assert (
        await repo.get(conn, "usr_missing") is None
        and await repo.get_login(conn, "nobody@example.com") is None
    )
