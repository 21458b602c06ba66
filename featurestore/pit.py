"""Point-in-time joins: each row (a label, or an entity at a timestamp) gets, per view, the view read at its time.

The one implementation the SDK (`featurestore.sdk`), `fti features training-set` and the trainer share.

Pure functions over plain data, no I/O. The windows are evaluated with the one definition
every engine uses (`featurestore.tiles.evaluate_events`, over the accepted events of
`featurestore.accepted`): a feature at label time T aggregates the entity's accepted events
in its window ending at T, both ends closed, so a label is joined with exactly what a server
reading at T computes, and nothing after T. Two choices for events that arrived after T but
carry an earlier time:

* "as of event time" (the default): every accepted event with time <= T. This is what the
  feature *means* at T, and what a server reading at T serves once ingestion has caught up;
  it does not depend on how far behind the worker happened to be when the label occurred.
* "as the server saw it" (`as_served=True`): only events also ingested (archived) by T, so
  a training row reproduces what a live server could have served at T, lag included.

`allow_exact_matches=False` reads at T - 1 ms (events stamped exactly at T excluded). A
label event that lacks a view's entity kind gets NaN for that view's features;
`join_point_in_time` reports how many rows lacked each kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from featurestore.accepted import EntityEvents
from featurestore.definitions import FeatureViewDef, LabelDef
from featurestore.tiles import evaluate_events, evaluate_many
from fti_core.errors import InvalidArgumentError

__all__ = [
    "LABEL_TIME",
    "TARGET",
    "JoinStats",
    "PointInTimeError",
    "ViewEvents",
    "event_fields",
    "feature_column",
    "join_point_in_time",
    "labels_from_events",
    "labels_from_fields",
]

LABEL_TIME = "label_time"
TARGET = "target"


class PointInTimeError(InvalidArgumentError):
    """Rows that cannot be joined: labels with unusable targets, rows without a needed entity column."""


def feature_column(view: str, feature: str) -> str:
    return f"{view}__{feature}"


@dataclass(frozen=True)
class ViewEvents:
    """A view's definition and its accepted events per entity key (`featurestore.accepted`)."""

    view: FeatureViewDef
    events: Mapping[str, EntityEvents]


@dataclass(frozen=True)
class JoinStats:
    missing_entity: Mapping[str, int]  # entity kind -> label rows without that key
    stale: Mapping[str, int]  # view -> 0: values are evaluated at the label time, nothing goes stale
    matched: Mapping[str, int]  # view -> rows whose entity had an accepted event at or before the label


def event_fields(events: pd.DataFrame, entity_kinds: Sequence[str], fields: Sequence[str]) -> pd.DataFrame:
    """Raw events (dict columns `entities`, `values`) narrowed to the form of `Snapshot.event_fields`.

    event_id, event_time, `entities.<kind>` typed by pandas, `values.<field>` raw (None when absent).
    """
    out = pd.DataFrame({"event_id": events["event_id"].array, "event_time": events["event_time"].array})
    for column, keys in (("entities", entity_kinds), ("values", fields)):
        maps = events[column].tolist()
        for key in keys:
            got = [m.get(key) if isinstance(m, Mapping) else None for m in maps]
            # Entity keys typed by pandas from the values, label values kept raw for to_numeric.
            out[f"{column}.{key}"] = pd.Series(got) if column == "entities" else pd.Series(got, dtype="object")
    return out


def labels_from_events(events: pd.DataFrame, label: LabelDef, entity_kinds: Sequence[str], task: str) -> pd.DataFrame:
    """Label rows from raw label events: event_id, label_time, target and one column per entity kind.

    Rows are in (label_time, event_id) order, so the same snapshot always yields the same rows.
    """
    if events.empty:
        return pd.DataFrame(columns=["event_id", LABEL_TIME, TARGET, *entity_kinds])
    kinds = list(dict.fromkeys([label.entity, *entity_kinds]))
    return labels_from_fields(event_fields(events, kinds, [label.field]), label, entity_kinds, task)


def labels_from_fields(fields: pd.DataFrame, label: LabelDef, entity_kinds: Sequence[str], task: str) -> pd.DataFrame:
    """labels_from_events over the narrow form (`event_fields`) that a snapshot reads without a dict per row."""
    if fields.empty:
        return pd.DataFrame(columns=["event_id", LABEL_TIME, TARGET, *entity_kinds])
    targets = pd.Series(fields[f"values.{label.field}"].to_numpy(), dtype="object")
    out = pd.DataFrame(
        {
            "event_id": fields["event_id"].astype(str).array,
            LABEL_TIME: fields["event_time"].array,
            TARGET: pd.to_numeric(targets, errors="coerce").astype("float64").to_numpy(),
        }
    )
    for kind in dict.fromkeys([label.entity, *entity_kinds]):
        out[kind] = fields[f"entities.{kind}"].array
    out[LABEL_TIME] = pd.to_datetime(out[LABEL_TIME], utc=True).dt.as_unit("ms")
    out = out[out[TARGET].notna() & out[label.entity].notna()]
    if task == "binary" and not out[TARGET].isin([0.0, 1.0]).all():
        bad = sorted(set(out[TARGET][~out[TARGET].isin([0.0, 1.0])].tolist()))[:5]
        raise PointInTimeError(f"label {label.name}: binary targets must be 0/1 (or booleans), saw {bad}")
    if not _in_label_order(out):
        out = out.sort_values([LABEL_TIME, "event_id"], kind="stable")
    return out.reset_index(drop=True)


