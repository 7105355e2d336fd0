"""`ticketflow serve` with real secrets: none of them where Ray records or shows things (issue 17).

The server runs as a real process with a JWT secret, a Stripe key (the fake Stripe API accepts
only that key), an SMTP password (the SMTP sink accepts only that login), a Postgres role's
password and a Redis ACL user's password in the URLs. After a registration, logins and a booking
that is charged through Stripe and emailed through SMTP (so every secret was used by the actors
that need it), none of them, and no user password, token or card token, may appear in any file
of the server's Ray session directory, in the server's output, or in the dashboard's state API.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from config.secrets import SECRETS_FILE_NAME, secret_env_names
from supervision.ports import free_port
from tests import secret_scrape
from tests.fakes.smtp_server import SmtpSink
from tests.fakes.stripe_api import FakeStripe
from tests.helpers import FINAL, auth
from tests.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]
CARD = "pm_card_visa"


@dataclass
class Server:
    url: str
    state: Path
    output: Path
    process: subprocess.Popen[bytes]
    redis_url: str  # the server's, without the password (for the test's own checks)
    redis_user: str
    secrets: dict[str, str]  # what must never show, by name

    def session_dirs(self) -> list[Path]:
        return sorted((self.state / "ray").glob("ray/session_2*"))


def _clean_env() -> dict[str, str]:
    """This process's environment without anything of TicketFlow's or of the suite's server (its
    Serve settings too: the suite's HAProxy holds the stats and metrics ports they name)."""
    drop = secret_env_names() | {"STRIPE_API_BASE", "RAY_ADDRESS"}
    return {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("TICKETFLOW_", "RAY_SERVE_"))
    }


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, output: Path) -> None:
    def health() -> int:
        assert proc.poll() is None, output.read_text()[-3000:]
        return httpx.get(f"{url}/health", timeout=2).status_code

    wait_until_sync(
        health,
        until=lambda status: status == 200,
        timeout=180,
        interval=1,
        what=f"`ticketflow serve` to answer {url}/health with 200",
        ignoring=(httpx.HTTPError,),
        explain=lambda: output.read_text()[-3000:],
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stripe_fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=f"sk_test_{secrets.token_hex(16)}") as fake:
        yield fake


@pytest.fixture(scope="module")
def smtp_with_login() -> Iterator[tuple[SmtpSink, str, str]]:
    user, password = "tf-mailer", f"smtppw{secrets.token_hex(12)}"
    sink = SmtpSink(credentials=(user, password))
    sink.start()
    yield sink, user, password
    sink.stop()


@pytest.fixture(scope="module")
def secret_server(
    database_url: str,
    redis_url: str,
    stripe_fake: FakeStripe,
    smtp_with_login: tuple[SmtpSink, str, str],
) -> Iterator[Server]:
    sink, smtp_user, smtp_password = smtp_with_login
    role, pg_password, dsn = asyncio.run(secret_scrape.create_password_role(database_url))
    redis_user, redis_password, redis_with_password = secret_scrape.create_redis_user(redis_url)
    state = Path(tempfile.mkdtemp(prefix="tf-sec-"))
    state.chmod(0o755)  # the embedded Postgres runs as an unprivileged user when we are root
    port = free_port()
    jwt_secret = secrets.token_urlsafe(48)
    admin_password = f"Adm1n{secrets.token_hex(10)}"
    env = _clean_env()
    env.update(
        {
            "DATABASE_URL": dsn,
            "REDIS_URL": redis_with_password,
            "JWT_SECRET": jwt_secret,
            "STRIPE_API_KEY": stripe_fake.api_key,
            "STRIPE_API_BASE": stripe_fake.url,
            "SMTP_URL": sink.url_with_credentials(smtp_user, smtp_password),
            "TICKETFLOW_ADMIN_PASSWORD": admin_password,
            "TICKETFLOW_STATE_DIR": str(state),
            "TICKETFLOW_PORT": str(port),
            "TICKETFLOW_PASSWORD_HASH_MEMORY_KIB": "64",
            "TICKETFLOW_PASSWORD_HASH_TIME_COST": "1",
            "TICKETFLOW_NOTIFY_POLL_SECONDS": "0.5",
            # Ray's session directory inside the state dir: this server's alone, whatever else runs.
            "RAY_TMPDIR": str(state / "ray"),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    output = state / "serve.out"
    with output.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(
        f"http://127.0.0.1:{port}",
        state,
        output,
        proc,
        redis_url,
        redis_user,
        {
            "JWT_SECRET": jwt_secret,
            "STRIPE_API_KEY": stripe_fake.api_key,
            "SMTP password": smtp_password,
            "database password": pg_password,
            "Redis password": redis_password,
            "admin password": admin_password,
        },
    )
    try:
        _wait_healthy(proc, server.url, output)
        yield server
    finally:
        _stop(proc)
        asyncio.run(secret_scrape.drop_password_role(database_url, role))
        secret_scrape.drop_redis_user(redis_url, redis_user)


@dataclass
class Traffic:
    password: str  # a buyer's
    tokens: list[str]  # every token the server issued
    booking: dict[str, object]


@pytest.fixture(scope="module")
def traffic(
    secret_server: Server, stripe_fake: FakeStripe, smtp_with_login: tuple[SmtpSink, str, str]
) -> Traffic:
    """A registration, two logins and a booking charged through Stripe and emailed through SMTP."""
    sink = smtp_with_login[0]
    admin_password = secret_server.secrets["admin password"]
    password = f"Buyer{secrets.token_hex(8)}"
    email = f"buyer-{secrets.token_hex(4)}@example.com"
    with httpx.Client(base_url=secret_server.url, timeout=30) as http:
        r = http.post(
            "/api/users/register", json={"name": "Buyer", "email": email, "password": password}
        )
        assert r.status_code == 201, r.text
        token = http.post("/api/users/login", json={"email": email, "password": password}).json()[
            "token"
        ]
        r = http.post(
            "/api/users/login", json={"email": "admin@ticketflow.dev", "password": admin_password}
        )
        assert r.status_code == 200, r.text
        admin_token = r.json()["token"]
        event = http.get("/api/events").json()["data"][0]
        r = http.post(
            "/api/bookings",
            headers=auth(token),
            json={
                "eventId": event["id"],
                "seatIds": ["seat_A1"],
                "paymentMethod": {"type": "card", "token": CARD},
            },
        )
        assert r.status_code == 202, r.text
        booking_id = r.json()["bookingId"]
        booking = wait_until_sync(
            lambda: http.get(f"/api/bookings/{booking_id}", headers=auth(token)).json(),
            until=lambda b: b["status"] in FINAL,
            timeout=60,
            what=f"booking {booking_id} to finish",
        )
    assert booking["status"] == "CONFIRMED", booking
    # The secrets were used where they are needed: Stripe saw our key, SMTP our login, Redis
    # (the gateway's rate limiter) our ACL user.
    assert any(
        req.bearer_key == stripe_fake.api_key and req.status == 200
        for req in stripe_fake.requests
        if req.path.startswith("/v1/payment_intents")
    ), stripe_fake.requests
    assert secret_scrape.redis_connections_of(secret_server.redis_url, secret_server.redis_user) > 0
    assert any(email in m["To"] for m in sink.wait_for(1, timeout=30)), [
        m["To"] for m in sink.messages
    ]
    return Traffic(password, [token, admin_token], booking)


def _needles(server: Server, traffic: Traffic) -> dict[str, str]:
    return {
        **server.secrets,
        "buyer's password": traffic.password,
        "card token": CARD,
        **{f"JWT #{i}": token for i, token in enumerate(traffic.tokens)},
    }


def test_the_secrets_file_is_the_server_users_alone(
    secret_server: Server,
    traffic: Traffic,  # noqa: ARG001
) -> None:
    path = secret_server.state / SECRETS_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_uid == os.getuid()
    assert secret_server.secrets["JWT_SECRET"] in path.read_text()


def test_the_dashboard_state_api_shows_no_secret(secret_server: Server, traffic: Traffic) -> None:
    [session] = secret_server.session_dirs()
    answers = secret_scrape.dashboard_answers(secret_scrape.dashboard_url(session))
    # We looked at the right place: the runtime environments the workers got are listed there.
    assert "TICKETFLOW_STATE_DIR" in answers[secret_scrape.RUNTIME_ENVS_PATH]
    assert "Notifier" in answers[secret_scrape.DASHBOARD_PATHS[0]]
    assert secret_scrape.leaks_in_dashboard(answers, _needles(secret_server, traffic)) == []


def test_no_secret_in_the_server_output_or_ray_session_dir(
    secret_server: Server, traffic: Traffic
) -> None:
    needles = _needles(secret_server, traffic)
    # Stopped first, so that every process has written and flushed what it logs.
    _stop(secret_server.process)
    assert secret_server.process.returncode == 0, secret_server.output.read_text()[-3000:]
    sessions = secret_server.session_dirs()
    assert len(sessions) == 1, sessions
    assert secret_scrape.files_under(sessions) > 20  # logs of every process, not an empty dir
    output = secret_server.output.read_text()
    assert "TicketFlow is serving" in output
    leaks = secret_scrape.leaks_in_text("the server's output", output, needles)
    leaks += secret_scrape.leaks_in_files(sessions, needles)
    assert leaks == []
