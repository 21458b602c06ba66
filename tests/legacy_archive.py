"""The raw archive as the release before typed archives wrote it (JSON-text layout 1), for
tests that read old files: its schema and column encoding, verbatim."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

from featurestore.archive_layout import LEGACY_ARCHIVE_SCHEMA
from featurestore.offline import ArchiveRow, OfflineStore, date_of

__all__ = ["legacy_archive_table", "write_legacy_archive"]

_sorted_json = json.JSONEncoder(sort_keys=True).encode


def legacy_archive_table(part: Sequence[ArchiveRow]) -> pa.Table:
    cols = {
        "event_id": [r.event_id for r in part],
        "event_type": [r.event_type for r in part],
        "event_time_ms": [r.event_time_ms for r in part],
        "entities_json": [_sorted_json(dict(r.entities)) for r in part],
        "values_json": [_sorted_json(dict(r.values)) for r in part],
        "source": [r.source for r in part],
        "schema_version": [r.schema_version for r in part],
        "msg_key": [r.msg_key for r in part],
        "watermark_ms": [r.watermark_ms for r in part],
        "late": [r.late for r in part],
        "ingest_ns": [r.ingest_ns for r in part],
    }
    return pa.table(cols, schema=LEGACY_ARCHIVE_SCHEMA)


def write_legacy_archive(store: OfflineStore, rows: Sequence[ArchiveRow]) -> None:
    """`write_archive` of the earlier release: one file per (event type, date)."""
    groups: dict[tuple[str, str], list[ArchiveRow]] = {}
    for r in rows:
        groups.setdefault((r.event_type, date_of(r.event_time_ms)), []).append(r)
    for (event_type, date), part in sorted(groups.items()):
        store.write_table(f"archive/event_type={event_type}/date={date}", legacy_archive_table(part))
