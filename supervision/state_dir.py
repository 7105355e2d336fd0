"""One owner per state directory, and the addresses of the embedded services it runs.

Whoever starts, stops or cleans up the embedded Postgres/Redis of a state directory must own it:
``<state_dir>/owner.lock`` is held with ``flock`` for the owner's whole life (the kernel drops it
when the owner dies, however it dies) and names the owner (pid, the process's start time, the
command). While a ``serve`` owns the directory, it publishes its embedded services' URLs in
``<state_dir>/services.json`` (0600: a URL may carry a password) so that ``migrate``,
``create-admin`` and ``seed-demo`` use the running server's databases instead of starting (and
later stopping) their own on the same data.

Only the owner cleans up what an earlier owner left (the embedded module's "left over" servers):
holding the lock proves that earlier owner is dead.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "owner.lock"
SERVICES_NAME = "services.json"
_PROC = Path("/proc")


@dataclass(frozen=True)
class Owner:
    pid: int
    start_time: str  # /proc/<pid>/stat field 22: tells a live owner from a recycled pid
    command: str

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start_time

    def describe(self) -> str:
        return f"`ticketflow {self.command}` (pid {self.pid})"


@dataclass(frozen=True)
class PublishedServices:
    """What a running server tells the other commands: where its embedded services listen."""

    owner: Owner
    database_url: str | None
    redis_url: str | None


class StateDirBusy(Exception):
    """The state directory is owned by another live process."""

    def __init__(self, state_dir: Path, owner: Owner | None) -> None:
        self.state_dir = state_dir
        self.owner = owner
        who = owner.describe() if owner is not None else "another process"
        super().__init__(
            f"the state directory {state_dir} is in use by {who}; stop it first, or give this "
            "one its own TICKETFLOW_STATE_DIR"
        )


class NothingToJoin(StateDirBusy):
    """The running server's database is not embedded, so there is no URL to hand out."""

    def __init__(self, state_dir: Path, owner: Owner) -> None:
        super().__init__(state_dir, owner)
        self.args = (
            f"{owner.describe()} owns the state directory {state_dir} and runs on a DATABASE_URL "
            "of its own, not on the embedded Postgres: set the same DATABASE_URL for this command",
        )


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None when it is not running."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The fields after the parenthesised command, which may itself contain ") ".
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None  # a zombie only waits to be reaped
    return fields[19]


def read_owner(state_dir: Path) -> Owner | None:
    """The owner named in the lock file (possibly dead; see ``Owner.alive``)."""
    try:
        record = json.loads((state_dir / LOCK_NAME).read_text())
        return Owner(int(record["pid"]), str(record["start_time"]), str(record["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class StateDirLock:
    """Ownership of a state directory, held until ``release`` or the process's death."""

    def __init__(self, state_dir: Path, fd: int, owner: Owner) -> None:
        self.state_dir = state_dir
        self.owner = owner
        self._fd: int | None = fd

    def publish(self, *, database_url: str | None, redis_url: str | None) -> None:
        """Tell the other commands where this owner's embedded services listen."""
        record = {
            "pid": self.owner.pid,
            "start_time": self.owner.start_time,
            "database_url": database_url,
            "redis_url": redis_url,
        }
        path = self.state_dir / SERVICES_NAME
        tmp = path.with_name(f".{SERVICES_NAME}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        # Created 0600 from the start: a URL may carry a password, and umask could widen it.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)  # readers see the whole record or none

    def release(self) -> None:
        """Withdraw the published URLs and give the directory up. Idempotent."""
        if self._fd is None:
            return
        published = published_services(self.state_dir, require_live_owner=False)
        if published is not None and (published.owner.pid, published.owner.start_time) == (
            self.owner.pid,
            self.owner.start_time,
        ):
            (self.state_dir / SERVICES_NAME).unlink(missing_ok=True)
        fd, self._fd = self._fd, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def try_acquire(state_dir: Path, command: str) -> StateDirLock:
    """Own ``state_dir`` now, or raise ``StateDirBusy`` naming the live owner."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    # O_CLOEXEC (Python's default): the servers we start must not inherit, and so keep, the lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        owner = read_owner(state_dir)
        raise StateDirBusy(
            state_dir, owner if owner is not None and owner.alive() else None
        ) from None
    previous = read_owner(state_dir)
    me = Owner(os.getpid(), _start_time(os.getpid()) or "", command)
    if previous is not None and previous.pid != me.pid and previous.alive():
        # The lock is free yet its recorded owner lives: the lock file was replaced under it.
        # Its embedded services are not leftovers; refuse rather than clean them up.
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise StateDirBusy(state_dir, previous)
    os.ftruncate(fd, 0)
    os.pwrite(
        fd, json.dumps({"pid": me.pid, "start_time": me.start_time, "command": command}).encode(), 0
    )
    # A dead owner's published URLs point at servers that are about to be cleaned up.
    (state_dir / SERVICES_NAME).unlink(missing_ok=True)
    return StateDirLock(state_dir, fd, me)


def published_services(
    state_dir: Path, *, require_live_owner: bool = True
) -> PublishedServices | None:
    """The running owner's embedded service URLs, or None when no live owner published any."""
    try:
        record = json.loads((state_dir / SERVICES_NAME).read_text())
        owner = Owner(int(record["pid"]), str(record["start_time"]), "serve")
        published = PublishedServices(owner, record.get("database_url"), record.get("redis_url"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if require_live_owner:
        current = read_owner(state_dir)
        if current is None or (current.pid, current.start_time) != (owner.pid, owner.start_time):
            return None
        if not owner.alive():
            return None
    return published


def acquire_or_join(
    state_dir: Path, command: str, *, wait: float
) -> StateDirLock | PublishedServices:
    """For a short command: own the directory, or use the services of the server that owns it.

    Another short command, or a server still starting, is waited for up to ``wait`` seconds;
    after that ``StateDirBusy`` is raised.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            return try_acquire(state_dir, command)
        except StateDirBusy as busy:
            published = published_services(state_dir)
            if published is not None:
                return published
            if time.monotonic() >= deadline:
                raise busy from None
        time.sleep(0.2)


__all__ = [
    "NothingToJoin",
    "Owner",
    "PublishedServices",
    "StateDirBusy",
    "StateDirLock",
    "acquire_or_join",
    "published_services",
    "read_owner",
    "try_acquire",
]
