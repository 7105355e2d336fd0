"""A clock that stands still until a test moves it: pass it where production takes `time.time`."""

from __future__ import annotations


class FakeClock:
    """Callable like `time.time`; `advance` moves it forward."""

    def __init__(self, start: float) -> None:
        self.current = start

    def __call__(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds
