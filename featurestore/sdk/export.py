"""`fti features training-set`: a model's training rows, written atomically as one parquet file."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.sdk.historical import EventReader
from featurestore.sdk.store import AsOf, FeatureStore

__all__ = ["TrainingSetFile", "export_training_set"]

METADATA_KEY = b"fti.training_set"


@dataclass(frozen=True)
class TrainingSetFile:
    path: Path
    rows: int
    columns: tuple[str, ...]
    source: str  # the snapshot id, or "live"
    as_of: str

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows": self.rows, "columns": list(self.columns),
                "source": self.source, "as_of": self.as_of}  # fmt: skip


def _write_atomically(table: pa.Table, out: Path) -> None:
    """Written aside in the same folder and renamed into place: a reader never sees a partial file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def export_training_set(
    store: FeatureStore, model: str, out: Path, *, as_of: AsOf = "event_time", snapshot: str | EventReader | None = None
) -> TrainingSetFile:
    """The model's label rows with its feature set, as the trainer builds them (same rows, same values).

    Columns: event_id, event_timestamp, the entity kinds, the label (named as in the definitions),
    then `<view>__<feature>` in the model's feature order."""
    mdef = store.definitions.model(model)
    reader = store.reader(snapshot)
    table = store.get_historical_features(mdef.label, model, as_of=as_of, to="arrow", snapshot=reader)
    assert isinstance(table, pa.Table)
    about = {"model": model, "label": mdef.label, "source": reader.id, "as_of": as_of}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(about).encode()})
    _write_atomically(table, out)
    return TrainingSetFile(out, table.num_rows, tuple(table.column_names), reader.id, as_of)
