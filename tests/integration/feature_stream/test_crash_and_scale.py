"""kill -9 mid-stream and scale-out: values stay exactly equal to the backfill."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from featurestore.offline import OfflineStore
from fti_demo.simulate import SimConfig, generate

from .conftest import FeaturePipeline


def _produce_in_background(
    pipe: FeaturePipeline, count: int, seed: int, rate: float
) -> tuple[threading.Thread, set[str]]:
    sim = list(generate(count, SimConfig(seed=seed)))
    thread = threading.Thread(target=pipe.produce, args=([(e.key, e.value) for e in sim], rate), daemon=True)
    thread.start()
    return thread, {e.event_id for e in sim}


def _wait_for_progress(pipe: FeaturePipeline, timeout: float = 60) -> None:
    store = OfflineStore(pipe.settings.offline_root)
    t0 = time.monotonic()
    while not store.archive_event_types():
        assert time.monotonic() - t0 < timeout, pipe.logs()
        time.sleep(0.2)


def _assert_exact(pipe: FeaturePipeline, ids: set[str]) -> None:
    archive = OfflineStore(pipe.settings.offline_root).read_archive()
    assert set(archive["event_id"]) == ids
    for s in pipe.parity():
        assert s.mismatches == [], (s.view, s.mismatches[:10])


def test_kill_9_mid_stream_then_restart_loses_nothing_and_counts_nothing_twice(
    feature_pipeline: Callable[..., FeaturePipeline],
) -> None:
    pipe = feature_pipeline(partitions=2)
    producer, ids = _produce_in_background(pipe, 12_000, seed=21, rate=2500)
    worker = pipe.start_worker()
    _wait_for_progress(pipe)
    time.sleep(random.uniform(0.5, 3.0))
    pipe.kill(worker)
    producer.join()
    pipe.start_worker()
    pipe.wait_caught_up(timeout=180)
    _assert_exact(pipe, ids)


def test_two_workers_one_added_and_one_killed_mid_stream(feature_pipeline: Callable[..., FeaturePipeline]) -> None:
    pipe = feature_pipeline(partitions=4)
    producer, ids = _produce_in_background(pipe, 10_000, seed=33, rate=1000)
    first = pipe.start_worker()
    _wait_for_progress(pipe)
    pipe.start_worker()
    time.sleep(6)
    pipe.kill(first)
    producer.join()
    pipe.wait_caught_up(timeout=180)
    _assert_exact(pipe, ids)
