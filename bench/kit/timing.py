"""Timing: percentiles, the event loop's own lag, pacing to deadlines."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

from bench.kit.tables import ms


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class LoopLag:
    """How late this process's event loop wakes up (1 ms ticks): separates a starved load generator from a slow app.

    Everything here is timed by the bench process, so a stall of its own loop would show up as app latency.
    """

    def __init__(self, tick: float = 0.001) -> None:
        self.tick = tick
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.tick)
            self.lags.append(time.perf_counter() - before - self.tick)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def describe(self) -> str:
        return f"p99 {ms(percentile(self.lags, 99))}, max {ms(percentile(self.lags, 100))}"


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
