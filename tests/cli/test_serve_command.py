"""`ticketflow serve` as a real process: embedded defaults, the reference's login, clean shutdown."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from storage.embedded import free_port


def _processes_with(marker: str, state: Path) -> list[str]:
    """Live processes carrying the marker in their environment (Ray, Redis, workers) or naming the
    state dir on their command line (Postgres runs as another user with a cleaned environment)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        if (marker.encode() in environ or str(state).encode() in cmdline) and status != "Z":
            found.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()[:80]!r}")
    return found


@pytest.mark.slow
def test_serve_answers_and_leaves_nothing_behind_after_sigterm() -> None:
    state = Path(tempfile.mkdtemp(prefix="tf-cli-"))
    state.chmod(0o755)
    port = free_port()
    marker = f"tf-cli-{secrets.token_hex(6)}"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET", "SMTP_URL")}
    env.update({
        "TICKETFLOW_STATE_DIR": str(state), "TICKETFLOW_PORT": str(port), "TF_TEST_MARKER": marker,
        "TICKETFLOW_PASSWORD_HASH_MEMORY_KIB": "64", "TICKETFLOW_PASSWORD_HASH_TIME_COST": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    })
    for key in [k for k in env if k.startswith("TICKETFLOW_") and k not in (
            "TICKETFLOW_STATE_DIR", "TICKETFLOW_PORT", "TICKETFLOW_PASSWORD_HASH_MEMORY_KIB",
            "TICKETFLOW_PASSWORD_HASH_TIME_COST")]:
        del env[key]
    log = (state / "serve.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "serve_app", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (state / "serve.out").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (state / "serve.out").read_text()[-3000:]
            time.sleep(1)
        r = httpx.post(f"http://127.0.0.1:{port}/api/users/login", json={"email": "test@ticketflow.dev", "password": "Test1234!"})
        assert r.status_code == 200, r.text
        assert r.json()["user"]["email"] == "test@ticketflow.dev"
        events = httpx.get(f"http://127.0.0.1:{port}/api/events").json()["data"]
        assert any(e["venue"]["name"] == "O2 Arena" for e in events)
        assert (state / "jwt_secret").exists()
        running = _processes_with(marker, state)
        assert any(b"postgres" in p.encode() for p in running), running
        assert any(b"raylet" in p.encode() or b"gcs_server" in p.encode() for p in running), running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, (state / "serve.out").read_text()[-3000:]
    deadline = time.monotonic() + 20
    while (left := _processes_with(marker, state)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left behind: {left}"
