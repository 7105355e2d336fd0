"""storage/system_repository.py (the health probe) and the recent-notifications read of
storage/notification_repository.py against real Postgres (no Ray): each test in a rolled-back transaction
(the `conn` fixture of tests/integration/conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from domain.ids import new_id
from storage import notification_repository, system_repository, user_repository
from storage.pool import Conn

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def _user(conn: Conn) -> str:
    user = await user_repository.add(
        conn, name="Ada", email=f"{new_id('usr').lower()}@example.com", password_hash="x"
    )
    assert user is not None
    return user.id


async def _notification(
    conn: Conn,
    user_id: str,
    *,
    status: str,
    sent_at: datetime | None,
    kind: str = "BOOKING_CONFIRMED",
) -> str:
    notification_id = new_id("notif")
    await conn.execute(
        "INSERT INTO notifications (id, user_id, type, subject, recipient, status, sent_at, created_at)"
        " VALUES ($1, $2, $3, 'Subject', 'a@example.com', $4, $5, $6)",
        notification_id,
        user_id,
        kind,
        status,
        sent_at,
        T0,
    )
    return notification_id


async def test_recent_notifications_are_the_users_sent_ones_newest_first(conn: Conn) -> None:
    me, other = await _user(conn), await _user(conn)
    older = await _notification(conn, me, status="SENT", sent_at=T0 + timedelta(minutes=1))
    newer = await _notification(
        conn, me, status="SENT", sent_at=T0 + timedelta(minutes=2), kind="BOOKING_CANCELLED"
    )
    await _notification(conn, me, status="PENDING", sent_at=None)
    await _notification(conn, me, status="FAILED", sent_at=None)
    await _notification(conn, other, status="SENT", sent_at=T0 + timedelta(minutes=3))
    sent = await notification_repository.list_recent_sent(conn, me)
    assert [n.id for n in sent] == [newer, older]
    first = sent[0]
    assert (first.type.value, first.subject, first.status, first.booking_id) == (
        "BOOKING_CANCELLED",
        "Subject",
        "SENT",
        None,
    )
    assert first.sent_at == T0 + timedelta(minutes=2) and first.created_at == T0


async def test_recent_notifications_are_at_most_twenty(conn: Conn) -> None:
    me = await _user(conn)
    for minute in range(25):
        await _notification(conn, me, status="SENT", sent_at=T0 + timedelta(minutes=minute))
    sent = await notification_repository.list_recent_sent(conn, me)
    assert len(sent) == 20
    assert sent[0].sent_at == T0 + timedelta(minutes=24)


async def test_recent_notifications_of_a_user_without_any_are_empty(conn: Conn) -> None:
    assert await notification_repository.list_recent_sent(conn, await _user(conn)) == []


async def test_ping_answers_on_a_live_connection(conn: Conn) -> None:
    await system_repository.ping(conn, timeout=2.0)


async def test_ping_raises_on_a_closed_connection(migrated_url: str) -> None:
    connection = await asyncpg.connect(migrated_url)
    await connection.close()
    with pytest.raises(asyncpg.exceptions.InterfaceError):
        await system_repository.ping(connection, timeout=2.0)
