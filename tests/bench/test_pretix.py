"""pretix as a `bench compare` target: the set-up data, the refusal rule, the routing, and a smoke
run against the installed pretix.

The smoke run (`test_pretix_sells_a_tiny_seated_event_with_its_checks_on`) starts the real pretix
and drives its REST API with the set-up and order code of `benchmarks.pretix`, so a pretix release
that changed what that code relies on fails here. It runs when pretix's environment exists under
the default `--pretix-dir` or when `TICKETFLOW_BENCH_PRETIX=1` (which installs pretix on first use):
the benchmark's own test command (docs/performance.md) sets it; CI without pretix skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import compare
from benchmarks.cli import build_parser
from benchmarks.httpclient import TransportError
from benchmarks.onsale import OnsaleConfig
from benchmarks.pretix.install import DEFAULT_PRETIX_DIR, PRETIX_VERSION
from benchmarks.pretix.scenario import (
    PretixOnsaleRun,
    layout_tiers,
    refused_as_unavailable,
    run_pretix_onsale,
    seating_plan,
)
from benchmarks.pretix.server import pretix_config, pretix_env, template_database_name
from domain.seating import generate_layout


# -- set-up data, no pretix needed ------------------------------------------------------------------
def test_seating_plan_has_ticketflows_rows_tiers_and_seat_ids() -> None:
    plan = seating_plan(45, 0.1, "Bench")
    rows = plan["zones"][0]["rows"]
    seats = [
        (r["row_number"], s["seat_number"], s["category"], s["seat_guid"])
        for r in rows
        for s in r["seats"]
    ]
    expected = generate_layout(layout_tiers(45, 0.1), seats_per_row=20)
    assert seats == [(s.row, str(s.number), s.tier, s.id) for s in expected]
    assert [c["name"] for c in plan["categories"]] == ["VIP", "GENERAL"]
    assert {t.tier: (t.capacity, t.price) for t in layout_tiers(45, 0.1)} == {
        "VIP": (4, 25000),
        "GENERAL": (41, 7500),
    }


def test_seating_plan_is_valid_for_pretixs_schema_when_installed() -> None:
    found = sorted(
        (DEFAULT_PRETIX_DIR / "venv").glob(
            "lib/python*/site-packages/pretix/static/seating/seating-plan.schema.json"
        )
    )
    jsonschema = pytest.importorskip("jsonschema")
    if not found:
        pytest.skip("pretix is not installed under the default --pretix-dir")
    schema_path = found[0]
    jsonschema.validate(seating_plan(45, 0.1, "Bench"), json.loads(schema_path.read_text()))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "positions": [
                    {"seat": ['The selected seat "Stalls, Row B, Seat 2" is not available.']},
                    {},
                ]
            },
            True,
        ),
        (
            {
                "positions": [
                    {},
                    {
                        "item": [
                            'There is not enough quota available on quota "GENERAL" to perform the operation.'
                        ]
                    },
                ]
            },
            True,
        ),
        ({"positions": [{"seat": ["The specified seat does not exist."]}]}, False),
        ({"positions": [{"item": ["Invalid pk."]}]}, False),
        ({"positions": [{"seat": ["... is not available."], "price": ["bad"]}]}, False),
        ({"payment_provider": ["The given payment provider is not known."]}, False),
        ({"detail": "The server was too busy to process your request. Please try again."}, False),
        (None, False),
    ],
)
def test_only_seat_or_quota_refusals_count_as_seats_unavailable(body: Any, expected: bool) -> None:
    assert refused_as_unavailable(body) is expected


class _RecordingClient:
    """Answers 200 and records each request's headers; a path ending in /down raises TransportError."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Any = None,
        headers: Any = None,
    ) -> tuple[int, Any, dict[str, str]]:
        self.headers.append(dict(headers or {}))
        if path.endswith("/down"):
            raise TransportError("Timeout")
        return 200, {"ok": True}, {}

    async def aclose(self) -> None:
        pass


async def test_pretix_calls_carry_the_team_token_and_count_as_the_on_sale_counts() -> None:
    client = _RecordingClient()
    run = PretixOnsaleRun(OnsaleConfig(url="http://x"), client, organizer="o", token="tok")
    assert await run.call("GET", "/api/v1/a", token="buyer") == (200, {"ok": True}, {})
    assert await run.call("GET", "/api/v1/down") == (0, None, None)
    await run.call("GET", "/api/v1/b", count=False, headers={"X-Extra": "1"})
    assert client.headers == [
        {"Authorization": "Token tok"},  # never a buyer's bearer token
        {"Authorization": "Token tok"},
        {"X-Extra": "1", "Authorization": "Token tok"},
    ]
    assert run.stats.requests == 2 and run.stats.errors == {"transport Timeout": 1}