def _in_label_order(labels: pd.DataFrame) -> bool:
    """Already in (label_time, event_id) order, as snapshots deliver events: the stable sort is then a no-op."""
    step = np.diff(_epoch_ms(labels[LABEL_TIME]))
    if (step < 0).any():
        return False
    ties = np.flatnonzero(step == 0)
    ids = labels["event_id"].to_numpy()
    return bool((ids[ties] <= ids[ties + 1]).all())


def _epoch_ms(times: pd.Series) -> npt.NDArray[np.int64]:
    return np.asarray(pd.to_datetime(times, utc=True).dt.as_unit("ms").array.asi8, dtype=np.int64)


def _served(
    vr: ViewEvents, got: EntityEvents, rows: list[int], at: npt.NDArray[np.int64], out: npt.NDArray[Any]
) -> int:
    """As the server saw it: each row reads only the events ingested by its time. A row whose
    windows hold no event ingested after it reads the same events as "as of event time", so it
    takes the vectorised values; only the others are evaluated over their own subset."""
    columns = got.columns()
    out[rows] = evaluate_many(vr.view, columns, at)
    if not got.events:
        return 0
    times = np.asarray(columns.times, dtype=np.int64)
    ingest = np.asarray(got.ingest_ns, dtype=np.int64)
    cut = at * 1_000_000
    hi = np.searchsorted(times, at, side="right")
    starts = np.min([(at // f.window.step_ms) * f.window.step_ms - f.window.size_ms + f.window.step_ms
                     for f in vr.view.features], axis=0)  # fmt: skip
    lo = np.minimum(np.searchsorted(times, starts, side="left"), hi)
    # Seen by t: some event stamped at or before t was ingested by t (the earliest ingest so far).
    first_ingest = np.minimum.accumulate(ingest)
    matched = int(((hi > 0) & (first_ingest[np.maximum(hi - 1, 0)] <= cut)).sum())
    names = vr.view.feature_names
    for i, t, a, b, c in zip(rows, at.tolist(), lo.tolist(), hi.tolist(), cut.tolist(), strict=True):
        if a < b and int(ingest[a:b].max()) > c:  # an event of its windows arrived after t
            # Only events of its windows can count, so the subset is cut to them first.
            seen = [e for e, n in zip(got.events[a:b], got.ingest_ns[a:b], strict=True) if n <= c]
            values = evaluate_events(vr.view, seen, t)
            out[i] = [np.nan if values[n] is None else values[n] for n in names]
    return matched


def _view_values(
    vr: ViewEvents, keys: Sequence[object], times: npt.NDArray[np.int64], as_served: bool
) -> tuple[npt.NDArray[Any], int]:
    """The view read at each row's time (rows of NaN where the row lacks the entity key);
    object-typed when the view has string features (their values stay `str`)."""
    strings = any(f.is_string for f in vr.view.features)
    out = np.full((len(keys), len(vr.view.feature_names)), np.nan, dtype=object if strings else np.float64)
    by_entity: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None and not (isinstance(key, float) and np.isnan(key)):
            by_entity.setdefault(str(key), []).append(i)
    matched = 0
    empty = EntityEvents()
    for key, rows in by_entity.items():
        got = vr.events.get(key, empty)
        at = times[rows]
        if as_served:
            matched += _served(vr, got, rows, at, out)
            continue
        out[rows] = evaluate_many(vr.view, got.columns(), at)
        if got.events:
            matched += int((at >= got.events[0].time_ms).sum())
    return out, matched


def join_point_in_time(
    labels: pd.DataFrame,
    views: Sequence[ViewEvents],
    *,
    allow_exact_matches: bool = True,
    as_served: bool = False,
) -> tuple[pd.DataFrame, JoinStats]:
    """Feature columns `<view>__<feature>` (views in order, features in definition order), aligned with `labels`.

    String features' columns hold `str` (NaN when missing); with any of them, every column is
    object-typed, so numeric columns are converted with `.astype(float)` by the caller."""
    columns = [feature_column(vr.view.name, n) for vr in views for n in vr.view.feature_names]
    strings = any(f.is_string for vr in views for f in vr.view.features)
    values = np.full((len(labels), len(columns)), np.nan, dtype=object if strings else np.float64)
    times = _epoch_ms(labels[LABEL_TIME]) - (0 if allow_exact_matches else 1) if len(labels) else np.zeros(0, np.int64)
    matched: dict[str, int] = {}
    missing: dict[str, int] = {}
    at = 0
    for vr in views:
        if vr.view.entity not in labels.columns:
            raise PointInTimeError(f"labels carry no {vr.view.entity!r} column for view {vr.view.ref}")
        missing[vr.view.entity] = int(labels[vr.view.entity].isna().sum())
        n = len(vr.view.feature_names)
        values[:, at : at + n], matched[vr.view.name] = _view_values(
            vr, labels[vr.view.entity].tolist(), times, as_served
        )
        at += n
    features = pd.DataFrame(values, columns=columns, copy=False)
    stale = {vr.view.name: 0 for vr in views}
    return features, JoinStats(missing_entity=missing, stale=stale, matched=matched)
