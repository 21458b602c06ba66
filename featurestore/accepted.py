"""Which archived events a view aggregates: one rule for the backfill, `verify` and the trainer.

* **Dedup scope**: one event per (event_type, event_id), whatever message key or partition
  carried it; of several archived copies the first ingested counts (replays are identical).
* **Lateness**: an event is late for a view when `time < watermark - allowed_lateness`, the
  watermark being the one the worker recorded with the event in the archive (the newest
  time seen earlier on its message key). Late events are archived but never aggregated.
* The view's entity key must be present in the event's entities.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from featurestore.aggregations import Columns
from featurestore.definitions import FeatureViewDef
from featurestore.tiles import Event

__all__ = ["EntityEvents", "accepted_events", "dedup_archive", "is_late"]


def is_late(time_ms: int, watermark_ms: int | None, allowed_lateness_ms: int) -> bool:
    return watermark_ms is not None and watermark_ms >= 0 and time_ms < watermark_ms - allowed_lateness_ms


def dedup_archive(archive: pd.DataFrame) -> pd.DataFrame:
    """One row per (event_type, event_id): the first ingested copy."""
    if archive.empty:
        return archive
    first = archive.sort_values("ingest_ns", kind="stable").drop_duplicates(["event_type", "event_id"], keep="first")
    return first.sort_values(["event_time_ms", "event_id"], kind="stable").reset_index(drop=True)


@dataclass
class EntityEvents:
    """One entity's accepted events in (time, id) order, with the ingest time (ns) of each."""

    events: list[Event] = field(default_factory=list)
    ingest_ns: list[int] = field(default_factory=list)
    _columns: Columns | None = field(default=None, repr=False, compare=False)

    def columns(self) -> Columns:
        """The events as columns, built at the first call (add no events after it)."""
        if self._columns is None or len(self._columns.times) != len(self.events):
            self._columns = Columns(self.events)
        return self._columns

    def seen_by(self, t_ms: int) -> list[Event]:
        """Only the events ingested at or before t ("as the server saw it")."""
        cut = t_ms * 1_000_000
        return [e for e, i in zip(self.events, self.ingest_ns, strict=True) if i <= cut]


def accepted_events(
    view: FeatureViewDef, archive: pd.DataFrame, entities: Iterable[str] | None = None
) -> dict[str, EntityEvents]:
    """Per entity key, the events of `archive` (offline archive columns) that `view` aggregates."""
    df = dedup_archive(archive[archive["event_type"] == view.source])
    if df.empty:
        return {}
    keys = [json.loads(x).get(view.entity) for x in df["entities_json"]]
    df = df.assign(entity_key=keys)
    df = df[df["entity_key"].notna()]
    if entities is not None:
        df = df[df["entity_key"].isin(set(entities))]
    wm = df["watermark_ms"].to_numpy()
    t = df["event_time_ms"].to_numpy()
    df = df[~((wm >= 0) & (t < wm - view.allowed_lateness_ms))]
    fields = {f.field for f in view.features if f.field}
    out: dict[str, EntityEvents] = {}
    columns = (df["entity_key"], df["event_time_ms"], df["event_id"], df["values_json"], df["ingest_ns"])
    for key, tm, eid, vj, ing in zip(*columns, strict=True):
        values = {k: x for k, x in json.loads(vj).items() if k in fields}
        got = out.setdefault(str(key), EntityEvents())
        got.events.append(Event(int(tm), str(eid), values))
        got.ingest_ns.append(int(ing))
    # dedup_archive sorts by (time, id), so each entity's events are already in order.
    return out
