"""Window and aggregation maths: plain functions over plain data, shared by the stream and the backfill.

Semantics (order-independent, so at-least-once delivery and out-of-order arrival give the
same answer as a batch recomputation):

* Events of one entity are ordered by (event_time_ms, event_id); ids break ties.
* The row of an accepted event e at time t holds, per feature, the aggregate over the
  accepted events of its entity ordered at or before e and with time >= window_start(t),
  where window_start(t) = floor(t / step) * step - size + step: the start of the newest
  hopping window that contains t (for a tumbling window, the start of t's window). Nothing
  after e is ever included, so a row is point-in-time correct.
* An event is late for a view when event_time < watermark - allowed_lateness, the watermark
  being the newest event time seen earlier on the event's own message key (decided once by
  the ingest stage and archived with the event). Late events are archived and flagged,
  never aggregated.
* Sums use `math.fsum` (exactly rounded, hence independent of summation order), so the two
  engines agree bit for bit.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from feature_stream.windows import DIRECT_ROWS, PrefixSums, feature_rows, numeric_window
from featurestore.definitions import AggregationFunction, FeatureDef, FeatureViewDef, WindowDef
from featurestore.values import Scalar

__all__ = [
    "EntityState",
    "Rec",
    "compute_entity_rows",
    "compute_row",
    "is_late",
    "retention_ms",
    "rows_between",
    "window_start",
]

Values = dict[str, float | None]


@dataclass(frozen=True, slots=True)
class Rec:
    """One accepted event as a view sees it: its order key and the fields the view reads."""

    time_ms: int
    event_id: str
    values: Mapping[str, Scalar]

    @property
    def order(self) -> tuple[int, str]:
        return (self.time_ms, self.event_id)


def window_start(t: int, window: WindowDef) -> int:
    return (t // window.step_ms) * window.step_ms - window.size_ms + window.step_ms


def is_late(time_ms: int, watermark_ms: int | None, allowed_lateness_ms: int) -> bool:
    return watermark_ms is not None and watermark_ms >= 0 and time_ms < watermark_ms - allowed_lateness_ms


def retention_ms(view: FeatureViewDef, slack_ms: int = 0) -> int:
    """How far behind an entity's newest event its state must reach to stay exact."""
    return max(f.window.size_ms for f in view.features) + view.allowed_lateness_ms + slack_ms


def _numeric(x: Scalar | None) -> float | None:
    if x is None or isinstance(x, str):
        return None
    return float(x)


@dataclass(frozen=True, slots=True)
class _Columns:
    """The fields a view reads, as columns aligned with the sorted events (built once per batch)."""

    times: list[int]
    numbers: dict[str, list[float | None]]
    texts: dict[str, list[str | None]]
    sums: dict[str, PrefixSums]  # fields that some SUM or MEAN feature reads

    def slice(self, lo: int, hi: int) -> _Columns:
        numbers = {k: c[lo:hi] for k, c in self.numbers.items()}
        return _Columns(
            self.times[lo:hi],
            numbers,
            {k: c[lo:hi] for k, c in self.texts.items()},
            {k: p.slice(lo, hi, numbers[k]) for k, p in self.sums.items()},
        )

    def insert(self, i: int, rec: Rec) -> None:
        """Insert `rec` at index i, as `of` converts it (keeps a cache aligned with `EntityState.recs`)."""
        self.times.insert(i, rec.time_ms)
        values = rec.values
        for fld, c in self.numbers.items():
            c.insert(i, _numeric(values.get(fld)))
            if fld in self.sums:
                self.sums[fld].invalidate(i)
        for fld, t in self.texts.items():
            t.insert(i, str(values[fld]) if fld in values else None)

    def drop_head(self, n: int) -> None:
        del self.times[:n]
        for c in self.numbers.values():
            del c[:n]
        for t in self.texts.values():
            del t[:n]
        for p in self.sums.values():
            p.drop_head(n)

    @classmethod
    def of(cls, view: FeatureViewDef, recs: Sequence[Rec]) -> _Columns:
        fields = {f.field for f in view.features if f.field}
        distinct = {f.field for f in view.features if f.field and f.agg is AggregationFunction.DISTINCT_COUNT}
        summed = {f.field for f in view.features if f.field and f.agg in _SUMMED}
        numbers = {fld: [_numeric(r.values.get(fld)) for r in recs] for fld in fields}
        return cls(
            [r.time_ms for r in recs],
            numbers,
            {fld: [str(r.values[fld]) if fld in r.values else None for r in recs] for fld in distinct},
            {fld: PrefixSums(numbers[fld]) for fld in summed},
        )


