"""`FeatureStore`: the Python SDK over the definitions, the offline store and the online store."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa

from featurestore.definitions import Definitions, FeatureViewDef, load_definitions
from featurestore.offline import OfflineStore
from featurestore.online import OnlineStore, RedisOnlineStore
from featurestore.online_layout import DEFAULT_PREFIX
from featurestore.pit import LABEL_TIME, TARGET, PointInTimeError
from featurestore.sdk.historical import (
    EventReader,
    LabelTrainingRows,
    LiveArchive,
    Progress,
    entity_rows,
    join_views,
    label_training_rows,
)
from featurestore.sdk.online import OnlineFeatures, online_keys, readings
from featurestore.sdk.refs import FeatureSelection, select_features
from featurestore.snapshots import SnapshotStore
from fti_core.errors import InvalidArgumentError, NotFoundError
from fti_core.settings import FtiSettings, load_settings

__all__ = ["EVENT_TIMESTAMP", "AsOf", "FeatureStore", "Output"]

EVENT_TIMESTAMP = "event_timestamp"
AsOf = Literal["event_time", "served"]
Output = Literal["pandas", "arrow"]


class FeatureStore:
    """Point-in-time training data and online reads, with the semantics every engine shares.

    `definitions`: a `Definitions` or the path of the YAML file; `offline`: the offline store's
    URI (or an `OfflineStore`); `online`: an `OnlineStore` (or a Redis URL), needed only by
    `get_online_features`. `FeatureStore.from_settings()` builds one from the `FTI_` settings
    every process reads (`FTI_DEFINITIONS_PATH`, `FTI_OFFLINE_STORE_URI`, `FTI_REDIS_URL`, ...).
    """

    def __init__(
        self,
        definitions: Definitions | str | Path,
        offline: OfflineStore | str,
        online: OnlineStore | str | None = None,
        *,
        redis_prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.definitions = definitions if isinstance(definitions, Definitions) else load_definitions(Path(definitions))
        self.offline = offline if isinstance(offline, OfflineStore) else OfflineStore(offline)
        self._offline_root = offline if isinstance(offline, str) else None
        self._online = RedisOnlineStore.from_url(online, redis_prefix) if isinstance(online, str) else online

    @classmethod
    def from_settings(cls, settings: FtiSettings | None = None, *, config_file: Path | None = None) -> FeatureStore:
        s = settings if settings is not None else load_settings(FtiSettings, config_file)
        return cls(
            s.definitions_path,
            s.offline_root,
            RedisOnlineStore.from_url(s.redis_url.get_secret_value(), s.redis_prefix),
        )

    def reader(self, snapshot: str | EventReader | None = None) -> EventReader:
        """A snapshot by id (or "latest"), or the live archive when None (or "live")."""
        if snapshot is None or snapshot == "live":
            return LiveArchive(self.offline)
        if not isinstance(snapshot, str):
            return snapshot
        store = SnapshotStore(self._offline_root or self.offline.root)
        if snapshot == "latest":
            latest = store.latest()
            if latest is None:
                raise NotFoundError(
                    f"no snapshot in {self.offline.root}; create one with `fti features snapshot create`"
                )
            return latest
        return store.get(snapshot)

    def label_training_rows(
        self,
        label: str,
        views: Sequence[FeatureViewDef],
        *,
        snapshot: str | EventReader | None = None,
        as_of: AsOf = "event_time",
        allow_exact_matches: bool = True,
        progress: Progress = lambda _msg: None,
    ) -> LabelTrainingRows:
        """Every feature of `views` read at each label event's time (the trainer's training set)."""
        return label_training_rows(
            self.reader(snapshot),
            self.definitions,
            label,
            views,
            as_served=_served(as_of),
            allow_exact_matches=allow_exact_matches,
            progress=progress,
        )

    def get_historical_features(
        self,
        entity_df_or_label: pd.DataFrame | str,
        features: str | Sequence[str],
        *,
        as_of: AsOf = "event_time",
        to: Output = "pandas",
        snapshot: str | EventReader | None = None,
        timestamp_column: str = EVENT_TIMESTAMP,
        entity_columns: Mapping[str, Sequence[str]] | None = None,
        allow_exact_matches: bool = True,
    ) -> pd.DataFrame | pa.Table:
        """Features read at each row's time, point in time correct (never a value later than the row).

        `entity_df_or_label`: a DataFrame with a timestamp column and one column per entity kind
        the features need (a composite kind as its joined key, or as its part columns named in
        `entity_columns`), or a label name of the definitions (rows from its label events).
        `features`: `view:version:feature` / `view:feature` refs, or a model name (its feature set).
        `as_of="served"` reads only what had been ingested by each row's time.
        """
        if to not in ("pandas", "arrow"):
            raise InvalidArgumentError(f"to must be 'pandas' or 'arrow', not {to!r}")
        selection = select_features(self.definitions, features)
        if isinstance(entity_df_or_label, str):
            out = self._label_frame(entity_df_or_label, selection, snapshot, as_of, allow_exact_matches)
        else:
            out = self._entity_frame(
                entity_df_or_label, selection, snapshot, as_of, timestamp_column, entity_columns, allow_exact_matches
            )
        return pa.Table.from_pandas(out, preserve_index=False) if to == "arrow" else out

    def _label_frame(
        self, label: str, selection: FeatureSelection, snapshot: str | EventReader | None, as_of: AsOf, exact: bool
    ) -> pd.DataFrame:
        views = [v.view for v in selection.views]
        got = self.label_training_rows(label, views, snapshot=snapshot, as_of=as_of, allow_exact_matches=exact)
        # Keys first, then the target, then the features: the order an entity_df read gives.
        keys = ["event_id", LABEL_TIME, *(c for c in got.labels.columns if c not in ("event_id", LABEL_TIME, TARGET))]
        labels = got.labels[[*keys, TARGET]].rename(columns={LABEL_TIME: EVENT_TIMESTAMP, TARGET: label})
        return pd.concat([labels, _typed(got.features, selection)], axis=1)

    def _entity_frame(
        self,
        entity_df: pd.DataFrame,
        selection: FeatureSelection,
        snapshot: str | EventReader | None,
        as_of: AsOf,
        timestamp_column: str,
        entity_columns: Mapping[str, Sequence[str]] | None,
        exact: bool,
    ) -> pd.DataFrame:
        rows = entity_rows(entity_df, selection.entities, timestamp_column, entity_columns)
        views = [v.view for v in selection.views]
        features, _ = join_views(
            self.reader(snapshot), rows, views, allow_exact_matches=exact, as_served=_served(as_of)
        )
        out = entity_df.reset_index(drop=True).copy()
        clash = sorted(set(out.columns) & set(selection.columns))
        if clash:
            raise PointInTimeError(f"entity_df already has feature columns {clash}")
        typed = _typed(features, selection)
        for column in selection.columns:
            out[column] = typed[column].to_numpy()
        return out

    def get_online_features(
        self,
        features: str | Sequence[str],
        entities: Sequence[Mapping[str, object]] | pd.DataFrame,
        *,
        entity_columns: Mapping[str, Sequence[str]] | None = None,
    ) -> OnlineFeatures:
        """Each entity row's features read now from the online store, each with a status and an age."""
        if self._online is None:
            raise InvalidArgumentError("this FeatureStore has no online store; pass online=... or use from_settings()")
        selection = select_features(self.definitions, features)
        rows = entities.to_dict("records") if isinstance(entities, pd.DataFrame) else list(entities)
        keys = online_keys(selection, rows, entity_columns)
        now = int(time.time() * 1000)
        values = self._online.read_at([k for row in keys for k in row], now)
        return readings(selection, keys, values, now)


def _served(as_of: AsOf) -> bool:
    if as_of not in ("event_time", "served"):
        raise InvalidArgumentError(f"as_of must be 'event_time' or 'served', not {as_of!r}")
    return as_of == "served"


def _typed(features: pd.DataFrame, selection: FeatureSelection) -> pd.DataFrame:
    """The selected columns, numeric features as float64 (the join gives every column as objects
    when any view has string features; those stay `str`, NaN when missing)."""
    out = {}
    for vs in selection.views:
        strings = {f.name for f in vs.view.features if f.is_string}
        for name, column in zip(vs.features, vs.columns, strict=True):
            values = features[column]
            out[column] = values if name in strings else _floats(values)
    return pd.DataFrame(out, index=features.index)


def _floats(values: pd.Series) -> pd.Series:
    try:
        return values.astype("float64")
    except (TypeError, ValueError):  # a derived feature that yields text stays as it is
        return values
