"""When the worker lets CPython's cyclic garbage collector run.

The worker allocates several containers per event and keeps many of them (the caches), but
makes no reference cycles: over 400 automatic collections in catch-ups and live traffic found
nothing to free. They still cost ~7 % of a catch-up's time, stopped the event loop for 30-45 ms
every second or two of live traffic (5,200 events/s), and a full collection stopped it for
~200 ms with a small cache, longer with a large one.

So everything alive is frozen (`gc.freeze`: constant time, and it resets the collector's
allocation count) at every tick of the flush loop (every 0.1 s live, between chunks in a
catch-up). The automatic collector runs only when one tick allocates more than its threshold,
and then scans just that tick's objects.

Cyclic garbage frozen before it became garbage (a library's error path) is freed only by a full
collection, which scans everything the worker holds: every retained event is a named tuple,
which CPython keeps tracked, so a full collection stops the worker ~1 µs per held object, ~4
per retained event (0.4 s at 100k retained events, 1.7 s at 400k; seconds to tens of seconds
at the millions the cache bounds allow). A full collection every 10 minutes, as there used to
be, was a freshness stall growing with the cache and a liveness risk. So it runs only every
`full_every_s` when that is set (`FTI_WORKER_GC_FULL_INTERVAL_S`), and each one is logged with
its duration and what it freed.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

__all__ = ["Collector"]

log = logging.getLogger("fti.worker")

# Net allocations between two automatic collections (CPython's default is 700), set above what
# one tick allocates: a catch-up tick (a 10,000-event chunk) makes ~0.5M objects, and live
# traffic at 6,000 events/s ~0.3M per 0.1 s tick. At 50,000 each tick still ran several young
# collections, 12 % of a catch-up's samples (py-spy --native); at 1M, CPU per event in the
# profile driver went 67-81 -> 53-63 us (3 pairs) and live p50 at 6,000/s 251-303 -> 155-174 ms.
YOUNG_THRESHOLD = 1_000_000


class Collector:
    def __init__(self, full_every_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every_s = full_every_s
        self._clock = clock
        self._last_full = clock()
        self.full_collections = 0

    def start(self) -> None:
        """After start-up: what exists now lives for the whole process."""
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, 20, 100)

    def tick(self) -> None:
        """Freeze what is alive; once every `full_every_s` (when set), first collect everything."""
        now = self._clock()
        if self.full_every_s > 0 and now - self._last_full >= self.full_every_s:
            self._last_full = now
            gc.unfreeze()
            started = time.perf_counter()
            freed = gc.collect()
            self.full_collections += 1
            log.info(
                "full garbage collection: %.0f ms, %d unreachable objects freed (FTI_WORKER_GC_FULL_INTERVAL_S=%g)",
                (time.perf_counter() - started) * 1000,
                freed,
                self.full_every_s,
            )
        gc.freeze()
