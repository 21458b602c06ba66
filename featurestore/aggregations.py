"""Aggregation kinds, one home each: definition, streaming form (tile partials) and batch form.

Every kind is a commutative monoid over *exact* partials: `add` folds one event in, `merge`
joins two partials, `finish` turns a partial into the feature value. Because partials are
exact (integers, sets, a total order), the value of a set of events does not depend on the
order they arrived in nor on how they were split into tiles, so the streaming worker (tiles
merged at read time) and the batch engines (one fold over the window's events) agree bit
for bit. `KINDS` registers them; the unit tests are parametrised over it, so a new kind is
tested by adding it here.

Definitions (what a feature means over the accepted events of its window):

* count: the number of events;
* sum: the exact sum of the field's numeric values, rounded once to the nearest double
  (0.0 when there are none or the exact sum is zero; None when it is beyond the double range);
* mean: the exact sum divided by how many values there are, rounded once; None without values;
* min / max: the smallest / largest numeric value, -0.0 ordered below 0.0; None without values;
* last: the value of the newest event (by time, then event id) that carries a numeric field;
* distinct_count: how many distinct values (as text) the field takes;
* last_string: the string value of the newest event (by time, then event id) that carries a string;
* most_frequent: the string value the field takes most often; a tie goes to the smallest value
  (Python's code-point order); None without string values.

Numeric values are ints, floats and bools (as 0/1); strings and absent fields are skipped.
The string kinds read strings only (the definitions imply a `string` field for them, so other
values are dead-lettered before they reach a kind); their values are `str`, every other kind's
a float (or None).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import numpy as np

from featurestore.definitions import AggregationFunction
from featurestore.expressions import Expression, Vec
from featurestore.values import FeatureValue, Scalar

__all__ = ["KINDS", "Columns", "ExactSum", "Kind", "LastText", "LastValue", "kind_of", "numeric"]

P = TypeVar("P")
Json = Any


def numeric(x: Scalar | None) -> float | None:
    """The number a field value contributes; None for strings and absent values."""
    if x is None or isinstance(x, str):
        return None
    return float(x)


class _EventLike(Protocol):
    @property
    def time_ms(self) -> int: ...
    @property
    def event_id(self) -> str: ...
    @property
    def values(self) -> Mapping[str, Scalar]: ...


class Columns:
    """One entity's events (sorted by (time, id)) as columns, built once and shared by every
    window read over them: the batch engine reads thousands of windows per entity."""

    def __init__(self, events: Sequence[_EventLike]) -> None:
        self.events = events
        self.times = [e.time_ms for e in events]
        self._numbers: dict[str, list[float | None]] = {}
        self._texts: dict[str, list[str | None]] = {}
        self._strings: dict[str, list[str | None]] = {}
        self._sums: dict[str, tuple[list[int], int, list[int]]] = {}
        self._passing: dict[str, Columns] = {}

    def field(self, name: str | None) -> list[Scalar | None]:
        return [e.values.get(name) if name else None for e in self.events]

    def passing(self, flt: Expression | None) -> Columns:
        """The events a feature's filter is true of, as columns of their own (one vectorised
        evaluation per filter; a window over them is a window over the feature's events)."""
        if flt is None:
            return self
        got = self._passing.get(flt.text)
        if got is None:
            cols = {name: Vec.of(self.field(name)) for name in flt.names}
            keep = np.flatnonzero(flt.mask(cols, len(self.events))).tolist()
            got = self._passing[flt.text] = Columns([self.events[i] for i in keep])
        return got

    def numbers(self, name: str) -> list[float | None]:
        if name not in self._numbers:
            self._numbers[name] = [numeric(x) for x in self.field(name)]
        return self._numbers[name]

    def texts(self, name: str) -> list[str | None]:
        if name not in self._texts:
            self._texts[name] = [None if x is None else str(x) for x in self.field(name)]
        return self._texts[name]

    def strings(self, name: str) -> list[str | None]:
        """The field's string values (None for anything else), what the string kinds read."""
        if name not in self._strings:
            self._strings[name] = [x if isinstance(x, str) else None for x in self.field(name)]
        return self._strings[name]

    def sums(self, name: str) -> tuple[list[int], int, list[int]]:
        """Exact prefix sums scaled by 2**shift (one shift for the column) and value counts."""
        if name not in self._sums:
            ratios = [None if x is None else x.as_integer_ratio() for x in self.numbers(name)]
            shift = max((d.bit_length() - 1 for r in ratios if r is not None for d in r[1:]), default=0)
            scaled = [0 if r is None else r[0] << (shift - r[1].bit_length() + 1) for r in ratios]
            prefix = [0, *itertools.accumulate(scaled)]
            counts = [0, *itertools.accumulate(r is not None for r in ratios)]
            self._sums[name] = (prefix, shift, counts)
        return self._sums[name]


