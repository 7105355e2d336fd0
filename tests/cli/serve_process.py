"""Real `ticketflow` processes for the CLI tests: environment, start, health, booking, leftovers."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from supervision.ports import free_port
from tests.waiting import WaitedTooLong, wait_until_sync

REPO = Path(__file__).resolve().parents[2]
KEPT_SETTINGS = ("TICKETFLOW_PASSWORD_HASH_MEMORY_KIB", "TICKETFLOW_PASSWORD_HASH_TIME_COST")


def new_state_dir() -> Path:
    state = Path(tempfile.mkdtemp(prefix="tf-cli-", dir="/tmp"))
    state.chmod(0o755)  # embedded Postgres runs as nobody when we are root
    return state


def command_env(state: Path, port: int, marker: str, **extra: str) -> dict[str, str]:
    """The environment of a fresh user: embedded defaults, no TicketFlow settings of the suite's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET", "SMTP_URL", "RAY_ADDRESS")
        and not (k.startswith("TICKETFLOW_") or k.startswith("RAY_SERVE_"))
    }
    env.update(
        {
            "TICKETFLOW_STATE_DIR": str(state),
            "TICKETFLOW_PORT": str(port),
            "TF_TEST_MARKER": marker,
            "TICKETFLOW_PASSWORD_HASH_MEMORY_KIB": "64",
            "TICKETFLOW_PASSWORD_HASH_TIME_COST": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    env.update(extra)
    return env


def run_command(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@dataclass
class Server:
    """One `ticketflow serve` process with its own state dir, port and marker."""

    state: Path = field(default_factory=new_state_dir)
    port: int = field(default_factory=free_port)
    marker: str = field(default_factory=lambda: f"tf-cli-{secrets.token_hex(6)}")
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return command_env(self.state, self.port, self.marker, **self.extra_env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def out(self) -> Path:
        return self.state / "serve.out"

    @property
    def err(self) -> Path:
        return self.state / "serve.err"

    def output(self) -> str:
        return (
            self.out.read_text(errors="replace")[-2000:]
            + "\n--- stderr ---\n"
            + self.err.read_text(errors="replace")[-3000:]
        )

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve"],
            env=self.env,
            cwd=REPO,
            stdout=self.out.open("ab"),
            stderr=self.err.open("ab"),
        )
        return self

    def wait_healthy(self, timeout: float = 150) -> None:
        assert self.proc is not None
        proc = self.proc

        def health() -> int:
            assert proc.poll() is None, self.output()
            return httpx.get(f"{self.url}/health", timeout=3).status_code

        wait_until_sync(
            health,
            until=lambda status: status == 200,
            timeout=timeout,
            interval=0.5,
            what=f"`ticketflow serve` to answer {self.url}/health with 200",
            ignoring=(httpx.HTTPError,),
            explain=self.output,
        )

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def leftovers(self, timeout: float = 20) -> list[str]:
        """Processes of this server still alive after ``timeout`` seconds of waiting."""
        try:
            return wait_until_sync(
                lambda: processes_with(self.marker, self.state),
                until=lambda left: not left,
                timeout=timeout,
                interval=0.5,
                what="no process of this server left",
            )
        except WaitedTooLong as still_there:
            return list(still_there.last)

    def postmaster_pid(self) -> int:
        return int((self.state / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])


def processes_with(marker: str, state: Path) -> list[str]:
    """Live processes carrying the marker in their environment (Ray, Redis, workers, HAProxy) or
    naming the state dir on their command line (Postgres runs as another user, environment cleaned)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if (marker.encode() in environ or str(state).encode() in cmdline) and status not in (
            "Z",
            "X",
        ):
            found.append(f"{pid}: {cmdline[:100]!r}")
    return found


def login(url: str, email: str = "test@ticketflow.dev", password: str = "Test1234!") -> str:
    r = httpx.post(
        f"{url}/api/users/login", json={"email": email, "password": password}, timeout=10
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


def book_one_seat(url: str, token: str, seat: str, timeout: float = 60) -> dict[str, Any]:
    """Book ``seat`` of the first demo event and wait for the booking's final state."""
    headers = {"Authorization": f"Bearer {token}"}
    event = httpx.get(f"{url}/api/events", timeout=10).json()["data"][0]["id"]
    r = httpx.post(
        f"{url}/api/bookings",
        headers={**headers, "Idempotency-Key": secrets.token_hex(8)},
        timeout=10,
        json={
            "eventId": event,
            "seatIds": [seat],
            "paymentMethod": {"type": "card", "token": "pm_card_visa"},
        },
    )
    assert r.status_code == 202, r.text
    booking_id = r.json()["bookingId"]

    def booking() -> dict[str, Any]:
        return dict(
            httpx.get(f"{url}/api/bookings/{booking_id}", headers=headers, timeout=10).json()
        )

    return wait_until_sync(
        booking,
        until=lambda b: b.get("status") in ("CONFIRMED", "FAILED", "CANCELLED"),
        timeout=timeout,
        interval=0.3,
        what=f"booking {booking_id} to finish",
    )
