"""`ticketflow serve` as a real process: embedded defaults, the reference's login, clean shutdown,
started and stopped again and again on one state directory."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from tests.cli.serve_process import Server, login, new_state_dir, processes_with


def _answers_as_the_readme_says(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/api/users/login",
        json={"email": "test@ticketflow.dev", "password": "Test1234!"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["user"]["email"] == "test@ticketflow.dev"
    events = httpx.get(f"{server.url}/api/events").json()["data"]
    assert any(e["venue"]["name"] == "O2 Arena" for e in events)
    assert login(server.url)
    assert (server.state / "jwt_secret").exists()
    running = processes_with(server.marker, server.state)
    assert any("postgres" in p for p in running), running
    assert any("raylet" in p or "gcs_server" in p for p in running), running


@pytest.mark.slow
def test_serve_answers_and_leaves_nothing_behind_after_sigterm() -> None:
    """TF_START_STOP_LOOPS starts and stops in a row (2 in the suite; docs/reliability.md has a
    run of 10): every start serves, every SIGTERM exits 0 and leaves no process behind."""
    loops = int(os.environ.get("TF_START_STOP_LOOPS", "2"))
    state = new_state_dir()
    for n in range(loops):
        started = time.monotonic()
        server = Server(state=state).start()
        try:
            server.wait_healthy()
            healthy = time.monotonic()
            if n == 0:
                _answers_as_the_readme_says(server)
        finally:
            code = server.stop()
        assert code == 0, server.output()
        assert server.leftovers() == [], f"start {n + 1}"
        print(
            f"start {n + 1}/{loops}: healthy after {healthy - started:.1f} s, "
            f"stopped with nothing left after {time.monotonic() - healthy:.1f} s"
        )