class Kind(ABC, Generic[P]):
    """One aggregation kind: its mergeable partial and the value it finishes to."""

    agg: AggregationFunction

    @abstractmethod
    def empty(self) -> P: ...

    @abstractmethod
    def add(self, p: P, time_ms: int, event_id: str, value: Scalar | None) -> P:
        """Fold in one event whose field holds `value` (None when absent)."""

    @abstractmethod
    def merge(self, a: P, b: P) -> P: ...

    @abstractmethod
    def finish(self, p: P) -> FeatureValue: ...

    @abstractmethod
    def encode(self, p: P) -> Json:
        """A JSON-able form; big integers travel as text (Redis' cjson would round them)."""

    @abstractmethod
    def decode(self, doc: Json) -> P: ...

    def batch(self, events: Iterable[tuple[int, str, Scalar | None]]) -> FeatureValue:
        """The definition: the value of the events (time, id, field value) in any order."""
        p = self.empty()
        for t, eid, v in events:
            p = self.add(p, t, eid, v)
        return self.finish(p)

    def window(self, cols: Columns, field: str | None, lo: int, hi: int) -> FeatureValue:
        """The batch form over events [lo, hi) of sorted columns: `batch`'s value, faster."""
        values = cols.field(field)[lo:hi]
        return self.batch((e.time_ms, e.event_id, v) for e, v in zip(cols.events[lo:hi], values, strict=True))


class _Count(Kind[int]):
    agg = AggregationFunction.COUNT

    def empty(self) -> int:
        return 0

    def add(self, p: int, time_ms: int, event_id: str, value: Scalar | None) -> int:
        return p + 1

    def merge(self, a: int, b: int) -> int:
        return a + b

    def finish(self, p: int) -> float | None:
        return float(p)

    def window(self, cols: Columns, field: str | None, lo: int, hi: int) -> float | None:
        return float(hi - lo)

    def encode(self, p: int) -> Json:
        return p

    def decode(self, doc: Json) -> int:
        return int(doc)


class ExactSum(NamedTuple):
    """sum = num / 2**shift exactly (every double is an integer multiple of 2**-1074), over `size` values."""

    num: int
    shift: int
    size: int

    def plus(self, other: ExactSum) -> ExactSum:
        shift = max(self.shift, other.shift)
        num = (self.num << (shift - self.shift)) + (other.num << (shift - other.shift))
        return ExactSum(num, shift, self.size + other.size)

    @classmethod
    def of(cls, x: float) -> ExactSum:
        n, d = x.as_integer_ratio()
        return cls(n, d.bit_length() - 1, 1)

    def ratio(self, divisor: int) -> float | None:
        """num / (2**shift * divisor), correctly rounded; 0.0 for an exact zero, None out of range."""
        if self.num == 0:
            return 0.0
        try:
            return self.num / ((1 << self.shift) * divisor)
        except OverflowError:
            return None


_ZERO = ExactSum(0, 0, 0)


