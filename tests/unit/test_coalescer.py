"""The caller-side coalescer that turns concurrent seat locks into one actor call."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.coalescer import Coalescer


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.fail = fail

    async def send(self, key: str, batch: list[int]) -> list[int]:
        self.calls.append((key, list(batch)))
        await asyncio.sleep(0.001)
        if self.fail:
            raise ConnectionError("actor unavailable")
        return [x * 10 for x in batch]


async def test_concurrent_requests_for_one_key_share_a_call() -> None:
    rec = Recorder()
    co: Coalescer[int, int] = Coalescer(rec.send, max_batch=100, max_wait=0.005)
    results = await asyncio.gather(*(co.submit("evnt_a", i) for i in range(30)))
    assert results == [i * 10 for i in range(30)]  # each caller gets its own answer, in order
    assert rec.calls == [("evnt_a", list(range(30)))]


async def test_keys_never_mix_and_full_batches_leave_at_once() -> None:
    rec = Recorder()
    co: Coalescer[int, int] = Coalescer(rec.send, max_batch=4, max_wait=10.0)
    started = time.monotonic()
    await asyncio.gather(
        *(co.submit("a", i) for i in range(8)), *(co.submit("b", i) for i in range(4))
    )
    assert time.monotonic() - started < 1.0  # full batches did not wait for max_wait
    assert sorted(rec.calls) == [("a", [0, 1, 2, 3]), ("a", [4, 5, 6, 7]), ("b", [0, 1, 2, 3])]


async def test_a_lone_request_waits_at_most_max_wait() -> None:
    rec = Recorder()
    co: Coalescer[int, int] = Coalescer(rec.send, max_batch=64, max_wait=0.01)
    started = time.monotonic()
    assert await co.submit("a", 7) == 70
    assert time.monotonic() - started < 0.5


async def test_a_failed_call_fails_every_waiter() -> None:
    co: Coalescer[int, int] = Coalescer(Recorder(fail=True).send, max_wait=0.001)
    results = await asyncio.gather(*(co.submit("a", i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_short_answer_is_an_error_not_a_silent_mismatch() -> None:
    async def short(_key: str, batch: list[int]) -> list[int]:
        return batch[:-1]

    co: Coalescer[int, int] = Coalescer(short, max_wait=0.001)
    with pytest.raises(RuntimeError):
        await asyncio.gather(co.submit("a", 1), co.submit("a", 2))


class Gate:
    """A send that holds every batch until released, recording what each carried."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()

    async def send(self, _key: str, batch: list[int]) -> list[int]:
        self.calls.append(list(batch))
        await self.release.wait()
        return [x + 1 for x in batch]


async def test_with_one_batch_in_flight_the_next_carries_everything_that_arrived_meanwhile() -> (
    None
):
    gate = Gate()
    co: Coalescer[int, int] = Coalescer(gate.send, max_batch=100, max_wait=0, max_in_flight=1)
    first = asyncio.ensure_future(co.submit("a", 0))
    await asyncio.sleep(0.001)
    assert gate.calls == [[0]]  # alone, it left at once: no timer
    rest = [asyncio.ensure_future(co.submit("a", i)) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    assert gate.calls == [[0]]  # the key's one slot is taken: the others wait for it
    gate.release.set()
    assert await asyncio.gather(first, *rest) == [1, 2, 3, 4, 5, 6]
    assert gate.calls == [[0], [1, 2, 3, 4, 5]]


async def test_in_flight_limit_is_per_key_and_full_batches_still_split() -> None:
    gate = Gate()
    co: Coalescer[int, int] = Coalescer(gate.send, max_batch=2, max_wait=0, max_in_flight=1)
    waiters = [asyncio.ensure_future(co.submit("a", i)) for i in range(5)]
    other = asyncio.ensure_future(co.submit("b", 9))
    await asyncio.sleep(0.01)
    assert gate.calls == [[0, 1], [9]]  # another key does not wait for "a"
    gate.release.set()
    assert await asyncio.gather(*waiters, other) == [1, 2, 3, 4, 5, 10]
    assert gate.calls == [[0, 1], [9], [2, 3], [4]]


async def test_an_exception_as_one_result_fails_that_request_alone() -> None:
    async def send(_key: str, batch: list[int]) -> list[int | BaseException]:
        return [ValueError(f"bad {x}") if x == 2 else x for x in batch]

    co: Coalescer[int, int] = Coalescer(send, max_wait=0.001)
    results = await asyncio.gather(*(co.submit("a", i) for i in range(4)), return_exceptions=True)
    assert results[:2] == [0, 1] and results[3] == 3
    assert isinstance(results[2], ValueError) and str(results[2]) == "bad 2"


def test_nonsense_limits_are_refused() -> None:
    async def send(_key: str, batch: list[int]) -> list[int]:
        return batch

    for kwargs in ({"max_batch": 0}, {"max_wait": -1.0}, {"max_in_flight": 0}):
        with pytest.raises(ValueError):
            Coalescer(send, **kwargs)  # type: ignore[arg-type]
