"""`bench compare`'s own servers, without Ray: the TicketFlow server's command and environment,
`--server-env`, the start/stop helper on a tiny stand-in server, and the order of the targets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import compare
from benchmarks.cli import build_parser, main
from benchmarks.services import (
    MARKER_VAR,
    ServiceProcess,
    marked_processes,
    parse_server_env,
    start_service,
    ticketflow_server_command,
    ticketflow_server_env,
    with_database,
)
from supervision.ports import free_port
from tests.waiting import wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _env(**kwargs: Any) -> dict[str, str]:
    params: dict[str, Any] = {
        "database_url": "postgresql://postgres@127.0.0.1:5432/tf_bench_app_0011aabb",
        "redis_url": "redis://127.0.0.1:6379/15",
        "port": 23456,
        "state_dir": Path("/tmp/tf-state"),
        "payment_latency_ms": 5,
        "admin_email": "boss@example.com",
        "admin_password": "Sup3rSecret!",
    }
    base = kwargs.pop("base", {})
    params.update(kwargs)
    return ticketflow_server_env(base, **params)


# -- the TicketFlow server's command and environment ---------------------------------------------
def test_server_command_runs_the_serve_subcommand_with_this_interpreter() -> None:
    assert ticketflow_server_command() == [sys.executable, "-m", "cli", "serve"]


def test_server_env_carries_the_benchmark_settings() -> None:
    env = _env()
    assert env["DATABASE_URL"] == "postgresql://postgres@127.0.0.1:5432/tf_bench_app_0011aabb"
    assert env["REDIS_URL"] == "redis://127.0.0.1:6379/15"
    assert env["TICKETFLOW_HOST"] == "127.0.0.1" and env["TICKETFLOW_PORT"] == "23456"
    assert env["TICKETFLOW_STATE_DIR"] == "/tmp/tf-state"
    assert env["TICKETFLOW_FAST_INGRESS"] == "true"
    assert env["TICKETFLOW_RATE_LIMIT_ENABLED"] == "false"
    assert env["TICKETFLOW_PAYMENT_LATENCY_MS"] == "5"
    assert env["TICKETFLOW_LOG_LEVEL"] == "WARNING"
    assert env["TICKETFLOW_PASSWORD_HASH_MEMORY_KIB"] == "64"
    assert env["TICKETFLOW_PASSWORD_HASH_TIME_COST"] == "1"
    # The server creates the admin the benchmark logs in as.
    assert env["TICKETFLOW_ADMIN_EMAIL"] == "boss@example.com"
    assert env["TICKETFLOW_ADMIN_PASSWORD"] == "Sup3rSecret!"
    assert env["PYTHONPATH"].split(":")[0] == str(PROJECT_ROOT)


def test_server_env_is_read_by_settings_as_intended(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from config.settings import Settings

    monkeypatch.chdir(tmp_path)  # no .env here
    # The e2e session's fake Stripe, when it ran first in this process, is not the server's env.
    for key in ("STRIPE_API_KEY", "STRIPE_API_BASE", "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in _env(overrides=[("TICKETFLOW_SAGA_POOL_SIZE", "4")]).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.database_url and settings.database_url.endswith("/tf_bench_app_0011aabb")
    assert settings.port == 23456 and settings.host == "127.0.0.1" and settings.fast_ingress is True
    assert settings.rate_limit_enabled is False and settings.payment_latency_ms == 5
    assert settings.log_level == "WARNING" and settings.seed_demo is False
    assert settings.password_hash_memory_kib == 64 and settings.password_hash_time_cost == 1
    assert settings.admin_email == "boss@example.com"
    assert settings.admin_password.get_secret_value() == "Sup3rSecret!"
    assert settings.saga_pool_size == 4
    assert settings.ray_address is None and settings.stripe_api_key is None


def test_server_env_drops_configuration_inherited_from_the_shell() -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "PYTHONPATH": "/elsewhere",
        "TICKETFLOW_ENV": "prod",
        "TICKETFLOW_SAGA_POOL_SIZE": "9",
        "ticketflow_seed_demo": "true",
        "DATABASE_URL": "postgresql://prod/db",
        "STRIPE_API_KEY": "sk_live_x",
        "RAY_ADDRESS": "10.0.0.1:6379",
        "JWT_SECRET": "x" * 40,
        "SMTP_URL": "smtp://mail",
        "SEAT_LOCK_TTL": "60",
    }
    env = _env(base=base)
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/root"
    assert env["PYTHONPATH"] == f"{PROJECT_ROOT}:/elsewhere"
    for key in (
        "TICKETFLOW_ENV",
        "TICKETFLOW_SAGA_POOL_SIZE",
        "ticketflow_seed_demo",
        "STRIPE_API_KEY",
        "RAY_ADDRESS",
        "JWT_SECRET",
        "SMTP_URL",
        "SEAT_LOCK_TTL",
    ):
        assert key not in env, key
    assert env["DATABASE_URL"].endswith("/tf_bench_app_0011aabb")


def test_server_env_of_another_checkout_puts_that_checkout_s_code_first(tmp_path: Path) -> None:
    # `benchmarks.cpu_profile --server-root`: this checkout's code must not shadow the other's.
    env = _env(base={"PYTHONPATH": f"{PROJECT_ROOT}::/elsewhere"}, root=tmp_path)
    assert env["PYTHONPATH"] == f"{tmp_path}:/elsewhere"


def test_server_env_overrides_apply_last_and_in_order() -> None:
    env = _env(
        overrides=[
            ("TICKETFLOW_FAST_INGRESS", "false"),
            ("TICKETFLOW_LOG_LEVEL", "INFO"),
            ("TICKETFLOW_LOG_LEVEL", "DEBUG"),
            ("STRIPE_API_BASE", "http://127.0.0.1:1"),
        ]
    )
    assert env["TICKETFLOW_FAST_INGRESS"] == "false"
    assert env["TICKETFLOW_LOG_LEVEL"] == "DEBUG"
    assert env["STRIPE_API_BASE"] == "http://127.0.0.1:1"


def test_with_database_keeps_the_server_credentials_and_options() -> None:
    assert with_database(
        "postgresql://u:p@db.local:5433/postgres?sslmode=disable", "tf_bench_app_1"
    ) == ("postgresql://u:p@db.local:5433/tf_bench_app_1?sslmode=disable")


# -- --server-env and the option combinations -------------------------------------------------------
def test_parse_server_env_accepts_key_value_pairs() -> None:
    assert parse_server_env("TICKETFLOW_SAGA_POOL_SIZE=4") == ("TICKETFLOW_SAGA_POOL_SIZE", "4")
    assert parse_server_env("SMTP_URL=smtp://a:b@h:25/?x=1") == ("SMTP_URL", "smtp://a:b@h:25/?x=1")
    assert parse_server_env("EMPTY=") == ("EMPTY", "")


@pytest.mark.parametrize("text", ["NOEQUALS", "=value", "1ABC=x", "A B=x", "A-B=x", ""])
def test_parse_server_env_rejects_malformed_entries(text: str) -> None:
    with pytest.raises(ValueError):
        parse_server_env(text)


@pytest.mark.parametrize(
    "key",
    [
        "TICKETFLOW_PORT",
        "ticketflow_port",
        "TICKETFLOW_HOST",
        "DATABASE_URL",
        "REDIS_URL",
        "TICKETFLOW_PAYMENT_LATENCY_MS",
        "TICKETFLOW_ADMIN_PASSWORD",
        "TICKETFLOW_STATE_DIR",
        "RAY_ADDRESS",
        MARKER_VAR,
    ],
)
def test_parse_server_env_rejects_what_compare_sets_itself(key: str) -> None:
    with pytest.raises(ValueError, match="set by compare"):
        parse_server_env(f"{key}=1")


def test_compare_parser_collects_server_env_and_defaults_to_starting_ticketflow() -> None:
    args = build_parser().parse_args(
        ["compare", "--server-env", "TICKETFLOW_SAGA_POOL_SIZE=4", "--server-env", "X=1"]
    )
    assert args.server_env == [("TICKETFLOW_SAGA_POOL_SIZE", "4"), ("X", "1")]
    assert args.url is None and args.no_ticketflow is False and args.server_startup_timeout == 180.0
    assert compare.ticketflow_setup(args) == {
        "mode": "started",
        "server_env": {"TICKETFLOW_SAGA_POOL_SIZE": "4", "X": "1"},
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--server-env", "NOEQUALS"], "expected KEY=VALUE"),
        (["compare", "--server-env", "TICKETFLOW_PORT=1"], "set by compare"),
        (["compare", "--url", "http://127.0.0.1:3000", "--no-ticketflow"], "exclude each other"),
        (
            ["compare", "--url", "http://127.0.0.1:3000", "--server-env", "A=1"],
            "no effect with --url",
        ),
        (["compare", "--no-ticketflow", "--server-env", "A=1"], "no effect with --no-ticketflow"),
    ],
)
def test_compare_rejects_bad_options(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_secret_looking_server_env_values_are_redacted_in_the_report() -> None:
    args = build_parser().parse_args(
        ["compare", "--server-env", "STRIPE_API_KEY=sk_test_1", "--server-env", "A=1"]
    )
    assert compare.ticketflow_setup(args)["server_env"] == {"STRIPE_API_KEY": "***", "A": "1"}


# -- the start/stop helper, on a stand-in server ---------------------------------------------------
# Answers /health, starts a child that ignores SIGTERM (as a stray Ray worker might), and itself
# exits on SIGTERM unless told to ignore it.
STAND_IN = r"""
import http.server, signal, subprocess, sys
port, ignore_term = int(sys.argv[1]), sys.argv[2] == "ignore"
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def log_message(self, *a): pass
signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_term else (lambda *_: sys.exit(0)))
print("stand-in ready", flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


async def _start_stand_in(ignore_term: bool, cleaned: list[str], **kwargs: Any) -> ServiceProcess:
    async def cleanup() -> None:
        cleaned.append("done")

    port = free_port()
    return await start_service(
        "stand-in",
        [sys.executable, "-c", STAND_IN, str(port), "ignore" if ignore_term else "exit"],
        env={"PATH": "/usr/bin:/bin"},
        url=f"http://127.0.0.1:{port}",
        startup_timeout=20,
        cleanups=[cleanup],
        **kwargs,
    )


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_stop_leaves_no_process_of_the_service_and_runs_the_cleanups(
    ignore_term: bool,
) -> None:
    cleaned: list[str] = []
    service = await _start_stand_in(ignore_term, cleaned, stop_timeout=1.0, reap_grace=1.0)
    await wait_until(
        lambda: marked_processes(service.marker),
        until=lambda found: len(found) >= 2,
        timeout=5,
        interval=0.05,
        what="the stand-in server and its child",
    )
    assert len(marked_processes(service.marker)) == 2  # the server and its child, no more
    assert cleaned == []
    await service.stop()
    assert service.proc.returncode is not None
    assert marked_processes(service.marker) == []
    assert cleaned == ["done"] and not service.log_path.exists()


async def test_a_failed_start_reports_the_log_tail_and_cleans_up() -> None:
    cleaned: list[str] = []

    async def cleanup() -> None:
        cleaned.append("done")

    with pytest.raises(RuntimeError, match=r"(?s)exited with 3 during start-up.*boom: no database"):
        await start_service(
            "broken",
            [
                sys.executable,
                "-c",
                "import sys; print('boom: no database', flush=True); sys.exit(3)",
            ],
            env={"PATH": "/usr/bin:/bin"},
            url=f"http://127.0.0.1:{free_port()}",
            startup_timeout=20,
            cleanups=[cleanup],
        )
    assert cleaned == ["done"]


# -- compare: TicketFlow first, one target at a time ------------------------------------------------
class _FakeService:
    def __init__(self, label: str, events: list[str]) -> None:
        self.label, self.url, self._events = label, f"http://fake/{label}", events

    async def stop(self) -> None:
        self._events.append(f"stop {self.label}")


def _compare_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["compare", "--skip-locks", "--floor-seconds", "1", *argv])


