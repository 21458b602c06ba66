"""The streaming engine's per-entity state: retained events and the tiles built from them.

The semantics (a window read at t) and the tile maths live in `featurestore.tiles` and
`featurestore.aggregations`, shared with the backfill, `verify`, the trainer and the server.
Here, per view entity, the worker keeps the accepted events that reads at
`t >= newest - future_skew` can still see (from `tiles.horizon_ms` on) and their tiles.

A batch's events of one entity are applied at once: new ids are kept, grouped by tile, and
each touched tile's partials are folded over just that group (`_FOLDS`, and `_adder` for a
group of one: the exact arithmetic of each built-in kind written out, `Kind.add` for any other;
what an event contributes to a feature is `_contributions`'s reading: its filter, then its field). Exact
partials make this equal to folding one event at a time in any order (tested).
`EntityState.apply` returns what changed as one `TileWrite` (whole tiles, raw tail events),
so writing it twice, or after a replay, leaves the online store as it was.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from operator import itemgetter
from typing import Any, ClassVar, NamedTuple

from featurestore.accepted import is_late
from featurestore.aggregations import ExactSum, Kind, LastValue, kind_of
from featurestore.definitions import AggregationFunction, FeatureDef, FeatureViewDef
from featurestore.online import OnlineKey, TileWrite, encode_tail_event
from featurestore.tiles import Event, TileKey, tile_field, tile_steps
from featurestore.values import Scalar

__all__ = ["EntityState", "Rec", "Update", "ViewPlan", "expire_ms", "is_late"]

Rec = Event  # the worker state's name for an accepted event

_compact = json.JSONEncoder(separators=(",", ":")).encode


def expire_ms(view: FeatureViewDef, future_skew_ms: int) -> int:
    """How long an entity's online keys live without writes: never less than a window reaches."""
    return max(view.ttl_ms, max(f.window.size_ms for f in view.features)) + future_skew_ms


Test = Callable[[Mapping[str, Scalar]], bool]  # a feature's `where` filter


def _contributions(f: _Feature, events: Sequence[Rec]) -> tuple[Sequence[Rec], list[Scalar | None]]:
    """The events of a group a feature aggregates (its `where` filter is true of them, as
    `tiles.passes` tests it) and the value each contributes (None: the field is absent). The
    streaming engine's one reading of an event for a feature (the adders read it the same
    way), with the field and filter the view's plan looked up once."""
    field, test = f.field, f.test
    kept = events if test is None else [e for e in events if test(e[2])]
    if not field:
        return kept, [None] * len(kept)
    return kept, [e[2].get(field) for e in kept]


Adder = Callable[[Any, Rec], Any]  # a partial with one event folded in


class _Feature(NamedTuple):
    name: str
    feature: FeatureDef
    kind: Kind[Any]
    fold: Callable[[_Feature, Any, Sequence[Rec]], Any]  # the partial with one tile's group of events folded in
    add: Adder  # the same for a group of one (the usual case)
    field: str | None  # the feature's field and filter (`_contributions`)
    test: Test | None


def _feature(f: FeatureDef) -> _Feature:
    flt = f.filter
    return _Feature(f.name, f, kind_of(f.agg), _fold_of(f), _adder(f), f.field, None if flt is None else flt.test)


