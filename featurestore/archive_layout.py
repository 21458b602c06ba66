"""The raw archive's parquet layout: typed Arrow columns, and the earlier JSON-text layout read alike.

Layout 2 (written since this release; `fti.archive_layout` = "2" in the file's schema metadata):
  entities   map<string, string>                  entity kind -> key
  values     map<string, struct<f64: double, i64: int64, str: string, bool: bool, bigint: string>>
             field -> its value in the one child of its type (the others null); `bigint` holds
             the decimal text of an int beyond int64, a null struct a field without a value.
Every value reads back as the Python value written, of the same type. Layout 1 (no metadata)
held `entities_json` and `values_json`, `json.dumps(dict, sort_keys=True)` per row: readers
convert such files to layout 2 on read (`typed_archive`), and a compaction rewrites them.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.values import INT64_RANGE, Scalar
from fti_core.errors import IntegrityError, InvalidArgumentError

__all__ = [
    "ARCHIVE_LAYOUT",
    "ARCHIVE_SCHEMA",
    "ENTITIES_TYPE",
    "LAYOUT_KEY",
    "LEGACY_ARCHIVE_SCHEMA",
    "VALUES_TYPE",
    "VALUE_TYPE",
    "archive_layout",
    "entities_array",
    "json_rows",
    "map_dicts",
    "typed_archive",
    "value_column",
    "values_array",
]

log = logging.getLogger("featurestore.offline")

ARCHIVE_LAYOUT = 2
LAYOUT_KEY = b"fti.archive_layout"

VALUE_TYPE = pa.struct(
    [
        pa.field("f64", pa.float64()),
        pa.field("i64", pa.int64()),
        pa.field("str", pa.string()),
        pa.field("bool", pa.bool_()),
        pa.field("bigint", pa.string()),
    ]
)
ENTITIES_TYPE = pa.map_(pa.string(), pa.string())
VALUES_TYPE = pa.map_(pa.string(), VALUE_TYPE)


def _schema(entities: pa.DataType, values: pa.DataType, names: tuple[str, str]) -> pa.Schema:
    return pa.schema(
        [
            ("event_id", pa.string()),
            ("event_type", pa.string()),
            ("event_time_ms", pa.int64()),
            (names[0], entities),
            (names[1], values),
            ("source", pa.string()),
            ("schema_version", pa.int32()),
            ("msg_key", pa.string()),
            ("watermark_ms", pa.int64()),
            ("late", pa.bool_()),
            ("ingest_ns", pa.int64()),
        ]
    )


ARCHIVE_SCHEMA = _schema(ENTITIES_TYPE, VALUES_TYPE, ("entities", "values")).with_metadata(
    {LAYOUT_KEY: str(ARCHIVE_LAYOUT).encode()}
)
LEGACY_ARCHIVE_SCHEMA = _schema(pa.string(), pa.string(), ("entities_json", "values_json"))


def archive_layout(schema: pa.Schema) -> int:
    """1 for the JSON-text layout, else the version its metadata names."""
    if "entities_json" in schema.names:
        return 1
    return int((schema.metadata or {}).get(LAYOUT_KEY, b"2"))


def json_rows(texts: pa.Array | pa.ChunkedArray) -> list[Any]:
    """`json.loads` of every row, done as one parse of the rows joined into a JSON array.

    One call instead of one per row is ~3.5x faster. The writer stores `json.dumps(dict)` per row
    and the file's SHA-256 was checked, so the joined parse is trusted only when it yields one
    object per row; anything else (a null, a non-object, a count mismatch) goes row by row, which
    fails or succeeds exactly as a per-row parse does.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = texts.cast(pa.large_string())
    if len(texts) == 0:
        return []
    if texts.null_count == 0:
        one = pa.LargeListArray.from_arrays(pa.array([0, len(texts)], pa.int64()), texts)
        joined = pc.binary_join(one, pa.scalar(",", pa.large_string()))[0].as_buffer()
        try:
            rows = json.loads(b"[" + (joined.to_pybytes() if joined is not None else b"") + b"]")
        except ValueError:
            rows = None
        if isinstance(rows, list) and len(rows) == len(texts) and set(map(type, rows)) == {dict}:
            return rows
    return [json.loads(x) for x in texts.to_pylist()]


def _flatten(maps: Sequence[Mapping[str, Any]]) -> tuple[pa.Array, list[str], list[Any]]:
    offsets: list[int] = [0]
    keys: list[str] = []
    items: list[Any] = []
    for m in maps:
        keys.extend(m)
        items.extend(m.values())
        offsets.append(len(keys))
    return pa.array(offsets, pa.int32()), keys, items


def entities_array(maps: Sequence[Mapping[str, str]]) -> pa.Array:
    offsets, keys, items = _flatten(maps)
    try:
        return pa.MapArray.from_arrays(offsets, pa.array(keys, pa.string()), pa.array(items, pa.string()))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidArgumentError(f"archive entities must map strings to strings: {exc}") from exc


