"""Point-in-time rows from the offline store: label rows, entity rows, and the views read at their times.

The I/O half of the SDK's historical reads, over an `EventReader` (a snapshot, or the live
archive); the join itself is `featurestore.pit`, the one implementation every reader uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pandas as pd

from featurestore.accepted import ParsedArchive, accepted_events
from featurestore.catalogue import Catalogue, DefinitionChangedError
from featurestore.definitions import Definitions, FeatureViewDef, LabelDef
from featurestore.keys import join_key
from featurestore.offline import OfflineStore
from featurestore.pit import (
    LABEL_TIME,
    JoinStats,
    PointInTimeError,
    ViewEvents,
    event_fields,
    join_point_in_time,
    labels_from_fields,
)

__all__ = [
    "EventReader",
    "LabelTrainingRows",
    "LiveArchive",
    "Progress",
    "check_views",
    "entity_rows",
    "join_views",
    "label_rows",
    "label_task",
    "label_training_rows",
]

Progress = Callable[[str], None]


class EventReader(Protocol):
    """What the point-in-time reads need of the offline data (`Snapshot` and `LiveArchive` have it)."""

    @property
    def id(self) -> str: ...

    def archive(self, event_type: str) -> pd.DataFrame:
        """Archive rows of one event type (offline archive columns), for `featurestore.accepted`."""

    def events(self, event_type: str) -> pd.DataFrame: ...


@runtime_checkable
class EventFieldReader(Protocol):
    """A reader that decodes just the keys of its events it is asked for (`Snapshot` does)."""

    def event_fields(self, event_type: str, entities: Sequence[str], values: Sequence[str]) -> pd.DataFrame: ...


class LiveArchive:
    """The offline store's archive as it is now (no snapshot): what a data scientist explores with."""

    id = "live"

    def __init__(self, store: OfflineStore) -> None:
        self._store = store
        self._parsed: dict[str, ParsedArchive] = {}

    @property
    def store(self) -> OfflineStore:
        return self._store

    def archive(self, event_type: str) -> pd.DataFrame:
        return self._store.read_archive([event_type])

    def _parse(self, event_type: str) -> ParsedArchive:
        if event_type not in self._parsed:
            self._parsed[event_type] = ParsedArchive.of(self.archive(event_type))
        return self._parsed[event_type]

    def events(self, event_type: str) -> pd.DataFrame:
        """One row per event_id in (time, id) order, with `entities` / `values` as dicts."""
        p = self._parse(event_type)
        return pd.DataFrame(
            {
                "event_id": p.rows["event_id"].astype(str).array,
                "event_type": p.rows["event_type"].array,
                "event_time": pd.to_datetime(p.rows["event_time_ms"].to_numpy(), unit="ms", utc=True).as_unit("ms"),
                "entities": p.entities,
                "values": p.values,
                "late": p.rows["late"].astype(bool).array,
            }
        )


def label_task(definitions: Definitions, label: LabelDef) -> str:
    """The task of the models trained on `label` (binary targets are checked to be 0/1); regression if none."""
    tasks = {m.task.value for m in definitions.models if m.label == label.name}
    return tasks.pop() if len(tasks) == 1 else "regression"


def label_rows(reader: EventReader, label: LabelDef, entity_kinds: Sequence[str], task: str) -> pd.DataFrame:
    """Label rows (event_id, label_time, target, one column per entity kind) in (label_time, event_id) order."""
    kinds = list(dict.fromkeys([label.entity, *entity_kinds]))
    # Decoding only the label field and the needed entity kinds is most of the time saved.
    if isinstance(reader, EventFieldReader):
        fields = reader.event_fields(label.event_type, kinds, [label.field])
    else:
        fields = event_fields(reader.events(label.event_type), kinds, [label.field])
    return labels_from_fields(fields, label, entity_kinds, task)


