"""Starting and stopping the benchmark's servers as subprocesses on free 127.0.0.1 ports.

Why ~450 lines in one module: the three kinds of server (TicketFlow, the plain baselines, pretix)
share one start, health-wait, log and stop path; only their commands differ.

`start_plain_service` runs a baseline (`benchmarks.baselines.plain_service`); `start_ticketflow`
runs `ticketflow serve`, of this checkout or another, on a scratch database of its own. Both come back as a `ServiceProcess`
whose `stop()` returns only when the server, every process it left (found by a marker in their
environment) and its scratch state are gone, so the next target has the machine, and Postgres's
connections, to itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from benchmarks.common import log
from config.settings import BARE_NAMES
from supervision.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BASELINES = {"plain-pg": "postgres", "plain-redis": "redis"}

# Every process a service starts (a Ray cluster has dozens) inherits this variable; stop() looks
# for it in /proc/<pid>/environ to be sure nothing of that service is left, and kills only those.
MARKER_VAR = "TF_BENCH_SERVICE_MARKER"
APP_DATABASE_PREFIX = "tf_bench_app_"

# Ray start-up (GCS, raylet, dashboard, Serve controller, replicas) is slow on two cores.
TICKETFLOW_STARTUP_TIMEOUT = 180.0
# After /health answers, the actors Serve starts beside the Gateway are still warming up.
TICKETFLOW_SETTLE_SECONDS = 3.0
# Serve's throughput-optimised mode drains for up to ~30 s; leave room for ray.shutdown() after it.
TICKETFLOW_STOP_TIMEOUT = 90.0

# Configuration a developer's shell may carry that must not leak into the benchmarked server: the
# bare names TicketFlow reads; TICKETFLOW_* are dropped too. A real STRIPE_API_KEY would make every
# booking a real charge; RAY_ADDRESS would deploy onto a shared cluster that stop() must not tear down.
INHERITED_SERVER_ENV_DROPPED = frozenset(BARE_NAMES)
# Variables compare sets itself; `--server-env` may not override them (the hint says what to use).
RESERVED_SERVER_ENV = {
    "DATABASE_URL": "compare creates a scratch database on --database-url",
    "TICKETFLOW_DATABASE_URL": "compare creates a scratch database on --database-url",
    "REDIS_URL": "use --redis-url",
    "TICKETFLOW_REDIS_URL": "use --redis-url",
    "TICKETFLOW_HOST": "compare serves on 127.0.0.1",
    "TICKETFLOW_PORT": "compare picks a free port",
    "TICKETFLOW_STATE_DIR": "compare uses a temporary directory",
    "TICKETFLOW_PAYMENT_LATENCY_MS": "use --payment-latency-ms (it sets the baselines' too)",
    "TICKETFLOW_ADMIN_EMAIL": "use --admin-email",
    "TICKETFLOW_ADMIN_PASSWORD": "use --admin-password",
    "RAY_ADDRESS": "compare starts a local Ray of its own",
    "TICKETFLOW_RAY_ADDRESS": "compare starts a local Ray of its own",
    MARKER_VAR: "compare sets it",
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class ServiceProcess:
    label: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    marker: str = ""
    stop_timeout: float = 15.0
    # How long processes of the service may outlive its main process before they are SIGKILLed.
    reap_grace: float = 20.0
    # Run after the processes are gone (drop the scratch database, remove the state directory).
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The scratch database of a TicketFlow server (`start_ticketflow`), else "".
    database: str = ""

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float | None = None) -> None:
        """SIGTERM to the server (a baseline drops its schema and Redis keys on the way out,
        `ticketflow serve` shuts its Ray down), SIGKILL to its process group if it hangs; then
        SIGKILL to anything still carrying the marker, and the clean-ups."""
        timeout = self.stop_timeout if timeout is None else timeout
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self.proc.poll() is None:
                log(f"{self.label}: did not stop within {timeout:.0f} s; killing its process group")
                _kill_group(self.proc.pid)
                self.proc.kill()
                self.proc.wait()
        if self.marker:
            await _reap_marked(self.label, self.marker, self.reap_grace)
        for cleanup in self.cleanups:
            try:
                await cleanup()
            except Exception as exc:  # noqa: BLE001 - the other clean-ups must still run
                log(f"{self.label}: clean-up failed: {type(exc).__name__}: {exc}")
        self.cleanups.clear()
        self.log_path.unlink(missing_ok=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def marked_processes(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries `MARKER_VAR=marker`."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                found.append(int(entry))
        except (OSError, IndexError):
            continue
    return found


async def _reap_marked(label: str, marker: str, grace: float = 20.0) -> None:
    """Waits for the service's own processes to exit; SIGKILLs those still there after `grace`."""
    deadline = time.monotonic() + grace
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    if not left:
        return
    log(
        f"{label}: {len(left)} process(es) still running {grace:.0f} s after the server; killing them"
    )
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 5.0
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if left:
        log(f"{label}: processes {left} could not be stopped")


