"""Online reads for the SDK: each feature's value read now from the online store, with a status and an age.

The values are the online store's own evaluation at the read time (`OnlineStore.read_at`, the
function the server's reads go through); the status of each value is decided as the server
decides it:

* `missing`: no value (an entity with no event in the window of a `last` or `mean`, a view
  with nothing stored, a value that is not a finite number or a string);
* `stale`: the entity's newest event is older than the view's TTL at the read time (history
  replayed from long ago, a stopped worker): the windows are still evaluated at the read time
  and the value is what the server scores (a count is 0), but every window shorter than the
  TTL is empty. A row of the earlier layout past its TTL is stale with no value (the server
  scores it as missing);
* `ok`: anything else. A count or sum of an entity with no event in its window is a real 0.

`age_ms` is the read time minus the entity's newest event time (-1 when nothing is stored).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import pandas as pd

from featurestore.definitions import FeatureViewDef
from featurestore.keys import join_key
from featurestore.online_layout import OnlineKey, OnlineValue
from featurestore.sdk.refs import FeatureSelection
from featurestore.values import Scalar
from fti_core.errors import InvalidArgumentError

__all__ = ["FeatureStatus", "OnlineFeature", "OnlineFeatures", "online_keys", "read_status", "readings"]


class FeatureStatus(StrEnum):
    OK = "ok"
    MISSING = "missing"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class OnlineFeature:
    value: Scalar | None
    status: FeatureStatus
    age_ms: int


def _usable(raw: object) -> Scalar | None:
    if isinstance(raw, bool | str):
        return raw
    if isinstance(raw, int | float):
        return raw if math.isfinite(raw) else None
    return None


def read_status(view: FeatureViewDef, row: OnlineValue | None, now_ms: int) -> tuple[FeatureStatus | None, int, bool]:
    """The status every feature of a view read gets (None: each feature's own value decides), its
    age, and whether the values are used (not for nothing stored, nor an earlier-layout row past its TTL)."""
    if row is None:
        return FeatureStatus.MISSING, -1, False
    age = row.age_ms(now_ms)
    if row.is_stale(now_ms):
        return FeatureStatus.STALE, age, False
    return (FeatureStatus.STALE if age > view.ttl_ms else None), age, True


@dataclass(frozen=True)
class OnlineFeatures:
    """Per entity row (in the order asked), each feature column's reading; `read_at_ms` is when."""

    columns: tuple[str, ...]
    rows: tuple[Mapping[str, OnlineFeature], ...]
    read_at_ms: int

    def to_pandas(self) -> pd.DataFrame:
        """One row per entity: `<column>` the value, `<column>__status`, `<column>__age_ms`."""
        data: dict[str, list[object]] = {}
        for c in self.columns:
            data[c] = [r[c].value for r in self.rows]
            data[f"{c}__status"] = [r[c].status.value for r in self.rows]
            data[f"{c}__age_ms"] = [r[c].age_ms for r in self.rows]
        return pd.DataFrame(data)


def online_keys(
    selection: FeatureSelection,
    entities: Sequence[Mapping[str, object]],
    entity_columns: Mapping[str, Sequence[str]] | None = None,
) -> list[list[OnlineKey]]:
    """Per entity row, one key per selected view (its entity kind's key, joined when composite)."""
    parts = entity_columns or {}
    out = []
    for i, row in enumerate(entities):
        keys = []
        for vs in selection.views:
            kind = vs.view.entity
            if kind in parts:
                if any(row.get(p) in (None, "") for p in parts[kind]):
                    raise InvalidArgumentError(f"entity row {i} lacks a part {list(parts[kind])} of {kind!r}")
                key = join_key([str(row[p]) for p in parts[kind]])
            elif row.get(kind) in (None, ""):
                raise InvalidArgumentError(f"entity row {i} has no {kind!r} key; the features asked for need it")
            else:
                key = str(row[kind])
            keys.append(OnlineKey(vs.view.name, vs.view.version, key))
        out.append(keys)
    return out


def readings(
    selection: FeatureSelection, keys: Sequence[Sequence[OnlineKey]], values: Sequence[OnlineValue | None], now_ms: int
) -> OnlineFeatures:
    """`values` (one per key, rows flattened) turned into each row's feature readings."""
    rows: list[dict[str, OnlineFeature]] = []
    at = 0
    for row_keys in keys:
        row: dict[str, OnlineFeature] = {}
        for vs, value in zip(selection.views, values[at : at + len(row_keys)], strict=True):
            status, age, used = read_status(vs.view, value, now_ms)
            for name, column in zip(vs.features, vs.columns, strict=True):
                got = _usable(value.values.get(name)) if value is not None and used else None
                mine = status or (FeatureStatus.OK if got is not None else FeatureStatus.MISSING)
                row[column] = OnlineFeature(got, mine, age)
        at += len(row_keys)
        rows.append(row)
    return OnlineFeatures(selection.columns, tuple(rows), now_ms)
