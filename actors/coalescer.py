"""Coalescing: many concurrent small calls for the same key become one call.

During an on-sale hundreds of sagas ask one event's seat actor for locks, the payment actor for
charges and Postgres for the same saga-step write at the same moment; an actor call or a database
round trip costs the same CPU whatever it carries, so carrying many requests per call divides its
cost among them.

A batch leaves when it is full (`max_batch`), or `max_wait` after its first request, but never
while `max_in_flight` batches of its key are still out: then it leaves the moment one of them
returns, carrying everything that arrived meanwhile. With `max_wait=0` and `max_in_flight=1` a
request never waits for a timer, only for the current turn of the event loop to end: alone it
goes at once, and under load batches grow by themselves to whatever arrives during one round
trip (the busier the process, the larger they get, the less each request costs).

`send` answers with one result per request, in order; a result that is an exception fails that
request alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

# What the saga actors run with (natural batching, above); the lock benchmark defaults to the
# same, so it measures what ships.
MAX_BATCH = 64
MAX_WAIT_SECONDS = 0.0
MAX_IN_FLIGHT = 1

Req = TypeVar("Req")
Res = TypeVar("Res")


class Coalescer(Generic[Req, Res]):
    def __init__(
        self,
        send: Callable[[str, list[Req]], Awaitable[Sequence[Res | BaseException]]],
        *,
        max_batch: int = MAX_BATCH,
        max_wait: float = MAX_WAIT_SECONDS,
        max_in_flight: int | None = MAX_IN_FLIGHT,
    ) -> None:
        if max_batch < 1 or max_wait < 0 or (max_in_flight is not None and max_in_flight < 1):
            raise ValueError("max_batch and max_in_flight must be >= 1, max_wait >= 0")
        self._send = send
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._max_in_flight = max_in_flight
        self._pending: dict[str, list[tuple[Req, asyncio.Future[Res]]]] = {}
        self._timers: dict[str, asyncio.Handle] = {}
        self._out: dict[str, int] = {}  # batches of a key in flight
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: str, request: Req) -> Res:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Res] = loop.create_future()
        batch = self._pending.setdefault(key, [])
        batch.append((request, future))
        if len(batch) >= self._max_batch:
            self._flush(key)
        elif key not in self._timers:
            # max_wait=0 still waits for the end of this turn of the event loop: callers woken by
            # one answer resume in the same turn, and their next requests then share a batch.
            self._timers[key] = (
                loop.call_later(self._max_wait, self._flush, key)
                if self._max_wait
                else loop.call_soon(self._flush, key)
            )
        return await future

    def _may_send(self, key: str) -> bool:
        return self._max_in_flight is None or self._out.get(key, 0) < self._max_in_flight

    def _flush(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        # While the key's in-flight limit is reached, what is pending waits for a batch to return.
        while self._pending.get(key) and self._may_send(key):
            waiting = self._pending.pop(key)
            batch, rest = waiting[: self._max_batch], waiting[self._max_batch :]
            if rest:
                self._pending[key] = rest
            self._out[key] = self._out.get(key, 0) + 1
            task = asyncio.get_running_loop().create_task(self._deliver(key, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, key: str, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        try:
            results = await self._send(key, [request for request, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} answered with {len(results)} results")
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the batch's failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._out[key] -= 1
            if not self._out[key]:
                del self._out[key]
            if self._max_in_flight is not None and self._pending.get(key):
                self._flush(key)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