class _Sum(Kind[ExactSum]):
    agg = AggregationFunction.SUM

    def empty(self) -> ExactSum:
        return _ZERO

    def add(self, p: ExactSum, time_ms: int, event_id: str, value: Scalar | None) -> ExactSum:
        x = numeric(value)
        return p if x is None else p.plus(ExactSum.of(x))

    def merge(self, a: ExactSum, b: ExactSum) -> ExactSum:
        return a.plus(b)

    def finish(self, p: ExactSum) -> float | None:
        return p.ratio(1)

    def window(self, cols: Columns, field: str | None, lo: int, hi: int) -> float | None:
        prefix, shift, counts = cols.sums(field or "")
        return self.finish(ExactSum(prefix[hi] - prefix[lo], shift, counts[hi] - counts[lo]))

    def encode(self, p: ExactSum) -> Json:
        return [str(p.num), p.shift, p.size]

    def decode(self, doc: Json) -> ExactSum:
        return ExactSum(int(doc[0]), int(doc[1]), int(doc[2]))


class _Mean(_Sum):
    agg = AggregationFunction.MEAN

    def finish(self, p: ExactSum) -> float | None:
        return p.ratio(p.size) if p.size else None


def _signed(x: float) -> tuple[float, float]:
    """A total order on doubles for min/max: -0.0 below 0.0, whatever order they come in."""
    return (x, math.copysign(1.0, x))


class _Extreme(Kind[float | None]):
    def __init__(self, agg: AggregationFunction) -> None:
        self.agg = agg
        self._min = agg is AggregationFunction.MIN

    def empty(self) -> float | None:
        return None

    def add(self, p: float | None, time_ms: int, event_id: str, value: Scalar | None) -> float | None:
        return self.merge(p, numeric(value))

    def merge(self, a: float | None, b: float | None) -> float | None:
        if a is None or b is None:
            return b if a is None else a
        if self._min:
            return a if _signed(a) <= _signed(b) else b
        return a if _signed(a) >= _signed(b) else b

    def finish(self, p: float | None) -> float | None:
        return p

    def window(self, cols: Columns, field: str | None, lo: int, hi: int) -> float | None:
        nums = [x for x in cols.numbers(field or "")[lo:hi] if x is not None]
        if not nums:
            return None
        best = min(nums) if self._min else max(nums)
        if best == 0.0:  # the signed zero the total order picks, whichever came first
            signs = {math.copysign(1.0, x) for x in nums if x == 0.0}
            best = (-0.0 if -1.0 in signs else 0.0) if self._min else (0.0 if 1.0 in signs else -0.0)
        return best

    def encode(self, p: float | None) -> Json:
        return p

    def decode(self, doc: Json) -> float | None:
        return None if doc is None else float(doc)


class LastValue(NamedTuple):
    time_ms: int
    event_id: str
    value: float


class _Last(Kind[LastValue | None]):
    agg = AggregationFunction.LAST

    def empty(self) -> LastValue | None:
        return None

    def add(self, p: LastValue | None, time_ms: int, event_id: str, value: Scalar | None) -> LastValue | None:
        x = numeric(value)
        return p if x is None else self.merge(p, LastValue(time_ms, event_id, x))

    def merge(self, a: LastValue | None, b: LastValue | None) -> LastValue | None:
        if a is None or b is None:
            return b if a is None else a
        return a if (a.time_ms, a.event_id) >= (b.time_ms, b.event_id) else b

    def finish(self, p: LastValue | None) -> float | None:
        return None if p is None else p.value

    def window(self, cols: Columns, field: str | None, lo: int, hi: int) -> float | None:
        nums = cols.numbers(field or "")
        for i in range(hi - 1, lo - 1, -1):  # sorted by (time, id): the newest carrying a number
            if nums[i] is not None:
                return nums[i]
        return None

    def encode(self, p: LastValue | None) -> Json:
        return None if p is None else [p.time_ms, p.event_id, p.value]

    def decode(self, doc: Json) -> LastValue | None:
        return None if doc is None else LastValue(int(doc[0]), str(doc[1]), float(doc[2]))


