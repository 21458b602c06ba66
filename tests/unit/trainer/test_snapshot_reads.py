"""The snapshot reads the trainer uses give exactly what was archived, from typed and JSON-layout files alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from featurestore.archive_layout import LEGACY_ARCHIVE_SCHEMA
from featurestore.definitions import FeatureViewDef, LabelDef
from featurestore.offline import ARCHIVE_COLUMNS, ArchiveRow, OfflineStore
from featurestore.pit import event_fields, labels_from_events, labels_from_fields
from featurestore.snapshots import Snapshot, SnapshotFile, SnapshotStore, _entity_columns, _flat_strings, _in_order
from featurestore.values import Scalar
from fti_core.errors import IntegrityError
from tests.legacy_archive import legacy_archive_table, write_legacy_archive

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


def _legacy_snapshot(root: str, views: list[FeatureViewDef], tables: dict[str, pa.Table] | None = None) -> Snapshot:
    """A snapshot as the release before typed archives made it: event files in the JSON layout
    (the archive's rows, or `tables` as given)."""
    store, snaps = OfflineStore(root), SnapshotStore(root)
    if tables is None:
        tables = {}
        for t in store.archive_event_types():
            df = store.read_archive([t])
            rows = [ArchiveRow(*r) for r in df[list(ARCHIVE_COLUMNS)].itertuples(index=False)]
            tables[t] = legacy_archive_table(rows)
    snap_id = f"snap-legacy-{len(snaps.list())}"
    files = []
    for t, table in tables.items():
        rows_n, sha = snaps._write(snap_id, f"events/{t}.parquet", table)
        files.append(SnapshotFile("events", t, 0, f"events/{t}.parquet", rows_n, sha))
    snaps._publish(Snapshot(snap_id, 0, tuple(files), tuple(views), 0, 0, _store=store))
    return snaps.get(snap_id)


WRITTEN: dict[str, list[ArchiveRow]] = {}


# Plain entity values are read straight from the JSON text; escaped ones (\u00e9) are decoded.
# Snapshots made now hold typed event files; those made before, JSON text ("legacy").
@pytest.fixture(
    params=[("m", "typed"), ("m\u00e9", "typed"), ("m", "legacy"), ("m\u00e9", "legacy")],
    ids=["plain", "escaped", "plain-legacy", "escaped-legacy"],
)
def snapshot(tmp_path: Path, request: pytest.FixtureRequest) -> Snapshot:
    rng = np.random.default_rng(3)
    store = OfflineStore(str(tmp_path))
    merchant, layout = request.param
    rows = WRITTEN[str(tmp_path)] = _archive_rows(rng, 900, merchant)
    # Several files (days and batches), so the reads see more than one chunk; the archive
    # itself holds both layouts, as one does until it is compacted.
    write_legacy_archive(store, rows[:400])
    store.write_archive(rows[400:])
    if layout == "legacy":
        return _legacy_snapshot(str(tmp_path), [VIEW])
    return SnapshotStore(str(tmp_path)).create(views=[VIEW])


def _written(tmp_path: Path) -> pd.DataFrame:
    """The rows the fixture wrote, in (time, id) order, in the form of `Snapshot.events`."""
    rows = sorted(WRITTEN[str(tmp_path)], key=lambda r: (r.event_time_ms, r.event_id))
    return pd.DataFrame(
        {
            "event_id": [r.event_id for r in rows],
            "event_type": [r.event_type for r in rows],
            "event_time": pd.to_datetime([r.event_time_ms for r in rows], unit="ms", utc=True).as_unit("ms"),
            "entities": [dict(r.entities) for r in rows],
            "values": [dict(r.values) for r in rows],
            "late": np.array([r.late for r in rows], dtype=bool),
        }
    )


def _same_frames(got: pd.DataFrame, expected: pd.DataFrame, dict_columns: tuple[str, ...]) -> None:
    """Equal, with these columns compared by repr (== says True == 1 == 1.0 and nan != nan),
    a dict's keys in any order (the JSON layout sorted them, the typed one keeps them as written)."""
    pd.testing.assert_frame_equal(got.drop(columns=list(dict_columns)), expected.drop(columns=list(dict_columns)))
    for column in dict_columns:
        assert list(map(_repr, got[column])) == list(map(_repr, expected[column])), column


def _repr(x: object) -> str:
    return repr(sorted(x.items())) if isinstance(x, dict) else repr(x)


def test_events_are_exactly_what_was_archived(snapshot: Snapshot, tmp_path: Path) -> None:
    got = snapshot.events("outcome")
    assert len(got) == 900
    _same_frames(got, _written(tmp_path), ("entities", "values"))
    assert {type(v["y"]) for v in got["values"] if "y" in v} == {int, bool, float, str}
    assert 10**30 in [v.get("y") for v in got["values"]]  # beyond int64, exact
    assert got["entities"][0] is not got["entities"][1]  # one dict per row, as json.loads gives
    assert list(snapshot.events("absent").columns) == list(got.columns)


def test_archive_equals_the_offline_store_read_of_the_same_type(snapshot: Snapshot, tmp_path: Path) -> None:
    # The trainer evaluates windows from these rows: they are the offline store's, frozen.
    expected = OfflineStore(str(tmp_path)).read_archive(["outcome"])
    assert list(expected.columns) == list(ARCHIVE_COLUMNS) and len(expected) == 900
    _same_frames(snapshot.archive("outcome"), expected, ("entities", "values"))
    assert snapshot.archive("absent").empty and not [f for f in snapshot.files if f.kind == "features"]
    assert list(snapshot.archive("absent").columns) == list(ARCHIVE_COLUMNS)


def test_event_fields_equal_the_keys_of_events(snapshot: Snapshot) -> None:
    kinds, fields = ["card_id", "merchant_id", "absent_kind"], ["y", "note"]
    expected = event_fields(snapshot.events("outcome"), kinds, fields)
    got = snapshot.event_fields("outcome", kinds, fields)
    _same_frames(got, expected, ("values.y",))
    labels_a = labels_from_events(snapshot.events("outcome"), LABEL, ["card_id", "merchant_id"], "regression")
    labels_b = labels_from_fields(got, LABEL, ["card_id", "merchant_id"], "regression")
    pd.testing.assert_frame_equal(labels_a, labels_b, check_exact=True)
    assert 0 < len(labels_a) < 900


def _legacy_table(texts: list[str]) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_type": ["outcome"] * n,
            "event_time_ms": [T0 + i for i in range(n)],
            "entities_json": texts,
            "values_json": ['{"y": 1}'] * n,
            "source": ["t"] * n,
            "schema_version": [1] * n,
            "msg_key": [""] * n,
            "watermark_ms": [-1] * n,
            "late": [False] * n,
            "ingest_ns": [0] * n,
        },
        schema=LEGACY_ARCHIVE_SCHEMA,
    )


