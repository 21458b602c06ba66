"""Rows of consecutive events in one pass: the same values as evaluating each window on its own.

The rows of events i = a..b-1 (sorted by order key) have windows [low_i, i] whose both ends only
move forward, so each aggregate can slide instead of rescanning its window per row (a busy
entity's one-hour window holds hundreds of events, and an out-of-order arrival rewrites many
rows). Every result is bit-identical to the direct definition in `aggregate.py`:

* sums: the exact sum of doubles is an integer multiple of 2**-k (k the largest binary
  exponent of their denominators), so prefix sums are exact Python integers and
  `int / int` rounds correctly once, as `math.fsum` does. A zero sum falls back to `fsum`
  (the sign of a zero) and so does overflow (`fsum`'s own error). `PrefixSums` keeps them
  per entity, so a streaming row costs O(1) however long its window;
* min/max: a monotonic deque that keeps the earliest of equal values, as `min`/`max` return;
* distinct counts: a counter over the window; last: the newest non-missing index so far.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import cast

from featurestore.definitions import AggregationFunction, FeatureDef

__all__ = ["DIRECT_ROWS", "PrefixSums", "feature_rows", "numeric_window"]

Numbers = Sequence[float | None]


def feature_rows(
    feature: FeatureDef,
    lows: Sequence[int],
    a: int,
    numbers: Numbers,
    texts: Sequence[str | None],
    sums: PrefixSums | None = None,
) -> list[float | None]:
    """Values of `feature` for rows a..a+len(lows)-1, row a+j aggregating events [lows[j], a+j]
    (`sums`: the field's prefix sums aligned with `numbers`, for SUM and MEAN)."""
    agg = feature.agg
    if agg is AggregationFunction.SUM or agg is AggregationFunction.MEAN:
        sums = sums if sums is not None else PrefixSums(numbers)
        return [sums.window(agg, lo, a + j + 1) for j, lo in enumerate(lows)]
    if agg is AggregationFunction.COUNT:
        return [float(a + j + 1 - lo) for j, lo in enumerate(lows)]
    if agg is AggregationFunction.DISTINCT_COUNT:
        return _distinct(lows, a, texts)
    if agg is AggregationFunction.LAST:
        return _last(lows, a, numbers)
    if len(lows) <= DIRECT_ROWS:
        # A streaming batch usually adds one or two rows per entity: evaluating those windows
        # directly (C-level min/max) beats a deque pass over the whole window.
        return [numeric_window(agg, numbers, lo, a + j + 1) for j, lo in enumerate(lows)]
    return _extreme(lows, a, numbers, agg is AggregationFunction.MIN)


# Rows up to which min/max (and `aggregate`'s rows) are evaluated window by window: the one
# pass pays ~0.15 µs per event of the window in Python, a direct row ~0.01 µs in C.
DIRECT_ROWS = 4


def numeric_window(agg: AggregationFunction, numbers: Numbers, lo: int, hi: int) -> float | None:
    """The definition of sum, mean, min and max over events [lo, hi) of a numeric field.

    Both engines use it: `aggregate` for every window, `feature_rows` for short runs; the
    one-pass paths below are tested bit-identical against it.
    """
    window = numbers[lo:hi]
    # `None in` is a C-level scan; a field is usually present on every event.
    nums = [x for x in window if x is not None] if None in window else cast(Sequence[float], window)
    if agg is AggregationFunction.SUM:
        return math.fsum(nums)
    if not nums:
        return None
    if agg is AggregationFunction.MEAN:
        return math.fsum(nums) / len(nums)
    return min(nums) if agg is AggregationFunction.MIN else max(nums)


class PrefixSums:
    """Exact running sums of one numeric column, kept by an entity across batches.

    `prefix[i]` is the sum of the present values before event i times 2**shift, an exact
    integer (every double is an integer multiple of 2**-1074; `shift` grows to the largest
    binary exponent of a denominator seen), and `counts[i]` how many values were present.
    A window's sum is one subtraction and one correctly rounded `int / int`, as `fsum` rounds,
    instead of a pass over the window. The sums are extended lazily from the column they
    read (shared with its owner, which calls `invalidate` when it inserts mid-way), so a
    batch of out-of-order events costs one pass over the tail, not one per event. Only
    differences are read, so dropping the head needs no renumbering.
    """

    __slots__ = ("_numbers", "counts", "prefix", "shift")

    def __init__(self, numbers: Numbers) -> None:
        self._numbers = numbers
        self.shift = 0
        self.prefix = [0]
        self.counts = [0]

    def invalidate(self, i: int) -> None:
        """Event i was inserted or changed: the sums after it are recomputed when next read."""
        del self.prefix[i + 1 :]
        del self.counts[i + 1 :]

    def drop_head(self, n: int) -> None:
        """The column's first n events were dropped (by its owner)."""
        if len(self.prefix) > n:
            del self.prefix[:n]
            del self.counts[:n]
        else:
            self.prefix, self.counts = [0], [0]

    def _extend(self, hi: int) -> None:
        prefix, counts = self.prefix, self.counts
        total, count = prefix[-1], counts[-1]
        for x in self._numbers[len(prefix) - 1 : hi]:
            if x is not None:
                n, d = x.as_integer_ratio()
                k = d.bit_length() - 1
                if k > self.shift:  # a finer value than any so far: rescale what is held
                    prefix[:] = [p << (k - self.shift) for p in prefix]
                    total <<= k - self.shift
                    self.shift = k
                total += n << (self.shift - k)
                count += 1
            prefix.append(total)
            counts.append(count)

    def slice(self, lo: int, hi: int, numbers: Numbers) -> PrefixSums:
        """The sums of events [lo, hi), over `numbers` (that slice of the column)."""
        if len(self.prefix) <= hi:
            self._extend(hi)
        out = PrefixSums(numbers)
        out.shift, out.prefix, out.counts = self.shift, self.prefix[lo : hi + 1], self.counts[lo : hi + 1]
        return out

    def window(self, agg: AggregationFunction, lo: int, hi: int) -> float | None:
        """`numeric_window` of SUM or MEAN over events [lo, hi), bit for bit."""
        if len(self.prefix) <= hi:
            self._extend(hi)
        n = self.counts[hi] - self.counts[lo]
        if agg is AggregationFunction.MEAN and n == 0:
            return None
        exact = self.prefix[hi] - self.prefix[lo]
        try:
            # A zero sum is left to fsum for the sign of the zero, an overflow for its error.
            s = exact / (1 << self.shift) if exact else _fsum(self._numbers, lo, hi)
        except OverflowError:
            s = _fsum(self._numbers, lo, hi)
        return s / n if agg is AggregationFunction.MEAN else s


def _fsum(numbers: Numbers, lo: int, hi: int) -> float:
    return math.fsum(x for x in numbers[lo:hi] if x is not None)


def _extreme(lows: Sequence[int], a: int, numbers: Numbers, is_min: bool) -> list[float | None]:
    window: deque[int] = deque()  # indices of candidates, values monotonic from the front
    out: list[float | None] = []
    nxt = lows[0] if lows else a
    for j, lo in enumerate(lows):
        for i in range(nxt, a + j + 1):
            x = numbers[i]
            if x is None:
                continue
            # Strict comparisons keep the earliest of equal values (0.0 vs -0.0), as min()/max() do.
            while window and ((numbers[window[-1]] > x) if is_min else (numbers[window[-1]] < x)):  # type: ignore[operator]
                window.pop()
            window.append(i)
        nxt = a + j + 1
        while window and window[0] < lo:
            window.popleft()
        out.append(numbers[window[0]] if window else None)
    return out


def _distinct(lows: Sequence[int], a: int, texts: Sequence[str | None]) -> list[float | None]:
    counts: dict[str, int] = {}
    out: list[float | None] = []
    left = right = lows[0] if lows else a
    for j, lo in enumerate(lows):
        for i in range(right, a + j + 1):
            t = texts[i]
            if t is not None:
                counts[t] = counts.get(t, 0) + 1
        right = a + j + 1
        for i in range(left, lo):
            t = texts[i]
            if t is not None:
                if counts[t] == 1:
                    del counts[t]
                else:
                    counts[t] -= 1
        left = max(left, lo)
        out.append(float(len(counts)))
    return out


def _last(lows: Sequence[int], a: int, numbers: Numbers) -> list[float | None]:
    out: list[float | None] = []
    newest = -1
    start = lows[0] if lows else a
    for i in range(start, a):
        if numbers[i] is not None:
            newest = i
    for j, lo in enumerate(lows):
        if numbers[a + j] is not None:
            newest = a + j
        out.append(numbers[newest] if newest >= lo else None)
    return out
