"""kill -9 mid-stream and scale-out: values stay exactly equal to the backfill.

Kill points are seeded and mean the same thing on every run and machine: "after the group
has acked N offsets of the raw topic" (its committed offsets), not "after some seconds".
Group changes are waited for as conditions: the group is stable with both workers assigned.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable

import pytest

from featurestore.offline import OfflineStore
from fti_demo.simulate import SimConfig, generate

from ...waits import committed_offsets, group_members, wait_for
from .conftest import FeaturePipeline


def _produce_in_background(
    pipe: FeaturePipeline, count: int, seed: int, rate: float
) -> tuple[threading.Thread, set[str], int]:
    """Starts producing; returns the thread, the event ids and how many messages it sends."""
    sim = list(generate(count, SimConfig(seed=seed)))
    thread = threading.Thread(target=pipe.produce, args=([(e.key, e.value) for e in sim], rate), daemon=True)
    thread.start()
    return thread, {e.event_id for e in sim}, len(sim)


def _acked(pipe: FeaturePipeline) -> int:
    """Offsets of the raw topic the worker group has committed, over all partitions."""
    settings = pipe.settings
    return sum(committed_offsets(settings.kafka_bootstrap_servers, settings.app_id, settings.events_topic).values())


def _wait_acked(pipe: FeaturePipeline, at_least: int) -> int:
    def check() -> int:
        for worker in pipe.workers:
            assert worker.poll() in (None, -signal.SIGKILL), pipe.logs()  # only kill() ends one
        return acked if (acked := _acked(pipe)) >= at_least else 0

    return wait_for(check, what=f"the workers to ack {at_least} offsets", timeout_s=120, poll_s=0.1, details=pipe.logs)


def _assert_exact(pipe: FeaturePipeline, ids: set[str]) -> None:
    archive = OfflineStore(pipe.settings.offline_root).read_archive()
    assert set(archive["event_id"]) == ids
    for s in pipe.parity():
        assert s.mismatches == [], (s.view, s.mismatches[:10])


# Caches bounded far below what the stream retains (12,000 events for each view, ~40 for each
# merchant): entities and keys are evicted after every flush and reloaded from Redis, and
# every merchant is bigger than the whole bound.
TINY_CACHES = {"FTI_WORKER_MAX_CACHED_EVENTS": "20", "FTI_WORKER_MAX_CACHED_ENTITIES": "50"}


@pytest.mark.parametrize("caches", [{}, TINY_CACHES], ids=["default-caches", "tiny-caches"])
def test_kill_9_mid_stream_then_restart_loses_nothing_and_counts_nothing_twice(
    feature_pipeline: Callable[..., FeaturePipeline], caches: dict[str, str]
) -> None:
    rng = random.Random(21)
    kill_after = rng.randrange(2_000, 8_000)  # of the 12,000 messages produced
    pipe = feature_pipeline(partitions=2, **caches)
    producer, ids, _ = _produce_in_background(pipe, 12_000, seed=21, rate=2500)
    worker = pipe.start_worker()
    _wait_acked(pipe, kill_after)
    pipe.kill(worker)
    producer.join()
    pipe.start_worker()
    pipe.wait_caught_up(timeout=180)
    _assert_exact(pipe, ids)
    if caches:  # the bound was in force: an entity over it was reloaded at each of its batches
        assert "more than FTI_WORKER_MAX_CACHED_EVENTS" in pipe.logs()


def test_two_workers_one_added_and_one_killed_mid_stream(feature_pipeline: Callable[..., FeaturePipeline]) -> None:
    rng = random.Random(33)
    add_after, kill_after_more = rng.randrange(1_000, 3_000), rng.randrange(500, 2_000)
    pipe = feature_pipeline(partitions=4)
    producer, ids, messages = _produce_in_background(pipe, 10_000, seed=33, rate=1000)
    first = pipe.start_worker()
    _wait_acked(pipe, add_after)
    pipe.start_worker()
    bootstrap, group = pipe.settings.kafka_bootstrap_servers, pipe.settings.app_id

    def both_assigned() -> bool:
        members = group_members(bootstrap, group)
        return len(members) == 2 and all(members)

    wait_for(
        both_assigned, what="a stable group of two workers, each with partitions", timeout_s=120, details=pipe.logs
    )
    # The two-worker group has made progress (or, on a machine fast enough, finished).
    _wait_acked(pipe, min(_acked(pipe) + kill_after_more, messages))
    pipe.kill(first)
    producer.join()
    pipe.wait_caught_up(timeout=180)
    _assert_exact(pipe, ids)