async def start_service(
    label: str,
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    url: str,
    startup_timeout: float,
    settle_seconds: float = 0.0,
    stop_timeout: float = 15.0,
    reap_grace: float = 20.0,
    cleanups: Sequence[Callable[[], Awaitable[None]]] = (),
    health_path: str = "/health",
    cwd: Path = PROJECT_ROOT,
) -> ServiceProcess:
    """Starts `cmd` in a session of its own (so that the whole group can be killed, and a Ctrl-C at
    the terminal reaches only the benchmark, which then stops the server in order), waits until
    `url`/health answers 200, then `settle_seconds` more. On failure the server is stopped, the
    clean-ups run, and the RuntimeError carries the tail of its log. `health_path` is the
    server's health route (pretix's is /healthcheck/)."""
    marker = secrets.token_hex(8)
    env = {**env, MARKER_VAR: marker}
    fd, name = tempfile.mkstemp(prefix=f"tf-bench-{label}-", suffix=".log")
    try:
        with os.fdopen(fd, "wb") as out:
            proc = subprocess.Popen(
                list(cmd),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(cwd),
                start_new_session=True,
            )
    except BaseException:
        Path(name).unlink(missing_ok=True)
        for cleanup in cleanups:
            await cleanup()
        raise
    service = ServiceProcess(
        label,
        url,
        proc,
        Path(name),
        marker=marker,
        stop_timeout=stop_timeout,
        reap_grace=reap_grace,
        cleanups=list(cleanups),
    )
    try:
        problem = await _wait_healthy(service, startup_timeout, health_path)
        if problem is None and settle_seconds > 0:
            await asyncio.sleep(settle_seconds)
            if proc.poll() is not None:
                problem = f"exited with {proc.returncode} right after start-up"
    except BaseException:
        await service.stop()
        raise
    if problem is None:
        return service
    tail = service.log_tail()
    await service.stop()
    raise RuntimeError(f"{label} {problem}; the end of its log:\n{tail}")


async def _wait_healthy(
    service: ServiceProcess, timeout: float, health_path: str = "/health"
) -> str | None:
    """None once GET `health_path` answers 200, else what went wrong."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                return f"exited with {service.proc.returncode} during start-up"
            try:
                if (await client.get(service.url + health_path)).status_code == 200:
                    return None
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    return f"did not answer {health_path} within {timeout:.0f} s"


def _with_project_on_path(env: dict[str, str], root: Path = PROJECT_ROOT) -> dict[str, str]:
    """`env` with checkout `root` first on PYTHONPATH. Another checkout's server must run that
    checkout's code, whatever this interpreter's own installation points at: this project's root
    is then dropped from what `env` carried."""
    inherited = env.get("PYTHONPATH", "")
    if root != PROJECT_ROOT:
        inherited = os.pathsep.join(
            p for p in inherited.split(os.pathsep) if p and p != str(PROJECT_ROOT)
        )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), inherited) if p)
    return env


# -- the baselines --------------------------------------------------------------------------------
async def start_plain_service(
    label: str,
    *,
    database_url: str,
    redis_url: str,
    payment_latency_ms: int,
    admin_email: str,
    admin_password: str,
    startup_timeout: float = 30.0,
) -> ServiceProcess:
    """Starts `benchmarks.baselines.plain_service` (`label` is plain-pg or plain-redis) and waits for /health."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.baselines.plain_service",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lock",
        BASELINES[label],
        "--database-url",
        database_url,
        "--redis-url",
        redis_url,
        "--payment-latency-ms",
        str(payment_latency_ms),
        "--admin-email",
        admin_email,
        "--admin-password",
        admin_password,
    ]
    return await start_service(
        label,
        cmd,
        env=_with_project_on_path(dict(os.environ)),
        url=f"http://127.0.0.1:{port}",
        startup_timeout=startup_timeout,
    )


