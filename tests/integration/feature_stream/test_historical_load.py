"""Four weeks of history through a 4-partition topic, re-keyed views, a worker started late.

The raw topic is keyed by rider; both views are keyed by other entities (driver, zone), so
their events cross Kafka again, and the partitions drain at different speeds: a driver's
events reach the re-keyed side days out of order. None of that is lateness, and the online
store must equal the archive's recomputation at the same read times, with no backfill, also
after a `kill -9` during the catch-up, a re-send of old events, a future-dated event and the
same event id under two message keys.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
from confluent_kafka import Consumer

from feature_stream.codec import DLQ_REASON_HEADER
from featurestore.offline import OfflineStore
from featurestore.values import to_value
from fti.v1 import events_pb2

from ...waits import wait_for
from .conftest import FeaturePipeline

DAY = 86_400_000
DEFS = """
views:
  - name: driver_activity
    version: 1
    source: trip
    entity: driver_id
    allowed_lateness: 2m
    ttl: 1d
    features:
      - {name: trips_1h, agg: count, window: {kind: hopping, size: 1h, step: 5m}}
      - {name: fare_sum_1h, agg: sum, field: fare, window: {kind: hopping, size: 1h, step: 5m}}
      - {name: fare_mean_1d, agg: mean, field: fare, window: {size: 1d}}
      - {name: zones_1d, agg: distinct_count, field: zone_id, window: {kind: hopping, size: 1d, step: 1h}}
      - {name: last_fare, agg: last, field: fare, window: {size: 1d}}
  - name: zone_activity
    version: 1
    source: trip
    entity: zone_id
    allowed_lateness: 2m
    ttl: 1d
    features:
      - {name: trips_10m, agg: count, window: {kind: hopping, size: 10m, step: 1m}}
      - {name: fare_min_1h, agg: min, field: fare, window: {size: 1h}}
      - {name: fare_max_1h, agg: max, field: fare, window: {kind: hopping, size: 1h, step: 10m}}
"""
EVENTS = 9_000
START_MS = 1_790_000_000_000  # history: four weeks ending well before now


def _skewed(rng: random.Random, prefix: str, n: int) -> str:
    return f"{prefix}{min(int(rng.paretovariate(1.1)) - 1, n - 1):03d}"  # a few keys hold most events


def _trip(event_id: str, t: int, rider: str, driver: str, zone: str, fare: float) -> tuple[bytes, bytes]:
    ev = events_pb2.Event(
        event_id=event_id,
        event_type="trip",
        entities={"rider_id": rider, "driver_id": driver, "zone_id": zone},
        values={"fare": to_value(fare), "zone_id": to_value(zone)},
        schema_version=1,
        source="history",
    )
    ev.event_time.FromMilliseconds(t)
    return rider.encode(), ev.SerializeToString()


def _history(seed: int, count: int = EVENTS) -> Iterator[tuple[bytes, bytes]]:
    """Trips over 28 days in time order per rider (a little jitter within the allowed lateness)."""
    rng = random.Random(seed)
    times = sorted(START_MS + rng.randrange(28 * DAY) for _ in range(count))
    for i, t in enumerate(times):
        jitter = -rng.randrange(60_000) if rng.random() < 0.05 else 0
        yield _trip(
            f"trip-{seed}-{i:06d}", t + jitter, _skewed(rng, "r", 400), _skewed(rng, "d", 60),
            _skewed(rng, "z", 12), round(rng.uniform(3, 80), 2),
        )  # fmt: skip


def _pipeline(feature_pipeline: Callable[..., FeaturePipeline], tmp_path: Path) -> FeaturePipeline:
    defs = tmp_path / "trips.yaml"
    defs.write_text(DEFS)
    # Batches far smaller than the backlog, as weeks of real history are: one 10,000-event batch
    # would take all 9,000 trips at once, in time order, and no view would see any disorder.
    return feature_pipeline(partitions=4, definitions=defs, FTI_WORKER_BATCH_SIZE="500")


def _archived(pipe: FeaturePipeline) -> int:
    store = OfflineStore(pipe.settings.offline_root)
    return len(store.read_archive()) if store.archive_event_types() else 0


def _assert_exact(pipe: FeaturePipeline) -> None:
    for s in pipe.parity():
        assert s.mismatches == [], (s.view, dict(s.by_cause), s.mismatches[:10])
        assert s.entities > 5 and s.probes >= 5 * s.entities


def _cross_partition_disorder_ms(pipe: FeaturePipeline) -> int:
    """How far, at most, a driver's events were ingested behind a later one of the same driver."""
    df = OfflineStore(pipe.settings.offline_root).read_archive()
    df = df.assign(driver=[e["driver_id"] for e in df["entities"]])
    worst = 0
    for _, g in df.sort_values(["ingest_ns", "event_time_ms"]).groupby("driver"):
        t = g["event_time_ms"].to_numpy()
        if len(t) > 1:
            worst = max(worst, int((np.maximum.accumulate(t)[:-1] - t[1:]).max()))
    return worst


