"""Batch engine: recompute a view from the raw archive with the same maths as the stream.

Reading, filtering, lateness and grouping are vectorised (pyarrow/pandas); each entity's rows
come from `aggregate.compute_entity_rows`, the function the streaming worker's windows are
built on, so the two engines cannot drift apart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from feature_stream.aggregate import Rec, compute_entity_rows
from feature_stream.settings import FeatureStreamSettings
from featurestore.catalogue import Catalogue
from featurestore.definitions import DefinitionError, FeatureViewDef, load_definitions
from featurestore.offline import FeatureRow, OfflineStore
from featurestore.online import OnlineRow, RedisOnlineStore

__all__ = ["ViewResult", "compute_view", "parse_view_ref", "run_backfill"]


@dataclass(frozen=True)
class ViewResult:
    """Expected offline rows (accepted and late) and online values of one view."""

    rows: pd.DataFrame  # entity_key, event_id, event_time_ms, late, then the features
    online: dict[str, tuple[int, dict[str, float | None]]]  # entity -> (event time, values)


def parse_view_ref(ref: str) -> tuple[str, int]:
    name, _, version = ref.partition(":")
    if not version.isdigit():
        raise DefinitionError(f"view reference {ref!r}: use NAME:VERSION")
    return name, int(version)


def _prepare(view: FeatureViewDef, archive: pd.DataFrame) -> pd.DataFrame:
    df = archive[archive["event_type"] == view.source]
    entities = [json.loads(x) for x in df["entities_json"]]
    df = df.assign(entity_key=[e.get(view.entity) for e in entities])
    df = df[df["entity_key"].notna()]
    wm = df["watermark_ms"].to_numpy()
    t = df["event_time_ms"].to_numpy()
    late = (wm >= 0) & (t < wm - view.allowed_lateness_ms)
    return df.assign(view_late=late)


def compute_view(
    view: FeatureViewDef,
    archive: pd.DataFrame,
    entities: Iterable[str] | None = None,
    progress: bool = False,
) -> ViewResult:
    """Rows and online values of `view` for every entity in `archive` (or only `entities`)."""
    df = _prepare(view, archive)
    if entities is not None:
        df = df[df["entity_key"].isin(set(entities))]
    fields = {f.field for f in view.features if f.field}
    cols: dict[str, list[object]] = {c: [] for c in ("entity_key", "event_id", "event_time_ms", "late")}
    cols.update({f: [] for f in view.feature_names})
    online: dict[str, tuple[int, dict[str, float | None]]] = {}

    def emit(entity: str, eid: str, t: int, late: bool, values: dict[str, float | None]) -> None:
        for c, v in (("entity_key", entity), ("event_id", eid), ("event_time_ms", t), ("late", late)):
            cols[c].append(v)
        for f in view.feature_names:
            cols[f].append(values.get(f))

    groups = df.groupby("entity_key", sort=True)
    it = groups
    if progress:
        from tqdm import tqdm

        it = tqdm(groups, total=groups.ngroups, unit="entity", desc=f"backfill {view.ref}")
    for entity, g in it:
        recs = []
        for eid, t, late, vj in zip(g["event_id"], g["event_time_ms"], g["view_late"], g["values_json"], strict=True):
            if late:
                emit(str(entity), eid, int(t), True, dict.fromkeys(view.feature_names))
            else:
                vals = {k: x for k, x in json.loads(vj).items() if k in fields}
                recs.append(Rec(int(t), eid, vals))
        rows = compute_entity_rows(view, recs)
        for rec, values in rows:
            emit(str(entity), rec.event_id, rec.time_ms, False, values)
        if rows:
            online[str(entity)] = (rows[-1][0].time_ms, rows[-1][1])
    out = pd.DataFrame(cols)
    for f in view.feature_names:
        out[f] = pd.to_numeric(out[f], errors="coerce").astype(np.float64)
    out = out.astype({"event_time_ms": np.int64, "late": bool})
    return ViewResult(out.sort_values(["entity_key", "event_time_ms", "event_id"]).reset_index(drop=True), online)


def run_backfill(
    settings: FeatureStreamSettings,
    view_ref: str,
    from_ms: int | None = None,
    to_ms: int | None = None,
    *,
    online: bool = False,
    progress: bool = False,
) -> dict[str, object]:
    """Recompute one view version from the archive; write offline rows (and online values)."""
    name, version = parse_view_ref(view_ref)
    view = load_definitions(settings.definitions_path).view(name, version)
    if view.version != version:
        raise DefinitionError(f"no feature view {view_ref} in {settings.definitions_path}")
    Catalogue(settings.offline_root).register([view])
    store = OfflineStore(settings.offline_root)
    # The whole archive of the source type is read: windows before --from need their history.
    result = compute_view(view, store.read_archive([view.source]), progress=progress)
    rows = result.rows
    if from_ms is not None:
        rows = rows[rows["event_time_ms"] >= from_ms]
    if to_ms is not None:
        rows = rows[rows["event_time_ms"] <= to_ms]
    now = time.time_ns()
    frows = [
        FeatureRow(r.entity_key, r.event_id, int(r.event_time_ms), {f: _opt(getattr(r, f)) for f in view.feature_names},
                   bool(r.late), now)
        for r in rows.itertuples(index=False)
    ]  # fmt: skip
    store.write_features(view.name, view.version, view.feature_names, frows)
    applied = 0
    if online:
        writer = RedisOnlineStore.from_url(settings.redis_url.get_secret_value(), settings.redis_prefix)
        orows = [
            OnlineRow(view.name, view.version, ent, t, vals, view.ttl_ms)
            for ent, (t, vals) in result.online.items()
            if (from_ms is None or t >= from_ms) and (to_ms is None or t <= to_ms)
        ]
        for i in range(0, len(orows), 1000):
            applied += writer.write(orows[i : i + 1000])
    return {"view": view.ref, "offline_rows": len(frows), "online_applied": applied, "entities": len(result.online)}


def _opt(x: object) -> float | None:
    if x is None:
        return None
    f = float(x)  # type: ignore[arg-type]
    return None if np.isnan(f) else f
