"""Training sets from a snapshot: labels joined point in time with their model's views, split by time."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from featurestore.definitions import Definitions, FeatureViewDef, LabelDef, ModelDef
from featurestore.pit import LABEL_TIME, TARGET, JoinStats, PointInTimeError, feature_column
from featurestore.sdk.historical import EventReader, label_training_rows
from registry.models import FeatureRef, Vocabulary
from trainer.errors import TrainingDataError

__all__ = ["SnapshotReader", "TrainingSet", "build_training_set", "time_split"]

Progress = Callable[[str], None]
# What the trainer needs of a snapshot: what the SDK's point-in-time reads need (Snapshot has it).
SnapshotReader = EventReader


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
    # String features: x holds their category codes; the vocabularies (by column) say which,
    # and `strings` keeps the values as read, per column, for the held-out rows.
    vocabularies: tuple[Vocabulary, ...] = ()
    strings: Mapping[str, npt.NDArray[np.object_]] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [f.column for f in self.features]

    @property
    def categorical(self) -> list[int]:
        """Positions of the features fed to LightGBM as categoricals (the string features)."""
        coded = {v.column for v in self.vocabularies}
        return [i for i, c in enumerate(self.columns) if c in coded]


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
    try:
        # The SDK's point-in-time join: one implementation for the trainer, the SDK and the CLI.
        rows = label_training_rows(
            snapshot,
            definitions,
            label.name,
            views,
            task=model.task.value,
            allow_exact_matches=allow_exact_matches,
            as_served=as_served,
            progress=progress,
        )
    except PointInTimeError as exc:
        raise TrainingDataError(f"model {model_name}: {exc}") from exc
    labels, features, stats = rows.labels, rows.features, rows.stats
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
    times = np.asarray(labels[LABEL_TIME].astype("int64").to_numpy(), dtype=np.int64)
    string_columns = [feature_column(v.name, f.name) for v in views for f in v.features if f.is_string]
    x, vocabularies = _encoded(features, [r.column for r in refs], string_columns, times, model)
    for vocab in vocabularies:
        other = " (+ other)" if vocab.has_other else ""
        progress(f"categorical {vocab.column}: {len(vocab.values)} categories{other}")
    return TrainingSet(
        snapshot_id=snapshot.id,
        model=model,
        label=label,
        features=refs,
        entities=entities,
        x=x,
        y=labels[TARGET].to_numpy(dtype=np.float64),
        times=times,
        stats=stats,
        vocabularies=vocabularies,
        strings={c: features[c].to_numpy(dtype=object) for c in string_columns},
    )


def _encoded(
    features: pd.DataFrame,
    columns: Sequence[str],
    strings: Sequence[str],
    times: npt.NDArray[np.int64],
    model: ModelDef,
) -> tuple[npt.NDArray[np.float64], tuple[Vocabulary, ...]]:
    """The feature matrix, string features as category codes from vocabularies of the training
    rows only (the validation rows' unseen values are then unknown, as new values are online)."""
    if not strings:
        return features[list(columns)].to_numpy(dtype=np.float64), ()
    cut = time_split(times, model.validation_fraction)
    x = np.empty((len(features), len(columns)), dtype=np.float64)
    vocabularies = []
    for j, column in enumerate(columns):
        values = features[column]
        if column in strings:
            vocab = Vocabulary.build(column, values.iloc[:cut], model.max_categories)
            vocabularies.append(vocab)
            x[:, j] = vocab.codes(values)
        else:
            x[:, j] = values.to_numpy(dtype=np.float64)
    return x, tuple(vocabularies)


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
