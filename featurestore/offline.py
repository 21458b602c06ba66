"""Offline store: parquet feature rows and the raw event archive, on a local path or an fsspec URI.

Layout under the root (the contract the snapshot store and backfill read):
  features/<view>/v<version>/date=<YYYY-MM-DD>/part-<uuid>.parquet
      entity_key, event_id, event_time_ms, late, ingest_ns, then one float64 column per feature
  dead_letters/date=<YYYY-MM-DD>/<topic>-<partition>-<offset>.bin
      the original bytes of a dead letter too large to send whole to the dead-letter topic
  archive/event_type=<type>/date=<YYYY-MM-DD>/part-<uuid>.parquet
      event_id, event_type, event_time_ms, entities, values, source, schema_version,
      msg_key, watermark_ms (-1: none), late, ingest_ns
      `entities` and `values` are typed Arrow maps (layout 2, named in the file's metadata; see
      `featurestore.archive_layout`). Files of the earlier JSON-text layout (`entities_json`,
      `values_json`) are read alike until `compact` rewrites them.

Files are written aside under `_tmp/` and then renamed into place, so a reader never sees a
partial file. Writers append only; a feature row that changes (an allowed out-of-order event
arrived) is written again with a newer `ingest_ns`, and readers keep the newest row per
(entity_key, event_id). Archive rows repeat only on at-least-once replay, with equal content.
"""

from __future__ import annotations

import functools
import io
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.archive_layout import (
    ARCHIVE_LAYOUT,
    ARCHIVE_SCHEMA,
    archive_layout,
    entities_array,
    map_dicts,
    typed_archive,
    values_array,
)
from featurestore.values import Scalar
from fti_core.errors import UnavailableError

__all__ = [
    "ARCHIVE_COLUMNS",
    "ArchiveRow",
    "Compaction",
    "FeatureRow",
    "OfflineStore",
    "archive_frame",
    "date_of",
    "first_ingested",
]

ARCHIVE_COLUMNS = tuple(ARCHIVE_SCHEMA.names)


@dataclass(frozen=True, slots=True)
class FeatureRow:
    entity_key: str
    event_id: str
    event_time_ms: int
    values: Mapping[str, float | None]
    late: bool
    ingest_ns: int


@dataclass(frozen=True, slots=True)
class Compaction:
    """What `OfflineStore.compact` did to one partition directory."""

    directory: str
    files: int
    rows_before: int
    rows_after: int
    path: str


class ArchiveRow(NamedTuple):
    """One archived event (one per event: a tuple, the cheapest immutable record to build)."""

    event_id: str
    event_type: str
    event_time_ms: int
    entities: Mapping[str, str]
    values: Mapping[str, Scalar]
    source: str
    schema_version: int
    msg_key: str
    watermark_ms: int  # -1 when nothing earlier was seen for the key
    late: bool
    ingest_ns: int


# A reader lists and reads again when files vanish under it (a compaction replacing them),
# waiting longer each time, for up to this long: one compaction is short, but back-to-back
# ones beat five immediate retries on a busy machine (a test's reader failed 1 run in ~40).
_READ_PATIENCE_S = 10.0
_READ_WAITS_S = (0.005, 0.25)  # the first wait between attempts, and the longest


class _Patience:
    """Attempts with a growing sleep between them, for `_READ_PATIENCE_S` at most."""

    def __init__(self) -> None:
        self.count = 0
        self._deadline = time.monotonic() + _READ_PATIENCE_S
        self._wait = _READ_WAITS_S[0]

    def another(self) -> bool:
        """Whether to try (again), after the wait that is due; counts the attempts."""
        if self.count:
            if time.monotonic() + self._wait > self._deadline:
                return False
            time.sleep(self._wait)
            self._wait = min(2 * self._wait, _READ_WAITS_S[1])
        self.count += 1
        return True

    def spent(self) -> str:
        return f"{self.count} listings in {_READ_PATIENCE_S:g} s"


