"""supervision.priority: every thread of the process is lowered, and threads started later too."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

# Runs in a process of its own: the test process keeps its priority.
_CHILD = r"""
import json, os, threading
from pathlib import Path
from supervision.priority import lower_priority

def nice_of(tid):
    return os.getpriority(os.PRIO_PROCESS, tid)

hold = threading.Event()
ids = []
def idle():
    ids.append(threading.get_native_id())
    hold.wait()

early = threading.Thread(target=idle)
early.start()
while not ids:
    pass
before = {tid: nice_of(tid) for tid in (threading.get_native_id(), ids[0])}
lowered = lower_priority(3)
late = threading.Thread(target=idle)
late.start()
while len(ids) < 2:
    pass
after = {tid: nice_of(tid) for tid in (threading.get_native_id(), *ids)}
hold.set()
print(json.dumps({"before": before, "after": after, "lowered": lowered, "tasks": len(list(Path("/proc/self/task").iterdir()))}))
"""


def _run(code: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=30
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_every_thread_is_lowered_and_later_threads_inherit_it() -> None:
    result = _run(_CHILD)
    before = {int(k): v for k, v in result["before"].items()}
    after = {int(k): v for k, v in result["after"].items()}
    base = min(before.values())
    assert all(v == base for v in before.values())
    # The main thread, the thread started before and the thread started after: all 3 lower.
    assert len(after) == 3
    assert all(v == min(19, base + 3) for v in after.values()), after
    assert result["lowered"] >= 2


def test_zero_leaves_the_process_as_it_was() -> None:
    result = _run(
        "import json, os\n"
        "from supervision.priority import lower_priority\n"
        "before = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "print(json.dumps({'lowered': lower_priority(0), 'same': os.getpriority(os.PRIO_PROCESS, 0) == before}))\n"
    )
    assert result == {"lowered": 0, "same": True}
