"""pretix in a virtual environment of its own, installed from PyPI on first use.

pretix is not a dependency of TicketFlow (nor of `./dev test`): it pins its own Django, Celery,
redis and psycopg2, which must not meet TicketFlow's. The environment lives under the benchmark's
scratch directory (`--pretix-dir`, by default `.ticketflow/bench/pretix/` in the project, which git
ignores) and is reused by later runs; a different pinned version is installed over it.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

from benchmarks.common import log

# The version the set-up code (`setup_event.py`) and the scenario were checked against. The smoke
# test (tests/bench/test_pretix.py) runs the set-up against whatever is installed, so a newer
# pretix that changed a model or the order API shows there first.
PRETIX_VERSION = "2026.8.0"
# pretix's production guide serves the WSGI app with gunicorn (docs/admin/installation/manual_smallscale.rst).
REQUIREMENTS = (f"pretix=={PRETIX_VERSION}", "gunicorn>=23,<24")
DEFAULT_PRETIX_DIR = Path(__file__).resolve().parents[2] / ".ticketflow" / "bench" / "pretix"


def venv_python(root: Path) -> Path:
    return root / "venv" / "bin" / "python"


def installed_version(root: Path) -> str | None:
    """The pretix version in the environment under `root`, or None when there is none."""
    python = venv_python(root)
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('pretix'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_installed(root: Path = DEFAULT_PRETIX_DIR) -> Path:
    """The interpreter of pretix's environment under `root`, created and filled first if needed.

    Raises:
        RuntimeError: pip could not install pretix (the end of its output says why).
    """
    python = venv_python(root)
    have = installed_version(root)
    if have == PRETIX_VERSION:
        return python
    if not python.exists():
        log(f"pretix: creating its virtual environment in {root / 'venv'}")
        root.mkdir(parents=True, exist_ok=True)
        venv.EnvBuilder(with_pip=True).create(root / "venv")
    log(
        f"pretix: installing {', '.join(REQUIREMENTS)} (first use; a few minutes)"
        + (f" over {have}" if have else "")
    )
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *REQUIREMENTS,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RuntimeError(f"pip could not install pretix into {root / 'venv'}:\n{tail}")
    return python


if __name__ == "__main__":
    print(ensure_installed(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PRETIX_DIR))
