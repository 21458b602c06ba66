"""Point-in-time joins: each label gets, per view, the feature values as of its time, never later.

Pure functions over pandas frames, no I/O. Rules, chosen to match what the online store
serves at prediction time:

* A feature row is used for a label when it belongs to the same entity (the view's entity
  kind, keyed by the label event's `entities` map) and its event time is at or before the
  label's time. `allow_exact_matches=True` (the default, as in Feast) lets a row stamped
  exactly at the label time count: the online store's value "as of T" includes events at
  T. Pass False for the strict variant.
* Only the latest such row counts, and only while it is fresh: a row older than the
  view's TTL at label time is treated as missing (NaN), as the server treats stale values.
* A label event that lacks a view's entity kind gets NaN for that view's features. Label
  events are expected to carry every entity kind the model needs (e.g. card_id AND
  merchant_id); `join_point_in_time` reports how many rows lacked each kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from registry.featurestore.definitions import FeatureViewDef, LabelDef
from trainer.errors import TrainingDataError

__all__ = [
    "LABEL_TIME",
    "TARGET",
    "JoinStats",
    "ViewRows",
    "feature_column",
    "join_point_in_time",
    "labels_from_events",
]

LABEL_TIME = "label_time"
TARGET = "target"
_ROW = "__row__"


def feature_column(view: str, feature: str) -> str:
    return f"{view}__{feature}"


@dataclass(frozen=True)
class ViewRows:
    """A view's definition and its offline rows: entity_key, event_time, one column per feature."""

    view: FeatureViewDef
    rows: pd.DataFrame


@dataclass(frozen=True)
class JoinStats:
    missing_entity: Mapping[str, int]  # entity kind -> label rows without that key
    stale: Mapping[str, int]  # view -> rows whose latest value was older than the TTL
    matched: Mapping[str, int]  # view -> rows that got a fresh value


def labels_from_events(events: pd.DataFrame, label: LabelDef, entity_kinds: Sequence[str], task: str) -> pd.DataFrame:
    """Label rows from raw label events: event_id, label_time, target and one column per entity kind.

    Rows are in (label_time, event_id) order, so the same snapshot always yields the same rows.
    """
    if events.empty:
        return pd.DataFrame(columns=["event_id", LABEL_TIME, TARGET, *entity_kinds])
    targets = [vals.get(label.field) if isinstance(vals, Mapping) else None for vals in events["values"]]
    out = pd.DataFrame(
        {
            "event_id": events["event_id"].astype(str).to_numpy(),
            LABEL_TIME: events["event_time"].to_numpy(),
            TARGET: pd.to_numeric(pd.Series(targets, dtype="object"), errors="coerce").astype("float64").to_numpy(),
        }
    )
    for kind in dict.fromkeys([label.entity, *entity_kinds]):
        out[kind] = [ents.get(kind) if isinstance(ents, Mapping) else None for ents in events["entities"]]
    out[LABEL_TIME] = pd.to_datetime(out[LABEL_TIME], utc=True).dt.as_unit("ms")
    out = out[out[TARGET].notna() & out[label.entity].notna()]
    if task == "binary" and not out[TARGET].isin([0.0, 1.0]).all():
        bad = sorted(set(out[TARGET][~out[TARGET].isin([0.0, 1.0])].tolist()))[:5]
        raise TrainingDataError(f"label {label.name}: binary targets must be 0/1 (or booleans), saw {bad}")
    return out.sort_values([LABEL_TIME, "event_id"], kind="stable").reset_index(drop=True)


def _join_view(labels: pd.DataFrame, vr: ViewRows, allow_exact_matches: bool) -> tuple[pd.DataFrame, int, int]:
    view, names = vr.view, vr.view.feature_names
    cols = [feature_column(view.name, n) for n in names]
    keys = labels[view.entity].to_numpy()
    left = pd.DataFrame({_ROW: np.arange(len(labels)), LABEL_TIME: labels[LABEL_TIME].to_numpy(), "entity_key": keys})
    left = left[left["entity_key"].notna()].astype({"entity_key": str}).sort_values(LABEL_TIME, kind="stable")
    right = vr.rows[["entity_key", "event_time", *names]].rename(columns=dict(zip(names, cols, strict=True)))
    right = right.astype({"entity_key": str}).sort_values("event_time", kind="stable")
    right["event_time"] = pd.to_datetime(right["event_time"], utc=True).dt.as_unit("ms")
    joined = pd.merge_asof(
        left,
        right,
        left_on=LABEL_TIME,
        right_on="event_time",
        by="entity_key",
        direction="backward",
        allow_exact_matches=allow_exact_matches,
    )
    age_ms = (joined[LABEL_TIME] - joined["event_time"]).dt.total_seconds() * 1000.0
    stale = joined["event_time"].notna() & (age_ms > view.ttl_ms)
    joined.loc[stale, cols] = np.nan
    out = pd.DataFrame(np.nan, index=np.arange(len(labels)), columns=cols)
    out.loc[joined[_ROW].to_numpy(), cols] = joined[cols].to_numpy(dtype=np.float64)
    matched = int((joined["event_time"].notna() & ~stale).sum())
    return out, int(stale.sum()), matched


def join_point_in_time(
    labels: pd.DataFrame, views: Sequence[ViewRows], *, allow_exact_matches: bool = True
) -> tuple[pd.DataFrame, JoinStats]:
    """Feature columns `<view>__<feature>` (views in order, features in definition order), aligned with `labels`."""
    parts: list[pd.DataFrame] = []
    stale: dict[str, int] = {}
    matched: dict[str, int] = {}
    missing: dict[str, int] = {}
    for vr in views:
        if vr.view.entity not in labels.columns:
            raise TrainingDataError(f"labels carry no {vr.view.entity!r} column for view {vr.view.ref}")
        missing[vr.view.entity] = int(labels[vr.view.entity].isna().sum())
        frame, stale[vr.view.name], matched[vr.view.name] = _join_view(labels, vr, allow_exact_matches)
        parts.append(frame)
    features = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=np.arange(len(labels)))
    return features, JoinStats(missing_entity=missing, stale=stale, matched=matched)