def test_four_weeks_of_backlog_with_rekeyed_views_resends_future_and_duplicate_ids(
    feature_pipeline: Callable[..., FeaturePipeline], tmp_path: Path
) -> None:
    pipe = _pipeline(feature_pipeline, tmp_path)
    history = list(_history(seed=41))
    pipe.produce(history)
    pipe.start_worker()  # started late: the whole backlog waits for it
    pipe.wait_caught_up(timeout=300)
    assert _archived(pipe) == EVENTS
    disorder = _cross_partition_disorder_ms(pipe)
    print(f"\nhistorical load: {EVENTS} trips over 28 days; re-keyed disorder up to {disorder / DAY:.1f} days")
    assert disorder > 3_600_000  # beyond the hour of slack the earlier engine kept: this is what broke it
    _assert_exact(pipe)  # with no backfill

    # Re-send a stretch of old events (same ids and keys), a future-dated event, and one id under two keys.
    rng = random.Random(7)
    resent = rng.sample(history, 200)
    future = _trip("from-the-future", int(time.time() * 1000) + 2 * DAY, "r001", "d001", "z001", 50.0)
    twin_key, twin = _trip("twin", START_MS + 27 * DAY, "r002", "d002", "z002", 10.0)
    pipe.produce([*resent, future, (twin_key, twin), (b"r-other-key", twin)])
    pipe.wait_caught_up(timeout=120)
    archive = OfflineStore(pipe.settings.offline_root).read_archive()
    assert len(archive) == EVENTS + 1 and "from-the-future" not in set(archive["event_id"])
    assert _dead_letter_reasons(pipe) == ["DEAD_LETTER_REASON_FUTURE_EVENT_TIME"]
    _assert_exact(pipe)


def _dead_letter_reasons(pipe: FeaturePipeline, expected: int = 1) -> list[str]:
    consumer = Consumer(
        {"bootstrap.servers": pipe.settings.kafka_bootstrap_servers, "group.id": f"{pipe.settings.dlq_topic}-r",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    consumer.subscribe([pipe.settings.dlq_topic])
    out: list[str] = []

    def step() -> bool:
        for msg in consumer.consume(10, timeout=0.5):
            if msg.error() is None:
                out.append(bytes(dict(msg.headers() or [])[DLQ_REASON_HEADER]).decode())
        return len(out) >= expected

    try:
        wait_for(step, what=f"{expected} dead letter(s)", poll_s=0)
    finally:
        consumer.close()
    return out


@pytest.mark.parametrize("seed", [5])
def test_kill_9_during_the_catch_up_of_four_weeks_then_restart_is_exact(
    feature_pipeline: Callable[..., FeaturePipeline], tmp_path: Path, seed: int
) -> None:
    pipe = _pipeline(feature_pipeline, tmp_path)
    count = 4 * EVENTS
    pipe.produce(_history(seed, count))
    # Small batches make the catch-up last several flushes, so the kill lands inside it.
    pipe.env["FTI_WORKER_BATCH_SIZE"] = "100"
    worker = pipe.start_worker()
    # The kill point is seeded: once this many events are archived, mid catch-up.
    kill_at = random.Random(seed).randrange(count // 5, count // 2)
    wait_for(
        lambda: _archived(pipe) >= kill_at or worker.poll() is not None,
        what=f"{kill_at} archived events",
        timeout_s=180,
        details=pipe.logs,
    )
    assert worker.poll() is None, pipe.logs()
    pipe.kill(worker)
    killed_with = _archived(pipe)
    assert killed_with < count, "the worker finished before the kill point; nothing was interrupted"
    pipe.start_worker()
    pipe.wait_caught_up(timeout=300)
    assert _archived(pipe) == count
    print(f"\nkill -9 after {killed_with} of {count} archived events")
    _assert_exact(pipe)


def test_resending_events_older_than_the_dedup_retention_changes_nothing(
    feature_pipeline: Callable[..., FeaturePipeline], tmp_path: Path
) -> None:
    defs = tmp_path / "trips.yaml"
    defs.write_text(DEFS)
    # Ids are remembered for one second (wall clock) and one second of each key's event time.
    pipe = feature_pipeline(partitions=4, definitions=defs, FTI_WORKER_DEDUP_RETENTION_MS="1000")
    history = list(_history(seed=3, count=3_000))
    pipe.produce(history)
    pipe.start_worker()
    pipe.wait_caught_up(timeout=180)
    _assert_exact(pipe)
    before = OfflineStore(pipe.settings.offline_root).read_archive()
    resent = random.Random(11).sample(history, 300)
    claims = redis.Redis.from_url(pipe.settings.redis_url.get_secret_value())
    first = events_pb2.Event.FromString(resent[0][1]).event_id
    claim = f"{pipe.settings.state_key_prefix}:id:trip:{first}"
    wait_for(lambda: not claims.exists(claim), what="the worker to forget the ids it will be sent again")
    pipe.produce(resent)
    pipe.wait_caught_up(timeout=120)
    store = OfflineStore(pipe.settings.offline_root)
    archived = sum(pq.read_metadata(f).num_rows for f in store.archive_files("trip"))
    # Forgotten (all but a key's last second of event time), so taken for new events and archived again...
    assert 3_000 + 250 <= archived <= 3_000 + 300
    after = store.read_archive()
    # ... but the first copy is the one every reader keeps, and no online value moved.
    assert after[["event_id", "ingest_ns"]].equals(before[["event_id", "ingest_ns"]])
    _assert_exact(pipe)
