"""Embedded Postgres / Redis: start, use, restart with data kept, stop without leftovers.

These start real server processes (about a second each). As root, Postgres runs as an
unprivileged user, so state directories are made under a world-traversable temp dir instead of
pytest's tmp_path (/tmp/pytest-of-root is mode 0700).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from storage.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    free_port,
    start_embedded_postgres,
    start_embedded_redis,
)

IS_ROOT = os.geteuid() == 0


def _world_traversable(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


@pytest.fixture
def state_dir() -> Iterator[Path]:
    tmp = Path(tempfile.gettempdir()).resolve()
    base = tmp if _world_traversable(tmp) else Path("/tmp")
    path = Path(tempfile.mkdtemp(prefix="tf-embedded-", dir=base))
    path.chmod(0o755)  # mkdtemp makes it 0700
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def servers() -> Iterator[list[EmbeddedPostgres | EmbeddedRedis]]:
    """Handles stopped at teardown, so a failing assertion does not leak server processes."""
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    yield started
    for server in reversed(started):
        server.stop()


def _processes_using(directory: Path) -> list[int]:
    """Live processes that run in, or name on their command line, ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # exited meanwhile, or a zombie (no cwd, empty cmdline)
        if str(directory) in cmdline or cwd == str(directory):
            found.append(int(entry.name))
    return found


def _assert_no_processes(directory: Path) -> None:
    # Children of a stopped postmaster may take a moment to disappear from /proc.
    deadline = time.monotonic() + 5
    while _processes_using(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_using(directory) == []


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _query(url: str, sql: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def _postmaster_pid(pg: EmbeddedPostgres) -> int:
    return int((pg.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_postgres_keeps_data_across_restarts(state_dir: Path, servers: list[object]) -> None:
    pg = start_embedded_postgres(state_dir)
    servers.append(pg)
    assert pg.data_dir == state_dir / "postgres"
    assert pg.url == f"postgresql://postgres@127.0.0.1:{pg.port}/ticketflow"
    assert (state_dir / "postgres.log").stat().st_size > 0
    assert stat.S_IMODE(pg.data_dir.stat().st_mode) == 0o700
    pid = _postmaster_pid(pg)
    if IS_ROOT:
        assert Path(f"/proc/{pid}").stat().st_uid != 0, "postgres must not run as root"
    # Loopback TCP only: no unix socket anywhere.
    assert not list(Path("/tmp").glob(f".s.PGSQL.{pg.port}*"))

    assert _query(pg.url, "select 1 as one")[0]["one"] == 1
    _query(pg.url, "create table kept (id int primary key, note text)")
    _query(pg.url, "insert into kept values (1, 'survives restart')")

    pg.stop()
    pg.stop()  # idempotent
    _assert_no_processes(pg.data_dir)
    assert not (pg.data_dir / "postmaster.pid").exists()

    again = start_embedded_postgres(state_dir)
    servers.append(again)
    rows = _query(again.url, "select note from kept where id = 1")
    assert [r["note"] for r in rows] == ["survives restart"]
    again.stop()
    _assert_no_processes(again.data_dir)


def test_postgres_starts_over_stale_state(state_dir: Path, servers: list[object]) -> None:
    first = start_embedded_postgres(state_dir)
    servers.append(first)
    _query(first.url, "create table t (x int)")

    # Crash: the postmaster dies and leaves postmaster.pid behind (it may linger as a zombie
    # when nothing reaps it, which Postgres alone would mistake for a live server).
    pid = _postmaster_pid(first)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (first.data_dir / "postmaster.pid").exists()

    second = start_embedded_postgres(state_dir)
    servers.append(second)
    assert _query(second.url, "select count(*) as n from t")[0]["n"] == 0

    # Abandoned but alive (a parent that died without stopping it): replaced by the new start,
    # and the old handle's stop() must not take the new server down.
    third = start_embedded_postgres(state_dir)
    servers.append(third)
    second.stop()
    first.stop()
    assert _query(third.url, "select 1 as one")[0]["one"] == 1
    third.stop()
    _assert_no_processes(third.data_dir)

    # A pid file naming a recycled pid (here: this test process, alive and not Postgres).
    (third.data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n{third.data_dir}\n")
    fourth = start_embedded_postgres(state_dir)
    servers.append(fourth)
    assert _query(fourth.url, "select 1 as one")[0]["one"] == 1
    fourth.stop()
    _assert_no_processes(fourth.data_dir)


def test_postgres_creates_requested_database(state_dir: Path, servers: list[object]) -> None:
    pg = start_embedded_postgres(state_dir, database="other-db")
    servers.append(pg)
    assert pg.url.endswith("/other-db")
    assert _query(pg.url, "select current_database() as db")[0]["db"] == "other-db"
    pg.stop()


@pytest.mark.skipif(not IS_ROOT, reason="only root hands Postgres to an unprivileged user")
def test_postgres_unreachable_state_dir_is_a_clear_error(state_dir: Path) -> None:
    private = state_dir / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(RuntimeError, match="traversable"):
        start_embedded_postgres(private / "state")
    _assert_no_processes(private / "state" / "postgres")


def test_redis_roundtrip_and_clean_stop(state_dir: Path, servers: list[object]) -> None:
    rd = start_embedded_redis(state_dir)
    servers.append(rd)
    assert rd.port != 6379
    assert rd.url == f"redis://127.0.0.1:{rd.port}/0"

    client = redis.Redis.from_url(rd.url)
    try:
        assert client.ping() is True
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
    finally:
        client.close()

    rd.stop()
    rd.stop()  # idempotent
    assert rd.process.returncode is not None
    _assert_no_processes(state_dir / "redis")
    assert (state_dir / "redis.log").stat().st_size > 0

    # Nothing persisted: a restart starts empty.
    again = start_embedded_redis(state_dir)
    servers.append(again)
    client = redis.Redis.from_url(again.url)
    try:
        assert client.get("greeting") is None
    finally:
        client.close()
    again.stop()
    _assert_no_processes(state_dir / "redis")


def test_redis_left_running_by_a_dead_parent_is_replaced(
    state_dir: Path, servers: list[object]
) -> None:
    orphan = start_embedded_redis(state_dir)
    servers.append(orphan)
    fresh = start_embedded_redis(state_dir)
    servers.append(fresh)
    assert orphan.process.wait(timeout=5) is not None
    orphan.stop()  # must leave the replacement (and its pid file) alone
    with redis.Redis.from_url(fresh.url) as client:
        assert client.ping() is True
    assert (state_dir / "redis" / "redis-server.pid").read_text().strip() == str(fresh.process.pid)
    fresh.stop()
    assert not (state_dir / "redis" / "redis-server.pid").exists()
    _assert_no_processes(state_dir / "redis")
