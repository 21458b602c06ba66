"""The snapshot reads the trainer uses give exactly what a row-by-row parse of the same files gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.definitions import FeatureViewDef, LabelDef
from featurestore.offline import ArchiveRow, OfflineStore
from featurestore.pit import event_fields, labels_from_events, labels_from_fields
from featurestore.snapshots import Snapshot, SnapshotStore, _entity_columns, _flat_strings, _in_order
from featurestore.values import Scalar

T0 = 1_700_000_000_000
VIEW = FeatureViewDef.model_validate(
    {
        "name": "card",
        "version": 2,
        "source": "txn",
        "entity": "card_id",
        "ttl": "1h",
        "features": [
            {"name": "n", "agg": "count", "window": {"size": "1h"}},
            {"name": "s", "agg": "sum", "field": "a", "window": {"size": "1h"}},
        ],
    }
)
LABEL = LabelDef(name="y", event_type="outcome", entity="card_id", field="y")


def _archive_rows(rng: np.random.Generator, n: int, merchant: str) -> list[ArchiveRow]:
    rows = []
    values: list[Scalar] = [0, 1, True, False, 1.0, "1", float("nan"), "x", 10**30]
    for i in range(n):
        entities = {"card_id": f"c{rng.integers(0, 40)}", "merchant_id": f"{merchant}{rng.integers(0, 5)}"}
        if i % 13 == 0:
            del entities["merchant_id"]
        if i % 29 == 0:
            del entities["card_id"]
        vals = {"y": values[i % len(values)], "note": 'quote " and , comma ]}'}
        if i % 11 == 0:
            del vals["y"]
        # Few distinct times, so ties on event time are ordered by event id.
        t = T0 + int(rng.integers(0, 50)) * 1000
        rows.append(
            ArchiveRow(
                f"e{rng.integers(0, 10**6):07d}-{i}", "outcome", t, entities, vals, "t", 1, "", -1, i % 7 == 0, 0
            )
        )
    return rows


# Plain entity values are read straight from the JSON text; escaped ones (\u00e9) are decoded.
@pytest.fixture(params=["m", "m\u00e9"], ids=["plain", "escaped"])
def snapshot(tmp_path: Path, request: pytest.FixtureRequest) -> Snapshot:
    rng = np.random.default_rng(3)
    store = OfflineStore(str(tmp_path))
    rows = _archive_rows(rng, 900, request.param)
    # Several files (days and batches), so the reads see more than one chunk.
    store.write_archive(rows[:400])
    store.write_archive(rows[400:])
    n = 500
    features = pa.table(
        {
            "entity_key": [f"c{k}" for k in rng.integers(0, 40, size=n)],
            "event_id": [f"f{i:04d}" for i in rng.permutation(n)],
            "event_time_ms": T0 + rng.integers(0, 30, size=n) * 1000,
            "late": rng.random(n) < 0.1,
            "ingest_ns": np.zeros(n, dtype=np.int64),
            "n": rng.integers(0, 9, size=n).astype("float64"),
            "s": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        },
        schema=OfflineStore.schema_for_features(VIEW.feature_names),
    )
    store.write_table(f"features/{VIEW.name}/v{VIEW.version}/date=all", features)
    return SnapshotStore(str(tmp_path)).create(views=[VIEW])


def _file(snap: Snapshot, tmp_path: Path, kind: str) -> pd.DataFrame:
    (f,) = [f for f in snap.files if f.kind == kind]
    return pq.read_table(tmp_path / "snapshots" / snap.id / f.path).to_pandas()


def test_events_equal_a_row_by_row_parse(snapshot: Snapshot, tmp_path: Path) -> None:
    raw = _file(snapshot, tmp_path, "events").sort_values(["event_time_ms", "event_id"], kind="stable")
    expected = pd.DataFrame(
        {
            "event_id": raw["event_id"].astype(str).to_numpy(),
            "event_type": raw["event_type"].astype(str).to_numpy(),
            "event_time": pd.to_datetime(raw["event_time_ms"].to_numpy(), unit="ms", utc=True).as_unit("ms"),
            "entities": [json.loads(x) for x in raw["entities_json"]],
            "values": [json.loads(x) for x in raw["values_json"]],
            "late": raw["late"].astype(bool).to_numpy(),
        }
    )
    got = snapshot.events("outcome")
    assert len(got) == 900
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    for column in ("entities", "values"):  # == says True == 1 == 1.0; repr tells the types apart
        assert list(map(repr, got[column])) == list(map(repr, expected[column]))
    assert got["entities"][0] is not got["entities"][1]  # one dict per row, as json.loads gives
    assert list(snapshot.events("absent").columns) == list(expected.columns)


def test_archive_equals_the_offline_store_read_of_the_same_type(snapshot: Snapshot, tmp_path: Path) -> None:
    # The trainer evaluates windows from these rows: they are the offline store's, frozen.
    expected = OfflineStore(str(tmp_path)).read_archive(["outcome"])
    pd.testing.assert_frame_equal(snapshot.archive("outcome"), expected, check_exact=True)
    assert snapshot.archive("absent").empty and not [f for f in snapshot.files if f.kind == "features"]


def test_event_fields_equal_the_keys_of_events(snapshot: Snapshot) -> None:
    kinds, fields = ["card_id", "merchant_id", "absent_kind"], ["y", "note"]
    expected = event_fields(snapshot.events("outcome"), kinds, fields)
    got = snapshot.event_fields("outcome", kinds, fields)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    labels_a = labels_from_events(snapshot.events("outcome"), LABEL, ["card_id", "merchant_id"], "regression")
    labels_b = labels_from_fields(got, LABEL, ["card_id", "merchant_id"], "regression")
    pd.testing.assert_frame_equal(labels_a, labels_b, check_exact=True)
    assert 0 < len(labels_a) < 900


def test_json_that_is_not_one_object_per_row_is_read_row_by_row(tmp_path: Path) -> None:
    texts = ['{"card_id": "a"}', "[1, 2]", '"s"', "3", '{"card_id": "b"}, {"card_id": "c"}']
    n = len(texts) - 1
    table = pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_type": ["outcome"] * n,
            "event_time_ms": [T0 + i for i in range(n)],
            "entities_json": texts[:n],
            "values_json": ['{"y": 1}'] * n,
            "source": ["t"] * n,
            "schema_version": [1] * n,
            "msg_key": [""] * n,
            "watermark_ms": [-1] * n,
            "late": [False] * n,
            "ingest_ns": [0] * n,
        },
        schema=OfflineStore.archive_schema(),
    )
    OfflineStore(str(tmp_path / "a")).write_table("archive/event_type=outcome/date=all", table)
    snap = SnapshotStore(str(tmp_path / "a")).create(views=[])
    assert snap.events("outcome")["entities"].tolist() == [{"card_id": "a"}, [1, 2], "s", 3]
    pd.testing.assert_frame_equal(
        snap.event_fields("outcome", ["card_id"], []), event_fields(snap.events("outcome"), ["card_id"], [])
    )
    # Two objects in one row would shift every later row in a joined parse: it must fail as json.loads does.
    shifted = table.set_column(3, "entities_json", pa.array(texts[1:]))
    OfflineStore(str(tmp_path / "b")).write_table("archive/event_type=outcome/date=all", shifted)
    with pytest.raises(json.JSONDecodeError):
        SnapshotStore(str(tmp_path / "b")).create(views=[]).events("outcome")


def test_rows_out_of_order_are_sorted_as_the_reads_promise() -> None:
    rng = np.random.default_rng(9)
    n = 3000
    table = pa.table(
        {
            "k": [f"k{i}" for i in rng.integers(0, 30, size=n)],
            "t": rng.integers(0, 20, size=n),
            "id": [f"e{i}" for i in rng.integers(0, 50, size=n)],  # full-key ties too
            "row": np.arange(n),
        }
    )
    keys = ["k", "t", "id"]
    expected = table.sort_by([(k, "ascending") for k in keys])
    assert _in_order(table, keys).equals(expected)
    assert _in_order(expected, keys) is expected  # already in order: no sort, no copy
    # Out of order only on the last key of one pair of neighbours: still caught.
    k, t, ids = (expected[c].to_pylist() for c in keys)
    i = next(i for i in range(n - 1) if (k[i], t[i]) == (k[i + 1], t[i + 1]) and ids[i] < ids[i + 1])
    swapped = expected.take([*range(i), i + 1, i, *range(i + 2, n)])
    assert _in_order(swapped, keys).equals(expected)


@pytest.mark.parametrize(
    ("texts", "fast"),
    [
        (['{"card_id": "a", "m": "x"}', "{}", '{"m": "card_id"}', '{"card_id": ""}'], True),
        (['{"card_id": "a", "card_id": "b"}', "{}"], False),  # json.loads keeps the last
        (['{"card_id":"a"}', "{}"], False),  # other separators
        (['{"card_id": "a\\"b"}', "{}"], False),  # an escape
        (['{"card_id": 7}', "{}"], False),  # not a string
        (['{"card_id": "a"}', '{"n": {"card_id": "z"}}'], False),  # nested
    ],
)
def test_entity_keys_read_from_the_text_only_when_that_equals_json_loads(texts: list[str], fast: bool) -> None:
    column = pa.chunked_array([pa.array(texts)])
    flat = _flat_strings(column.combine_chunks(), ["card_id", "m"])
    assert (flat is not None) == fast
    got = _entity_columns(column, ["card_id", "m"])
    rows = [json.loads(t) for t in texts]
    for key in ("card_id", "m"):
        pd.testing.assert_series_equal(got[key], pd.Series([r.get(key) for r in rows]))
