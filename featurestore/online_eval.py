"""Request-time window evaluation straight from a stored tiles hash: the server's hot path.

`featurestore.tiles.evaluate_tiles` defines the values; this computes the same values, bit for
bit (tested against it), from the hash's raw bytes with less work per request:

* only the tiles some window at the read time covers are decoded, all of them in one
  `json.loads` (one call per tile cost more than the parsing itself);
* count, sum and mean merge their encoded partials directly (integers, no partial objects);
  every other kind goes through its `Kind` (decode, merge, finish), so a new kind needs nothing
  here.

Derived features are computed from the values, as `evaluate_tiles` computes them. A read
time inside a tile that also holds later events raises `NeedTail`, as `evaluate_tiles`
does; the caller then reads the tail and uses the general path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from featurestore.aggregations import Kind, kind_of
from featurestore.definitions import AggregationFunction, FeatureViewDef
from featurestore.tiles import NeedTail, Values, tile_start, tile_steps
from featurestore.values import FeatureValue
from fti_core.errors import IntegrityError

__all__ = ["CompiledView", "compiled"]

_Merge = Callable[[Sequence[Any]], FeatureValue]


def _count(parts: Sequence[Any]) -> float | None:
    return float(sum(int(p) for p in parts))


def _exact(parts: Sequence[Any]) -> tuple[int, int, int]:
    """(numerator, shift, values) of the exact sum of encoded `ExactSum` partials."""
    shift = max((int(p[1]) for p in parts), default=0)
    num = sum(int(p[0]) << (shift - int(p[1])) for p in parts)
    return num, shift, sum(int(p[2]) for p in parts)


def _ratio(num: int, shift: int, divisor: int) -> float | None:
    # As `ExactSum.ratio`: an exact zero is 0.0, anything else divided once (correctly rounded).
    if num == 0:
        return 0.0
    try:
        return num / ((1 << shift) * divisor)
    except OverflowError:
        return None


def _sum(parts: Sequence[Any]) -> float | None:
    num, shift, _ = _exact(parts)
    return _ratio(num, shift, 1)


def _mean(parts: Sequence[Any]) -> float | None:
    num, shift, size = _exact(parts)
    return _ratio(num, shift, size) if size else None


_FAST: Mapping[AggregationFunction, _Merge] = {
    AggregationFunction.COUNT: _count,
    AggregationFunction.SUM: _sum,
    AggregationFunction.MEAN: _mean,
}


def _generic(kind: Kind[Any]) -> _Merge:
    def merge(parts: Sequence[Any]) -> FeatureValue:
        p = kind.empty()
        for doc in parts:
            p = kind.merge(p, kind.decode(doc))
        return kind.finish(p)

    return merge


class CompiledView:
    """One view's read plan, built once per spec: which tiles a read at t needs and how to merge them."""

    def __init__(self, spec: FeatureViewDef) -> None:
        self.spec = spec
        # Per step, the longest window using it: tiles older than that window are never decoded.
        self._reach = {
            s: max(f.window.size_ms for f in spec.features if f.window.step_ms == s) for s in tile_steps(spec)
        }
        self._features = [
            (f.name, f.window.size_ms, f.window.step_ms, _FAST.get(f.agg) or _generic(kind_of(f.agg)))
            for f in spec.features
        ]

    def evaluate(self, raw: Mapping[bytes, bytes], t: int, where: str) -> tuple[int, int, Values]:
        """(newest event time, last write time, values at t) of a tiles hash (`where` names it in errors)."""
        newest = written = -1
        keys: list[tuple[int, int]] = []
        docs: list[bytes] = []
        for name, value in raw.items():
            if name == b"n":
                newest = int(value)
            elif name == b"w":
                written = int(value)
            else:
                step, start = self._tile_key(name, where)
                reach = self._reach.get(step)
                # A tile no window at t covers (too old, or after t) is skipped undecoded.
                if reach is not None and tile_start(t, step) - reach < start <= t:
                    keys.append((step, start))
                    docs.append(value)
        tiles = self._decode(keys, docs, where)
        for (step, start), (max_time, _) in tiles.items():
            if max_time > t and start == tile_start(t, step):
                raise NeedTail(f"{step}:{start}")
        values = self._values(tiles, t, where)
        for d in self.spec.derived:  # as `evaluate_tiles`: each from the values before it
            values[d.name] = d.expression.number(values)
        return newest, written, values

    @staticmethod
    def _tile_key(name: bytes, where: str) -> tuple[int, int]:
        step, _, start = name.partition(b":")
        try:
            return int(step), int(start)
        except ValueError as exc:
            raise IntegrityError(f"online tile {name!r} of {where} is unreadable: {exc}") from exc

    @staticmethod
    def _decode(keys: list[tuple[int, int]], docs: list[bytes], where: str) -> dict[tuple[int, int], Any]:
        try:
            parsed = json.loads(b"[" + b",".join(docs) + b"]")
            if len(parsed) == len(docs):
                return {k: (int(d[0]), d[1]) for k, d in zip(keys, parsed, strict=True)}
        except (ValueError, TypeError, IndexError, KeyError):
            pass
        for k, doc in zip(keys, docs, strict=True):  # find the bad tile, to name it
            try:
                json.loads(doc)[1].keys()
            except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
                raise IntegrityError(f"online tile {k[0]}:{k[1]} of {where} is unreadable: {exc}") from exc
        raise IntegrityError(f"online tiles of {where} are unreadable")

    def _values(self, tiles: Mapping[tuple[int, int], Any], t: int, where: str) -> Values:
        out: Values = {}
        try:
            for name, size, step, merge in self._features:
                now = tile_start(t, step)
                parts = []
                for start in range(now - size + step, now + step, step):
                    tile = tiles.get((step, start))
                    if tile is not None:
                        parts.append(tile[1][name])
                out[name] = merge(parts)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise IntegrityError(f"an online tile of {where} is unreadable: {exc!r}") from exc
        return out


_COMPILED: dict[int, CompiledView] = {}


def compiled(spec: FeatureViewDef) -> CompiledView:
    """The spec's read plan, cached per spec object (specs are immutable)."""
    plan = _COMPILED.get(id(spec))
    if plan is None or plan.spec is not spec:
        plan = _COMPILED[id(spec)] = CompiledView(spec)
    return plan