@pytest.fixture
def fake_targets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    events: list[str] = []

    async def fake_start_ticketflow(**kwargs: Any) -> _FakeService:
        events.append(
            f"start ticketflow latency={kwargs['payment_latency_ms']} env={kwargs['server_env']}"
        )
        return _FakeService("ticketflow", events)

    async def fake_start_plain(label: str, **kwargs: Any) -> _FakeService:
        events.append(f"start {label} latency={kwargs['payment_latency_ms']}")
        return _FakeService(label, events)

    async def fake_floor(url: str, **_: Any) -> dict[str, Any]:
        events.append(f"floor {url}")
        return {"requests_per_s": 1.0}

    async def fake_onsale(config: Any) -> dict[str, Any]:
        events.append(f"onsale {config.label} {config.url}")
        return {"label": config.label, "checks": {"passed": True}}

    monkeypatch.setattr(compare, "start_ticketflow", fake_start_ticketflow)
    monkeypatch.setattr(compare, "start_plain_service", fake_start_plain)
    monkeypatch.setattr(compare, "http_floor", fake_floor)
    monkeypatch.setattr(compare, "run_onsale", fake_onsale)
    return events


async def test_compare_starts_ticketflow_first_and_stops_each_target_before_the_next(
    fake_targets: list[str],
) -> None:
    report = await compare._compare(
        _compare_args("--payment-latency-ms", "5", "--server-env", "A=1")
    )
    assert fake_targets == [
        "start ticketflow latency=5 env=[('A', '1')]",
        "floor http://fake/ticketflow",
        "onsale ticketflow http://fake/ticketflow",
        "stop ticketflow",
        "start plain-pg latency=5",
        "floor http://fake/plain-pg",
        "onsale plain-pg http://fake/plain-pg",
        "stop plain-pg",
        "start plain-redis latency=5",
        "floor http://fake/plain-redis",
        "onsale plain-redis http://fake/plain-redis",
        "stop plain-redis",
    ]
    assert report["ticketflow"] == {"mode": "started", "server_env": {"A": "1"}}
    assert [r["label"] for r in report["onsale"]] == ["ticketflow", "plain-pg", "plain-redis"]


