"""Skew check: recompute entities from the raw archive and compare with Redis and the offline rows.

Comparison is exact (bit-equal floats, missing == missing), because both engines share the
same maths; any difference is a bug or lost data, not noise.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from feature_stream.backfill import ViewResult, compute_view, parse_view_ref
from feature_stream.settings import FeatureStreamSettings
from featurestore.definitions import FeatureViewDef, load_definitions
from featurestore.offline import OfflineStore
from featurestore.online import OnlineKey, OnlineValue, RedisOnlineStore

__all__ = ["SkewReport", "ViewSkew", "compare_view", "run_verify"]


@dataclass
class ViewSkew:
    view: str
    entities: int = 0
    offline_rows: int = 0
    online_values: int = 0
    mismatches: list[str] = field(default_factory=list)
    by_feature: Counter[str] = field(default_factory=Counter)


@dataclass
class SkewReport:
    views: list[ViewSkew]

    @property
    def mismatches(self) -> int:
        return sum(len(v.mismatches) for v in self.views)

    def render(self, limit: int = 20) -> str:
        lines = ["view                     entities  offline_rows  online  mismatches"]
        for v in self.views:
            lines.append(
                f"{v.view:<24} {v.entities:>8} {v.offline_rows:>13} {v.online_values:>7} {len(v.mismatches):>11}"
            )
            for feat, n in v.by_feature.most_common():
                lines.append(f"    {feat}: {n}")
            lines.extend(f"    ! {m}" for m in v.mismatches[:limit])
        lines.append("OK: no mismatches" if not self.mismatches else f"FAILED: {self.mismatches} mismatches")
        return "\n".join(lines)


def _same(a: object, b: object) -> bool:
    fa = None if a is None or (isinstance(a, float) and math.isnan(a)) else a
    fb = None if b is None or (isinstance(b, float) and math.isnan(b)) else b
    if fa is None or fb is None:
        return fa is fb
    return float(fa) == float(fb)  # type: ignore[arg-type]


def _compare_rows(view: FeatureViewDef, expected: pd.DataFrame, actual: pd.DataFrame, skew: ViewSkew) -> None:
    exp = {(r["entity_key"], r["event_id"]): r for r in expected.to_dict("records")}
    act = {(r["entity_key"], r["event_id"]): r for r in actual.to_dict("records")}
    skew.offline_rows += len(exp)
    for key in sorted(exp.keys() - act.keys()):
        skew.mismatches.append(f"offline row missing {key}")
    for key in sorted(act.keys() - exp.keys()):
        skew.mismatches.append(f"unexpected offline row {key}")
    for key in sorted(exp.keys() & act.keys()):
        e, a = exp[key], act[key]
        if bool(e["late"]) != bool(a["late"]) or int(e["event_time_ms"]) != int(a["event_time_ms"]):
            skew.mismatches.append(
                f"offline row {key}: late/time {e['late']}/{e['event_time_ms']} vs {a['late']}/{a['event_time_ms']}"
            )
        for f in view.feature_names:
            if not _same(e[f], a[f]):
                skew.by_feature[f] += 1
                skew.mismatches.append(f"offline {key} {f}: expected {e[f]!r}, found {a[f]!r}")


def _compare_online(
    view: FeatureViewDef,
    expected: Mapping[str, tuple[int, Mapping[str, float | None]]],
    actual: Mapping[str, OnlineValue | None],
    skew: ViewSkew,
) -> None:
    skew.online_values += len(expected)
    for ent, (t, values) in sorted(expected.items()):
        got = actual.get(ent)
        if got is None:
            skew.mismatches.append(f"online value missing for {ent}")
            continue
        if got.event_time_ms != t:
            skew.mismatches.append(f"online {ent}: as of {got.event_time_ms}, expected {t}")
        for f in view.feature_names:
            if not _same(values.get(f), got.values.get(f)):
                skew.by_feature[f"online:{f}"] += 1
                skew.mismatches.append(f"online {ent} {f}: expected {values.get(f)!r}, found {got.values.get(f)!r}")


def compare_view(
    view: FeatureViewDef,
    expected: ViewResult,
    actual_rows: pd.DataFrame,
    actual_online: Mapping[str, OnlineValue | None],
) -> ViewSkew:
    """Exact comparison of one view's recomputation with what the worker stored."""
    skew = ViewSkew(view.ref, entities=len(set(expected.rows["entity_key"])))
    _compare_rows(view, expected.rows, actual_rows, skew)
    _compare_online(view, expected.online, actual_online, skew)
    return skew


def run_verify(
    settings: FeatureStreamSettings, view_refs: Sequence[str] | None = None, *, sample: int = 200, seed: int = 0
) -> SkewReport:
    defs = load_definitions(settings.definitions_path)
    views = [defs.view(*parse_view_ref(r)) for r in view_refs] if view_refs else list(defs.views)
    store = OfflineStore(settings.offline_root)
    online = RedisOnlineStore.from_url(settings.redis_url.get_secret_value(), settings.redis_prefix)
    archive = store.read_archive(sorted({v.source for v in views}))
    report = []
    for view in views:
        full = compute_view(view, archive.iloc[:0]) if archive.empty else None
        stored = store.read_features(view.name, view.version, view.feature_names)
        keys = sorted(set(stored["entity_key"]) | _archive_entities(view, archive))
        chosen = keys if sample <= 0 or sample >= len(keys) else random.Random(seed).sample(keys, sample)
        expected = full or compute_view(view, archive, entities=chosen)
        actual_rows = stored[stored["entity_key"].isin(set(chosen))]
        values = online.read([OnlineKey(view.name, view.version, e) for e in chosen])
        report.append(compare_view(view, expected, actual_rows, dict(zip(chosen, values, strict=True))))
    return SkewReport(report)


def _archive_entities(view: FeatureViewDef, archive: pd.DataFrame) -> set[str]:
    import json

    df = archive[archive["event_type"] == view.source]
    return {e[view.entity] for e in (json.loads(x) for x in df["entities_json"]) if view.entity in e}
