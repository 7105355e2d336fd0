"""The notifier lowers the priority of all its threads, not only of the one that asks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, os, threading
    from pathlib import Path
    from actors.notifier import lower_priority

    def nice_values():
        return {t.name: os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in Path("/proc/self/task").iterdir()}

    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
    before = nice_values()
    lower_priority(3)
    after = nice_values()
    late = {}
    def record():
        late["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    worker = threading.Thread(target=record)
    worker.start(); worker.join()
    stop.set()
    print(json.dumps({"before": before, "after": after, "late": late["nice"]}))
""")


def test_lower_priority_renices_every_thread_and_threads_started_later() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=PROJECT, capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    before, after = seen["before"], seen["after"]
    assert len(before) >= 2  # the main thread and the waiting one
    for tid, nice in before.items():
        assert after[tid] == min(19, nice + 3)
    assert seen["late"] == min(19, max(before.values()) + 3)
