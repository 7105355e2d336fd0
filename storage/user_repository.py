"""Users in Postgres."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from domain.ids import new_id
from domain.users import Role, User
from storage import queries as q
from storage.pool import Conn


@dataclass(frozen=True)
class LoginRecord:
    user: User
    password_hash: str


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        role=Role(row["role"]),
        created_at=row["created_at"],
    )


async def add(
    conn: Conn, *, name: str, email: str, password_hash: str, role: Role = Role.USER
) -> User | None:
    """The new user, or None when the email is taken."""
    row = await conn.fetchrow(q.INSERT_USER, new_id("usr"), name, email, password_hash, role.value)
    return _user(row) if row else None


async def get_by_email(conn: Conn, email: str) -> User | None:
    row = await conn.fetchrow(q.SELECT_USER_BY_EMAIL, email)
    return _user(row) if row else None


async def get(conn: Conn, user_id: str) -> User | None:
    row = await conn.fetchrow(q.SELECT_USER_BY_ID, user_id)
    return _user(row) if row else None


async def get_login(conn: Conn, email: str) -> LoginRecord | None:
    row = await conn.fetchrow(q.SELECT_USER_LOGIN, email)
    return LoginRecord(_user(row), row["password_hash"]) if row else None
