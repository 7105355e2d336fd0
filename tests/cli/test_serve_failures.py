"""`ticketflow serve` when things around it fail: a failed start leaves nothing behind, and a
server never runs on without its database (issue 18). Real processes throughout."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from supervision.ports import free_port
from tests.cli.serve_process import (
    Server,
    book_one_seat,
    last_line,
    login,
    processes_with,
    run_command,
)
from tests.waiting import wait_until_sync


def _assert_one_line_failure(stderr: str, *expected: str) -> None:
    line = last_line(stderr)
    assert line.startswith("ticketflow serve: "), stderr[-3000:]
    for text in expected:
        assert text in line, line


@pytest.mark.slow
def test_port_taken_fails_at_once_touching_nothing_and_the_holder_is_unharmed() -> None:
    server = Server()
    holder = socket.socket()
    holder.bind(("127.0.0.1", server.port))
    holder.listen()
    try:
        started = time.monotonic()
        result = run_command(server.env, "serve", timeout=60)
        elapsed = time.monotonic() - started
        assert result.returncode == 1, result.stderr[-3000:]
        assert elapsed < 20, elapsed  # the interpreter's imports; nothing is started
        _assert_one_line_failure(
            result.stderr, "cannot start", f"port {server.port}", "already in use"
        )
        # Checked before anything: no lock, no database, no Ray, not even a directory entry.
        assert sorted(p.name for p in server.state.iterdir()) == []
        assert processes_with(server.marker, server.state) == []
        # The process holding the port still holds it and still answers.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            conn, _ = holder.accept()
            conn.close()
    finally:
        holder.close()


@pytest.mark.slow
def test_redis_not_starting_stops_the_postgres_already_started() -> None:
    server = Server()
    (server.state / "redis").write_text("not a directory\n")  # Redis cannot make its --dir
    result = run_command(server.env, "serve", timeout=90)
    assert result.returncode == 1, result.stderr[-3000:]
    _assert_one_line_failure(result.stderr, "cannot start")
    assert (server.state / "postgres" / "PG_VERSION").exists()  # Postgres did start first
    assert not (server.state / "postgres" / "postmaster.pid").exists()
    assert server.leftovers() == []


@pytest.mark.slow
def test_serve_failing_after_ray_started_leaves_no_ray_haproxy_or_database() -> None:
    # HAProxy (fast ingress) cannot bind its stats port: Serve fails once Ray, the embedded
    # databases and Serve's controller are all up, as it did with the port of the issue.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    server = Server(extra_env={"RAY_SERVE_HAPROXY_STATS_PORT": str(blocker.getsockname()[1])})
    try:
        started = time.monotonic()
        result = run_command(server.env, "serve", timeout=180)
        elapsed = time.monotonic() - started
    finally:
        blocker.close()
    assert result.returncode == 1, result.stderr[-3000:]
    _assert_one_line_failure(result.stderr, "cannot start", "HAProxy")
    assert elapsed < 90, elapsed
    assert server.leftovers() == []
    assert not (server.state / "services.json").exists()


# -- one running server, and everything done beside it ------------------------------------------


@pytest.fixture(scope="module")
def running() -> Iterator[Server]:
    server = Server().start()
    server.wait_healthy()
    yield server
    server.stop()
    assert server.leftovers() == []


def _healthy_and_booking(server: Server, seat: str) -> None:
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    booking = book_one_seat(server.url, login(server.url), seat)
    assert booking["status"] == "CONFIRMED", booking


@pytest.mark.slow
def test_create_admin_beside_a_running_server_uses_its_database(running: Server) -> None:
    postmaster = running.postmaster_pid()
    result = run_command(
        running.env, "create-admin", "--email", "ops@example.com", "--password", "Ops-pass-1234"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Same Postgres, still running: the admin exists in the server's database.
    assert running.postmaster_pid() == postmaster
    token = login(running.url, "ops@example.com", "Ops-pass-1234")
    me = httpx.get(
        f"{running.url}/api/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=5
    ).json()
    assert me["role"] == "ADMIN", me
    _healthy_and_booking(running, "seat_A1")
    # Where it found the server's database: a file only the owner can read (a URL may carry a password).
    assert (running.state / "services.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
@pytest.mark.parametrize("same_port", [True, False], ids=["same-port", "other-port"])
def test_a_second_serve_refuses_and_the_first_stays_healthy(
    running: Server, same_port: bool
) -> None:
    postmaster = running.postmaster_pid()
    second = Server(
        state=running.state,
        port=running.port if same_port else free_port(),
        marker=running.marker + "-2",
    )
    started = time.monotonic()
    result = run_command(second.env, "serve", timeout=60)
    assert result.returncode == 1, result.stderr[-3000:]
    assert time.monotonic() - started < 20
    if same_port:
        _assert_one_line_failure(result.stderr, "already in use")
    else:
        _assert_one_line_failure(
            result.stderr, "in use by `ticketflow serve`", f"pid {running.proc.pid}"
        )  # type: ignore[union-attr]
    assert processes_with(second.marker, Path("/no-such-state-dir")) == []
    assert running.postmaster_pid() == postmaster
    _healthy_and_booking(running, "seat_A2" if same_port else "seat_A3")


def _cluster_processes(server: Server) -> list[int]:
    data_dir = str((server.state / "postgres").resolve())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == data_dir:
                found.append(int(pid))
        except OSError:
            continue
    assert server.postmaster_pid() in found
    return found


@pytest.mark.slow
def test_health_is_503_while_postgres_is_unreachable_and_bookings_resume(running: Server) -> None:
    # Every process of the cluster stopped: unreachable but alive, so the supervisor leaves it be
    # (stopping the postmaster alone would leave pooled connections' backends answering).
    cluster = _cluster_processes(running)
    for pid in cluster:
        os.kill(pid, signal.SIGSTOP)
    try:
        r = wait_until_sync(
            lambda: httpx.get(f"{running.url}/health", timeout=10),
            until=lambda r: r.status_code == 503,
            timeout=10,
            what="/health to answer 503 while Postgres is stopped",
        )
        error = r.json()["error"]
        assert error["code"] == "SERVICE_UNAVAILABLE" and "Postgres" in error["message"], error
    finally:
        for pid in cluster:
            os.kill(pid, signal.SIGCONT)
    _healthy_and_booking(running, "seat_A4")


@pytest.mark.slow
def test_embedded_postgres_killed_is_restarted_by_serve_and_bookings_resume(
    running: Server,
) -> None:
    postmaster = running.postmaster_pid()
    os.kill(postmaster, signal.SIGKILL)

    def restarted_and_healthy() -> str:
        assert running.proc is not None and running.proc.poll() is None, running.output()
        try:
            if running.postmaster_pid() == postmaster:
                return f"postmaster still {postmaster}"
        except (OSError, ValueError) as exc:
            return f"no postmaster.pid yet ({exc})"
        return f"/health {httpx.get(f'{running.url}/health', timeout=5).status_code}"

    wait_until_sync(
        restarted_and_healthy,
        until=lambda state: state == "/health 200",
        timeout=30,
        interval=0.3,
        what="a new postmaster and /health 200",
        explain=running.output,
    )
    # The supervisor logs the restart once the new postmaster is ready, which /health can beat.
    wait_until_sync(
        lambda: "embedded Postgres restarted" in running.err.read_text(),
        timeout=15,
        interval=0.3,
        what="the supervisor's restart line in the server's log",
        explain=running.output,
    )
    _healthy_and_booking(running, "seat_A5")


@pytest.mark.slow
def test_embedded_postgres_that_cannot_come_back_ends_the_server(running: Server) -> None:
    """Last of the module: it ends the shared server."""
    postmaster = running.postmaster_pid()
    os.kill(postmaster, signal.SIGSTOP)  # so that the config is broken before any restart
    with (running.state / "postgres" / "postgresql.conf").open("a") as conf:
        conf.write("\nthis is not a setting\n")
    os.kill(postmaster, signal.SIGKILL)
    assert running.proc is not None
    running.proc.wait(timeout=90)
    assert running.proc.returncode == 1, running.output()
    _assert_one_line_failure(
        running.err.read_text(), "stopped", "Postgres", "could not be restarted"
    )
    assert running.leftovers() == []
