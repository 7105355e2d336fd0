"""Coalescing: many concurrent small calls for the same key become one actor call.

During an on-sale hundreds of sagas ask one event's seat actor for locks at the same moment; an
actor call costs ~1.5 ms of CPU whatever it carries, so carrying up to `max_batch` requests per
call multiplies the actor's lock rate. A batch leaves when it is full or `max_wait` after its
first request, so a lone request waits at most `max_wait`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

# What the saga actors run with; the lock benchmark defaults to the same, so it measures what ships.
MAX_BATCH = 64
MAX_WAIT_SECONDS = 0.002

Req = TypeVar("Req")
Res = TypeVar("Res")


class Coalescer(Generic[Req, Res]):
    def __init__(
        self, send: Callable[[str, list[Req]], Awaitable[list[Res]]], *, max_batch: int = MAX_BATCH, max_wait: float = MAX_WAIT_SECONDS
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._pending: dict[str, list[tuple[Req, asyncio.Future[Res]]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._in_flight: set[asyncio.Task[None]] = set()

    async def submit(self, key: str, request: Req) -> Res:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Res] = loop.create_future()
        batch = self._pending.setdefault(key, [])
        batch.append((request, future))
        if len(batch) >= self._max_batch:
            self._flush(key)
        elif key not in self._timers:
            self._timers[key] = loop.call_later(self._max_wait, self._flush, key)
        return await future

    def _flush(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = self._pending.pop(key, [])
        if batch:
            task = asyncio.get_running_loop().create_task(self._deliver(key, batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

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
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
