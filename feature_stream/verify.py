"""Skew check: the online store evaluated at probe times against the recomputation from the archive.

For each chosen entity, both sides are read at the same times t — the entity's newest event,
the event times within the future skew before it, just after it, when its shortest window has
moved past it (counts decay to 0), when every window has, and now — with the one definition
(`featurestore.tiles`): the expected side folds the archive's accepted events
(`featurestore.accepted`), the online side merges what Redis holds, as the server does.
Comparison is exact (bit-equal floats, equal strings, missing == missing). Mismatches are grouped by cause
and come with the command that repairs them.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from feature_stream.backfill import compute_view, parse_view_ref
from feature_stream.settings import FeatureStreamSettings
from featurestore.accepted import EntityEvents, ParsedArchive
from featurestore.catalogue import Catalogue
from featurestore.definitions import FeatureViewDef, load_definitions
from featurestore.offline import OfflineStore
from featurestore.online import OnlineKey, OnlineState, RedisOnlineStore
from featurestore.tiles import evaluate_events

__all__ = ["SkewReport", "ViewSkew", "compare_view", "explain", "probe_times", "run_verify"]

# Causes a report groups mismatches by. Value mismatches of an entity whose state is already
# explained (missing, extra, behind) are counted under that cause, not again as values.
MISSING_ONLINE = "online state missing (entity has events, Redis has none)"
EXTRA_ONLINE = "online state without archived events (no recomputation produces it)"
NEWEST_DIFFERS = "newest event time differs (events lost, or not processed yet: is the worker caught up?)"
DUPLICATE_IDS = "value differs; an event id of the entity is archived twice with different content"
LATE_EVENTS = "value differs; the entity has late events (archived, not aggregated) near the probe"
VALUE_DIFFERS = "value differs at a probe time (unexplained: a bug)"
NO_SPEC = "view spec missing in Redis (the worker never ran for it)"


@dataclass
class ViewSkew:
    view: str
    entities: int = 0
    probes: int = 0
    mismatches: list[str] = field(default_factory=list)
    by_feature: Counter[str] = field(default_factory=Counter)
    by_cause: Counter[str] = field(default_factory=Counter)

    def add(self, cause: str, detail: str) -> None:
        self.by_cause[cause] += 1
        self.mismatches.append(detail)


@dataclass
class SkewReport:
    views: list[ViewSkew]

    @property
    def mismatches(self) -> int:
        return sum(len(v.mismatches) for v in self.views)

    def render(self, limit: int = 20) -> str:
        lines = ["view                     entities  probes  mismatches"]
        for v in self.views:
            lines.append(f"{v.view:<24} {v.entities:>8} {v.probes:>7} {len(v.mismatches):>11}")
            for cause, n in v.by_cause.most_common():
                lines.append(f"    cause: {cause}: {n}")
            for feat, n in v.by_feature.most_common():
                lines.append(f"    feature {feat}: {n}")
            lines.extend(f"    ! {m}" for m in v.mismatches[:limit])
            if v.mismatches:
                lines.append(f"    repair: fti features backfill --view {v.view} --online")
        lines.append("OK: no mismatches" if not self.mismatches else f"FAILED: {self.mismatches} mismatches")
        return "\n".join(lines)


def _same(a: object, b: object) -> bool:
    fa = None if a is None or (isinstance(a, float) and math.isnan(a)) else a
    fb = None if b is None or (isinstance(b, float) and math.isnan(b)) else b
    if fa is None or fb is None:
        return fa is fb
    if isinstance(fa, str) or isinstance(fb, str):  # string features: the same text, never a number
        return isinstance(fa, str) and isinstance(fb, str) and fa == fb
    return float(fa) == float(fb) and math.copysign(1, float(fa)) == math.copysign(1, float(fb))  # type: ignore[arg-type]


def probe_times(view: FeatureViewDef, events: EntityEvents, future_skew_ms: int, now_ms: int) -> list[int]:
    """Read times the online store must answer exactly for this entity (see the module docstring)."""
    if not events.events:
        return [now_ms]
    newest = events.events[-1].time_ms
    shortest = min(f.window.size_ms + f.window.step_ms for f in view.features)
    longest = max(f.window.size_ms + f.window.step_ms for f in view.features)
    recent = [e.time_ms for e in events.events if e.time_ms >= newest - future_skew_ms]
    return sorted(
        {*recent[-5:], newest - future_skew_ms, newest, newest + 1, newest + shortest, newest + longest, now_ms}
    )


def compare_view(
    view: FeatureViewDef,
    expected: Mapping[str, EntityEvents],
    online: Mapping[str, OnlineState | None],
    future_skew_ms: int,
    now_ms: int,
    hints: Mapping[str, str] | None = None,
) -> ViewSkew:
    """Exact comparison of one view's recomputation with the online store, entity by entity
    (`hints`: per entity, the cause to give its value mismatches; see `explain`)."""
    skew = ViewSkew(view.ref, entities=len(online))
    for entity in sorted(online):
        got, want = online[entity], expected.get(entity, EntityEvents())
        if got is None:
            skew.add(NO_SPEC, f"{entity}: no spec for {view.ref}")
            continue
        newest = want.events[-1].time_ms if want.events else -1
        cause = (hints or {}).get(entity, VALUE_DIFFERS)
        if got.newest_ms != newest:
            cause = MISSING_ONLINE if got.newest_ms < 0 else EXTRA_ONLINE if newest < 0 else NEWEST_DIFFERS
            skew.add(cause, f"{entity}: online newest event {got.newest_ms}, archive {newest}")
        for t in probe_times(view, want, future_skew_ms, now_ms):
            skew.probes += 1
            exp, act = evaluate_events(view, want.events, t, want.columns()), got.at(t)
            for f in view.feature_names:
                if not _same(exp[f], act[f]):
                    skew.by_feature[f] += 1
                    skew.add(cause, f"{entity} at {t} {f}: expected {exp[f]!r}, online {act[f]!r}")
    return skew


def _frozen(d: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A dict as a hashable value that tells 1, 1.0 and True apart (as their JSON text did)."""
    return tuple(sorted((k, repr(x)) for k, x in d.items()))


