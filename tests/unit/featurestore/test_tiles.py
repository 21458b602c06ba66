"""Read-time windows: every aggregation kind exact for any order and tiling; tiles == batch at any t."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import numpy as np
import pytest

from featurestore.aggregations import KINDS, Columns, Kind
from featurestore.definitions import AggregationFunction, FeatureDef, FeatureViewDef, WindowDef
from featurestore.tiles import (
    Event,
    NeedTail,
    build_tiles,
    decode_tile,
    encode_tile,
    evaluate_events,
    evaluate_many,
    evaluate_tiles,
    horizon_ms,
    tail_start_ms,
    window_start,
)
from featurestore.values import FeatureValue, Scalar

MIN = 60_000


def _value(rng: random.Random) -> Scalar | None:
    pick = rng.random()
    if pick < 0.1:
        return None
    if pick < 0.2:
        return rng.choice([0.0, -0.0, 1e308, -1e308, 5e-324, 1e-300])
    if pick < 0.3:
        return rng.randint(-5, 5)
    if pick < 0.5:  # strings, few distinct so the string kinds see ties and repeats
        return rng.choice(["a", "b", "ab", "B", "", "é"])
    return rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-12, 12)


def _same(a: FeatureValue, b: FeatureValue) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a == b and math.copysign(1, a) == math.copysign(1, b)


@pytest.mark.parametrize("agg", list(KINDS), ids=lambda a: a.value)
def test_every_kind_is_exact_for_any_order_split_and_merge_order(agg: AggregationFunction) -> None:
    kind: Kind[Any] = KINDS[agg]
    rng = random.Random(hash(agg.value) & 0xFFFF)
    for _ in range(200):
        events = [(rng.randint(0, 50), f"e{i}", _value(rng)) for i in range(rng.randint(0, 40))]
        expected = kind.batch(events)
        shuffled = events[:]
        rng.shuffle(shuffled)
        cuts = sorted(rng.sample(range(len(shuffled) + 1), min(3, len(shuffled) + 1)))
        parts = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
        partials = []
        for part in parts:
            p = kind.empty()
            for t, eid, v in part:
                p = kind.add(p, t, eid, v)
            partials.append(kind.decode(kind.encode(p)))  # through the wire form too
        rng.shuffle(partials)
        merged = kind.empty()
        for p in partials:
            merged = kind.merge(merged, p)
        assert _same(kind.finish(merged), expected), (agg, events)


@pytest.mark.parametrize("agg", list(KINDS), ids=lambda a: a.value)
def test_every_kinds_merge_is_associative_and_commutative_with_empty_as_identity(agg: AggregationFunction) -> None:
    kind: Kind[Any] = KINDS[agg]
    rng = random.Random(len(agg.value) * 7919)
    ids = itertools.count()  # event ids are unique (the worker dedups them); times often tie

    def partial() -> Any:
        p = kind.empty()
        for _ in range(rng.randint(0, 6)):
            p = kind.add(p, rng.randint(0, 9), f"e{next(ids):05d}", _value(rng))
        return p

    for _ in range(300):
        a, b, c = partial(), partial(), partial()
        left, right = kind.merge(kind.merge(a, b), c), kind.merge(a, kind.merge(b, c))
        assert kind.encode(left) == kind.encode(right), (agg, a, b, c)  # the same partial, not just value
        assert _same(kind.finish(kind.merge(a, b)), kind.finish(kind.merge(b, a)))
        assert kind.encode(kind.merge(kind.empty(), a)) == kind.encode(a) == kind.encode(kind.merge(a, kind.empty()))


@pytest.mark.parametrize("agg", list(KINDS), ids=lambda a: a.value)
def test_every_kinds_column_form_equals_its_definition_on_any_window(agg: AggregationFunction) -> None:
    kind: Kind[Any] = KINDS[agg]
    rng = random.Random(len(agg.value))
    for _ in range(100):
        events = sorted(
            (Event(rng.randint(0, 50), f"e{i:03d}", {"x": _value(rng)}) for i in range(rng.randint(0, 40))),
            key=lambda e: e.order,
        )
        cols = Columns(events)
        for _ in range(5):
            lo = rng.randint(0, len(events))
            hi = rng.randint(lo, len(events))
            want = kind.batch((e.time_ms, e.event_id, e.values.get("x")) for e in events[lo:hi])
            assert _same(kind.window(cols, "x", lo, hi), want), (agg, events[lo:hi])


def test_sum_and_mean_round_the_exact_result_once() -> None:
    values = [1e16, 1.0, -1e16, 1.0] * 3
    events = [(0, f"e{i}", v) for i, v in enumerate(values)]
    assert KINDS[AggregationFunction.SUM].batch(events) == 6.0 == math.fsum(values)
    assert KINDS[AggregationFunction.MEAN].batch(events) == 0.5
    assert KINDS[AggregationFunction.SUM].batch([]) == 0.0
    assert KINDS[AggregationFunction.MEAN].batch([]) is None
    assert KINDS[AggregationFunction.SUM].batch([(0, "a", 1e308), (0, "b", 1e308)]) is None  # beyond doubles


def _view(lateness: int = 0) -> FeatureViewDef:
    def w(size: int, step: int) -> WindowDef:
        return WindowDef(kind="hopping" if step < size else "tumbling", size_ms=size, step_ms=step)

    feats = [
        FeatureDef(name="n_10m", agg=AggregationFunction.COUNT, window=w(10 * MIN, MIN)),
        FeatureDef(name="sum_10m", agg=AggregationFunction.SUM, field="x", window=w(10 * MIN, MIN)),
        FeatureDef(name="mean_1h", agg=AggregationFunction.MEAN, field="x", window=w(60 * MIN, 5 * MIN)),
        FeatureDef(name="max_1h", agg=AggregationFunction.MAX, field="x", window=w(60 * MIN, 5 * MIN)),
        FeatureDef(name="min_1h", agg=AggregationFunction.MIN, field="x", window=w(60 * MIN, 60 * MIN)),
        FeatureDef(name="kinds_1h", agg=AggregationFunction.DISTINCT_COUNT, field="k", window=w(60 * MIN, 5 * MIN)),
        FeatureDef(name="last_1d", agg=AggregationFunction.LAST, field="x", window=w(1440 * MIN, 1440 * MIN)),
        FeatureDef(name="last_k_1h", agg=AggregationFunction.LAST_STRING, field="k", window=w(60 * MIN, 5 * MIN)),
        FeatureDef(name="top_k_10m", agg=AggregationFunction.MOST_FREQUENT, field="k", window=w(10 * MIN, MIN)),
    ]
    return FeatureViewDef(
        name="v",
        version=1,
        source="s",
        entity="e",
        features=tuple(feats),
        allowed_lateness_ms=lateness,
        ttl_ms=86_400_000,
    )


def _events(rng: random.Random, n: int, span_ms: int) -> list[Event]:
    return [
        Event(rng.randint(0, span_ms), f"id{i:05d}", {"x": _value(rng) or 1.5, "k": rng.choice("abcde")})
        for i in range(n)
    ]


def test_tiles_equal_the_batch_engine_at_any_read_time_and_arrival_order() -> None:
    view = _view()
    rng = random.Random(7)
    for _ in range(30):
        events = _events(rng, rng.randint(1, 120), 3 * 3_600_000)
        ordered = sorted(events, key=lambda e: e.order)
        shuffled = events[:]
        rng.shuffle(shuffled)
        tiles = {k: decode_tile(view, encode_tile(view, t)) for k, t in build_tiles(view, shuffled).items()}
        newest = ordered[-1].time_ms
        probes = [e.time_ms for e in rng.sample(ordered, min(5, len(ordered)))]
        probes += [newest, newest + 1, newest + 7 * MIN, newest + 61 * MIN, newest + 2 * 86_400_000]
        for t in probes:
            want = evaluate_events(view, ordered, t)
            try:
                got = evaluate_tiles(view, tiles, t)
            except NeedTail:
                got = evaluate_tiles(view, tiles, t, tail=shuffled)
            assert all(_same(got[n], want[n]) for n in want), (t, got, want)


def test_a_count_read_long_after_the_last_event_decays_to_zero() -> None:
    view = _view()
    t0 = 1_700_000_000_000
    events = [Event(t0 + i * 1000, f"e{i}", {"x": 2.0, "k": "a"}) for i in range(5)]
    tiles = build_tiles(view, events)
    at_last = evaluate_tiles(view, tiles, t0 + 4000)
    assert at_last["n_10m"] == 5.0 and at_last["sum_10m"] == 10.0
    later = evaluate_tiles(view, tiles, t0 + 3 * 3_600_000)  # three hours on: the windows hold nothing
    assert later["n_10m"] == 0.0 and later["sum_10m"] == 0.0
    assert later["mean_1h"] is None and later["max_1h"] is None and later["kinds_1h"] == 0.0
    assert later == evaluate_events(view, events, t0 + 3 * 3_600_000)
    # The 1-day tumbling `last` still holds the day's newest value, until the day ends.
    assert later["last_1d"] == (2.0 if (t0 + 3 * 3_600_000) // 86_400_000 == t0 // 86_400_000 else None)


def test_window_bounds_are_closed_at_both_ends() -> None:
    view = _view()
    t = 10 * 3_600_000 + 30_000  # 30 s into a minute
    start = window_start(t, view.features[0].window)
    events = [Event(start - 1, "a", {}), Event(start, "b", {}), Event(t, "c", {}), Event(t + 1, "d", {})]
    assert evaluate_events(view, events, t)["n_10m"] == 2.0  # b and c: start and t included, t+1 not


def test_reads_after_newest_minus_skew_need_only_tiles_from_the_horizon_and_the_tail() -> None:
    view = _view()
    rng = random.Random(3)
    skew = 5 * MIN
    for _ in range(20):
        events = sorted(_events(rng, 200, 2 * 86_400_000), key=lambda e: e.order)
        newest = events[-1].time_ms
        horizon, tail_from = horizon_ms(view, newest, skew), tail_start_ms(view, newest, skew)
        tiles = build_tiles(view, [e for e in events if e.time_ms >= horizon])
        tail = [e for e in events if e.time_ms >= tail_from]
        for t in [newest - skew, newest - skew // 2, newest, newest + 3_600_000]:
            got = evaluate_tiles(view, tiles, t, tail=tail)
            want = evaluate_events(view, events, t)
            assert all(_same(got[n], want[n]) for n in want)


def test_string_kinds_take_the_newest_value_and_the_most_frequent_with_ties_to_the_smallest() -> None:
    last, top = KINDS[AggregationFunction.LAST_STRING], KINDS[AggregationFunction.MOST_FREQUENT]
    events: list[tuple[int, str, Scalar | None]] = [(5, "b", "late-id"), (5, "a", "x"), (1, "c", "old"), (6, "d", 7)]
    assert last.batch(events) == "late-id"  # time 5 is newest among strings; id "b" > "a"; 7 is no string
    assert last.batch([(0, "a", 1.0)]) is None and top.batch([]) is None
    assert top.batch([(0, "a", "z"), (1, "b", "y"), (2, "c", "z"), (3, "d", "y")]) == "y"  # tie: smallest
    assert top.batch([(0, "a", "z"), (1, "b", "y"), (2, "c", "z")]) == "z"


def test_evaluate_many_carries_string_features_as_text_beside_numbers() -> None:
    view = _view()
    rng = random.Random(11)
    events = sorted(_events(rng, 150, 3 * 3_600_000), key=lambda e: e.order)
    times = np.array(sorted(rng.randint(0, 4 * 3_600_000) for _ in range(40)), dtype=np.int64)
    got = evaluate_many(view, Columns(events), times)
    assert got.dtype == object
    for row, t in zip(got, times.tolist(), strict=True):
        want = evaluate_events(view, events, t)
        for j, f in enumerate(view.features):
            value = row[j]
            assert _same(None if isinstance(value, float) and math.isnan(value) else value, want[f.name]), (t, f.name)
    assert any(isinstance(v, str) for v in got[:, [f.is_string for f in view.features]].ravel())


def _filtered_view() -> FeatureViewDef:
    return FeatureViewDef.model_validate(
        {
            "name": "f",
            "version": 1,
            "source": "s",
            "entity": "e",
            "ttl": "1d",
            "features": [
                {"name": "n_10m", "agg": "count", "window": {"kind": "hopping", "size": "10m", "step": "1m"}},
                {
                    "name": "declined_10m",
                    "agg": "count",
                    "where": 'status == "declined"',
                    "window": {"kind": "hopping", "size": "10m", "step": "1m"},
                },
                {"name": "big_sum_1h", "agg": "sum", "field": "x", "where": "x > 100", "window": {"size": "1h"}},
                {
                    "name": "abroad_max_1h",
                    "agg": "max",
                    "field": "x",
                    "where": 'country not in ["NL"] and (x < 0 or status != "ok")',
                    "window": {"kind": "hopping", "size": "1h", "step": "5m"},
                },
                {
                    "name": "ok_last_1d",
                    "agg": "last",
                    "field": "x",
                    "where": 'not (status == "declined")',
                    "window": {"size": "1d"},
                },
            ],
            "derived": [
                {"name": "declined_ratio", "expr": "declined_10m / n_10m"},
                {"name": "spread", "expr": "coalesce(abroad_max_1h, 0) - min(big_sum_1h, 1000)"},
            ],
        }
    )


def _filtered_events(rng: random.Random, n: int, span_ms: int) -> list[Event]:
    def values() -> dict[str, Scalar]:
        out: dict[str, Scalar] = {"x": rng.choice([-5.0, 0.0, 50.0, 101.0, 250.5, 1e6]) * rng.choice([1, -1])}
        if rng.random() < 0.9:
            out["status"] = rng.choice(["ok", "declined", "review"])
        if rng.random() < 0.8:
            out["country"] = rng.choice(["NL", "DE", "FR"])
        return out

    return [Event(rng.randint(0, span_ms), f"id{i:05d}", values()) for i in range(n)]


def test_filtered_and_derived_features_are_the_same_in_every_engine_for_any_arrival_order() -> None:
    view = _filtered_view()
    rng = random.Random(21)
    for _ in range(30):
        events = _filtered_events(rng, rng.randint(1, 150), 3 * 3_600_000)
        ordered = sorted(events, key=lambda e: e.order)
        shuffled = events[:]
        rng.shuffle(shuffled)
        tiles = {k: decode_tile(view, encode_tile(view, t)) for k, t in build_tiles(view, shuffled).items()}
        newest = ordered[-1].time_ms
        probes = sorted({e.time_ms for e in rng.sample(ordered, min(6, len(ordered)))} | {newest, newest + 7 * MIN})
        many = evaluate_many(view, Columns(ordered), np.array(probes, dtype=np.int64))
        for row, t in enumerate(probes):
            want = evaluate_events(view, ordered, t)
            try:
                got = evaluate_tiles(view, tiles, t)
            except NeedTail:
                got = evaluate_tiles(view, tiles, t, tail=shuffled)
            assert list(want) == view.feature_names
            assert all(_same(got[n], want[n]) for n in want), (t, got, want)
            column = [None if math.isnan(x) else float(x) for x in many[row]]
            assert all(_same(c, want[n]) for c, n in zip(column, view.feature_names, strict=True)), (t, column, want)


def test_a_filtered_out_event_does_not_count_and_a_ratio_over_nothing_is_missing() -> None:
    view = _filtered_view()
    t0 = 1_800_000_000_000
    events = [
        Event(t0, "a", {"x": 150.0, "status": "declined", "country": "NL"}),
        Event(t0 + 1, "b", {"x": 90.0, "status": "ok", "country": "DE"}),
        Event(t0 + 2, "c", {"x": 500.0}),  # no status, no country: unknown, so filtered out where tested
    ]
    got = evaluate_events(view, events, t0 + 2)
    assert got["n_10m"] == 3.0 and got["declined_10m"] == 1.0 and got["declined_ratio"] == 1 / 3
    assert got["big_sum_1h"] == 650.0  # a and c; b is not above 100
    assert got["abroad_max_1h"] is None  # a is in NL, b is ok and positive, c has no country
    assert got["ok_last_1d"] == 90.0  # c's missing status is neither declined nor not: it does not count
    assert got["spread"] == -650.0
    later = evaluate_events(view, events, t0 + 3 * 3_600_000)
    assert later["n_10m"] == 0.0 and later["declined_ratio"] is None  # 0 / 0: missing, not an error


def test_derived_features_may_read_string_features_in_every_engine() -> None:
    view = FeatureViewDef.model_validate(
        {
            "name": "s",
            "version": 1,
            "source": "s",
            "entity": "e",
            "ttl": "1d",
            "features": [
                {"name": "n", "agg": "count", "window": {"size": "10m"}},
                {"name": "last_k", "agg": "last_string", "field": "k", "window": {"size": "10m"}},
                {"name": "top_k", "agg": "most_frequent", "field": "k", "where": "x > 0", "window": {"size": "1h"}},
            ],
            "derived": [{"name": "same_k", "expr": 'last_k == top_k or last_k == "a"'}],
        }
    )
    rng = random.Random(4)
    events = sorted(_events(rng, 200, 3 * 3_600_000), key=lambda e: e.order)
    probes = [e.time_ms for e in events[::7]] + [events[-1].time_ms + 11 * MIN]
    many = evaluate_many(view, Columns(events), np.array(probes, dtype=np.int64))
    seen = set()
    for row, t in enumerate(probes):
        want = evaluate_events(view, events, t)
        assert evaluate_tiles(view, build_tiles(view, events), t, tail=events) == want
        got = [None if isinstance(x, float) and math.isnan(x) else x for x in many[row]]
        assert got == [want[n] for n in view.feature_names], t
        seen.add(want["same_k"])
    assert seen == {0.0, 1.0, None}  # equal, different, and missing (no string in the window)