async def test_compare_with_url_uses_that_server_and_starts_none(fake_targets: list[str]) -> None:
    report = await compare._compare(
        _compare_args("--url", "http://127.0.0.1:3000/", "--baselines", "plain-pg")
    )
    assert [e for e in fake_targets if e.startswith(("start", "stop"))] == [
        "start plain-pg latency=0",
        "stop plain-pg",
    ]
    assert fake_targets[:2] == [
        "floor http://127.0.0.1:3000",
        "onsale ticketflow http://127.0.0.1:3000",
    ]
    assert report["ticketflow"] == {"mode": "url", "url": "http://127.0.0.1:3000"}
    assert "it stayed up while they ran" in compare.compare_markdown(
        {**report, "onsale": [], "floor": []}
    )


async def test_compare_without_ticketflow_runs_only_the_baselines(fake_targets: list[str]) -> None:
    await compare._compare(_compare_args("--no-ticketflow", "--baselines", "plain-redis"))
    assert not any("ticketflow" in e for e in fake_targets)
    assert (
        fake_targets[0] == "start plain-redis latency=0" and fake_targets[-1] == "stop plain-redis"
    )


async def test_a_target_that_fails_to_start_is_reported_and_the_others_still_run(
    fake_targets: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_start_ticketflow(**_: Any) -> _FakeService:
        raise RuntimeError(
            "ticketflow did not answer /health within 180 s; the end of its log:\n..."
        )

    monkeypatch.setattr(compare, "start_ticketflow", failing_start_ticketflow)
    report = await compare._compare(_compare_args("--baselines", "plain-pg"))
    assert "did not answer /health" in report["failures"]["ticketflow"]
    assert fake_targets[0] == "start plain-pg latency=0" and fake_targets[-1] == "stop plain-pg"


def test_runs_repeats_the_whole_comparison_and_reports_the_medians(
    fake_targets: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rates = iter([60.0, 240.0, 70.0, 200.0, 50.0, 250.0])

    async def fake_onsale(config: Any) -> dict[str, Any]:
        fake_targets.append(f"onsale {config.label}")
        return {
            "label": config.label,
            "checks": {"passed": True},
            "results": {"confirmed_per_s": next(rates)},
        }

    monkeypatch.setattr(compare, "run_onsale", fake_onsale)
    monkeypatch.setattr(
        compare, "compare_markdown", lambda report: f"one run: {len(report['onsale'])} targets"
    )
    out = tmp_path / "compare.json"
    args = _compare_args("--baselines", "plain-pg", "--runs", "3", "--json", str(out))
    assert compare.run_compare(args) == 0
    # Each run starts and stops every target again.
    assert (
        fake_targets.count("start ticketflow latency=0 env=[]") == 3
        and fake_targets.count("stop plain-pg") == 3
    )
    saved = json.loads(out.read_text())
    assert len(saved["runs"]) == 3
    assert saved["median"]["onsale"]["ticketflow"]["confirmed bookings/s"]["median"] == 60.0
    assert saved["median"]["ratios"]["ticketflow / plain-pg"]["confirmed bookings/s"][
        "median"
    ] == pytest.approx(0.25)
    printed = capsys.readouterr().out
    assert printed.count("one run: 2 targets") == 3 and "## Median of 3 runs" in printed
