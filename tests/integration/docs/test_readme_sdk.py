"""The README's SDK example runs as written, against demo events in an offline store and their tiles in Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from feature_stream.backfill import tile_writes
from featurestore.accepted import accepted_events
from featurestore.definitions import load_definitions
from featurestore.offline import ArchiveRow, OfflineStore
from featurestore.online import RedisOnlineStore
from featurestore.snapshots import SnapshotStore
from featurestore.values import from_value_map
from fti.v1 import events_pb2
from fti_demo.simulate import SimConfig, generate

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()
DEFS = ROOT / "examples/fraud/features.yaml"


def _archive(root: str) -> None:
    seen: dict[str, events_pb2.Event] = {}
    for sim in generate(3000, SimConfig(seed=3, end_ms=1_764_330_000_000)):  # 2025-11-28 11:40 UTC
        ev = events_pb2.Event.FromString(sim.value)
        seen.setdefault(ev.event_id, ev)
    rows = [
        ArchiveRow(ev.event_id, ev.event_type, ev.event_time.ToMilliseconds(), dict(ev.entities),
                   {k: v for k, v in from_value_map(ev.values).items() if v is not None}, ev.source,
                   ev.schema_version, "", -1, False, (ev.event_time.ToMilliseconds() + 500) * 1_000_000)
        for ev in seen.values()
    ]  # fmt: skip
    OfflineStore(root).write_archive(rows)
    SnapshotStore(root).create()


def test_sdk_example_runs_as_written(
    tmp_path: Path, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    match = re.search(r"<!-- example: sdk -->\n```python\n(.*?)```", README, re.S)
    assert match is not None, "README has no SDK example"
    root = str(tmp_path / "offline")
    _archive(root)
    defs = load_definitions(DEFS)
    online = RedisOnlineStore.from_url(redis_url, redis_prefix)
    online.register_views(defs.views)
    archive = OfflineStore(root).read_archive(["transaction"])
    for view in defs.views:
        online.write_tiles(tile_writes(view, accepted_events(view, archive), 0))
    for name, value in {"FTI_OFFLINE_STORE_URI": root, "FTI_DEFINITIONS_PATH": str(DEFS),
                        "FTI_REDIS_URL": redis_url, "FTI_REDIS_PREFIX": redis_prefix}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FTI_CONFIG", raising=False)

    scope: dict[str, object] = {}
    exec(compile(match.group(1).replace("2026-11-28", "2025-11-28"), "README.md#sdk", "exec"), scope)

    train, served, now = scope["train"], scope["served"], scope["now"]
    assert isinstance(train, pd.DataFrame) and isinstance(served, pa.Table) and isinstance(now, pd.DataFrame)
    assert len(train) == served.num_rows > 0 and "is_fraud" in train.columns
    assert (train["card_activity__txn_count_10m"] > 0).any()
    # The demo's events are a year old: every value read now comes from entities older than the 1d TTL.
    assert set(now.filter(like="__status").iloc[0]) == {"stale"}