def _to_utc_ms(column: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_integer_dtype(column):  # epoch milliseconds
        return pd.Series(pd.to_datetime(column.to_numpy(), unit="ms", utc=True), index=column.index).dt.as_unit("ms")
    try:
        return pd.to_datetime(column, utc=True).dt.as_unit("ms")
    except (TypeError, ValueError) as exc:
        raise PointInTimeError(f"timestamp column {name!r} holds values that are not times: {exc}") from exc


def _entity_key(df: pd.DataFrame, kind: str, parts: Sequence[str] | None) -> pd.Series:
    if parts is None:
        if kind not in df.columns:
            raise PointInTimeError(
                f"entity_df has no {kind!r} column; add it, or its parts named in entity_columns={{{kind!r}: [...]}}"
            )
        return df[kind].astype("object").where(df[kind].notna(), None)
    missing = [p for p in parts if p not in df.columns]
    if missing:
        raise PointInTimeError(f"entity_df has no column {missing} of the composite entity {kind!r}")
    cols = [df[p].tolist() for p in parts]
    keys = [
        None if any(v is None or v != v for v in vs) else join_key([str(v) for v in vs])
        for vs in zip(*cols, strict=True)
    ]
    return pd.Series(keys, index=df.index, dtype="object")


def entity_rows(
    entity_df: pd.DataFrame,
    entity_kinds: Sequence[str],
    timestamp_column: str,
    entity_columns: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """The join's rows for an entity DataFrame: `label_time` and one key column per entity kind, same order."""
    if timestamp_column not in entity_df.columns:
        raise PointInTimeError(f"entity_df has no timestamp column {timestamp_column!r}")
    parts = entity_columns or {}
    rows = pd.DataFrame({LABEL_TIME: _to_utc_ms(entity_df[timestamp_column], timestamp_column)})
    for kind in entity_kinds:
        rows[kind] = _entity_key(entity_df, kind, parts.get(kind))
    if rows[LABEL_TIME].isna().any():
        raise PointInTimeError(f"timestamp column {timestamp_column!r} has empty values")
    return rows.reset_index(drop=True)


def _wanted(rows: pd.DataFrame, kind: str) -> set[str]:
    return {str(k) for k in rows[kind].dropna().unique()}


def join_views(
    reader: EventReader,
    rows: pd.DataFrame,
    views: Sequence[FeatureViewDef],
    *,
    allow_exact_matches: bool = True,
    as_served: bool = False,
    progress: Progress = lambda _msg: None,
) -> tuple[pd.DataFrame, JoinStats]:
    """Feature columns `<view>__<feature>` of every feature of `views`, read at each row's `label_time`."""
    check_views(reader, views)
    view_events = []
    archives: dict[str, ParsedArchive] = {}
    for v in views:
        if v.entity not in rows.columns:
            raise PointInTimeError(f"rows carry no {v.entity!r} column for view {v.ref}")
        if v.source not in archives:  # views of one source share one parse of its events
            archives[v.source] = ParsedArchive.of(reader.archive(v.source))
        events = accepted_events(v, archives[v.source], _wanted(rows, v.entity))
        progress(f"view {v.ref}: {sum(len(e.events) for e in events.values())} accepted events, {len(events)} entities")
        view_events.append(ViewEvents(v, events))
    return join_point_in_time(rows, view_events, allow_exact_matches=allow_exact_matches, as_served=as_served)


def check_views(reader: EventReader, views: Sequence[FeatureViewDef]) -> None:
    """Refuse a view whose definition is not the one its `view:version` was built with: a view
    changed without a new version would give training values the worker never served. A
    snapshot is checked against the definitions it froze, the live archive against the catalogue."""
    if isinstance(reader, LiveArchive):
        Catalogue(reader.store.uri).check(views)
        return
    frozen = {v.ref: v for v in getattr(reader, "views", ())}
    for view in views:
        known = frozen.get(view.ref)
        if known is not None and known.content_hash() != view.content_hash():
            raise DefinitionChangedError(
                f"view {view.ref}: its definition changed since snapshot {reader.id} was taken, but its "
                f"version did not (snapshot hash {known.content_hash()[:12]}, now {view.content_hash()[:12]}); "
                "give the changed view a new version"
            )


@dataclass(frozen=True)
class LabelTrainingRows:
    """A label's rows joined with features: what the trainer and `fti features training-set` build on."""

    labels: pd.DataFrame  # event_id, label_time, target, one column per entity kind
    features: pd.DataFrame  # `<view>__<feature>` columns of every feature of the views, aligned with `labels`
    stats: JoinStats
    reader_id: str  # the snapshot id, or "live"


def label_training_rows(
    reader: EventReader,
    definitions: Definitions,
    label: str,
    views: Sequence[FeatureViewDef],
    *,
    task: str | None = None,
    allow_exact_matches: bool = True,
    as_served: bool = False,
    progress: Progress = lambda _msg: None,
) -> LabelTrainingRows:
    """Every feature of `views` read at each label event's time (`task`: its models', to check targets)."""
    check_views(reader, views)  # before reading any label: a changed view is the first thing to hear of
    ldef = definitions.label(label)
    kinds = tuple(dict.fromkeys(v.entity for v in views))
    labels = label_rows(reader, ldef, kinds, task or label_task(definitions, ldef))
    if labels.empty:
        raise PointInTimeError(f"{reader.id}: no usable {ldef.event_type!r} label events for label {label}")
    progress(f"labels: {len(labels)} {ldef.event_type} events with a {ldef.field!r} target")
    features, stats = join_views(
        reader, labels, views, allow_exact_matches=allow_exact_matches, as_served=as_served, progress=progress
    )
    return LabelTrainingRows(labels, features, stats, reader.id)