def explain(view: FeatureViewDef, archive: pd.DataFrame) -> dict[str, str]:
    """Per entity, what could make its values differ: ids archived twice with different
    content (copies the dedup scope had to choose between), or late events."""
    df = archive[archive["event_type"] == view.source]
    if df.empty:
        return {}
    legacy = "entities_json" in df.columns  # rows of the earlier JSON-text layout
    entities = [json.loads(x) for x in df["entities_json"]] if legacy else df["entities"].tolist()
    values = [json.loads(x) for x in df["values_json"]] if legacy else df["values"].tolist()
    df = df.assign(
        entity_key=[e.get(view.entity) for e in entities],
        content=[(_frozen(e), _frozen(v)) for e, v in zip(entities, values, strict=True)],
    )
    hints: dict[str, str] = {}
    wm, t = df["watermark_ms"].to_numpy(), df["event_time_ms"].to_numpy()
    for key in df[(wm >= 0) & (t < wm - view.allowed_lateness_ms)]["entity_key"].dropna():
        hints[str(key)] = LATE_EVENTS
    copies = df.drop_duplicates(["event_id", "content"])
    twice = copies[copies.duplicated("event_id", keep=False)]
    for key in twice["entity_key"].dropna():
        hints[str(key)] = DUPLICATE_IDS
    return hints


def run_verify(
    settings: FeatureStreamSettings, view_refs: Sequence[str] | None = None, *, sample: int = 200, seed: int = 0
) -> SkewReport:
    defs = load_definitions(settings.definitions_path)
    views = [defs.view(*parse_view_ref(r)) for r in view_refs] if view_refs else list(defs.views)
    # A view changed without a new version differs from what the worker built: say so, not "a bug".
    Catalogue(settings.offline_root).check(views)
    store = OfflineStore(settings.offline_root)
    online = RedisOnlineStore.from_url(settings.redis_url.get_secret_value(), settings.redis_prefix)
    archive = store.read_archive(sorted({v.source for v in views}))
    parsed = ParsedArchive.of(archive)  # one parse for every view
    now = int(time.time() * 1000)
    report = []
    for view in views:
        expected = compute_view(view, parsed)
        # Entities online that no archived event produces are mismatches too.
        keys = sorted(set(expected) | set(online.entities(view.name, view.version)))
        chosen = keys if sample <= 0 or sample >= len(keys) else random.Random(seed).sample(keys, sample)
        states = online.read_state([OnlineKey(view.name, view.version, e) for e in chosen])
        got = dict(zip(chosen, states, strict=True))
        hints = explain(view, archive)
        report.append(compare_view(view, expected, got, settings.future_skew_ms, now, hints))
    return SkewReport(report)