_SUMMED = (AggregationFunction.SUM, AggregationFunction.MEAN)


def _aggregate(feature: FeatureDef, cols: _Columns, lo: int, hi: int) -> float | None:
    """Aggregate of events [lo, hi) of the columns."""
    agg = feature.agg
    if agg is AggregationFunction.COUNT:
        return float(hi - lo)
    field = feature.field or ""
    if agg is AggregationFunction.DISTINCT_COUNT:
        seen = set(cols.texts[field][lo:hi])
        seen.discard(None)
        return float(len(seen))
    column = cols.numbers[field]
    if agg is AggregationFunction.LAST:  # the newest event (by time, then id) that carries the field
        return next((x for x in reversed(column[lo:hi]) if x is not None), None)
    return numeric_window(agg, column, lo, hi)


def _row(view: FeatureViewDef, cols: _Columns, i: int) -> Values:
    t = cols.times[i]
    return {
        f.name: _aggregate(f, cols, bisect_left(cols.times, window_start(t, f.window), 0, i + 1), i + 1)
        for f in view.features
    }


_Eval = Callable[[_Columns, int, int], float | None]


def _evaluator(feature: FeatureDef) -> _Eval:
    """`_aggregate` of one feature with its dispatch done once, for `_RowPlan`."""
    agg, field = feature.agg, feature.field or ""
    if agg is AggregationFunction.COUNT:
        return lambda cols, lo, hi: float(hi - lo)
    if agg is AggregationFunction.DISTINCT_COUNT or agg is AggregationFunction.LAST:
        return lambda cols, lo, hi: _aggregate(feature, cols, lo, hi)
    if agg in _SUMMED:
        return lambda cols, lo, hi: cols.sums[field].window(agg, lo, hi)
    return lambda cols, lo, hi: numeric_window(agg, cols.numbers[field], lo, hi)