_PLAIN = {float, int, str, bool, type(None)}


def _plain(x: Any) -> Any:
    if type(x) in _PLAIN:
        return x
    for t in (bool, int, float, str):  # bool before int: it is one
        if isinstance(x, t):
            return t(x)
    if hasattr(x, "item") and type(x.item()) in _PLAIN:  # numpy scalars
        return x.item()
    raise InvalidArgumentError(f"archive values of unsupported types: [{type(x).__name__!r}]")


def values_array(maps: Sequence[Mapping[str, Scalar | None]]) -> pa.Array:
    """The values of each row as one map entry per field, each value in the child of its type."""
    offsets, keys, items = _flatten(maps)
    kinds = [type(x) for x in items]
    if set(kinds) - _PLAIN:  # subclasses (an IntEnum, numpy scalars) as their plain type, or refused
        items = [_plain(x) for x in items]
        kinds = [type(x) for x in items]
    lo, hi = INT64_RANGE
    fits = [k is int and lo <= x <= hi for x, k in zip(items, kinds, strict=True)]
    children = [
        pa.array([x if k is float else None for x, k in zip(items, kinds, strict=True)], pa.float64()),
        pa.array([x if f else None for x, f in zip(items, fits, strict=True)], pa.int64()),
        pa.array([x if k is str else None for x, k in zip(items, kinds, strict=True)], pa.string()),
        pa.array([x if k is bool else None for x, k in zip(items, kinds, strict=True)], pa.bool_()),
        pa.array(
            [str(x) if k is int and not f else None for x, k, f in zip(items, kinds, fits, strict=True)], pa.string()
        ),
    ]
    missing = pa.array([x is None for x in items], pa.bool_())
    struct = pa.StructArray.from_arrays(children, fields=list(VALUE_TYPE), mask=missing)
    return pa.MapArray.from_arrays(offsets, pa.array(keys, pa.string()), struct)


def _python_values(items: pa.StructArray) -> list[Any]:
    """Each struct entry as the Python value of its one non-null child (None when none)."""
    out = np.full(len(items), None, dtype=object)
    # flatten() gives each child with the struct's own nulls and slice applied.
    for name, child in zip(VALUE_TYPE.names, items.flatten(), strict=True):
        if child.null_count == len(child):
            continue
        valid = child.is_valid().to_numpy(zero_copy_only=False)
        got = child.drop_null().to_pylist()
        out[valid] = np.fromiter(map(int, got) if name == "bigint" else got, dtype=object, count=len(got))
    result: list[Any] = out.tolist()
    return result


def map_dicts(column: pa.Array | pa.ChunkedArray) -> list[dict[str, Any]]:
    """One dict per row of a map column (entities or values), values as the Python values written."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return []
    bounds = arr.offsets.to_numpy()
    lo, hi = int(bounds[0]), int(bounds[-1])
    keys = arr.keys.slice(lo, hi - lo).to_pylist()
    child = arr.items.slice(lo, hi - lo)
    items = _python_values(child) if pa.types.is_struct(child.type) else child.to_pylist()
    at = (bounds - lo).tolist()
    return [dict(zip(keys[a:b], items[a:b], strict=True)) for a, b in itertools.pairwise(at)]


def value_column(column: pa.Array | pa.ChunkedArray, key: str) -> list[Any]:
    """`row.get(key)` of a map column per row, without building the rows' dicts."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    got = pc.map_lookup(arr, pa.scalar(key, pa.string()), "last")
    if pa.types.is_struct(got.type):
        return _python_values(got)
    result: list[Any] = got.to_pylist()
    return result


_warned: list[str] = []


def _warn_once(where: str) -> None:
    if not _warned:
        _warned.append(where)
        log.warning(
            "archive files of the earlier JSON-text layout found (%s, ...): read alike until the next "
            "release; `fti features compact` rewrites them typed",
            where,
        )


def typed_archive(table: pa.Table, where: str = "archive file") -> pa.Table:
    """`table` in layout 2: unchanged when it is, converted (JSON decoded once) when it is layout 1."""
    if archive_layout(table.schema) >= 2:
        return table.cast(ARCHIVE_SCHEMA) if table.schema != ARCHIVE_SCHEMA else table
    _warn_once(where)
    ents, vals = json_rows(table["entities_json"]), json_rows(table["values_json"])
    bad = next(
        (i for i, (e, v) in enumerate(zip(ents, vals, strict=True)) if type(e) is not dict or type(v) is not dict), None
    )
    if bad is not None:
        raise IntegrityError(f"{where}: row {bad} of the JSON layout is not an object ({ents[bad]!r}, {vals[bad]!r})")
    cols = {n: table[n] for n in ARCHIVE_SCHEMA.names if n not in ("entities", "values")}
    cols["entities"] = entities_array(ents)
    cols["values"] = values_array(vals)
    return pa.table({n: cols[n] for n in ARCHIVE_SCHEMA.names}, schema=ARCHIVE_SCHEMA)
