"""Stream == archive recomputation at the same read times, on the real broker and Redis (>= 20,000 events)."""

from __future__ import annotations

import time
from collections.abc import Callable

from featurestore.offline import OfflineStore
from fti_demo.simulate import SimConfig, generate

from .conftest import FeaturePipeline


def test_worker_online_and_offline_values_equal_the_backfill(feature_pipeline: Callable[..., FeaturePipeline]) -> None:
    pipe = feature_pipeline(partitions=4)
    sim = list(generate(20_000, SimConfig(seed=11)))
    n = pipe.produce((e.key, e.value) for e in sim)
    t0 = time.monotonic()
    pipe.start_worker()
    pipe.wait_caught_up(timeout=240)
    elapsed = time.monotonic() - t0
    skews = pipe.parity()
    for s in skews:
        assert s.mismatches == [], (s.view, s.mismatches[:10])
    txns = sum(e.event_type == "transaction" for e in sim)
    distinct_txns = len({e.event_id for e in sim if e.event_type == "transaction"})
    assert txns >= 20_000 and distinct_txns == 20_000
    assert all(s.probes > 5 * s.entities > 0 for s in skews)
    print(f"\nparity: {n} messages, {distinct_txns} distinct transactions, caught up in {elapsed:.1f}s")
    # Compacting the worker's many small files (with the worker still running) changes nothing read.
    # (How many files the worker's timed flushes wrote depends on timing, so it is not asserted;
    # merging many files into one is proven in tests/unit/featurestore/test_offline_compaction.py.)
    store = OfflineStore(pipe.settings.offline_root)
    parts = store.partitions()
    for d, files in parts.items():
        store.compact(d, files)
    assert all(len(f) == 1 for f in store.partitions().values())
    after = pipe.parity()
    assert [(s.view, s.mismatches, s.probes) for s in after] == [(s.view, [], s.probes) for s in skews]
