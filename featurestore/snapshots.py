"""Snapshots: immutable, hashed copies of the offline store that the trainer reads by id.

`SnapshotStore.create()` materialises, for every archived event type, one deduplicated
parquet file (one row per (event_type, event_id): the first ingested copy), cut at `upto_ms`
when given, under `snapshots/<id>/`, with the view definitions of the catalogue. The trainer
evaluates every window at its label times from those events (`featurestore.tiles`), so
there are no per-event feature rows to copy; snapshots made before read-time windows hold
feature files too, and `Snapshot.feature_rows` still reads them. The manifest (id, files with
row counts and SHA-256, time range, view definitions) is written last and atomically, so a
snapshot either exists whole or not at all, and later writes by the worker never change it.
Event files are written in the archive's typed layout (`featurestore.archive_layout`); those
of snapshots made before it (JSON text) are read alike, never rewritten (their SHA-256 holds).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestore.archive_layout import (
    ARCHIVE_SCHEMA,
    archive_layout,
    json_rows,
    map_dicts,
    typed_archive,
    value_column,
)
from featurestore.catalogue import Catalogue
from featurestore.definitions import FeatureViewDef
from featurestore.offline import OfflineStore, archive_frame
from fti_core.errors import IntegrityError, NotFoundError

__all__ = ["Snapshot", "SnapshotFile", "SnapshotStore"]

_EVENT_COLUMNS = ["event_id", "event_type", "event_time", "entities", "values", "late"]
_EVENT_READ_COLUMNS = ["event_id", "event_type", "event_time_ms", "entities", "values", "late"]
_LEGACY = {"entities": "entities_json", "values": "values_json"}  # the JSON-text layout's names


def _utc_ms(column: pa.ChunkedArray) -> pd.DatetimeIndex:
    return pd.to_datetime(column.to_numpy(), unit="ms", utc=True).as_unit("ms")


def _pluck(rows: list[Any], key: str) -> npt.NDArray[np.object_]:
    """`row.get(key)` per decoded row as raw Python values (None when absent or not an object)."""
    if set(map(type, rows)) <= {dict}:  # the common case, with no Python-level loop
        return np.fromiter(map(dict.get, rows, repeat(key)), dtype=object, count=len(rows))
    return np.fromiter((r.get(key) if type(r) is dict else None for r in rows), dtype=object, count=len(rows))


def _entity_columns(column: pa.ChunkedArray, keys: Sequence[str]) -> dict[str, pd.Series]:
    texts = column.combine_chunks()
    flat = _flat_strings(texts, keys) if keys else {}
    if flat is not None:
        return flat
    # Typed from a list, as pandas types the same values read row by row.
    return {k: pd.Series(got.tolist()) for k, got in _json_keys(texts, keys).items()}


def _json_keys(column: pa.Array | pa.ChunkedArray, keys: Sequence[str]) -> dict[str, npt.NDArray[np.object_]]:
    """`_pluck` of each key over the decoded rows of a JSON column, decoding each distinct text once
    when texts repeat (label values such as a 0/1 target do). A sample decides, because hashing a
    column of distinct texts (entity maps) costs about what it could save."""
    if not keys:
        return {}
    texts = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    sample = texts.slice(0, 4096)
    if texts.null_count or len(pc.unique(sample)) * 2 > len(sample):
        rows = json_rows(texts)
        return {k: _pluck(rows, k) for k in keys}
    encoded = texts.dictionary_encode()
    distinct = json_rows(encoded.dictionary)
    at = encoded.indices.to_numpy()
    return {k: _pluck(distinct, k)[at] for k in keys}


# A flat object of strings with nothing to unescape: `{"k": "v", ...}` as json.dumps writes an entity map.
_TEXT = r'"[^"\\\x00-\x1f]*"'
_FLAT_OBJECT = rf"^\{{({_TEXT}: {_TEXT}(, {_TEXT}: {_TEXT})*)?\}}$"


def _flat_strings(texts: pa.Array, keys: Sequence[str]) -> dict[str, pd.Series] | None:
    """`json.loads(row).get(key)` for rows that are flat objects of plain strings, read in Arrow.

    Such a row has quotes only around keys and values, so split at quotes it is `{`, key, `: `,
    value, `, `, key, ... `}`: keys at 1 + 4j, each value two pieces on, taken as written, exactly
    as json.loads reads them. None (decode instead) when any row is of another form or names a
    key twice (json.loads would keep the last).
    """
    if texts.null_count or not pc.all(pc.match_substring_regex(texts, _FLAT_OBJECT)).as_py():
        return None
    parts = pc.split_pattern(texts, '"')
    pieces = parts.flatten()
    starts = parts.offsets.to_numpy()
    out: dict[str, pd.Series] = {}
    for key in keys:
        at = np.flatnonzero(pc.equal(pieces, key).to_numpy(zero_copy_only=False))
        row = np.searchsorted(starts, at, side="right") - 1
        is_key = (at - starts[row]) % 4 == 1  # the same text as a value is not the key
        at, row = at[is_key], row[is_key]
        if (np.diff(row) == 0).any():
            return None
        pick = np.full(len(texts), -1, dtype=np.int64)
        pick[row] = at + 2
        found = pc.take(pieces, pa.array(pick, mask=pick < 0))
        # pandas types a list of only Nones (or nothing) as object, not str.
        out[key] = found.to_pandas() if found.null_count < len(found) else pd.Series([None] * len(found))
    return out


def _rows(table: pa.Table, name: str) -> list[Any]:
    """One dict per row of `entities` or `values`, from typed maps or (earlier layout) JSON text."""
    if name in table.column_names:
        return map_dicts(table[name])
    return json_rows(table[_LEGACY[name]])


def _in_order(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """`table` sorted by `keys` (ascending, stable). Snapshot files are written in that order,
    so one vectorised pass checks it and usually saves the sort and the copy of every column."""
    cols = [table[k].combine_chunks() for k in keys]
    n = table.num_rows
    if n > 1 and not any(c.null_count for c in cols):
        ok = pc.less_equal(cols[-1].slice(0, n - 1), cols[-1].slice(1))
        for c in reversed(cols[:-1]):
            a, b = c.slice(0, n - 1), c.slice(1)
            ok = pc.or_(pc.less(a, b), pc.and_(pc.equal(a, b), ok))
        if pc.all(ok).as_py():
            return table
    return table.sort_by([(k, "ascending") for k in keys])


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    kind: str  # "features" or "events"
    name: str  # view name or event type
    version: int  # view version; 0 for events
    path: str  # relative to the snapshot folder
    rows: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("kind", "name", "version", "path", "rows", "sha256")}


@dataclass(frozen=True)
class Snapshot:
    id: str
    created_at_ms: int
    files: tuple[SnapshotFile, ...]
    views: tuple[FeatureViewDef, ...]
    min_event_time_ms: int
    max_event_time_ms: int
    _store: OfflineStore = field(repr=False, compare=False)

    def _file(self, kind: str, name: str, version: int) -> SnapshotFile | None:
        for f in self.files:
            if (f.kind, f.name, f.version) == (kind, name, version):
                return f
        return None

    def _read(self, f: SnapshotFile, columns: Sequence[str]) -> pa.Table:
        path = self._store.path("snapshots", self.id, f.path)
        with self._store.fs.open(path, "rb") as fh:
            data = fh.read()
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise IntegrityError(f"snapshot {self.id}: {f.path} does not match its recorded SHA-256")
        # The whole file is hashed, but only the columns asked for are decoded. Event files of
        # the JSON-text layout (snapshots made before typed archives) name two columns apart.
        if f.kind == "events" and archive_layout(pq.read_schema(pa.BufferReader(data))) < 2:
            columns = [_LEGACY.get(c, c) for c in columns]
        return pq.read_table(pa.BufferReader(data), columns=list(columns))

    def view(self, name: str, version: int) -> FeatureViewDef:
        for v in self.views:
            if v.name == name and v.version == version:
                return v
        raise NotFoundError(f"snapshot {self.id} has no view {name}:{version}")

    def feature_rows(self, view: str, version: int) -> pd.DataFrame:
        """entity_key, event_time (UTC ms), one float column per feature; late rows excluded."""
        vdef = self.view(view, version)
        f = self._file("features", view, version)
        if f is None:
            raise NotFoundError(f"snapshot {self.id} has no rows for view {view}:{version}")
        table = self._read(f, ["entity_key", "event_id", "event_time_ms", "late", *vdef.feature_names])
        table = table.filter(pc.invert(table["late"]))
        table = _in_order(table, ["entity_key", "event_time_ms", "event_id"])
        out = pd.DataFrame(
            {
                "entity_key": table["entity_key"].to_pandas(),
                "event_time": _utc_ms(table["event_time_ms"]),
            }
        )
        for name in vdef.feature_names:
            out[name] = table[name].to_numpy(zero_copy_only=False).astype("float64", copy=False)
        return out

    def archive(self, event_type: str) -> pd.DataFrame:
        """Archive rows of one event type as `OfflineStore.read_archive` gives them, in (time, id) order."""
        table = self._event_table(event_type, list(ARCHIVE_SCHEMA.names))
        if table is None:
            return archive_frame(ARCHIVE_SCHEMA.empty_table())
        return archive_frame(typed_archive(table, f"snapshot {self.id}: {event_type}"))

    def event_types(self) -> list[str]:
        return sorted(f.name for f in self.files if f.kind == "events")

    def _event_table(self, event_type: str, columns: Sequence[str]) -> pa.Table | None:
        f = self._file("events", event_type, 0)
        if f is None:
            return None
        table = self._read(f, columns)
        return _in_order(table, ["event_time_ms", "event_id"])

    def events(self, event_type: str) -> pd.DataFrame:
        """Raw archive rows of one event type, one per event_id, in event-time order."""
        table = self._event_table(event_type, _EVENT_READ_COLUMNS)
        if table is None:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in _EVENT_COLUMNS})
        return pd.DataFrame(
            {
                "event_id": table["event_id"].to_pandas(),
                "event_type": table["event_type"].to_pandas(),
                "event_time": _utc_ms(table["event_time_ms"]),
                "entities": _rows(table, "entities"),
                "values": _rows(table, "values"),
                "late": table["late"].to_numpy(zero_copy_only=False).astype(bool),
            }
        )

    def event_fields(self, event_type: str, entities: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
        """events() narrowed to the keys a reader needs: same rows, same order, fewer columns read.

        Columns: event_id, event_time (UTC ms), `entities.<kind>` per kind (typed as pandas types
        a list of the decoded values: strings, NaN when absent) and `values.<field>` per field (raw
        decoded values, object dtype, None when absent).
        """
        table = self._event_table(event_type, ["event_id", "event_time_ms", "entities", "values"])
        names = [f"entities.{k}" for k in entities] + [f"values.{k}" for k in values]
        if table is None:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in ["event_id", "event_time", *names]})
        out = pd.DataFrame(
            {
                "event_id": table["event_id"].to_pandas(),
                "event_time": _utc_ms(table["event_time_ms"]),
            }
        )
        if "entities" in table.column_names:  # typed maps: look the keys up, decode nothing else
            for key in entities:
                out[f"entities.{key}"] = pd.Series(value_column(table["entities"], key))
            for key in values:
                out[f"values.{key}"] = pd.Series(value_column(table["values"], key), dtype="object")
            return out
        for key, series in _entity_columns(table["entities_json"], entities).items():
            out[f"entities.{key}"] = series
        for key, got in _json_keys(table["values_json"], values).items():
            out[f"values.{key}"] = pd.Series(got, dtype="object")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at_ms": self.created_at_ms,
            "min_event_time_ms": self.min_event_time_ms,
            "max_event_time_ms": self.max_event_time_ms,
            "files": [f.to_json() for f in self.files],
            "views": [v.document() for v in self.views],
        }


class SnapshotStore:
    def __init__(self, offline_root: str) -> None:
        self._store = OfflineStore(offline_root)
        self._catalogue = Catalogue(offline_root)

    def _write(self, snap_id: str, rel: str, table: pa.Table) -> tuple[int, str]:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        path = self._store.path("snapshots", snap_id, rel)
        self._store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self._store.fs.open(path, "wb") as fh:
            fh.write(data)
        return table.num_rows, hashlib.sha256(data).hexdigest()

    def create(self, *, views: Sequence[FeatureViewDef] | None = None, upto_ms: int | None = None) -> Snapshot:
        chosen = tuple(views) if views is not None else tuple(self._catalogue.views())
        now = int(time.time() * 1000)
        stamp = datetime.fromtimestamp(now / 1000, tz=UTC).strftime("%Y%m%dT%H%M%S")
        snap_id = f"snap-{stamp}-{uuid.uuid4().hex[:8]}"
        files: list[SnapshotFile] = []
        times: list[int] = []
        for event_type in self._store.archive_event_types():
            table = self._store.read_archive_table([event_type])
            if upto_ms is not None:
                table = table.filter(pc.less_equal(table["event_time_ms"], upto_ms))
            rel = f"events/{event_type}.parquet"
            rows, sha = self._write(snap_id, rel, table)
            files.append(SnapshotFile("events", event_type, 0, rel, rows, sha))
            if table.num_rows:
                bounds = pc.min_max(table["event_time_ms"])
                times.extend([bounds["min"].as_py(), bounds["max"].as_py()])
        snap = Snapshot(
            id=snap_id,
            created_at_ms=now,
            files=tuple(files),
            views=chosen,
            min_event_time_ms=int(min(times)) if times else 0,
            max_event_time_ms=int(max(times)) if times else 0,
            _store=self._store,
        )
        self._publish(snap)
        return snap

    def _publish(self, snap: Snapshot) -> None:
        # The manifest is the commit point: written aside, then renamed into place.
        path = self._store.path("snapshots", snap.id, "manifest.json")
        tmp = path + ".tmp"
        with self._store.fs.open(tmp, "w") as fh:
            json.dump(snap.to_json(), fh, indent=1, sort_keys=True)
        self._store.fs.mv(tmp, path)

    def _load(self, path: str) -> Snapshot:
        with self._store.fs.open(path, "r") as fh:
            doc = json.load(fh)
        return Snapshot(
            id=doc["id"],
            created_at_ms=doc["created_at_ms"],
            files=tuple(SnapshotFile(**f) for f in doc["files"]),
            views=tuple(FeatureViewDef.model_validate(v) for v in doc["views"]),
            min_event_time_ms=doc["min_event_time_ms"],
            max_event_time_ms=doc["max_event_time_ms"],
            _store=self._store,
        )

    def get(self, snapshot_id: str) -> Snapshot:
        if "/" in snapshot_id or not snapshot_id:
            raise NotFoundError(f"no snapshot {snapshot_id!r}")
        path = self._store.path("snapshots", snapshot_id, "manifest.json")
        if not self._store.fs.exists(path):
            raise NotFoundError(f"no snapshot {snapshot_id!r}")
        return self._load(path)

    def list(self) -> list[Snapshot]:
        base = self._store.path("snapshots")
        if not self._store.fs.exists(base):
            return []
        snaps = [self._load(p) for p in self._store.fs.glob(f"{base}/*/manifest.json")]
        return sorted(snaps, key=lambda s: (s.created_at_ms, s.id))

    def latest(self) -> Snapshot | None:
        snaps = self.list()
        return snaps[-1] if snaps else None
