"""actors.metrics: no-ops outside Ray, lazy, bounded labels, never raising (no Ray cluster needed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from actors import metrics

ROOT = Path(__file__).resolve().parents[2]

CALL_EVERY_HELPER = """
from actors import metrics
metrics.record_booking_final("CONFIRMED", None)
metrics.record_booking_final("FAILED", "SEATS_UNAVAILABLE")
metrics.observe_saga_step("lock", 0.004)
metrics.record_lock(True)
metrics.record_lock(False)
metrics.seat_actor_started()
metrics.seat_actor_stopped()
metrics.record_payment("succeeded")
metrics.record_email("sent")
metrics.record_rate_limited("login")
metrics.set_queue_length(3)
metrics.record_admitted([1.5, 20.0])
assert metrics._metrics == {}, metrics._metrics
"""


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_helpers_are_no_ops_in_a_process_without_ray() -> None:
    out = _run(CALL_EVERY_HELPER + "import sys\nprint('ray' in sys.modules)\n")
    assert out.strip() == "False"  # calling a helper does not even import Ray


def test_helpers_are_no_ops_when_ray_is_imported_but_not_initialised() -> None:
    _run("import ray\nassert not ray.is_initialized()\n" + CALL_EVERY_HELPER)


class FakeMetric:
    def __init__(
        self, kind: str, name: str, tag_keys: tuple[str, ...], boundaries: list[float] | None
    ) -> None:
        self.kind, self.name, self.tag_keys, self.boundaries = kind, name, tag_keys, boundaries
        self.calls: list[tuple[str, float, dict[str, str] | None]] = []

    def _check(self, tags: dict[str, str] | None) -> None:
        assert set(tags or {}) == set(self.tag_keys), (self.name, tags)
        assert all(isinstance(v, str) for v in (tags or {}).values())

    def inc(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert self.kind == "counter" and value > 0
        self._check(tags)
        self.calls.append(("inc", value, tags))

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert self.kind == "histogram" and value >= 0
        self._check(tags)
        self.calls.append(("observe", value, tags))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert self.kind == "gauge"
        self._check(tags)
        self.calls.append(("set", value, tags))


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeMetric]:
    """Pretends to run inside a Ray worker; records what the real metric objects would get."""
    created: dict[str, FakeMetric] = {}

    def create(name: str) -> FakeMetric:
        kind, _description, tag_keys = metrics._SPECS[name]
        boundaries = (
            metrics.BOUNDARIES.get(name, metrics.SAGA_STEP_BOUNDARIES)
            if kind == "histogram"
            else None
        )
        created[name] = FakeMetric(kind, name, tag_keys, boundaries)
        return created[name]

    metrics._reset_for_tests()
    monkeypatch.setattr(metrics, "_in_ray", lambda: True)
    monkeypatch.setattr(metrics, "_create", create)
    yield created
    metrics._reset_for_tests()


def test_metrics_are_created_lazily_once_per_process(fake_ray: dict[str, FakeMetric]) -> None:
    assert fake_ray == {}
    metrics.record_lock(True)
    metrics.record_lock(False)
    assert list(fake_ray) == [metrics.SEAT_LOCKS]
    assert [c[2] for c in fake_ray[metrics.SEAT_LOCKS].calls] == [
        {"result": "granted"},
        {"result": "refused"},
    ]


def test_every_helper_records_with_its_labels(fake_ray: dict[str, FakeMetric]) -> None:
    metrics.record_booking_final("FAILED", "PAYMENT_DECLINED")
    metrics.record_booking_final("CONFIRMED", None)
    metrics.observe_saga_step("charge", 0.31)
    metrics.observe_saga_step("lock", -1.0)  # a clock step backwards is recorded as 0
    metrics.seat_actor_started()
    metrics.seat_actor_stopped()
    metrics.record_payment("declined")
    metrics.record_email("retry")
    metrics.record_rate_limited("booking")
    metrics.set_queue_length(42)
    metrics.record_admitted([])  # nothing admitted this tick: nothing recorded
    metrics.record_admitted([2.0, -0.5])
    calls = {name: m.calls for name, m in fake_ray.items()}
    assert calls[metrics.BOOKINGS] == [
        ("inc", 1.0, {"status": "FAILED", "reason": "PAYMENT_DECLINED"}),
        ("inc", 1.0, {"status": "CONFIRMED", "reason": "none"}),
    ]
    assert calls[metrics.SAGA_STEP_SECONDS] == [
        ("observe", 0.31, {"step": "charge"}),
        ("observe", 0.0, {"step": "lock"}),
    ]
    assert calls[metrics.SEAT_ACTOR_STARTS] == [("inc", 1.0, None)]
    assert calls[metrics.SEAT_ACTORS_LIVE] == [("set", 1.0, None), ("set", 0.0, None)]
    assert calls[metrics.PAYMENTS] == [("inc", 1.0, {"outcome": "declined"})]
    assert calls[metrics.EMAILS] == [("inc", 1.0, {"outcome": "retry"})]
    assert calls[metrics.RATE_LIMITED] == [("inc", 1.0, {"kind": "booking"})]
    assert fake_ray[metrics.SAGA_STEP_SECONDS].boundaries == sorted(metrics.SAGA_STEP_BOUNDARIES)
    assert calls[metrics.QUEUE_LENGTH] == [("set", 42.0, None)]
    assert calls[metrics.ADMITTED] == [("inc", 2.0, None)]
    assert calls[metrics.TIME_IN_QUEUE] == [("observe", 2.0, None), ("observe", 0.0, None)]
    assert fake_ray[metrics.TIME_IN_QUEUE].boundaries == metrics.TIME_IN_QUEUE_BOUNDARIES


def test_label_values_are_bounded(fake_ray: dict[str, FakeMetric]) -> None:
    for i in range(metrics.MAX_LABEL_VALUES + 10):
        metrics.record_payment(f"decline_code_{i}")
    metrics.record_payment("x" * 500)
    outcomes = [c[2]["outcome"] for c in fake_ray[metrics.PAYMENTS].calls if c[2]]
    assert len(set(outcomes)) == metrics.MAX_LABEL_VALUES + 1  # the first 32, then "other"
    assert outcomes[-1] == metrics.OTHER
    assert outcomes[metrics.MAX_LABEL_VALUES :] == [metrics.OTHER] * 11
    assert all(len(o) <= metrics.MAX_LABEL_LENGTH for o in outcomes)


def test_a_failing_metric_never_breaks_the_caller(
    fake_ray: dict[str, FakeMetric], monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics.record_email("sent")

    def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("exporter down")

    monkeypatch.setattr(fake_ray[metrics.EMAILS], "inc", boom)
    metrics.record_email("sent")  # no exception


def test_a_metric_that_cannot_be_created_disables_metrics_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(_name: str) -> Any:
        raise RuntimeError("no core worker")

    metrics._reset_for_tests()
    monkeypatch.setattr(metrics, "_in_ray", lambda: True)
    monkeypatch.setattr(metrics, "_create", broken)
    try:
        metrics.record_lock(True)
        metrics.record_booking_final("CONFIRMED", None)
        assert metrics._metrics == {}
    finally:
        metrics._reset_for_tests()


def test_metric_names_are_valid_prometheus_names() -> None:
    import re

    for name, (kind, description, tag_keys) in metrics._SPECS.items():
        assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name), name
        assert name.startswith("ticketflow_") and description
        assert kind in {"counter", "histogram", "gauge"}
        assert "event_id" not in tag_keys  # see the module docstring: unbounded cardinality
        if kind == "counter":
            assert name.endswith("_total"), name
