"""Read-time window semantics, one implementation for every engine: plain functions over plain data.

**A window feature read at time t** is the aggregate (see `featurestore.aggregations`) of the
entity's accepted events e with

    window_start(t) <= e.time_ms <= t,   window_start(t) = floor(t / step) * step - size + step

i.e. the newest hopping window that holds t, cut at t: its `size / step` step-aligned tiles,
the last of which (the *current* tile, holding t) only up to t itself, both ends closed. A
tumbling window (step == size) is the current tile up to t. Nothing after t is ever included,
so a training row is point-in-time correct, and a count read long after the last event is 0.

Two engines compute it:

* batch (`evaluate_events`): one fold of each feature's kind over the events of its window;
* streaming (`Tiles`, `evaluate_tiles`): a *tile* is the exact partial aggregate of the
  events of one entity in one `[start, start + step)` interval, per window step of the view
  (features that share a step share tiles). A read at t merges the window's tiles; the
  current tile is taken whole when its newest event is at or before t (always so when t is
  at or after the entity's newest event: the server's case), else it is rebuilt from the
  raw events of that tile (`tail`).

Partials are exact, so the two agree bit for bit for any arrival order and any tiling
(tested). The online store keeps what reads at `t >= newest - future_skew` need
(`horizon_ms`, `tail_start_ms`); the offline engines read the archive.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from featurestore.aggregations import Columns, Kind, kind_of
from featurestore.definitions import AggregationFunction, FeatureDef, FeatureViewDef, WindowDef
from featurestore.values import FeatureValue, Scalar

__all__ = [
    "Event",
    "NeedTail",
    "Tile",
    "TileKey",
    "Values",
    "build_tiles",
    "decode_tile",
    "encode_tile",
    "evaluate_events",
    "evaluate_many",
    "evaluate_tiles",
    "feature_kinds",
    "horizon_ms",
    "passes",
    "tail_start_ms",
    "tile_field",
    "tile_start",
    "tile_steps",
    "window_start",
]

Values = dict[str, FeatureValue]  # str for string features (`FeatureDef.is_string`), else float or None
TileKey = tuple[int, int]  # (step_ms, start_ms)


class Event(NamedTuple):
    """One accepted event as a view reads it: its order key and the fields the view reads.

    A named tuple rather than a frozen dataclass: the worker makes one per event and view, and
    a tuple costs a third as much to build."""

    time_ms: int
    event_id: str
    values: Mapping[str, Scalar]

    @property
    def order(self) -> tuple[int, str]:
        return (self.time_ms, self.event_id)


class Tile(NamedTuple):
    """Exact partials of the features of one step over one tile, and the tile's newest event time."""

    max_time_ms: int
    partials: Mapping[str, Any]


class NeedTail(Exception):
    """The read time falls inside a tile that also holds later events: its raw events are needed."""


