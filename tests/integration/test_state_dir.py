"""One owner per state directory (supervision/state_dir.py), with real owner processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervision.state_dir import (
    PublishedServices,
    StateDirBusy,
    StateDirLock,
    acquire_or_join,
    published_services,
    read_owner,
    try_acquire,
)

REPO = Path(__file__).resolve().parents[2]
DB_URL = "postgresql://postgres:s3cret@127.0.0.1:5999/ticketflow"


def _owner_process(
    state: Path, *, publish: bool, hold: float = 60, db_url: str | None = DB_URL
) -> subprocess.Popen[str]:
    """A process that owns ``state`` (and publishes URLs when asked), then prints 'ready'."""
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from supervision.state_dir import try_acquire
        lock = try_acquire(Path({str(state)!r}), "serve" if {publish} else "migrate")
        if {publish}:
            lock.publish(database_url={db_url!r}, redis_url="redis://127.0.0.1:5998/0")
        print("ready", flush=True)
        time.sleep({hold})
        lock.release()
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_live_owner_keeps_the_dir_and_publishes_its_urls_privately(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    owner = _owner_process(tmp_path, publish=True)
    procs.append(owner)
    with pytest.raises(StateDirBusy, match=f"`ticketflow serve` \\(pid {owner.pid}\\)"):
        try_acquire(tmp_path, "serve")
    published = published_services(tmp_path)
    assert (
        published is not None
        and published.database_url == DB_URL
        and published.owner.pid == owner.pid
    )
    assert (tmp_path / "services.json").stat().st_mode & 0o777 == 0o600
    # A short command joins the running server instead of starting its own database.
    joined = acquire_or_join(tmp_path, "create-admin", wait=0)
    assert isinstance(joined, PublishedServices) and joined.database_url == DB_URL


def test_only_a_dead_owner_is_replaced_and_its_urls_withdrawn(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    owner = _owner_process(tmp_path, publish=True)
    procs.append(owner)
    owner.send_signal(signal.SIGKILL)  # no clean-up of its own: the kernel drops its flock
    owner.wait()
    assert published_services(tmp_path) is None  # a dead owner's URLs are not offered
    lock = try_acquire(tmp_path, "serve")
    try:
        assert not (tmp_path / "services.json").exists()
        current = read_owner(tmp_path)
        assert current is not None and current.pid != owner.pid and current.alive()
    finally:
        lock.release()


def test_a_short_command_waits_for_another_then_owns_the_dir(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    procs.append(_owner_process(tmp_path, publish=False, hold=1.5))
    with pytest.raises(StateDirBusy, match="`ticketflow migrate`"):
        acquire_or_join(tmp_path, "seed-demo", wait=0.2)  # publishes nothing: nothing to join
    started = time.monotonic()
    claim = acquire_or_join(tmp_path, "seed-demo", wait=30)
    assert isinstance(claim, StateDirLock), claim
    assert time.monotonic() - started < 10
    claim.release()


def test_a_replaced_lock_file_does_not_hand_over_a_live_owners_dir(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    owner = _owner_process(tmp_path, publish=True)
    procs.append(owner)
    record = (tmp_path / "owner.lock").read_text()
    # Someone removed the lock file while its owner ran; the new file names the owner still.
    (tmp_path / "owner.lock").unlink()
    (tmp_path / "owner.lock").write_text(record)
    with pytest.raises(StateDirBusy, match=f"pid {owner.pid}"):
        try_acquire(tmp_path, "serve")
    assert published_services(tmp_path) is not None  # its URLs were left alone


def test_a_command_beside_a_server_on_an_external_database_says_which_url_to_set(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    owner = _owner_process(tmp_path, publish=True, db_url=None)  # a serve with its own DATABASE_URL
    procs.append(owner)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["TICKETFLOW_STATE_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "cli", "migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"ticketflow migrate: `ticketflow serve` (pid {owner.pid}) owns the state directory {tmp_path} and "
        "runs on a DATABASE_URL of its own, not on the embedded Postgres: set the same DATABASE_URL for this command"
    )
    assert not (tmp_path / "postgres").exists()  # no embedded Postgres started beside it
