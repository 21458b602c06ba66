"""The server's read path (`online_eval`) gives exactly `evaluate_tiles`' values from a stored hash."""

from __future__ import annotations

import math
import random

import pytest

from featurestore.aggregations import KINDS
from featurestore.definitions import AggregationFunction, DerivedDef, FeatureDef, FeatureViewDef, WindowDef
from featurestore.online_eval import CompiledView
from featurestore.tiles import Event, NeedTail, build_tiles, encode_tile, evaluate_tiles, tile_field
from fti_core.errors import IntegrityError

MIN = 60_000


def _w(size: int, step: int) -> WindowDef:
    return WindowDef(kind="hopping" if step < size else "tumbling", size_ms=size, step_ms=step)


def _view() -> FeatureViewDef:
    """Every registered kind, on several steps, two windows sharing a step at different sizes, derived features."""
    agg = AggregationFunction
    feats = [
        FeatureDef(name="n_10m", agg=agg.COUNT, window=_w(10 * MIN, MIN)),
        FeatureDef(name="n_3m", agg=agg.COUNT, window=_w(3 * MIN, MIN)),
        FeatureDef(name="sum_10m", agg=agg.SUM, field="x", window=_w(10 * MIN, MIN)),
        FeatureDef(name="mean_1h", agg=agg.MEAN, field="x", window=_w(60 * MIN, 5 * MIN)),
        FeatureDef(name="min_1h", agg=agg.MIN, field="x", window=_w(60 * MIN, 60 * MIN)),
        FeatureDef(name="last_1d", agg=agg.LAST, field="x", window=_w(1440 * MIN, 1440 * MIN)),
    ]
    named = {f.agg for f in feats}
    for kind in KINDS:  # one more feature per kind not above, so a new kind is covered by itself
        if kind not in named:
            field = "k" if kind.is_string or kind is agg.DISTINCT_COUNT else "x"
            feats.append(FeatureDef(name=f"{kind.value}_1h", agg=kind, field=field, window=_w(60 * MIN, 5 * MIN)))
    derived = (
        DerivedDef(name="mean_10m", expr="sum_10m / n_10m"),
        DerivedDef(name="spread", expr="coalesce(max_1h, 0) - coalesce(min_1h, 0)"),
    )
    return FeatureViewDef(
        name="v", version=1, source="s", entity="e", features=tuple(feats), derived=derived, ttl_ms=86_400_000
    )


def _x(rng: random.Random) -> float | int | str | None:
    pick = rng.random()
    if pick < 0.1:
        return None
    if pick < 0.2:
        return rng.choice([0.0, -0.0, 1e308, -1e308, 5e-324])
    if pick < 0.25:
        return "text"
    return rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-9, 9)


def _hash(view: FeatureViewDef, events: list[Event]) -> dict[bytes, bytes]:
    raw = {tile_field(k).encode(): encode_tile(view, t).encode() for k, t in build_tiles(view, events).items()}
    raw[b"n"] = str(max(e.time_ms for e in events)).encode() if events else b"-1"
    raw[b"w"] = b"123"
    return raw


def _same(a: float | str | None, b: float | str | None) -> bool:
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return a == b
    return a == b and math.copysign(1, a) == math.copysign(1, b)


def test_values_equal_evaluate_tiles_at_any_read_time() -> None:
    view = _view()
    plan = CompiledView(view)
    rng = random.Random(11)
    checked = 0
    for _ in range(60):
        events = [
            Event(rng.randint(0, 3 * 3_600_000), f"e{i:04d}", {"x": _x(rng), "k": rng.choice("abc")})
            for i in range(rng.randint(0, 80))
        ]
        raw = _hash(view, events)
        tiles = build_tiles(view, events)
        newest = max((e.time_ms for e in events), default=0)
        probes = [newest, newest + 1, newest + 59_999, newest + 7 * MIN, newest + 61 * MIN, newest + 2 * 86_400_000]
        probes += [rng.randint(0, 4 * 3_600_000) for _ in range(10)]
        for t in probes:
            try:
                want = evaluate_tiles(view, tiles, t)
            except NeedTail:
                with pytest.raises(NeedTail):
                    plan.evaluate(raw, t, "h")
                continue
            got_newest, written, got = plan.evaluate(raw, t, "h")
            assert list(got) == list(want)
            assert all(_same(got[n], want[n]) for n in want), (t, got, want)
            assert (got_newest, written) == ((newest if events else -1), 123)
            checked += 1
    assert checked > 300  # most probes are after the newest event: the server's case


def test_an_empty_hash_reads_as_no_events() -> None:
    _, _, values = CompiledView(_view()).evaluate({}, 10 * 86_400_000, "h")
    assert values["n_10m"] == 0.0 and values["sum_10m"] == 0.0
    assert values["mean_1h"] is None and values["min_1h"] is None and values["last_1d"] is None


def test_tiles_no_window_covers_are_not_decoded() -> None:
    """A stale tile (older than every window at t) may hold anything: it is never read."""
    view = _view()
    t = 100 * 86_400_000
    raw = {b"60000:0": b"not json", b"n": b"0"}
    _, _, values = CompiledView(view).evaluate(raw, t, "h")
    assert values["n_10m"] == 0.0


def test_an_unreadable_tile_in_a_window_is_an_integrity_error_naming_it() -> None:
    view = _view()
    t = 10 * MIN + 5
    with pytest.raises(IntegrityError, match="60000:600000 of h"):
        CompiledView(view).evaluate({b"60000:600000": b"[1, {"}, t, "h")
    with pytest.raises(IntegrityError, match="unreadable"):
        CompiledView(view).evaluate({b"60000:600000": b'[1, {"sum_10m": ["x", 0, 1]}]'}, t, "h")
    with pytest.raises(IntegrityError, match="unreadable"):
        CompiledView(view).evaluate({b"60000:abc": b"[1, {}]"}, t, "h")
