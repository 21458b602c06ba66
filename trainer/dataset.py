"""Training sets from a snapshot: labels joined point in time with their model's views, split by time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd

from featurestore.accepted import ParsedArchive, accepted_events
from featurestore.definitions import Definitions, FeatureViewDef, LabelDef, ModelDef
from registry.models import FeatureRef
from trainer.errors import TrainingDataError
from trainer.pit import LABEL_TIME, TARGET, JoinStats, ViewEvents, event_fields, join_point_in_time, labels_from_fields

__all__ = ["SnapshotReader", "TrainingSet", "build_training_set", "time_split"]

Progress = Callable[[str], None]


class SnapshotReader(Protocol):
    """What the trainer needs of a snapshot (featurestore.snapshots.Snapshot has it)."""

    @property
    def id(self) -> str: ...

    def archive(self, event_type: str) -> pd.DataFrame:
        """Archive rows of one event type (offline archive columns), for `featurestore.accepted`."""

    def events(self, event_type: str) -> pd.DataFrame: ...


@runtime_checkable
class EventFieldReader(Protocol):
    """A snapshot that reads just the keys of its events that it is asked for (Snapshot does)."""

    def event_fields(self, event_type: str, entities: Sequence[str], values: Sequence[str]) -> pd.DataFrame: ...


def _label_fields(snapshot: SnapshotReader, label: LabelDef, kinds: Sequence[str]) -> pd.DataFrame:
    # Decoding only the label field and the needed entity kinds is most of the dataset time saved.
    if isinstance(snapshot, EventFieldReader):
        return snapshot.event_fields(label.event_type, kinds, [label.field])
    return event_fields(snapshot.events(label.event_type), kinds, [label.field])


@dataclass(frozen=True)
class TrainingSet:
    snapshot_id: str
    model: ModelDef
    label: LabelDef
    features: tuple[FeatureRef, ...]
    entities: tuple[str, ...]
    x: npt.NDArray[np.float64]  # rows in label-time order, columns in feature order
    y: npt.NDArray[np.float64]
    times: npt.NDArray[np.int64]  # label time, epoch ms
    stats: JoinStats

    @property
    def columns(self) -> list[str]:
        return [f.column for f in self.features]


def _entities(views: Sequence[FeatureViewDef]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.entity for v in views))


def build_training_set(
    snapshot: SnapshotReader,
    definitions: Definitions,
    model_name: str,
    *,
    allow_exact_matches: bool = True,
    as_served: bool = False,
    progress: Progress = lambda _msg: None,
) -> TrainingSet:
    model = definitions.model(model_name)
    label = definitions.label(model.label)
    views = definitions.model_views(model_name)
    entities = _entities(views)
    kinds = list(dict.fromkeys([label.entity, *entities]))
    labels = labels_from_fields(_label_fields(snapshot, label, kinds), label, entities, model.task)
    if labels.empty:
        raise TrainingDataError(
            f"snapshot {snapshot.id} has no usable {label.event_type!r} label events for model {model_name}"
        )
    progress(f"labels: {len(labels)} {label.event_type} events with a {label.field!r} target")
    view_events = []
    archives: dict[str, ParsedArchive] = {}
    for v in views:
        if v.source not in archives:  # views of one source share one parse of its events
            archives[v.source] = ParsedArchive.of(snapshot.archive(v.source))
        events = accepted_events(v, archives[v.source])
        progress(f"view {v.ref}: {sum(len(e.events) for e in events.values())} accepted events, {len(events)} entities")
        view_events.append(ViewEvents(v, events))
    features, stats = join_point_in_time(
        labels, view_events, allow_exact_matches=allow_exact_matches, as_served=as_served
    )
    if not any(stats.matched.values()):
        raise TrainingDataError(
            f"snapshot {snapshot.id}: none of the {len(labels)} labels has an accepted event of its entities at or "
            f"before its time (views {', '.join(v.ref for v in views)}); are events and labels for the same entities?"
        )
    for v in views:
        progress(
            f"join {v.ref}: {stats.matched[v.name]} labels with events at or before them, "
            f"{stats.missing_entity[v.entity]} labels without {v.entity}"
        )
    # Each feature names its view's entity: the published version is all a server needs to key it.
    refs = tuple(FeatureRef(v.name, v.version, f, v.entity) for v in views for f in v.feature_names)
    times = labels[LABEL_TIME].astype("int64").to_numpy()
    return TrainingSet(
        snapshot_id=snapshot.id,
        model=model,
        label=label,
        features=refs,
        entities=entities,
        x=features[[r.column for r in refs]].to_numpy(dtype=np.float64),
        y=labels[TARGET].to_numpy(dtype=np.float64),
        times=np.asarray(times, dtype=np.int64),
        stats=stats,
    )


def time_split(times: npt.NDArray[np.int64], validation_fraction: float) -> int:
    """Index splitting time-ordered rows: rows before it train, rows from it validate.

    The cut moves forward past rows sharing the boundary timestamp, so no instant is on
    both sides and the validation rows are strictly later than every training row.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise TrainingDataError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    n = len(times)
    cut = int(np.searchsorted(times, times[min(n - 1, int(n * (1.0 - validation_fraction)))], side="left"))
    if cut <= 0 or cut >= n:
        raise TrainingDataError(f"cannot split {n} labels by time into training and validation rows")
    return cut
