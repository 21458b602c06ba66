"""Load generators for the benchmark: closed loop (max throughput) and open loop (fixed rate)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Call", "Result", "closed_loop", "open_loop", "percentile"]

# One call returns a label (the model version, or 0 for echo); it raises on failure.
Call = Callable[[], Awaitable[int]]


@dataclass
class Result:
    latencies_s: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.latencies_s, q) * 1000


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _timed(call: Call, result: Result) -> None:
    sent = time.perf_counter()
    try:
        label = await call()
    except Exception:  # noqa: BLE001 - a failed call is counted, whatever failed
        result.errors += 1
        return
    result.latencies_s.append(time.perf_counter() - sent)
    result.sent_at.append(sent)
    result.labels.append(label)


async def closed_loop(call: Call, concurrency: int, seconds: float) -> Result:
    """`concurrency` callers, each sending its next request when the last one is answered."""
    result = Result()
    started = time.perf_counter()
    end = started + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            await _timed(call, result)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def open_loop(call: Call, rate: float, seconds: float, result: Result | None = None) -> Result:
    """Requests at a fixed rate whatever the answers do, so slow answers show up as latency.

    Given a `result`, adds to it (samples and elapsed time), so windows can be pooled.
    """
    result = result or Result()
    started = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()
    next_at = started
    while next_at < started + seconds:
        task = asyncio.create_task(_timed(call, result))
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at += 1 / rate
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.gather(*pending)
    result.elapsed_s += time.perf_counter() - started
    return result
