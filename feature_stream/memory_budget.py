"""The worker's default cache bound in events, from the memory it may use.

`FTI_WORKER_MAX_CACHED_EVENTS` unset means: half the memory available to the worker (its
cgroup's limit, as a container runtime sets it, else the machine's), at `BYTES_PER_EVENT`
each. A fixed default would be wrong both ways: too large for a small container (the worker
is killed for memory), too small for a big machine (busy entities are evicted and reloaded
from Redis at every batch: a worker over its bound took 92 % of a core at 600 events/s,
where one within it took 27 %).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["BYTES_PER_EVENT", "available_memory", "default_max_cached_events"]

# A demo transaction retained by the two demo views, with its key's remembered id, cost ~1.7
# KB of RSS (bench/feature_pipeline/busy_memory.py); it counts as two events of the entity
# cache and one id of the key cache, each bounded by the setting.
BYTES_PER_EVENT = 1_200
SHARE = 0.5  # of the available memory; the rest is the process, buffers and headroom
# cgroup v2, then v1; a value this large or larger is "no limit" (v1 writes 2^63 rounded down).
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
NO_LIMIT = 1 << 60


def _physical() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def available_memory(
    limits: tuple[Path, ...] = CGROUP_LIMITS, physical: Callable[[], int] = _physical
) -> tuple[int, str]:
    """Bytes the worker may use, and where that figure came from."""
    total = physical()
    for path in limits:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < min(NO_LIMIT, total):
            return int(text), f"the cgroup limit ({path})"
    return total, "the machine's memory"


def default_max_cached_events(memory: int) -> int:
    return max(10_000, int(memory * SHARE) // BYTES_PER_EVENT)
