"""The metrics the actors and the Gateway record reach Ray's Prometheus endpoint, where a scraper reads them."""

from __future__ import annotations

import re

import httpx

from tests.helpers import book_and_wait, create_event
from tests.waiting import wait_until

# Each metric is scraped as ray_<name>; the samples must come from the processes that record them.
EXPECTED = {
    "ray_ticketflow_bookings_total": {"status": "CONFIRMED"},
    "ray_ticketflow_seat_locks_total": {"result": "granted"},
    "ray_ticketflow_payments_total": {"outcome": "succeeded"},
    "ray_ticketflow_emails_total": {},
    "ray_ticketflow_saga_step_seconds_count": {"step": "charge"},
    "ray_ticketflow_seat_actor_starts_total": {},
    # Serve's own HTTP counter, which docs/operations.md alerts on: the Python proxy counts it, and
    # under fast ingress the Gateway replica does (HAProxy's per-request metrics are off).
    "ray_serve_num_http_requests_total": {},
}
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def samples(body: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in body.splitlines():
        m = SAMPLE.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
            found.setdefault(m["name"], []).append((labels, float(m["value"])))
    return found


def missing(found: dict[str, list[tuple[dict[str, str], float]]]) -> list[str]:
    gaps = []
    for name, want in EXPECTED.items():
        if not any(
            value > 0 and all(labels.get(k) == v for k, v in want.items())
            for labels, value in found.get(name, [])
        ):
            gaps.append(f"{name}{want}")
    return gaps


async def test_booking_metrics_reach_the_prometheus_endpoint(
    http: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    import ray

    event = await create_event(http, admin_token, vip=2, general=2)
    assert (await book_and_wait(http, user_token, event["id"], ["seat_A1"]))[
        "status"
    ] == "CONFIRMED"
    port = ray._private.worker.global_worker.node.metrics_export_port
    url = f"http://127.0.0.1:{port}/metrics"
    # Ray's agents push every few seconds; give them several rounds.
    scraped: list[dict[str, list[tuple[dict[str, str], float]]]] = [{}]
    async with httpx.AsyncClient(timeout=5.0) as scraper:

        async def gaps() -> list[str]:
            scraped[0] = samples((await scraper.get(url)).text)
            return missing(scraped[0])

        await wait_until(
            gaps,
            until=lambda gaps: not gaps,
            timeout=45,
            interval=1.0,
            what=f"every expected series at {url} (value: the ones missing)",
        )
    found = scraped[0]
    # No per-event label: one time series per event would grow without bound (actors/metrics.py).
    ours = [
        labels
        for name, series in found.items()
        if name.startswith("ray_ticketflow_")
        for labels, _ in series
    ]
    assert ours and not any("event_id" in labels for labels in ours)