def test_json_that_is_not_one_object_per_row_is_read_row_by_row(tmp_path: Path) -> None:
    texts = ['{"card_id": "a"}', "[1, 2]", '"s"', "3", '{"card_id": "b"}, {"card_id": "c"}']
    snap = _legacy_snapshot(str(tmp_path / "a"), [], {"outcome": _legacy_table(texts[:-1])})
    assert snap.events("outcome")["entities"].tolist() == [{"card_id": "a"}, [1, 2], "s", 3]
    pd.testing.assert_frame_equal(
        snap.event_fields("outcome", ["card_id"], []), event_fields(snap.events("outcome"), ["card_id"], [])
    )
    # Two objects in one row would shift every later row in a joined parse: it must fail as json.loads does.
    with pytest.raises(json.JSONDecodeError):
        _legacy_snapshot(str(tmp_path / "b"), [], {"outcome": _legacy_table(texts[1:])}).events("outcome")


def test_an_archive_row_that_is_not_an_object_fails_loudly_when_read(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path))
    store.write_table("archive/event_type=outcome/date=all", _legacy_table(['{"card_id": "a"}', "[1, 2]"]))
    with pytest.raises(IntegrityError, match="row 1 of the JSON layout is not an object"):
        store.read_archive()
    with pytest.raises(IntegrityError, match="row 1 of the JSON layout is not an object"):
        SnapshotStore(str(tmp_path)).create(views=[])


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
