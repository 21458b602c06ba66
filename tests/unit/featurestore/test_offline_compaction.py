"""Offline compaction: one file per partition, reads unchanged, readers safe while it runs."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from feature_stream.cli import features
from featurestore import offline
from featurestore.offline import ArchiveRow, FeatureRow, OfflineStore
from fti_core.errors import UnavailableError

DAY = 86_400_000
FEATURES = ["n", "s"]


def _feature(entity: str, event: str, t: int, n: float, s: float | None, ingest: int) -> FeatureRow:
    return FeatureRow(entity, event, t, {"n": n, "s": s}, False, ingest)


def _archive(event: str, t: int, ingest: int) -> ArchiveRow:
    return ArchiveRow(event, "txn", t, {"card_id": "c1"}, {"amount": 1.5}, "test", 1, "c1", t - 1, False, ingest)


def _fill(store: OfflineStore) -> None:
    # Three flushes; an out-of-order event rewrote row e1 (newer ingest), a replay repeated e2.
    store.write_features(
        "v", 1, FEATURES, [_feature("c1", "e1", 1000, 1.0, 2.5, 10), _feature("c2", "e2", 2000, 1.0, None, 10)]
    )
    store.write_features(
        "v", 1, FEATURES, [_feature("c1", "e1", 1000, 2.0, 3.0, 20), _feature("c1", "e3", DAY + 5, 1.0, -0.0, 20)]
    )
    store.write_features("v", 1, FEATURES, [_feature("c2", "e2", 2000, 1.0, None, 30)])
    store.write_archive([_archive("e1", 1000, 10), _archive("e2", 2000, 10)])
    store.write_archive([_archive("e2", 2000, 20), _archive("e3", DAY + 5, 20)])


def _reads(store: OfflineStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    return store.read_features("v", 1, FEATURES), store.read_archive()


def test_compaction_leaves_one_file_per_partition_and_reads_unchanged(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path))
    _fill(store)
    before = _reads(store)
    parts = store.partitions()
    assert sorted(len(f) for f in parts.values()) == [1, 1, 2, 3]  # two dates per kind
    done = [store.compact(d, files) for d, files in parts.items() if len(files) > 1]
    assert {c.directory.split("/date=")[0] for c in done} == {"features/v/v1", "archive/event_type=txn"}
    assert [c.rows_after for c in sorted(done, key=lambda c: c.directory)] == [2, 2]  # e1,e2 / e1(new),e2(new)
    assert all(len(f) == 1 for f in store.partitions().values())
    after = _reads(store)
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])
    assert after[0].set_index("event_id").loc["e1", "n"] == 2.0  # the rewrite, not the first version


def test_readers_during_compactions_always_see_every_row(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path))
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read_loop() -> None:
        reader = OfflineStore(str(tmp_path))
        while not stop.is_set():
            try:
                seen.append(len(reader.read_features("v", 1, FEATURES)))
            except BaseException as exc:
                errors.append(exc)

    rows = [_feature(f"c{i % 7}", f"e{i}", 1000 + i, float(i), float(i) / 3, i) for i in range(400)]
    for i in range(0, 400, 10):
        store.write_features("v", 1, FEATURES, rows[i : i + 10])
    want = len(store.read_features("v", 1, FEATURES))
    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for _ in range(20):  # compact, then split into new files again, repeatedly
            for d, files in store.partitions().items():
                store.compact(d, files)
            store.write_features("v", 1, FEATURES, rows[:10])  # replays: same rows, newer files
    finally:
        stop.set()
        reader.join()
    assert not errors, errors[0]
    assert seen and set(seen) == {want}


def test_compact_command_merges_partitions_with_enough_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = OfflineStore(str(tmp_path))
    _fill(store)
    monkeypatch.setenv("FTI_OFFLINE_STORE_URI", str(tmp_path))
    result = CliRunner().invoke(features, ["compact", "--min-files", "3"])
    assert result.exit_code == 0, result.output
    assert '"partitions": 1' in result.output and '"files_before": 3' in result.output
    assert sorted(len(f) for f in store.partitions().values()) == [1, 1, 1, 2]  # only the 3-file one merged


def test_clean_tmp_removes_only_files_a_crashed_writer_left_long_ago(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path))
    _fill(store)
    tmp = tmp_path / "_tmp"
    old, fresh = tmp / "part-old.parquet", tmp / "part-fresh.parquet"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    before = _reads(store)
    assert store.clean_tmp(older_than_s=3600) == 1
    assert not old.exists() and fresh.exists()
    pd.testing.assert_frame_equal(before[0], _reads(store)[0])


def test_a_read_whose_files_keep_vanishing_fails_clearly_once_its_patience_is_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = OfflineStore(str(tmp_path))
    _fill(store)
    monkeypatch.setattr(offline, "_READ_PATIENCE_S", 0.05)
    listed: list[int] = []

    def vanishing(path: str, *args: object, **kwargs: object) -> dict[str, object]:
        listed.append(1)
        raise FileNotFoundError(path)

    monkeypatch.setattr(store.fs, "find", vanishing)
    with pytest.raises(UnavailableError, match=r"kept vanishing while listed \(\d+ listings in 0.05 s\)"):
        store.read_features("v", 1, FEATURES)
    assert len(listed) >= 2  # listed again, after a wait, before giving up