def test_pretix_config_uses_its_own_database_redis_and_no_debug(tmp_path: Path) -> None:
    text = pretix_config(
        database_url="postgresql://postgres:pw@127.0.0.1:5433/tf_bench_pretix_ab",
        redis_url="redis://127.0.0.1:6379/13",
        url="http://127.0.0.1:8345",
        data_dir=tmp_path,
        secret="s" * 40,
    )
    assert "name=tf_bench_pretix_ab" in text and "port=5433" in text and "password=pw" in text
    assert "location=redis://127.0.0.1:6379/13" in text and "sessions=true" in text
    assert "debug=off" in text
    assert "[celery]" not in text  # no broker: pretix runs its tasks eagerly


def test_pretix_env_drops_the_shells_pretix_settings(tmp_path: Path) -> None:
    env = pretix_env(
        {"PRETIX_DATABASE_NAME": "prod", "DJANGO_DEBUG": "1", "PATH": "/bin", "PYTHONPATH": "/x"},
        tmp_path / "pretix.cfg",
    )
    assert env == {
        "PATH": "/bin",
        "PRETIX_CONFIG_FILE": str(tmp_path / "pretix.cfg"),
        "DJANGO_SETTINGS_MODULE": "pretix.settings",
    }
    assert template_database_name() == "tf_bench_pretix_tpl_" + PRETIX_VERSION.replace(".", "_")


# -- compare routes pretix to its own server and scenario ---------------------------------------------
async def test_compare_starts_pretix_and_drives_it_through_its_own_scenario(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []

    class FakePretix(compare.PretixServer):
        def __init__(self) -> None:
            self.organizer, self.token, self.version, self.workers = "org", "tok", PRETIX_VERSION, 5

        @property
        def url(self) -> str:
            return "http://fake/pretix"

        async def stop(self) -> None:
            events.append("stop pretix")

    async def fake_start_pretix(args: argparse.Namespace) -> FakePretix:
        events.append(f"start pretix workers={args.pretix_workers}")
        return FakePretix()

    async def fake_floor(url: str, **kwargs: Any) -> dict[str, Any]:
        events.append(f"floor {url}{kwargs['path']}")
        return {"requests_per_s": 1.0}

    async def fake_pretix_onsale(
        config: OnsaleConfig, *, organizer: str, token: str
    ) -> dict[str, Any]:
        events.append(f"pretix onsale {config.label} {organizer} {token}")
        return {"label": config.label, "checks": {"passed": True}}

    monkeypatch.setattr(compare, "_start_pretix", fake_start_pretix)
    monkeypatch.setattr(compare, "http_floor", fake_floor)
    monkeypatch.setattr(compare, "run_pretix_onsale", fake_pretix_onsale)
    args = build_parser().parse_args(
        [
            "compare",
            "--no-ticketflow",
            "--baselines",
            "pretix",
            "--skip-locks",
            "--pretix-workers",
            "3",
        ]
    )
    report = await compare._compare(args)
    assert events == [
        "start pretix workers=3",
        "floor http://fake/pretix/healthcheck/",
        "pretix onsale pretix org tok",
        "stop pretix",
    ]
    assert report["pretix"]["version"] == PRETIX_VERSION


def test_unknown_baseline_names_pretix_among_the_choices() -> None:
    args = build_parser().parse_args(
        ["compare", "--no-ticketflow", "--baselines", "pretics", "--skip-locks"]
    )
    with pytest.raises(SystemExit, match="pretix"):
        asyncio.run(compare._compare(args))


# -- the smoke run against the installed pretix --------------------------------------------------------
@pytest.fixture
async def pretix_postgres_url() -> str:
    """The Postgres server the benchmark uses (pretix gets a database of its own there)."""
    import asyncpg

    from benchmarks.common import default_database_url

    url = default_database_url()
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"Postgres at {url} is unreachable ({type(exc).__name__}: {exc})")
    await conn.close()
    return url


def _pretix_wanted() -> bool:
    return (
        os.environ.get("TICKETFLOW_BENCH_PRETIX") == "1"
        or (DEFAULT_PRETIX_DIR / "venv" / "bin" / "python").exists()
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not _pretix_wanted(),
    reason="pretix not installed; TICKETFLOW_BENCH_PRETIX=1 installs and runs it",
)
async def test_pretix_sells_a_tiny_seated_event_with_its_checks_on(
    pretix_postgres_url: str,
) -> None:
    from benchmarks.pretix.server import start_pretix

    server = await start_pretix(database_url=pretix_postgres_url, workers=2)
    try:
        report = await run_pretix_onsale(
            OnsaleConfig(
                url=server.url,
                seats=24,
                vip_fraction=0.25,
                buyers=4,
                attempts=40,
                concurrency=6,
                duration=60,
                label="pretix",
                seed=7,
                progress=False,
            ),
            organizer=server.organizer,
            token=server.token,
        )
    finally:
        await server.stop()
    results, checks = report["results"], report["checks"]
    assert report["setup"]["seats"] == 24 and set(report["setup"]["items"]) == {"VIP", "GENERAL"}
    assert results["confirmed"] > 0 and results["errors"] == {}, results
    assert checks["passed"], checks
    assert checks["confirmed_bookings_server"] == results["confirmed"]
    assert checks["confirmed_seats_server"] == results["confirmed_seats"]
