"""The trainer's training set through the SDK: bit-equal to what the trainer built before the move, and to
what the SDK and `fti features training-set` give, on the demo's events."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from featurestore.definitions import load_definitions
from featurestore.offline import ArchiveRow, OfflineStore
from featurestore.sdk import FeatureStore
from featurestore.sdk.export import export_training_set
from featurestore.snapshots import Snapshot, SnapshotStore
from featurestore.values import from_value_map
from fti.v1 import events_pb2
from fti_demo.simulate import SimConfig, generate
from trainer.dataset import build_training_set

DEFS = Path(__file__).resolve().parents[3] / "examples/fraud/features.yaml"
END_MS = 1_760_000_000_000

# SHA-256 of x, y and times of `build_training_set(snapshot, defs, "fraud")` on these events, computed
# by the trainer as it was before the join moved to featurestore (commit 0170764). A change to the demo
# simulator or definitions changes them too: recompute them with that commit, not with this code.
BEFORE = {
    False: "0dc1009ff77176e469e17f0f815c267ee79ac1b993b993fb69d2cde601295fbc",
    True: "186c8a6d4d2ccb42d0b1a667d15f1c4967b75f3b12d37e23f3957c3beefe916a",
}


def _demo_snapshot(root: str, count: int) -> Snapshot:
    """Seeded demo events, each archived 0-90 s after its event time (so "as served" hides some)."""
    seen: dict[str, events_pb2.Event] = {}
    for sim in generate(count, SimConfig(seed=11, end_ms=END_MS)):
        ev = events_pb2.Event.FromString(sim.value)
        seen.setdefault(ev.event_id, ev)
    rows = []
    for i, ev in enumerate(seen.values()):
        t = ev.event_time.ToMilliseconds()
        values = {k: v for k, v in from_value_map(ev.values).items() if v is not None}
        ingest = (t + (i * 7919) % 90_000) * 1_000_000
        rows.append(ArchiveRow(ev.event_id, ev.event_type, t, dict(ev.entities), values, ev.source,
                               ev.schema_version, "", -1, False, ingest))  # fmt: skip
    OfflineStore(root).write_archive(rows)
    return SnapshotStore(root).create(views=load_definitions(DEFS).views)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Snapshot]:
    root = str(tmp_path_factory.mktemp("demo") / "offline")
    return root, _demo_snapshot(root, 6000)


@pytest.mark.parametrize("served", [False, True])
def test_training_matrices_are_bit_equal_to_before_and_to_the_sdk(
    demo: tuple[str, Snapshot], served: bool, tmp_path: Path
) -> None:
    root, snap = demo
    defs = load_definitions(DEFS)
    ts = build_training_set(snap, defs, "fraud", as_served=served)
    assert hashlib.sha256(ts.x.tobytes() + ts.y.tobytes() + ts.times.tobytes()).hexdigest() == BEFORE[served]

    fs = FeatureStore(defs, root)
    as_of = "served" if served else "event_time"
    frame = fs.get_historical_features("is_fraud", "fraud", snapshot=snap.id, as_of=as_of)
    assert isinstance(frame, pd.DataFrame)
    assert frame.columns[-len(ts.columns) :].tolist() == ts.columns
    assert frame[ts.columns].to_numpy(dtype=np.float64).tobytes() == ts.x.tobytes()
    assert frame["is_fraud"].to_numpy().tobytes() == ts.y.tobytes()
    assert frame["event_timestamp"].astype("int64").to_numpy().tobytes() == ts.times.tobytes()

    written = export_training_set(fs, "fraud", tmp_path / "fraud.parquet", as_of=as_of, snapshot=snap.id)
    exported = pq.read_table(written.path).to_pandas()
    assert exported[ts.columns].to_numpy(dtype=np.float64).tobytes() == ts.x.tobytes()
    assert written.source == snap.id


def test_the_old_trainer_pit_module_still_imports_with_a_warning() -> None:
    import importlib
    import sys

    import featurestore.pit

    sys.modules.pop("trainer.pit", None)
    with pytest.warns(DeprecationWarning, match="featurestore.pit"):
        old = importlib.import_module("trainer.pit")
    assert old.join_point_in_time is featurestore.pit.join_point_in_time