class ViewPlan:
    """What a view's updates look up once rather than per event: steps, features per step,
    the windows that bound the state, and each feature's encoder. Shared by its entities."""

    _cache: ClassVar[dict[int, tuple[FeatureViewDef, ViewPlan]]] = {}

    def __init__(self, view: FeatureViewDef) -> None:
        self.view = view
        self.steps = tile_steps(view)
        self.by_step = [
            (
                s,
                [_feature(f) for f in view.features if f.window.step_ms == s],
            )
            for s in self.steps
        ]
        self.windows = sorted({(f.window.step_ms, f.window.size_ms) for f in view.features})
        # Per step: each feature's `"name":`, the JSON text of its encoded partial, and how that
        # text is remembered per tile (`encode`).
        self.texts = {s: [(_json_str(f.name) + ":", _text_of(f), _memo_of(f)) for f in fs] for s, fs in self.by_step}
        self._expire: dict[int, int] = {}
        # `bounds` depends on t = newest - skew only through t // g, g the steps' greatest common
        # divisor (every step is a multiple of g, and (t // g) // (s // g) == t // s): the last
        # answer serves every event until t crosses a multiple of g (a minute for the demo).
        self._g = math.gcd(*self.steps)
        self._last: tuple[int, int, int, int] | None = None  # (t // g, skew, horizon, tail start)

    @classmethod
    def of(cls, view: FeatureViewDef) -> ViewPlan:
        cached = cls._cache.get(id(view))
        if cached is None or cached[0] is not view:
            cached = cls._cache[id(view)] = (view, cls(view))
        return cached[1]

    def bounds(self, newest_ms: int, future_skew_ms: int) -> tuple[int, int]:
        """(`tiles.horizon_ms`, `tiles.tail_start_ms`) from the precomputed windows and steps,
        worked out once per multiple of the steps' gcd."""
        t = newest_ms - future_skew_ms
        q = t // self._g
        last = self._last
        if last is not None and last[0] == q and last[1] == future_skew_ms:
            return last[2], last[3]
        horizon = min((t // s) * s - size + s for s, size in self.windows)
        tail = min((t // s) * s for s in self.steps)
        self._last = (q, future_skew_ms, horizon, tail)
        return horizon, tail

    def expire_ms(self, future_skew_ms: int) -> int:
        if future_skew_ms not in self._expire:
            self._expire[future_skew_ms] = expire_ms(self.view, future_skew_ms)
        return self._expire[future_skew_ms]

    def encode(self, step: int, tile: list[Any]) -> str:
        """The text `tiles.encode_tile` gives the same tile (tested), written out directly:
        encoding every touched tile was the largest JSON cost of a batch.

        A partial whose text costs more than a number's keeps its last text in the tile
        (`tile[2]`), reused while the partial is the same object: partials are immutable, and
        one that did not change (a value the set already holds) is returned as it was. A
        distinct set also keeps its values in order, so a new value is inserted (`_distinct_memo`)
        rather than the set sorted and quoted again: in live traffic a set grows by a value at a
        time, and for 100 values that is ~3 µs against ~10 (1,000 values: ~18 against ~100)."""
        memo = tile[2]
        parts = []
        for (name, text, remembered), p in zip(self.texts[step], tile[1].values(), strict=True):
            if remembered is _Memo.NONE:
                parts.append(name + text(p))
                continue
            hit = memo.get(name)
            if hit is None or hit[0] is not p:
                hit = memo[name] = _distinct_memo(name, p, hit) if remembered is _Memo.SORTED else (p, name + text(p))
            parts.append(hit[1])
        return f"[{tile[0]},{{{','.join(parts)}}}]"


_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _float_text(x: float | None) -> str:
    if x is None:
        return "null"
    return float.__repr__(x) if math.isfinite(x) else _compact(x)


def _sum_text(p: ExactSum) -> str:
    return f'["{p.num}",{p.shift},{p.size}]'


def _last_text(p: LastValue | None) -> str:
    return "null" if p is None else f"[{p.time_ms},{_json_str(p.event_id)},{_float_text(p.value)}]"


def _distinct_text(p: frozenset[str]) -> str:
    return "[" + ",".join(_json_str(x) for x in sorted(p)) + "]"


def _plain(x: str) -> bool:
    """Whether JSON writes `x` as itself in quotes (printable ASCII, no quote or backslash)."""
    return x.isascii() and x.isprintable() and '"' not in x and "\\" not in x


def _distinct_memo(
    name: str, p: frozenset[str], old: tuple[Any, ...] | None
) -> tuple[frozenset[str], str, list[str], bool]:
    """A distinct set's memo: (set, `"name":` + its text, its values sorted, whether all are
    plain). From the last memo of the same tile, whose set is a subset (a tile's set only
    grows), only the new values are inserted; the text is then one join, equal to
    `_distinct_text` (tested)."""
    if old is not None and old[0] <= p:
        values: list[str] = old[2]  # the old memo is being replaced: its list is reused
        plain: bool = old[3]
        for x in sorted(p - old[0]):
            insort(values, x)
            plain = plain and _plain(x)
    else:
        values = sorted(p)
        plain = all(_plain(x) for x in values)
    if not values:
        text = "[]"
    elif plain:
        text = '["' + '","'.join(values) + '"]'
    else:
        text = "[" + ",".join(_json_str(x) for x in values) + "]"
    return p, name + text, values, plain


class _Memo(Enum):
    """How a feature's partial text is remembered per tile (`ViewPlan.encode`)."""

    NONE = 0  # a number or two: remembering it would cost as much as writing it
    TEXT = 1  # the last text, while the partial is the same object
    SORTED = 2  # a distinct set: its text and its values in order (`_distinct_memo`)


_CHEAP_TEXTS = frozenset(
    {
        AggregationFunction.COUNT,
        AggregationFunction.SUM,
        AggregationFunction.MEAN,
        AggregationFunction.MIN,
        AggregationFunction.MAX,
        AggregationFunction.LAST,
    }
)


def _memo_of(f: _Feature) -> _Memo:
    if f.feature.agg in _CHEAP_TEXTS:
        return _Memo.NONE
    return _Memo.SORTED if f.feature.agg is AggregationFunction.DISTINCT_COUNT else _Memo.TEXT


_TEXTS: dict[AggregationFunction, Callable[[Any], str]] = {
    AggregationFunction.COUNT: str,
    AggregationFunction.SUM: _sum_text,
    AggregationFunction.MEAN: _sum_text,
    AggregationFunction.MIN: _float_text,
    AggregationFunction.MAX: _float_text,
    AggregationFunction.LAST: _last_text,
    AggregationFunction.DISTINCT_COUNT: _distinct_text,
}


def _text_of(f: _Feature) -> Callable[[Any], str]:
    """The JSON text of a feature's encoded partial (`Kind.encode`, then compact JSON)."""
    text = _TEXTS.get(f.feature.agg)
    if text is not None:
        return text
    encode = f.kind.encode
    return lambda p: _compact(encode(p))


def _numbers(values: Iterable[Scalar | None]) -> list[float | None]:
    return [None if v is None or isinstance(v, str) else float(v) for v in values]


def _exact_sum(p: ExactSum, xs: Sequence[float | None]) -> ExactSum:
    """`p` plus each number, as `ExactSum.plus(ExactSum.of(x))` one at a time would give."""
    if len(xs) == 1:  # the usual group: one event of an entity in a tile per batch
        x = xs[0]
        if x is None:
            return p
        n, d = x.as_integer_ratio()
        s = d.bit_length() - 1
        shift = max(p.shift, s)
        return ExactSum((p.num << (shift - p.shift)) + (n << (shift - s)), shift, p.size + 1)
    ratios = [x.as_integer_ratio() for x in xs if x is not None]
    if not ratios:
        return p
    shifts = [d.bit_length() - 1 for _, d in ratios]
    shift = max(p.shift, *shifts)
    num = (p.num << (shift - p.shift)) + sum(n << (shift - s) for (n, _), s in zip(ratios, shifts, strict=True))
    return ExactSum(num, shift, p.size + len(ratios))


def _extreme(p: float | None, xs: Iterable[float | None], lowest: bool) -> float | None:
    """min/max in the total order of `aggregations._signed` (-0.0 below 0.0)."""
    for x in xs:
        if x is None:
            continue
        if p is None:
            p = x
        elif lowest:
            if x < p or (x == p and math.copysign(1.0, x) < math.copysign(1.0, p)):
                p = x
        elif x > p or (x == p and math.copysign(1.0, x) > math.copysign(1.0, p)):
            p = x
    return p


def _last(p: LastValue | None, events: Sequence[Rec], xs: Sequence[float | None]) -> LastValue | None:
    for e, x in zip(events, xs, strict=True):
        if x is not None and (p is None or (e.time_ms, e.event_id) > (p.time_ms, p.event_id)):
            p = LastValue(e.time_ms, e.event_id, x)
    return p


def _fold_count(f: _Feature, p: int, group: Sequence[Rec]) -> int:
    events, _ = _contributions(f, group)
    return p + len(events)


def _fold_sum(f: _Feature, p: ExactSum, group: Sequence[Rec]) -> ExactSum:
    return _exact_sum(p, _numbers(_contributions(f, group)[1]))


def _fold_min(f: _Feature, p: float | None, group: Sequence[Rec]) -> float | None:
    return _extreme(p, _numbers(_contributions(f, group)[1]), lowest=True)


def _fold_max(f: _Feature, p: float | None, group: Sequence[Rec]) -> float | None:
    return _extreme(p, _numbers(_contributions(f, group)[1]), lowest=False)


def _fold_last(f: _Feature, p: LastValue | None, group: Sequence[Rec]) -> LastValue | None:
    events, values = _contributions(f, group)
    return _last(p, events, _numbers(values))


def _fold_distinct(f: _Feature, p: frozenset[str], group: Sequence[Rec]) -> frozenset[str]:
    texts = {str(v) for v in _contributions(f, group)[1] if v is not None}
    return p if texts <= p else p | texts


def _fold_any(f: _Feature, p: Any, group: Sequence[Rec]) -> Any:
    """Any other kind: one `Kind.add` per event."""
    kind = f.kind
    events, values = _contributions(f, group)
    for e, v in zip(events, values, strict=True):
        p = kind.add(p, e.time_ms, e.event_id, v)
    return p


# The kinds whose arithmetic is written out above (each equal to its `Kind.add` folded one event
# at a time: tested over `KINDS`); a kind not listed here is folded through its `add`.
_FOLDS: dict[AggregationFunction, Callable[[_Feature, Any, Sequence[Rec]], Any]] = {
    AggregationFunction.COUNT: _fold_count,
    AggregationFunction.SUM: _fold_sum,
    AggregationFunction.MEAN: _fold_sum,
    AggregationFunction.MIN: _fold_min,
    AggregationFunction.MAX: _fold_max,
    AggregationFunction.LAST: _fold_last,
    AggregationFunction.DISTINCT_COUNT: _fold_distinct,
}


def _number(value: Scalar | None) -> float | None:
    return None if value is None or isinstance(value, str) else float(value)


# One event into a partial (the usual group: one event of an entity in a tile per batch): each
# built-in kind's arithmetic written out, in a function closed over the feature's field and
# filter, so a feature costs one call per event. The same reading of the event as
# `_contributions` and the same arithmetic as the folds above and `Kind.add` (tested over `KINDS`).


def _count_adder(field: str | None) -> Adder:
    def add(p: int, e: Rec) -> int:
        return p + 1

    return add


def _sum_adder(field: str | None) -> Adder:
    def add(p: ExactSum, e: Rec) -> ExactSum:
        x = e[2].get(field) if field else None
        if x is None or isinstance(x, str):
            return p
        n, d = float(x).as_integer_ratio()
        s, ps = d.bit_length() - 1, p[1]
        if ps >= s:
            return ExactSum(p[0] + (n << (ps - s)), ps, p[2] + 1)
        return ExactSum((p[0] << (s - ps)) + n, s, p[2] + 1)

    return add


def _min_adder(field: str | None) -> Adder:
    def add(p: float | None, e: Rec) -> float | None:
        x = e[2].get(field) if field else None
        if x is None or isinstance(x, str):
            return p
        x = float(x)
        if p is None or x < p or (x == p and math.copysign(1.0, x) < math.copysign(1.0, p)):
            return x
        return p

    return add


def _max_adder(field: str | None) -> Adder:
    def add(p: float | None, e: Rec) -> float | None:
        x = e[2].get(field) if field else None
        if x is None or isinstance(x, str):
            return p
        x = float(x)
        if p is None or x > p or (x == p and math.copysign(1.0, x) > math.copysign(1.0, p)):
            return x
        return p

    return add


def _last_adder(field: str | None) -> Adder:
    def add(p: LastValue | None, e: Rec) -> LastValue | None:
        x = e[2].get(field) if field else None
        if x is None or isinstance(x, str):
            return p
        if p is None or (e[0], e[1]) > (p[0], p[1]):
            return LastValue(e[0], e[1], float(x))
        return p

    return add


def _distinct_adder(field: str | None) -> Adder:
    def add(p: frozenset[str], e: Rec) -> frozenset[str]:
        v = e[2].get(field) if field else None
        if v is None:
            return p
        text = str(v)
        return p if text in p else p | {text}

    return add


_ADDERS: dict[AggregationFunction, Callable[[str | None], Adder]] = {
    AggregationFunction.COUNT: _count_adder,
    AggregationFunction.SUM: _sum_adder,
    AggregationFunction.MEAN: _sum_adder,
    AggregationFunction.MIN: _min_adder,
    AggregationFunction.MAX: _max_adder,
    AggregationFunction.LAST: _last_adder,
    AggregationFunction.DISTINCT_COUNT: _distinct_adder,
}


def _adder(feature: FeatureDef) -> Adder:
    """A feature's one-event fold: its kind's written-out arithmetic, or `Kind.add` for any
    other kind; behind its `where` filter when it has one."""
    field = feature.field
    make = _ADDERS.get(feature.agg)
    if make is not None:
        add = make(field)
    else:
        kind_add = kind_of(feature.agg).add

        def add(p: Any, e: Rec) -> Any:
            return kind_add(p, e[0], e[1], e[2].get(field) if field else None)

    flt = feature.filter
    if flt is None:
        return add
    test = flt.test

    def filtered(p: Any, e: Rec) -> Any:
        return add(p, e) if test(e[2]) else p

    return filtered


def _fold_of(feature: FeatureDef) -> Callable[[_Feature, Any, Sequence[Rec]], Any]:
    return _FOLDS.get(feature.agg, _fold_any)


@dataclass(frozen=True, slots=True)
class Update:
    """What one batch did to an entity: the online write, and the state events added and dropped."""

    write: TileWrite | None
    added: list[Rec]
    dropped: list[str]
    beyond_horizon: int  # accepted events too old to be seen by any online read (archived, exact)

    def __init__(self, write: TileWrite | None, added: list[Rec], dropped: list[str], beyond_horizon: int) -> None:
        # Written out (`fti_core.native`: frozen dataclasses): one per entity update.
        object.__setattr__(self, "write", write)
        object.__setattr__(self, "added", added)
        object.__setattr__(self, "dropped", dropped)
        object.__setattr__(self, "beyond_horizon", beyond_horizon)


_NOTHING = Update(None, [], [], 0)


# Sort and search keys of a `Rec` (time_ms, event_id, values), as item getters: C calls, not
# Python ones, in the sorts, insorts and bisections of every update.
_order: Callable[[Rec], tuple[int, str]] = itemgetter(0, 1)
_time: Callable[[Rec], int] = itemgetter(0)


def _new_tile(key: TileKey, features: Sequence[_Feature]) -> list[Any]:
    """An empty tile (`EntityState._tiles`)."""
    return [-(2**63), {f.name: f.kind.empty() for f in features}, {}, tile_field(key)]


class EntityState:
    """The retained accepted events of one view entity, sorted by (time, id), and their tiles."""

    __slots__ = ("_ids", "_key", "_plan", "_tiles", "recs", "view")

    def __init__(self, view: FeatureViewDef, recs: Iterable[Rec] = ()) -> None:
        self.view = view
        self._plan = ViewPlan.of(view)
        self.recs: list[Rec] = sorted(recs, key=_order)
        self._ids = {r.event_id for r in self.recs}
        self._key: OnlineKey | None = None  # built at the first write, not at every one
        # (step, start) -> [newest time, {feature: partial}, {feature: (partial, text)}, field]:
        # mutable, owned by this state (the third is `ViewPlan.encode`'s memo, the last the
        # tile's field in the online hash, `tiles.tile_field`).
        self._tiles: dict[TileKey, list[Any]] = {}
        self._fold(self.recs)

    def __len__(self) -> int:
        return len(self.recs)

    @property
    def newest_ms(self) -> int | None:
        return self.recs[-1].time_ms if self.recs else None

    def _fold(self, added: Sequence[Rec]) -> set[TileKey]:
        """Fold new events into their tiles, one group per tile; the keys of the tiles touched."""
        touched: set[TileKey] = set()
        if not added:
            return touched
        tiles = self._tiles
        if len(added) == 1:
            self._fold_one(added[0], touched)
            return touched
        for s, features in self._plan.by_step:
            groups: dict[int, list[Rec]] = {}
            for r in added:
                groups.setdefault((r.time_ms // s) * s, []).append(r)
            for start, group in groups.items():
                key = (s, start)
                touched.add(key)
                tile = tiles.get(key)
                if tile is None:
                    tile = tiles[key] = _new_tile(key, features)
                newest = group[0].time_ms if len(group) == 1 else max(r.time_ms for r in group)
                if newest > tile[0]:
                    tile[0] = newest
                partials = tile[1]
                if len(group) == 1:
                    e = group[0]
                    for f in features:
                        partials[f.name] = f.add(partials[f.name], e)
                else:
                    for f in features:
                        partials[f.name] = f.fold(f, partials[f.name], group)
        return touched

    def _fold_one(self, e: Rec, touched: set[TileKey]) -> None:
        """`_fold` of a single event (live traffic), without grouping."""
        tiles = self._tiles
        t = e.time_ms
        for s, features in self._plan.by_step:
            key = (s, (t // s) * s)
            touched.add(key)
            tile = tiles.get(key)
            if tile is None:
                tile = tiles[key] = _new_tile(key, features)
            if t > tile[0]:
                tile[0] = t
            partials = tile[1]
            for f in features:
                partials[f.name] = f.add(partials[f.name], e)

    def _keep(self, recs: Sequence[Rec]) -> list[Rec]:
        """The events of `recs` not held yet (a replay, or the same event under another key, is
        dropped), now held, in (time, id) order."""
        ids = self._ids
        held = self.recs
        if len(recs) == 1:  # live traffic: most often an entity's only event in a batch
            r = recs[0]
            if r.event_id in ids:
                return []
            ids.add(r.event_id)
            if not held or _order(r) > _order(held[-1]):
                held.append(r)
            else:
                insort(held, r, key=_order)
            return [r]
        added = []
        for r in recs:
            if r.event_id not in ids:
                ids.add(r.event_id)
                added.append(r)
        if len(added) > 1:
            added.sort(key=_order)
        if added:
            if not held or _order(added[0]) > _order(held[-1]):
                held.extend(added)  # the usual case: newer than everything held
            else:
                for r in added:
                    insort(held, r, key=_order)
        return added

    def _prune(self, horizon: int) -> list[Rec]:
        recs = self.recs
        if not recs or recs[0].time_ms >= horizon:  # the usual case: nothing left the horizon
            return []
        cut = bisect_left(recs, horizon, key=_time)
        if not cut:
            return []
        dropped = recs[:cut]
        del recs[:cut]
        self._ids.difference_update(r.event_id for r in dropped)
        for key in [k for k in self._tiles if k[1] < horizon]:
            del self._tiles[key]
        return dropped

    def apply(self, recs: Sequence[Rec], entity_key: str, future_skew_ms: int) -> Update:
        """Add accepted events; the tiles and tail events that changed, and what leaves the state."""
        old_newest = self.newest_ms
        added = self._keep(recs)
        if not added:
            return _NOTHING
        plan = self._plan
        newest = self.recs[-1].time_ms
        horizon, tail_from = plan.bounds(newest, future_skew_ms)
        touched = self._fold(added)
        # Tiles are written whole; those starting before the horizon are never read.
        held = self._tiles
        tiles = {(tile := held[k])[3]: plan.encode(k[0], tile) for k in touched if k[1] >= horizon}
        left_tail: list[str] = []
        if old_newest is not None and old_newest != newest:
            old_from = plan.bounds(old_newest, future_skew_ms)[1]
            if old_from < tail_from:
                recs = self.recs
                left_tail = [
                    r.event_id
                    for r in recs[bisect_left(recs, old_from, key=_time) : bisect_left(recs, tail_from, key=_time)]
                ]
        dropped = self._prune(horizon)
        gone = {r.event_id for r in dropped}
        tail = {r.event_id: encode_tail_event(r) for r in added if r.time_ms >= tail_from and r.event_id not in gone}
        drop_tiles: list[str] = []
        if dropped:
            stale = {tile_field((s, (r.time_ms // s) * s)) for r in dropped for s in plan.steps}
            drop_tiles = sorted(stale - tiles.keys())
        key = self._key
        if key is None or key.entity_key != entity_key:
            key = self._key = OnlineKey(self.view.name, self.view.version, entity_key)
        write = TileWrite(
            key,
            newest,
            plan.expire_ms(future_skew_ms),
            tiles,
            drop_tiles,
            tail,
            sorted(set(left_tail) | gone) if left_tail or gone else [],
        )
        beyond = bisect_left(added, horizon, key=_time)  # `added` is in time order
        return Update(write, added, [r.event_id for r in dropped], beyond)
