"""The Python SDK over what the real worker wrote (real Kafka, Redis and offline store): training rows from
a snapshot equal the trainer's, "as served" sees only what had been ingested, and online reads now equal
the historical read at that same time."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from featurestore.definitions import load_definitions
from featurestore.sdk import FeatureStatus, FeatureStore
from featurestore.snapshots import SnapshotStore
from fti.v1 import events_pb2
from fti_demo.simulate import SimConfig, generate
from trainer.dataset import build_training_set

from .conftest import FeaturePipeline

COUNTS = ["card_activity__txn_count_10m", "merchant_activity__txn_count_1h"]


def test_sdk_reads_what_the_worker_wrote(feature_pipeline: Callable[..., FeaturePipeline]) -> None:
    pipe = feature_pipeline(partitions=2)
    sim = list(generate(4000, SimConfig(seed=5)))  # stamped up to now: ingested after their time
    pipe.produce((e.key, e.value) for e in sim)
    pipe.start_worker()
    pipe.wait_caught_up(timeout=240)
    snap = SnapshotStore(pipe.settings.offline_root).create()
    defs = load_definitions(pipe.settings.definitions_path)
    fs = FeatureStore.from_settings(pipe.settings)

    # Training rows from the snapshot: the trainer's matrix, bit for bit.
    ts = build_training_set(snap, defs, "fraud")
    frame = fs.get_historical_features("is_fraud", "fraud", snapshot=snap.id)
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(ts.y) > 100
    assert frame[ts.columns].to_numpy(dtype=np.float64).tobytes() == ts.x.tobytes()
    assert (frame["card_activity__txn_count_10m"] > 0).any()

    # History loaded after the fact: at a label's time the server had ingested only part of it (none of
    # it for the labels stamped before the load), so "as served" counts a subset.
    served = fs.get_historical_features("is_fraud", "fraud", snapshot=snap.id, as_of="served")
    assert isinstance(served, pd.DataFrame)
    assert (served[COUNTS] <= frame[COUNTS]).all().all()
    assert (served[COUNTS] < frame[COUNTS]).any().all()

    # Online now == historical at the same time over the live archive (the worker has caught up).
    txns = [events_pb2.Event.FromString(e.value) for e in sim if e.event_type == "transaction"]
    pairs = list(dict.fromkeys((ev.entities["card_id"], ev.entities["merchant_id"]) for ev in txns))[-60:]
    rows = [{"card_id": c, "merchant_id": m} for c, m in pairs] + [{"card_id": "nobody", "merchant_id": "nowhere"}]
    online = fs.get_online_features("fraud", rows)
    at = pd.DataFrame(rows).assign(event_timestamp=online.read_at_ms)
    hist = fs.get_historical_features(at, "fraud")
    assert isinstance(hist, pd.DataFrame)
    for i, row in enumerate(online.rows):
        for column, got in row.items():
            expected = hist.loc[i, column]
            assert got.status in (FeatureStatus.OK, FeatureStatus.MISSING), (i, column, got)
            if got.status is FeatureStatus.OK:
                assert got.value == expected, (i, column, got, expected)
            else:
                assert np.isnan(expected), (i, column, got, expected)
    assert all(f.age_ms >= 0 for r in online.rows[:-1] for f in r.values())
    assert {(f.status, f.age_ms) for f in [online.rows[-1]["card_activity__amount_last"]]} == {
        (FeatureStatus.MISSING, -1)
    }
    assert online.rows[-1]["card_activity__txn_count_10m"].value == 0
    assert sum(f.status is FeatureStatus.OK and f.value != 0 for r in online.rows for f in r.values()) > 0
