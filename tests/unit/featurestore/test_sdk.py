"""The Python SDK over small hand-made archives: point-in-time reads, both "as of" modes, composite keys,
labels and model feature sets, snapshots, and online reads with their statuses and ages."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_stream.backfill import tile_writes
from featurestore.accepted import accepted_events
from featurestore.catalogue import Catalogue, DefinitionChangedError
from featurestore.definitions import DefinitionError, Definitions, parse_definitions
from featurestore.keys import join_key
from featurestore.offline import ArchiveRow, OfflineStore
from featurestore.online import InMemoryOnlineStore, OnlineRow
from featurestore.pit import PointInTimeError
from featurestore.sdk import FeatureStatus, FeatureStore
from featurestore.sdk.export import METADATA_KEY, export_training_set
from featurestore.snapshots import SnapshotStore
from fti_core.errors import InvalidArgumentError

T0 = 1_700_000_000_000  # a whole hour
MIN = 60_000
HOUR = 60 * MIN


def _defs() -> Definitions:
    hop = {"kind": "hopping", "size": "10m", "step": "1m"}
    return parse_definitions(
        {
            "views": [
                {
                    "name": "card",
                    "version": 1,
                    "source": "txn",
                    "entity": "card_id",
                    "ttl": "1h",
                    "features": [
                        {"name": "n_10m", "agg": "count", "window": hop},
                        {"name": "amount_10m", "agg": "sum", "field": "amount", "window": hop},
                        {"name": "stamp", "agg": "last", "field": "t", "window": {"size": "1h"}},
                    ],
                },
                {
                    "name": "route",
                    "version": 2,
                    "source": "ride",
                    "entity": "route",
                    "ttl": "1d",
                    "features": [
                        {"name": "rides_1h", "agg": "count", "window": {"size": "1h"}},
                        {"name": "last_zone", "agg": "last_string", "field": "zone", "window": {"size": "1h"}},
                    ],
                    "derived": [{"name": "rides_half", "expr": "rides_1h / 2"}],
                },
            ],
            "labels": [{"name": "is_fraud", "event_type": "label", "entity": "card_id", "field": "y"}],
            "models": [{"name": "fraud", "label": "is_fraud", "views": ["card:1"]}],
        }
    )


def _row(
    i: int, event_type: str, t: int, entities: dict[str, str], values: dict[str, Any], ingest_ms: int
) -> ArchiveRow:
    return ArchiveRow(
        f"{event_type}-{i}", event_type, t, entities, values, "test", 1, "", -1, False, ingest_ms * 1_000_000
    )


def _txn(i: int, card: str, t: int, amount: float, ingest_ms: int | None = None) -> ArchiveRow:
    return _row(
        i, "txn", t, {"card_id": card}, {"amount": amount, "t": float(t)}, t if ingest_ms is None else ingest_ms
    )


def _store(tmp_path: Path, rows: list[ArchiveRow], online: InMemoryOnlineStore | None = None) -> FeatureStore:
    offline = OfflineStore(str(tmp_path / "offline"))
    offline.write_archive(rows)
    return FeatureStore(_defs(), str(tmp_path / "offline"), online)


def test_as_of_event_time_and_as_served_differ_when_ingestion_was_late(tmp_path: Path) -> None:
    fs = _store(tmp_path, [_txn(0, "c1", T0 + MIN, 5.0), _txn(1, "c1", T0 + 2 * MIN, 7.0, ingest_ms=T0 + 30 * MIN)])
    rows = pd.DataFrame({"card_id": ["c1", "c1", "c1"], "event_timestamp": [T0 + 3 * MIN, T0 + 31 * MIN, T0 + 5 * MIN]})
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], unit="ms", utc=True)
    feats = ["card:1:n_10m", "card:1:amount_10m", "card:stamp"]

    by_time = fs.get_historical_features(rows, feats)
    served = fs.get_historical_features(rows, feats, as_of="served")

    assert isinstance(by_time, pd.DataFrame) and isinstance(served, pd.DataFrame)
    # At 3 min both events count by event time; the server had seen only the first (the second came at 30 min).
    assert by_time.loc[0, ["card__n_10m", "card__amount_10m", "card__stamp"]].tolist() == [2, 12.0, T0 + 2 * MIN]
    assert served.loc[0, ["card__n_10m", "card__amount_10m", "card__stamp"]].tolist() == [1, 5.0, T0 + MIN]
    # At 31 min both see both; the 10-minute windows are empty by then, the hour's last value is not.
    assert by_time.loc[1].tolist()[2:] == served.loc[1].tolist()[2:] == [0, 0.0, T0 + 2 * MIN]
    # The caller's rows come back as given, in their order, with the features beside them.
    assert list(by_time.columns) == ["card_id", "event_timestamp", "card__n_10m", "card__amount_10m", "card__stamp"]
    assert by_time["event_timestamp"].tolist() == rows["event_timestamp"].tolist()


def test_never_a_value_later_than_the_row_and_counts_match_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    times = T0 + rng.integers(0, 2 * HOUR, size=400)
    cards = rng.choice(["a", "b", "c", "d"], size=400)
    ingest = times + rng.integers(0, 20 * MIN, size=400)
    fs = _store(
        tmp_path,
        [_txn(i, c, int(t), 1.0, int(g)) for i, (c, t, g) in enumerate(zip(cards, times, ingest, strict=True))],
    )
    at = T0 + rng.integers(0, 2 * HOUR + 20 * MIN, size=300)
    rows = pd.DataFrame({"card_id": rng.choice(["a", "b", "c", "d", "zz"], size=300), "event_timestamp": at})
    for as_of in ("event_time", "served"):
        got = fs.get_historical_features(rows, ["card:n_10m", "card:stamp"], as_of=as_of)
        assert isinstance(got, pd.DataFrame)
        stamp = got["card__stamp"].to_numpy()
        assert (stamp[~np.isnan(stamp)] <= at[~np.isnan(stamp)]).all()
        for i, (card, t) in enumerate(zip(rows["card_id"], at, strict=True)):
            seen = (cards == card) & (times <= t) & (times >= t // MIN * MIN - 9 * MIN)
            if as_of == "served":
                seen &= ingest <= t
            assert got.loc[i, "card__n_10m"] == seen.sum()


def test_composite_keys_as_part_columns_or_the_joined_key(tmp_path: Path) -> None:
    rides = [
        _row(0, "ride", T0 + MIN, {"route": join_key(["A|1", "B"])}, {}, T0 + MIN),
        _row(1, "ride", T0 + 2 * MIN, {"route": join_key(["A|1", "B"])}, {}, T0 + 2 * MIN),
        _row(2, "ride", T0 + 2 * MIN, {"route": join_key(["A", "1|B"])}, {}, T0 + 2 * MIN),
    ]
    fs = _store(tmp_path, rides)
    by_parts = pd.DataFrame({"origin": ["A|1", "A"], "dest": ["B", "1|B"], "event_timestamp": [T0 + 5 * MIN] * 2})
    got = fs.get_historical_features(by_parts, ["route:2:rides_1h"], entity_columns={"route": ["origin", "dest"]})
    assert isinstance(got, pd.DataFrame)
    assert got["route__rides_1h"].tolist() == [2, 1]  # the escaped `|` keeps the two routes apart
    joined = pd.DataFrame({"route": [join_key(["A|1", "B"])], "event_timestamp": [T0 + 5 * MIN]})
    got = fs.get_historical_features(joined, ["route:rides_1h"])
    assert isinstance(got, pd.DataFrame) and got["route__rides_1h"].tolist() == [2]
    with pytest.raises(PointInTimeError, match="no column \\['dest'\\] of the composite entity 'route'"):
        fs.get_historical_features(
            by_parts.drop(columns="dest"), ["route:rides_1h"], entity_columns={"route": ["origin", "dest"]}
        )


def test_labels_and_a_model_feature_set_as_the_trainer_orders_them(tmp_path: Path) -> None:
    rows = [_txn(i, "c1", T0 + i * MIN, float(i)) for i in range(5)]
    rows += [_row(0, "label", T0 + 4 * MIN, {"card_id": "c1"}, {"y": 1}, T0 + 4 * MIN)]
    rows += [_row(1, "label", T0 + 2 * MIN, {"card_id": "c1"}, {"y": 0}, T0 + 2 * MIN)]
    fs = _store(tmp_path, rows)
    got = fs.get_historical_features("is_fraud", "fraud", to="arrow")
    assert isinstance(got, pa.Table)
    assert got.column_names == [
        "event_id", "event_timestamp", "card_id", "is_fraud", "card__n_10m", "card__amount_10m", "card__stamp"
    ]  # fmt: skip
    frame = got.to_pandas()
    assert frame["event_id"].tolist() == ["label-1", "label-0"]  # in label-time order
    assert frame["is_fraud"].tolist() == [0.0, 1.0]
    assert frame["card__n_10m"].tolist() == [3, 5] and frame["card__amount_10m"].tolist() == [3.0, 10.0]


def test_a_snapshot_is_read_as_frozen_and_the_live_archive_as_it_is_now(tmp_path: Path) -> None:
    fs = _store(tmp_path, [_txn(0, "c1", T0 + MIN, 5.0)])
    snap = SnapshotStore(str(tmp_path / "offline")).create()
    fs.offline.write_archive([_txn(1, "c1", T0 + 2 * MIN, 7.0)])
    rows = pd.DataFrame({"card_id": ["c1"], "event_timestamp": [T0 + 3 * MIN]})
    live = fs.get_historical_features(rows, ["card:n_10m"])
    frozen = fs.get_historical_features(rows, ["card:n_10m"], snapshot=snap.id)
    latest = fs.get_historical_features(rows, ["card:n_10m"], snapshot="latest")
    assert isinstance(live, pd.DataFrame) and isinstance(frozen, pd.DataFrame) and isinstance(latest, pd.DataFrame)
    assert (live["card__n_10m"][0], frozen["card__n_10m"][0], latest["card__n_10m"][0]) == (2, 1, 1)


def test_training_set_export_is_the_label_frame_written_whole(tmp_path: Path) -> None:
    rows = [_txn(i, "c1", T0 + i * MIN, float(i)) for i in range(3)]
    rows += [_row(0, "label", T0 + 2 * MIN, {"card_id": "c1"}, {"y": 1}, T0 + 2 * MIN)]
    fs = _store(tmp_path, rows)
    out = tmp_path / "sets" / "fraud.parquet"
    written = export_training_set(fs, "fraud", out, snapshot="live")
    table = pq.read_table(out)
    assert written.rows == table.num_rows == 1
    assert table.to_pandas().equals(fs.get_historical_features("is_fraud", "fraud"))
    assert b'"source": "live"' in (table.schema.metadata or {})[METADATA_KEY]
    assert [p.name for p in out.parent.iterdir()] == ["fraud.parquet"]  # no temporary file left


def test_refs_and_rows_are_checked_with_clear_errors(tmp_path: Path) -> None:
    fs = _store(tmp_path, [_txn(0, "c1", T0, 1.0)])
    rows = pd.DataFrame({"card_id": ["c1"], "event_timestamp": [T0]})
    with pytest.raises(DefinitionError, match="view card:1 has no feature 'nope'"):
        fs.get_historical_features(rows, ["card:1:nope"])
    with pytest.raises(DefinitionError, match="'card' is not a model"):
        fs.get_historical_features(rows, "card")
    with pytest.raises(PointInTimeError, match="no timestamp column 'ts'"):
        fs.get_historical_features(rows, ["card:n_10m"], timestamp_column="ts")
    with pytest.raises(PointInTimeError, match="no 'route' column"):
        fs.get_historical_features(rows, ["route:rides_1h"])
    with pytest.raises(InvalidArgumentError, match="as_of must be 'event_time' or 'served'"):
        fs.get_historical_features(rows, ["card:n_10m"], as_of="now")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="to must be 'pandas' or 'arrow'"):
        fs.get_historical_features(rows, ["card:n_10m"], to="polars")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="has no online store"):
        fs.get_online_features(["card:n_10m"], [{"card_id": "c1"}])


def _online(tmp_path: Path, now: int) -> FeatureStore:
    defs = _defs()
    card = defs.view("card", 1)
    events = [
        _txn(0, "fresh", now - 2 * MIN, 4.0),
        _txn(1, "fresh", now - MIN, 6.0),
        _txn(2, "old", now - 3 * HOUR, 9.0),
    ]
    online = InMemoryOnlineStore()
    online.register_views(defs.views)
    offline = OfflineStore(str(tmp_path / "offline"))
    offline.write_archive(events)
    online.write_tiles(tile_writes(card, accepted_events(card, offline.read_archive(["txn"])), 0))
    return FeatureStore(defs, str(tmp_path / "offline"), online)


def _read_at_mid_hour(monkeypatch: pytest.MonkeyPatch) -> int:
    """The SDK's clock stopped half an hour into the last full hour. Read at the real clock, a
    `last` over a 1h tumbling window read in the first minutes of an hour found the events of
    a minute before in the previous window, and the test failed there."""
    import featurestore.sdk.store as store

    now = int(time.time() * 1000) // HOUR * HOUR - HOUR // 2
    monkeypatch.setattr(store, "time", SimpleNamespace(time=lambda: now / 1000))
    return now


def test_online_features_ok_missing_and_stale_with_ages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = _read_at_mid_hour(monkeypatch)
    fs = _online(tmp_path, now)
    got = fs.get_online_features(
        ["card:n_10m", "card:amount_10m", "card:stamp"],
        [{"card_id": "fresh"}, {"card_id": "old"}, {"card_id": "never"}],
    )
    fresh, old, never = got.rows
    age = got.read_at_ms - (now - MIN)
    assert fresh["card__n_10m"].value == 2 and fresh["card__amount_10m"].value == 10.0
    assert fresh["card__stamp"].value == now - MIN
    assert {f.status for f in fresh.values()} == {FeatureStatus.OK} and {f.age_ms for f in fresh.values()} == {age}
    # Its newest event is older than the view's 1h TTL: stale, its windows read now (empty) as the server scores them.
    assert [(f.status, f.value) for f in old.values()] == [(FeatureStatus.STALE, v) for v in (0, 0.0, None)]
    assert old["card__n_10m"].age_ms == got.read_at_ms - (now - 3 * HOUR)
    # Nothing stored: a count is a real 0, a `last` has no value.
    assert (never["card__n_10m"].status, never["card__n_10m"].value, never["card__n_10m"].age_ms) == (
        FeatureStatus.OK,
        0,
        -1,
    )
    assert (never["card__stamp"].status, never["card__stamp"].value) == (FeatureStatus.MISSING, None)
    frame = got.to_pandas()
    assert frame["card__stamp__status"].tolist() == ["ok", "stale", "missing"]
    assert frame["card__n_10m__age_ms"].tolist() == [age, got.read_at_ms - (now - 3 * HOUR), -1]


def test_online_features_of_an_earlier_layout_row_past_its_ttl_are_stale(tmp_path: Path) -> None:
    online = InMemoryOnlineStore()
    now = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    online.write([OnlineRow("route", 2, "r1", now - 2 * 86_400_000, {"rides_1h": 3.0}, ttl_ms=86_400_000)])
    fs = FeatureStore(_defs(), str(tmp_path / "offline"), online)
    got = fs.get_online_features(["route:rides_1h"], pd.DataFrame({"route": ["r1"]}))
    assert (got.rows[0]["route__rides_1h"].status, got.rows[0]["route__rides_1h"].value) == (FeatureStatus.STALE, None)
    with pytest.raises(Exception, match="no 'card_id' key"):
        fs.get_online_features(["card:n_10m"], [{"route": "r1"}])


def test_training_set_command_writes_the_models_rows(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from feature_stream.cli import features

    rows = [_txn(i, "c1", T0 + i * MIN, float(i)) for i in range(3)]
    rows += [_row(0, "label", T0 + 2 * MIN, {"card_id": "c1"}, {"y": 1}, T0 + 2 * MIN + 1)]
    fs = _store(tmp_path, rows)
    defs = tmp_path / "features.yaml"
    defs.write_text(json.dumps(_defs().model_dump(mode="json")))  # JSON is YAML
    env = {"FTI_OFFLINE_STORE_URI": str(tmp_path / "offline"), "FTI_DEFINITIONS_PATH": str(defs)}
    out = tmp_path / "fraud.parquet"
    args = ["training-set", "--model", "fraud", "--out", str(out), "--snapshot", "live", "--as-of", "served"]
    result = CliRunner().invoke(features, args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 1
    table = pq.read_table(out).to_pandas()
    # As served: the label's own time saw the three transactions (ingested at their times).
    assert table.equals(fs.get_historical_features("is_fraud", "fraud", as_of="served"))
    assert table["card__n_10m"].tolist() == [3]
    missing = CliRunner().invoke(features, ["training-set", "--model", "fraud", "--out", str(out)], env=env)
    assert missing.exit_code != 0 and "no snapshot" in str(missing.exception)


def test_string_and_derived_features_keep_their_types(tmp_path: Path) -> None:
    rides = [_row(i, "ride", T0 + i * MIN, {"route": "r1"}, {"zone": z}, T0 + i * MIN) for i, z in enumerate("ab")]
    fs = _store(tmp_path, rides)
    rows = pd.DataFrame({"route": ["r1", "r1", "r2"], "event_timestamp": [T0, T0 + 5 * MIN, T0 + 5 * MIN]})
    got = fs.get_historical_features(rows, ["route:rides_1h", "route:last_zone", "route:2:rides_half"])
    assert isinstance(got, pd.DataFrame)
    assert got["route__rides_1h"].dtype == np.float64 and got["route__rides_1h"].tolist() == [1.0, 2.0, 0.0]
    assert got["route__rides_half"].dtype == np.float64 and got["route__rides_half"].tolist() == [0.5, 1.0, 0.0]
    assert got["route__last_zone"].tolist()[:2] == ["a", "b"] and pd.isna(got["route__last_zone"][2])
    table = fs.get_historical_features(rows, ["route:last_zone"], to="arrow")
    assert isinstance(table, pa.Table)
    kind = table.schema.field("route__last_zone").type
    assert pa.types.is_string(kind) or pa.types.is_large_string(kind)


def test_a_view_changed_without_a_new_version_is_refused_live_and_from_a_snapshot(tmp_path: Path) -> None:
    """Training data of `card:1` must be what the worker built as `card:1`, never a quiet redefinition."""
    fs = _store(tmp_path, [_txn(0, "c1", T0 + MIN, 5.0)])
    Catalogue(str(tmp_path / "offline")).register(fs.definitions.views)  # what a worker does at start
    snap = SnapshotStore(str(tmp_path / "offline")).create()
    rows = pd.DataFrame({"card_id": ["c1"], "event_timestamp": [T0 + 3 * MIN]})
    assert fs.get_historical_features(rows, ["card:n_10m"], snapshot=snap.id)["card__n_10m"].tolist() == [1]

    doc = _defs().model_dump(mode="json")
    doc["views"][0]["features"][0]["window"] = {"kind": "tumbling", "size_ms": 600_000, "step_ms": 600_000}
    changed = FeatureStore(Definitions.model_validate(doc), str(tmp_path / "offline"))
    assert changed.definitions.views[0].content_hash() != fs.definitions.views[0].content_hash()
    for snapshot in (None, snap.id):
        with pytest.raises(DefinitionChangedError, match=r"view card:1: its definition changed"):
            changed.get_historical_features(rows, ["card:n_10m"], snapshot=snapshot)
    with pytest.raises(DefinitionChangedError):
        changed.get_historical_features("is_fraud", "fraud")