def tile_start(t: int, step_ms: int) -> int:
    return (t // step_ms) * step_ms


def window_start(t: int, window: WindowDef) -> int:
    return tile_start(t, window.step_ms) - window.size_ms + window.step_ms


def tile_steps(view: FeatureViewDef) -> list[int]:
    return sorted({f.window.step_ms for f in view.features})


def horizon_ms(view: FeatureViewDef, newest_ms: int, future_skew_ms: int) -> int:
    """The oldest event time any read at t >= newest - future_skew can see (state older is useless online)."""
    return min(window_start(newest_ms - future_skew_ms, f.window) for f in view.features)


def tail_start_ms(view: FeatureViewDef, newest_ms: int, future_skew_ms: int) -> int:
    """Raw events from here on let a read at t >= newest - future_skew split its current tile."""
    return min(tile_start(newest_ms - future_skew_ms, s) for s in tile_steps(view))


def tile_field(key: TileKey) -> str:
    return f"{key[0]}:{key[1]}"


def _features_of_step(view: FeatureViewDef, step: int) -> list[FeatureDef]:
    return [f for f in view.features if f.window.step_ms == step]


def passes(feature: FeatureDef, values: Mapping[str, Scalar]) -> bool:
    """Whether an event contributes to `feature` at all: its `where` filter is true of it.
    One event at a time (the streaming engine calls the same filter's test, looked up once
    per view; the batch engine's is `Columns.passing`)."""
    flt = feature.filter
    return flt is None or flt.test(values)


def _fold(features: Sequence[FeatureDef], events: Iterable[Event]) -> Tile:
    partials = {f.name: kind_of(f.agg).empty() for f in features}
    newest = -(2**63)
    for e in events:
        newest = max(newest, e.time_ms)
        for f in features:
            if passes(f, e.values):
                partials[f.name] = kind_of(f.agg).add(
                    partials[f.name], e.time_ms, e.event_id, e.values.get(f.field) if f.field else None
                )
    return Tile(newest, partials)


def _derive(view: FeatureViewDef, out: Values) -> Values:
    """Add the view's derived features, each from the values before it (read time only)."""
    for d in view.derived:
        out[d.name] = d.expression.number(out)
    return out


def build_tiles(view: FeatureViewDef, events: Iterable[Event], since_ms: int | None = None) -> dict[TileKey, Tile]:
    """The view's tiles of `events` (any order), only those starting at or after `since_ms` when given."""
    groups: dict[TileKey, list[Event]] = {}
    steps = tile_steps(view)
    for e in events:
        for s in steps:
            start = tile_start(e.time_ms, s)
            if since_ms is None or start >= since_ms:
                groups.setdefault((s, start), []).append(e)
    return {key: _fold(_features_of_step(view, key[0]), evs) for key, evs in groups.items()}


def evaluate_events(view: FeatureViewDef, events: Sequence[Event], t: int, columns: Columns | None = None) -> Values:
    """Batch engine: the view read at t over one entity's accepted events, sorted by `order`
    (`columns`: the same events as `Columns`, when a caller reads many times over them)."""
    cols = columns if columns is not None else Columns(events)
    out: Values = {}
    for f in view.features:
        mine = cols.passing(f.filter)
        hi = bisect_right(mine.times, t)
        lo = bisect_left(mine.times, window_start(t, f.window), 0, hi)
        out[f.name] = kind_of(f.agg).window(mine, f.field, lo, hi)
    return _derive(view, out)


def evaluate_many(view: FeatureViewDef, columns: Columns, times: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    """`evaluate_events` at many read times over one entity's columns: one row per time, one
    column per feature in `feature_names` order (NaN for a missing value). Window bounds are found
    for all times at once; derived features are computed over the columns at once. Float64, or
    object (str values beside floats) when the view has string features."""
    strings = any(f.is_string for f in view.features)
    out = np.full((len(times), len(view.feature_names)), np.nan, dtype=object if strings else np.float64)
    for j, f in enumerate(view.features):
        mine = columns.passing(f.filter)
        event_times = np.asarray(mine.times, dtype=np.int64)
        hi = np.searchsorted(event_times, times, side="right")
        size, step = f.window.size_ms, f.window.step_ms
        lo = np.minimum(np.searchsorted(event_times, (times // step) * step - size + step, side="left"), hi)
        if f.agg is AggregationFunction.COUNT:
            out[:, j] = hi - lo
            continue
        bounds = list(zip(lo.tolist(), hi.tolist(), strict=True))
        if f.agg in (AggregationFunction.SUM, AggregationFunction.MEAN):
            values = _sums(mine, f.field or "", bounds, f.agg is AggregationFunction.MEAN)
        else:
            kind = kind_of(f.agg)
            values = [kind.window(mine, f.field, a, b) for a, b in bounds]
        out[:, j] = [np.nan if v is None else v for v in values]
    names = view.feature_names
    for j, d in enumerate(view.derived, start=len(view.features)):
        out[:, j] = d.expression.numbers({n: out[:, i] for i, n in enumerate(names[:j])}, len(times))
    return out


def _sums(columns: Columns, field: str, bounds: Sequence[tuple[int, int]], mean: bool) -> list[FeatureValue]:
    """SUM or MEAN `Kind.window`s over many bounds in one comprehension (the same exact ratios)."""
    prefix, shift, counts = columns.sums(field)
    scale = 1 << shift
    out: list[FeatureValue] = []
    try:
        for a, b in bounds:  # as ExactSum.ratio: an exact zero is 0.0, anything else divided once
            n, total = counts[b] - counts[a], prefix[b] - prefix[a]
            if mean and n == 0:
                out.append(None)
            else:
                out.append(0.0 if total == 0 else total / (scale * n if mean else scale))
        return out
    except OverflowError:  # beyond the double range somewhere: each window on its own
        kind = kind_of(AggregationFunction.MEAN if mean else AggregationFunction.SUM)
        return [kind.window(columns, field, a, b) for a, b in bounds]


def evaluate_tiles(
    view: FeatureViewDef, tiles: Mapping[TileKey, Tile], t: int, tail: Sequence[Event] | None = None
) -> Values:
    """Streaming engine: the view read at t from its tiles (and `tail`, the raw events of
    current tiles that hold events after t; `NeedTail` when such a tile is met without it)."""
    current: dict[int, Tile | None] = {}
    for s in tile_steps(view):
        key = (s, tile_start(t, s))
        tile = tiles.get(key)
        if tile is not None and tile.max_time_ms > t:
            if tail is None:
                raise NeedTail(tile_field(key))
            tile = _fold(_features_of_step(view, s), (e for e in tail if key[1] <= e.time_ms <= t))
        current[s] = tile
    out: Values = {}
    for f in view.features:
        kind, s = kind_of(f.agg), f.window.step_ms
        p = kind.empty()
        now = tile_start(t, s)
        for start in range(window_start(t, f.window), now, s):
            tile = tiles.get((s, start))
            if tile is not None:
                p = kind.merge(p, tile.partials[f.name])
        cur = current[s]
        if cur is not None:
            p = kind.merge(p, cur.partials[f.name])
        out[f.name] = kind.finish(p)
    return _derive(view, out)


_compact = json.JSONEncoder(separators=(",", ":")).encode


def encode_tile(view: FeatureViewDef, tile: Tile) -> str:
    kinds = feature_kinds(view)
    return _compact([tile.max_time_ms, {n: kinds[n].encode(p) for n, p in tile.partials.items()}])


def decode_tile(view: FeatureViewDef, raw: str | bytes) -> Tile:
    t, partials = json.loads(raw)
    kinds = feature_kinds(view)
    return Tile(int(t), {n: kinds[n].decode(p) for n, p in partials.items()})


_KINDS_BY_VIEW: dict[int, tuple[FeatureViewDef, Mapping[str, Kind[Any]]]] = {}


def feature_kinds(view: FeatureViewDef) -> Mapping[str, Kind[Any]]:
    """Each feature's aggregation kind by name, cached per view object (hashing a view costs more)."""
    cached = _KINDS_BY_VIEW.get(id(view))
    if cached is None or cached[0] is not view:
        cached = _KINDS_BY_VIEW[id(view)] = (view, {f.name: kind_of(f.agg) for f in view.features})
    return cached[1]