def date_of(ms: int) -> str:
    return _date_of_day(ms // 86_400_000)


@functools.lru_cache(maxsize=4096)
def _date_of_day(day: int) -> str:
    # Writers call this per row; a day number is enough to key a cache of the formatted date.
    return datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")


def _feature_schema(features: Sequence[str]) -> pa.Schema:
    fields = [
        pa.field("entity_key", pa.string()),
        pa.field("event_id", pa.string()),
        pa.field("event_time_ms", pa.int64()),
        pa.field("late", pa.bool_()),
        pa.field("ingest_ns", pa.int64()),
    ]
    return pa.schema(fields + [pa.field(f, pa.float64()) for f in features])


def archive_frame(table: pa.Table) -> pd.DataFrame:
    """An archive table (layout 2) as pandas: `entities` and `values` one dict per row, each
    value the Python value written (int, float, str or bool)."""
    frame = table.drop_columns(["entities", "values"]).to_pandas()
    frame.insert(3, "entities", pd.Series(map_dicts(table["entities"]), index=frame.index, dtype=object))
    frame.insert(4, "values", pd.Series(map_dicts(table["values"]), index=frame.index, dtype=object))
    return frame


def first_ingested(table: pa.Table) -> pa.Table:
    """One row per (event_type, event_id), the first ingested copy, in (event_time_ms, event_id) order."""
    if table.num_rows == 0:
        return table
    keys = ["event_type", "event_id"]
    order = table.select([*keys, "ingest_ns"]).to_pandas().sort_values("ingest_ns", kind="stable")
    kept = order.drop_duplicates(keys, keep="first").index.to_numpy()
    return table.take(pa.array(kept)).sort_by([("event_time_ms", "ascending"), ("event_id", "ascending")])


class OfflineStore:
    """Append-only parquet writer and reader over one fsspec filesystem."""

    def __init__(self, root: str) -> None:
        self.uri = root  # as given, protocol included (`root` is the path inside its filesystem)
        self.fs, path = fsspec.core.url_to_fs(root)
        self.root = path.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # -- writing ---------------------------------------------------------------------------

    def write_table(self, rel_dir: str, table: pa.Table) -> str:
        """Write `table` as a new file under `rel_dir`, atomically; returns its path."""
        name = f"part-{uuid.uuid4().hex}.parquet"
        tmp = self.path("_tmp", name)
        final = self.path(rel_dir, name)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        try:
            self.fs.makedirs(self.path("_tmp"), exist_ok=True)
            self.fs.makedirs(self.path(rel_dir), exist_ok=True)
            with self.fs.open(tmp, "wb") as fh:
                fh.write(buf.getvalue())
            # A rename is atomic on a local filesystem; object stores publish on close/copy.
            self.fs.mv(tmp, final)
        except OSError as exc:
            raise UnavailableError(f"offline store write to {final} failed: {exc}") from exc
        return final

    def write_bytes(self, rel_path: str, data: bytes) -> str:
        """Write one opaque file (a dead letter's original bytes) atomically; returns its URI."""
        tmp = self.path("_tmp", f"blob-{uuid.uuid4().hex}")
        final = self.path(rel_path)
        try:
            self.fs.makedirs(self.path("_tmp"), exist_ok=True)
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            self.fs.mv(tmp, final)
        except OSError as exc:
            raise UnavailableError(f"offline store write to {final} failed: {exc}") from exc
        return final

    def write_features(self, view: str, version: int, features: Sequence[str], rows: Sequence[FeatureRow]) -> int:
        by_date: dict[str, list[FeatureRow]] = {}
        for r in rows:
            by_date.setdefault(date_of(r.event_time_ms), []).append(r)
        schema = _feature_schema(features)
        for date, part in sorted(by_date.items()):
            cols: dict[str, list[Any]] = {
                "entity_key": [r.entity_key for r in part],
                "event_id": [r.event_id for r in part],
                "event_time_ms": [r.event_time_ms for r in part],
                "late": [r.late for r in part],
                "ingest_ns": [r.ingest_ns for r in part],
            }
            for f in features:
                cols[f] = [r.values.get(f) for r in part]
            self.write_table(f"features/{view}/v{version}/date={date}", pa.table(cols, schema=schema))
        return len(rows)

    def write_archive(self, rows: Sequence[ArchiveRow]) -> int:
        groups: dict[tuple[str, str], list[ArchiveRow]] = {}
        for r in rows:
            groups.setdefault((r.event_type, date_of(r.event_time_ms)), []).append(r)
        for (event_type, date), part in sorted(groups.items()):
            cols = {
                "event_id": [r.event_id for r in part],
                "event_type": [r.event_type for r in part],
                "event_time_ms": [r.event_time_ms for r in part],
                "entities": entities_array([r.entities for r in part]),
                "values": values_array([r.values for r in part]),
                "source": [r.source for r in part],
                "schema_version": [r.schema_version for r in part],
                "msg_key": [r.msg_key for r in part],
                "watermark_ms": [r.watermark_ms for r in part],
                "late": [r.late for r in part],
                "ingest_ns": [r.ingest_ns for r in part],
            }
            self.write_table(f"archive/event_type={event_type}/date={date}", pa.table(cols, schema=ARCHIVE_SCHEMA))
        return len(rows)

    # -- reading ---------------------------------------------------------------------------

    def _files(self, rel_dir: str) -> list[str]:
        base = self.path(rel_dir)
        if not self.fs.exists(base):
            return []
        # fsspec's walk lists a directory as empty when a file in it vanishes mid-listing (a
        # compaction deleting its parts): a reader then saw no rows at all. Raise and list again.
        tries = _Patience()
        while tries.another():
            try:
                return sorted(p for p in self.fs.find(base, on_error="raise") if p.endswith(".parquet"))
            except FileNotFoundError:
                continue
        raise UnavailableError(f"offline files under {rel_dir} kept vanishing while listed ({tries.spent()})")

    def _read(
        self,
        list_files: Callable[[], Sequence[str]],
        schema: pa.Schema,
        convert: Callable[[pa.Table, str], pa.Table] | None = None,
    ) -> pa.Table:
        """Every file `list_files` names, as one table (each converted by `convert`). A compaction
        may replace files between the listing and the reads; it publishes the merged file
        before it deletes the parts, so a file gone missing means: list again."""
        tries = _Patience()
        while tries.another():
            files = list_files()
            if not files:
                return schema.empty_table()
            try:
                tables = [self._read_file(f, None if convert else schema) for f in files]
            except FileNotFoundError:
                continue
            if convert:
                tables = [convert(t, f) for t, f in zip(tables, files, strict=True)]
            return pa.concat_tables(tables)
        raise UnavailableError(f"offline files kept vanishing while read ({tries.spent()})")

    def _read_file(self, path: str, schema: pa.Schema | None = None) -> pa.Table:
        with self.fs.open(path, "rb") as fh:
            return pq.read_table(fh, schema=schema)

    def feature_files(self, view: str, version: int) -> list[str]:
        return self._files(f"features/{view}/v{version}")

    def read_features(self, view: str, version: int, features: Sequence[str], *, latest: bool = True) -> pd.DataFrame:
        """Feature rows of a view version; with `latest`, the newest ingest per (entity_key, event_id)."""
        df = self._read(lambda: self.feature_files(view, version), _feature_schema(features)).to_pandas()
        if latest and len(df):
            df = df.sort_values("ingest_ns", kind="stable").drop_duplicates(["entity_key", "event_id"], keep="last")
        return df.sort_values(["entity_key", "event_time_ms", "event_id"], kind="stable").reset_index(drop=True)

    def archive_event_types(self) -> list[str]:
        base = self.path("archive")
        if not self.fs.exists(base):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        return sorted(n.removeprefix("event_type=") for n in names if n.startswith("event_type="))

    def archive_files(self, event_type: str) -> list[str]:
        return self._files(f"archive/event_type={event_type}")

    def read_archive_table(self, event_types: Sequence[str] | None = None) -> pa.Table:
        """Raw archive rows in layout 2 (files of the JSON layout converted), one per
        (event_type, event_id) — the first ingested copy — in (event_time_ms, event_id) order."""
        types = self.archive_event_types() if event_types is None else list(event_types)

        def files() -> list[str]:
            return [f for t in types for f in self.archive_files(t)]

        return first_ingested(self._read(files, ARCHIVE_SCHEMA, typed_archive))

    def read_archive(self, event_types: Sequence[str] | None = None) -> pd.DataFrame:
        """`read_archive_table` as pandas (`archive_frame`: entities and values as dicts)."""
        return archive_frame(self.read_archive_table(event_types))

    def legacy_archive(self, files: Sequence[str]) -> bool:
        """Whether any of `files` is an archive file of an earlier layout (compaction rewrites it)."""
        for f in files:
            with self.fs.open(f, "rb") as fh:
                if archive_layout(pq.read_schema(fh)) < ARCHIVE_LAYOUT:
                    return True
        return False

    # -- compaction ------------------------------------------------------------------------

    def partitions(self) -> dict[str, list[str]]:
        """Every partition directory (relative) with its parquet files."""
        out: dict[str, list[str]] = {}
        for kind in ("features", "archive"):
            for f in self._files(kind):
                rel_dir = f[len(self.root) + 1 :].rsplit("/", 1)[0]
                out.setdefault(rel_dir, []).append(f)
        return out

    def compact(self, rel_dir: str, files: Sequence[str]) -> Compaction:
        """Merge `files` of one partition into one file holding what readers see of them.

        Feature rows keep the newest ingest per (entity_key, event_id), archive rows the first
        per event_id (replays are identical), as the readers do, so reads are unchanged. The
        merged file is published (renamed into place) before the parts are deleted: a reader
        sees the parts, or both (equal rows, removed by its own de-duplication), or the merged
        file. Files written meanwhile are left alone."""
        tables = [self._read_file(f) for f in files]
        if rel_dir.startswith("archive/"):  # earlier layouts are rewritten typed
            tables = [typed_archive(t, f) for t, f in zip(tables, files, strict=True)]
        table = pa.concat_tables(tables, promote_options="default")
        keys = ["entity_key", "event_id"] if rel_dir.startswith("features/") else ["event_id"]
        order = table.select([*keys, "ingest_ns"]).to_pandas().sort_values("ingest_ns", kind="stable")
        kept = order.drop_duplicates(keys, keep="last" if len(keys) == 2 else "first").index.sort_values()
        merged = table.take(pa.array(kept.to_numpy()))
        path = self.write_table(rel_dir, merged)
        for f in files:
            try:
                self.fs.rm(f)
            except FileNotFoundError:
                pass  # another compaction took it: its merged copy holds the same rows
            except OSError as exc:
                raise UnavailableError(f"offline store compaction of {rel_dir} failed: {exc}") from exc
        return Compaction(rel_dir, len(files), table.num_rows, merged.num_rows, path)

    def clean_tmp(self, older_than_s: float = 3600.0) -> int:
        """Delete files a crashed writer left under `_tmp/` (a live one renames its file within
        moments); returns how many."""
        base = self.path("_tmp")
        if not self.fs.exists(base):
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for f in self.fs.find(base):
            try:
                if self.fs.modified(f).timestamp() < cutoff:
                    self.fs.rm(f)
                    removed += 1
            except FileNotFoundError:
                continue  # renamed into place (or removed) meanwhile
        return removed

    @staticmethod
    def schema_for_features(features: Sequence[str]) -> pa.Schema:
        return _feature_schema(features)

    @staticmethod
    def archive_schema() -> pa.Schema:
        return ARCHIVE_SCHEMA
