"""The typed archive layout: every value back exactly, old JSON-layout files read alike, and
compaction rewriting them typed."""

from __future__ import annotations

import enum
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from feature_stream.cli import features
from featurestore.archive_layout import ARCHIVE_LAYOUT, ENTITIES_TYPE, LAYOUT_KEY, VALUES_TYPE, map_dicts, values_array
from featurestore.offline import ARCHIVE_COLUMNS, ArchiveRow, OfflineStore
from featurestore.values import Scalar
from fti_core.errors import InvalidArgumentError
from tests.legacy_archive import write_legacy_archive

DAY = 86_400_000


class Flag(enum.IntEnum):
    ON = 1


ODD = 'é"\\\n\x00☃𝄞,]}'
EDGE: list[Scalar | None] = [
    0,
    -1,
    2**53 + 1,  # not a float
    2**63 - 1,
    -(2**63),
    2**63,  # beyond int64
    -(10**30),
    0.1,
    -0.0,
    1e300,
    math.nan,
    math.inf,
    1.0,
    True,
    False,
    "",
    ODD,
    "1",
    None,
]


def _rows(n: int) -> list[ArchiveRow]:
    rows = []
    for i in range(n):
        values = {"x": EDGE[i % len(EDGE)], f"k{ODD}": EDGE[(i * 7) % len(EDGE)]}
        if i % 5 == 0:
            values = {}
        entities = {"card_id": f"c{i % 9}{ODD}", "route": f"a|b\\{i % 4}"}
        t = i * DAY // 7  # several days, so several files
        rows.append(ArchiveRow(f"e{i:04d}", "txn", t, entities, values, "test", 1, f"c{i % 9}", t - 5, i % 6 == 0, i))
    return rows


def _canon(x: object) -> str:
    """repr of a value with its type; a dict's keys in any order."""
    return repr(sorted((k, repr(v)) for k, v in x.items())) if isinstance(x, dict) else repr(x)


def _expected(rows: list[ArchiveRow]) -> pd.DataFrame:
    rows = sorted(rows, key=lambda r: (r.event_time_ms, r.event_id))
    return pd.DataFrame({c: [getattr(r, c) for r in rows] for c in ARCHIVE_COLUMNS})


def _assert_archive(got: pd.DataFrame, rows: list[ArchiveRow]) -> None:
    want = _expected(rows)
    assert list(got.columns) == list(ARCHIVE_COLUMNS)
    for c in ARCHIVE_COLUMNS:
        assert list(map(_canon, got[c])) == list(map(_canon, want[c])), c


def test_every_value_reads_back_exactly_with_its_type(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path))
    rows = _rows(200)
    store.write_archive(rows)
    _assert_archive(store.read_archive(), rows)
    for f in store.archive_files("txn"):
        schema = pq.read_schema(f)
        assert schema.metadata[LAYOUT_KEY] == str(ARCHIVE_LAYOUT).encode()
        assert schema.field("entities").type == ENTITIES_TYPE and schema.field("values").type == VALUES_TYPE
        assert "values_json" not in schema.names


def test_files_of_the_json_layout_read_as_typed_ones_beside_them(tmp_path: Path) -> None:
    rows = _rows(200)
    store = OfflineStore(str(tmp_path))
    write_legacy_archive(store, rows[:120])
    store.write_archive(rows[100:])  # 20 rows archived again (a replay), in the other layout
    _assert_archive(store.read_archive(), rows)


def test_compact_rewrites_json_layout_files_typed_and_reads_stay_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = OfflineStore(str(tmp_path))
    rows = _rows(200)
    write_legacy_archive(store, rows)
    before = store.read_archive()
    parts = store.partitions()
    assert len(parts) > 20 and all(len(files) == 1 for files in parts.values())
    assert store.legacy_archive(store.archive_files("txn"))
    monkeypatch.setenv("FTI_OFFLINE_STORE_URI", str(tmp_path))
    result = CliRunner().invoke(features, ["compact"])  # one file each, but of the old layout
    assert result.exit_code == 0, result.output
    assert f'"partitions": {len(parts)}' in result.output, result.output
    files = store.archive_files("txn")
    assert len(files) == len(parts) and not store.legacy_archive(files)
    pd.testing.assert_frame_equal(store.read_archive().drop(columns=["values"]), before.drop(columns=["values"]))
    _assert_archive(store.read_archive(), rows)
    again = CliRunner().invoke(features, ["compact"])
    assert '"partitions": 0' in again.output, again.output


def test_a_value_of_another_type_is_refused_loudly_and_subclasses_stored_as_plain() -> None:
    with pytest.raises(InvalidArgumentError, match="unsupported types: \\['list'\\]"):
        values_array([{"x": 1}, {"y": [1, 2]}])  # type: ignore[dict-item]
    got = map_dicts(values_array([{"a": Flag.ON, "b": np.float32(0.5), "c": np.int64(2**40)}]))
    assert got == [{"a": 1, "b": 0.5, "c": 2**40}]
    assert [type(x) for x in got[0].values()] == [int, float, int]
