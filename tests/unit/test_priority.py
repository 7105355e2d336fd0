"""supervision.priority: every thread of the process changes, and threads started later too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

# Runs in a process of its own (the test process keeps its priority): one thread started before
# the change, one after; prints each thread's (policy, nice) before and after.
_CHILD = r"""
import json, os, sys, threading
from supervision.priority import set_priority

def of(tid):
    return [os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)]

hold = threading.Event()
ids = []
def idle():
    ids.append(threading.get_native_id())
    hold.wait()

threading.Thread(target=idle).start()
while not ids:
    pass
before = [of(tid) for tid in (threading.get_native_id(), ids[0])]
changed = set_priority(sys.argv[1])
threading.Thread(target=idle).start()
while len(ids) < 2:
    pass
after = [of(tid) for tid in (threading.get_native_id(), *ids)]
hold.set()
print(json.dumps({"before": before, "after": after, "changed": changed}))
"""


def _run(priority: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, priority],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_idle_puts_every_thread_on_sched_idle_and_later_threads_inherit_it() -> None:
    result = _run("idle")
    assert all(policy == os.SCHED_OTHER for policy, _ in result["before"])
    # The main thread, the thread started before and the thread started after.
    assert [policy for policy, _ in result["after"]] == [os.SCHED_IDLE] * 3
    assert result["changed"] >= 2


def test_low_lowers_every_thread_by_ten() -> None:
    result = _run("low")
    base = result["before"][0][1]
    assert [nice for _, nice in result["after"]] == [min(19, base + 10)] * 3
    assert all(policy == result["before"][0][0] for policy, _ in result["after"])


def test_normal_leaves_the_process_as_it_was() -> None:
    result = _run("normal")
    assert result["changed"] == 0
    assert result["after"][:2] == result["before"]


def test_the_notifier_lowers_every_thread_by_its_increment() -> None:
    # TICKETFLOW_NOTIFY_NICE: actors.notifier adds it with lower_niceness.
    code = _CHILD.replace("changed = set_priority(sys.argv[1])", "changed = lower_niceness(3)")
    code = code.replace("import set_priority", "import lower_niceness")
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=30
    )
    result = json.loads(out.stdout)
    base = result["before"][0][1]
    assert [nice for _, nice in result["after"]] == [min(19, base + 3)] * 3