class _RowPlan:
    """A view compiled for `_row`'s values one row at a time: features that share a window
    share its start, and each feature's dispatch is decided once (rows are the worker's
    inner loop: ~2.5 per event in the demo, each with up to six features)."""

    def __init__(self, view: FeatureViewDef) -> None:
        windows: dict[tuple[int, int], int] = {}
        self.features: list[tuple[str, int, _Eval]] = []
        for f in view.features:
            w = windows.setdefault((f.window.size_ms, f.window.step_ms), len(windows))
            self.features.append((f.name, w, _evaluator(f)))
        self.windows = list(windows)

    def row(self, cols: _Columns, i: int) -> Values:
        times = cols.times
        t, hi = times[i], i + 1
        lows = [bisect_left(times, (t // step) * step - size + step, 0, hi) for size, step in self.windows]
        return {name: value(cols, lows[w], hi) for name, w, value in self.features}


_PLANS: dict[int, tuple[FeatureViewDef, _RowPlan]] = {}


def _plan(view: FeatureViewDef) -> _RowPlan:
    cached = _PLANS.get(id(view))
    if cached is None or cached[0] is not view:
        cached = _PLANS[id(view)] = (view, _RowPlan(view))
    return cached[1]


def compute_row(view: FeatureViewDef, recs: Sequence[Rec], i: int) -> Values:
    """Feature values of recs[i]; `recs` sorted by order key. The definition, window by window;
    `rows_between` gives the same values for a run of rows in one pass."""
    return _row(view, _Columns.of(view, recs), i)


def rows_between(
    view: FeatureViewDef,
    recs: Sequence[Rec],
    lo: int,
    hi: int,
    keys: Sequence[tuple[int, str]] | None = None,
    columns: _Columns | None = None,
) -> list[Values]:
    """Rows of recs[lo:hi] (`recs` sorted, `keys` their order keys if at hand, `columns` the
    view's columns of all `recs` if cached), equal to `compute_row` of each, in one pass per feature."""
    if lo >= hi:
        return []
    keys = keys if keys is not None else [r.order for r in recs[: lo + 1]]
    t_lo = recs[lo].time_ms
    # Only the events some window of these rows can reach are turned into columns;
    # (t, "") sorts before every key at time t, so this finds the first event at or after t.
    start = min(bisect_left(keys, (window_start(t_lo, f.window), ""), 0, lo + 1) for f in view.features)
    cols = columns.slice(start, hi) if columns is not None else _Columns.of(view, recs[start:hi])
    t = cols.times
    out: list[Values] = [{} for _ in range(hi - lo)]
    # Features over the same window share their window starts (a view has few distinct windows).
    by_window: dict[tuple[int, int], list[int]] = {}
    for f in view.features:
        size, step = f.window.size_ms, f.window.step_ms
        lows = by_window.get((size, step))
        if lows is None:
            lows = by_window[(size, step)] = [
                bisect_left(t, (t[i] // step) * step - size + step, 0, i + 1) for i in range(lo - start, hi - start)
            ]
        numbers = cols.numbers.get(f.field or "", [])
        texts = cols.texts.get(f.field or "", [])
        sums = cols.sums.get(f.field or "")
        for row, value in zip(out, feature_rows(f, lows, lo - start, numbers, texts, sums), strict=True):
            row[f.name] = value
    return out


def compute_entity_rows(view: FeatureViewDef, recs: Iterable[Rec]) -> list[tuple[Rec, Values]]:
    """Batch engine: every accepted event of one entity with its row, in order."""
    ordered = sorted(recs, key=lambda r: r.order)
    return list(zip(ordered, rows_between(view, ordered, 0, len(ordered)), strict=True))


class EntityState:
    """Streaming engine: the retained accepted events of one entity, kept sorted."""

    def __init__(self, recs: Iterable[Rec] = ()) -> None:
        self.recs: list[Rec] = sorted(recs, key=lambda r: r.order)
        self._keys = [r.order for r in self.recs]
        self._ids = {r.event_id for r in self.recs}
        # The view's columns of `recs`, built at the first `rows_from` and then kept aligned:
        # rebuilding them per batch cost more than the window maths itself.
        self._cols: _Columns | None = None
        self._view: FeatureViewDef | None = None

    def __len__(self) -> int:
        return len(self.recs)

    def add(self, rec: Rec) -> bool:
        """Insert an accepted event; False when it is already held (a replay)."""
        if rec.event_id in self._ids:
            return False
        i = bisect_right(self._keys, rec.order)
        self._keys.insert(i, rec.order)
        self.recs.insert(i, rec)
        self._ids.add(rec.event_id)
        if self._cols is not None:
            self._cols.insert(i, rec)
        return True

    def rows_from(self, view: FeatureViewDef, first: Rec, last: Rec | None = None) -> list[tuple[Rec, Values]]:
        """Rows of the events from `first` to `last` (the earliest and the newest just added;
        `last` defaults to `first`) and of every later held event whose windows can contain
        one of them. Everything between is included: events of one batch can lie further
        apart than any window reaches, and each needs its row."""
        max_size = max(f.window.size_ms for f in view.features)
        reach = (last or first).time_ms + max_size
        lo = bisect_left(self._keys, first.order)
        hi = bisect_left(self._keys, (reach + 1, ""))  # every event at or before last + max_size
        cols = self._cols
        if cols is None or self._view is not view:
            self._view = view
            self._cols = cols = _Columns.of(view, self.recs)
        if hi - lo <= DIRECT_ROWS:
            # One or two new rows per entity and batch is the common case: each row by the
            # definition itself, on the cached columns, costs less than setting up a pass.
            plan = _plan(view)
            rows = [plan.row(cols, i) for i in range(lo, hi)]
        else:
            rows = rows_between(view, self.recs, lo, hi, self._keys, cols)
        return list(zip(self.recs[lo:hi], rows, strict=True))

    def newest(self) -> Rec | None:
        return self.recs[-1] if self.recs else None

    def prune(self, horizon_ms: int) -> list[str]:
        """Drop events older than `horizon_ms` (they can no longer enter any window); returns their ids."""
        cut = bisect_left(self._keys, (horizon_ms, ""))
        dropped = [r.event_id for r in self.recs[:cut]]
        del self.recs[:cut]
        del self._keys[:cut]
        if self._cols is not None:
            self._cols.drop_head(cut)
        self._ids.difference_update(dropped)
        return dropped
