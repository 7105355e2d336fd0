"""Starting and stopping the baseline services as subprocesses on free 127.0.0.1 ports."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.common import log
from storage.embedded import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BASELINES = {"plain-pg": "postgres", "plain-redis": "redis"}


@dataclass
class ServiceProcess:
    label: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the service drops its schema and Redis keys on the way out), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self.proc.poll() is None:
                log(f"{self.label}: did not stop within {timeout:.0f} s; killing it")
                self.proc.kill()
                self.proc.wait()
        self.log_path.unlink(missing_ok=True)


async def start_plain_service(
    label: str, *, database_url: str, redis_url: str, payment_latency_ms: int, admin_email: str,
    admin_password: str, startup_timeout: float = 30.0,
) -> ServiceProcess:
    """Starts `benchmarks.baselines.plain_service` (`label` is plain-pg or plain-redis) and waits for /health."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "benchmarks.baselines.plain_service", "--host", "127.0.0.1", "--port", str(port),
        "--lock", BASELINES[label], "--database-url", database_url, "--redis-url", redis_url,
        "--payment-latency-ms", str(payment_latency_ms), "--admin-email", admin_email,
        "--admin-password", admin_password,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    fd, name = tempfile.mkstemp(prefix=f"tf-bench-{label}-", suffix=".log")
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(PROJECT_ROOT))
    service = ServiceProcess(label, f"http://127.0.0.1:{port}", proc, Path(name))
    deadline = time.monotonic() + startup_timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = service.log_tail()
                service.log_path.unlink(missing_ok=True)
                raise RuntimeError(f"{label} exited with {proc.returncode} during start-up:\n{tail}")
            try:
                if (await client.get(service.url + "/health")).status_code == 200:
                    return service
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    tail = service.log_tail()
    await service.stop()
    raise RuntimeError(f"{label} did not answer /health within {startup_timeout:.0f} s:\n{tail}")