# -- TicketFlow -----------------------------------------------------------------------------------
def parse_server_env(text: str) -> tuple[str, str]:
    """`KEY=VALUE` for `--server-env`; ValueError on a malformed entry or a variable compare owns."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    if not _ENV_NAME.fullmatch(key):
        raise ValueError(f"{key!r} is not an environment variable name")
    # Settings reads the environment case-insensitively, so ticketflow_port would count too.
    hint = RESERVED_SERVER_ENV.get(key.upper())
    if hint is not None:
        raise ValueError(f"{key} is set by compare ({hint})")
    return key, value


def ticketflow_server_command() -> list[str]:
    """`ticketflow serve` with this interpreter (the console script is `cli.main:main`)."""
    return [sys.executable, "-m", "cli", "serve"]


def ticketflow_server_env(
    base: Mapping[str, str],
    *,
    database_url: str,
    redis_url: str,
    port: int,
    state_dir: Path,
    payment_latency_ms: int,
    admin_email: str,
    admin_password: str,
    overrides: Sequence[tuple[str, str]] = (),
    root: Path = PROJECT_ROOT,
) -> dict[str, str]:
    """The environment of the benchmarked server: `base` without any TicketFlow configuration it
    carried, then the benchmark's settings, then `overrides` (`--server-env`, in order), with
    checkout `root`'s code on PYTHONPATH."""
    # Settings matches names case-insensitively, hence upper().
    env = {
        k: v
        for k, v in base.items()
        if k.upper() not in INHERITED_SERVER_ENV_DROPPED and not k.upper().startswith("TICKETFLOW_")
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "TICKETFLOW_HOST": "127.0.0.1",
            "TICKETFLOW_PORT": str(port),
            "TICKETFLOW_STATE_DIR": str(state_dir),
            "TICKETFLOW_FAST_INGRESS": "true",
            "TICKETFLOW_RATE_LIMIT_ENABLED": "false",
            "TICKETFLOW_PAYMENT_LATENCY_MS": str(payment_latency_ms),
            "TICKETFLOW_LOG_LEVEL": "WARNING",
            # Cheap password hashing only shortens the set-up (registrations and logins are not timed).
            "TICKETFLOW_PASSWORD_HASH_MEMORY_KIB": "64",
            "TICKETFLOW_PASSWORD_HASH_TIME_COST": "1",
            # `serve` creates (or promotes) this admin on every start; the demo catalogue is not needed.
            "TICKETFLOW_ADMIN_EMAIL": admin_email,
            "TICKETFLOW_ADMIN_PASSWORD": admin_password,
            "TICKETFLOW_SEED_DEMO": "false",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    env.update(overrides)
    return _with_project_on_path(env, root)


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` on the same server."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def start_ticketflow(
    *,
    database_url: str,
    redis_url: str,
    payment_latency_ms: int,
    admin_email: str,
    admin_password: str,
    server_env: Sequence[tuple[str, str]] = (),
    startup_timeout: float = TICKETFLOW_STARTUP_TIMEOUT,
    settle_seconds: float = TICKETFLOW_SETTLE_SECONDS,
    stop_timeout: float = TICKETFLOW_STOP_TIMEOUT,
    root: Path = PROJECT_ROOT,
) -> ServiceProcess:
    """`ticketflow serve` on a fresh database `tf_bench_app_<hex>` on the Postgres server of
    `database_url` (dropped, with its connections, after the server stopped; its name is the
    service's `database`) and a temporary state directory; Redis is `redis_url` (with rate limits
    off TicketFlow writes nothing there). The server runs the code of checkout `root`: this one,
    or another (`benchmarks.cpu_profile --server-root`, say `git archive <commit>` unpacked in a
    directory, for before/after measurements in one sitting)."""
    db_name = f"{APP_DATABASE_PREFIX}{secrets.token_hex(4)}"
    state_dir = Path(tempfile.mkdtemp(prefix="tf-bench-ticketflow-"))

    async def drop_database() -> None:
        await _execute(database_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

    async def remove_state_dir() -> None:
        shutil.rmtree(state_dir, ignore_errors=True)

    port = free_port()
    env = ticketflow_server_env(
        os.environ,
        database_url=with_database(database_url, db_name),
        redis_url=redis_url,
        port=port,
        state_dir=state_dir,
        payment_latency_ms=payment_latency_ms,
        admin_email=admin_email,
        admin_password=admin_password,
        overrides=server_env,
        root=root,
    )
    if (root / ".env").exists():
        log(f"ticketflow: note: the server also reads {root / '.env'} (the environment wins)")
    try:
        await _execute(database_url, f'CREATE DATABASE "{db_name}"')
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        await remove_state_dir()
        raise RuntimeError(
            f"could not create database {db_name} via --database-url: {type(exc).__name__}: {exc}"
        )
    except BaseException:
        await remove_state_dir()
        raise
    source = "" if root == PROJECT_ROOT else f" from {root}"
    log(
        f"ticketflow{source}: database {db_name}, port {port}; waiting for /health (up to {startup_timeout:.0f} s)"
    )
    service = await start_service(
        "ticketflow",
        ticketflow_server_command(),
        env=env,
        url=f"http://127.0.0.1:{port}",
        startup_timeout=startup_timeout,
        settle_seconds=settle_seconds,
        stop_timeout=stop_timeout,
        cleanups=[drop_database, remove_state_dir],
        cwd=root,
    )
    service.database = db_name
    return service