class _Distinct(Kind[frozenset[str]]):
    agg = AggregationFunction.DISTINCT_COUNT

    def empty(self) -> frozenset[str]:
        return frozenset()

    def add(self, p: frozenset[str], time_ms: int, event_id: str, value: Scalar | None) -> frozenset[str]:
        return p if value is None or str(value) in p else p | {str(value)}

    def merge(self, a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
        return a | b

    def finish(self, p: frozenset[str]) -> float | None:
        return float(len(p))

    def window(self, cols: Columns, field: str | None, lo: int, hi: int) -> float | None:
        seen = set(cols.texts(field or "")[lo:hi])
        seen.discard(None)
        return float(len(seen))

    def encode(self, p: frozenset[str]) -> Json:
        return sorted(p)

    def decode(self, doc: Json) -> frozenset[str]:
        return frozenset(str(x) for x in doc)


class LastText(NamedTuple):
    time_ms: int
    event_id: str
    value: str


class _LastString(Kind[LastText | None]):
    agg = AggregationFunction.LAST_STRING

    def empty(self) -> LastText | None:
        return None

    def add(self, p: LastText | None, time_ms: int, event_id: str, value: Scalar | None) -> LastText | None:
        return self.merge(p, LastText(time_ms, event_id, value)) if isinstance(value, str) else p

    def merge(self, a: LastText | None, b: LastText | None) -> LastText | None:
        if a is None or b is None:
            return b if a is None else a
        return a if (a.time_ms, a.event_id) >= (b.time_ms, b.event_id) else b

    def finish(self, p: LastText | None) -> FeatureValue:
        return None if p is None else p.value

    def window(self, cols: Columns, field: str | None, lo: int, hi: int) -> FeatureValue:
        texts = cols.strings(field or "")
        for i in range(hi - 1, lo - 1, -1):  # sorted by (time, id): the newest carrying a string
            if texts[i] is not None:
                return texts[i]
        return None

    def encode(self, p: LastText | None) -> Json:
        return None if p is None else [p.time_ms, p.event_id, p.value]

    def decode(self, doc: Json) -> LastText | None:
        return None if doc is None else LastText(int(doc[0]), str(doc[1]), str(doc[2]))


Counts = Mapping[str, int]


def _most_frequent(counts: Counts) -> FeatureValue:
    """The value with the highest count; among equals the smallest value, so any merge order agrees."""
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


class _MostFrequent(Kind[Counts]):
    """Exact counts per string value (a window's distinct values; a tile holds a step's worth)."""

    agg = AggregationFunction.MOST_FREQUENT

    def empty(self) -> Counts:
        return {}

    def add(self, p: Counts, time_ms: int, event_id: str, value: Scalar | None) -> Counts:
        return {**p, value: p.get(value, 0) + 1} if isinstance(value, str) else p

    def merge(self, a: Counts, b: Counts) -> Counts:
        if not a or not b:
            return a or b
        out = dict(a)
        for v, n in b.items():
            out[v] = out.get(v, 0) + n
        return out

    def finish(self, p: Counts) -> FeatureValue:
        return _most_frequent(p)

    def window(self, cols: Columns, field: str | None, lo: int, hi: int) -> FeatureValue:
        counts: dict[str, int] = {}
        for v in cols.strings(field or "")[lo:hi]:
            if v is not None:
                counts[v] = counts.get(v, 0) + 1
        return _most_frequent(counts)

    def encode(self, p: Counts) -> Json:
        return dict(sorted(p.items()))

    def decode(self, doc: Json) -> Counts:
        return {str(v): int(n) for v, n in doc.items()}


KINDS: Mapping[AggregationFunction, Kind[Any]] = {
    k.agg: k
    for k in (
        _Count(),
        _Sum(),
        _Mean(),
        _Extreme(AggregationFunction.MIN),
        _Extreme(AggregationFunction.MAX),
        _Last(),
        _Distinct(),
        _LastString(),
        _MostFrequent(),
    )
}


def kind_of(agg: AggregationFunction) -> Kind[Any]:
    return KINDS[agg]
