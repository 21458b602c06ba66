"""The window maths: definitions of each aggregation, and stream == batch whatever the arrival order."""

from __future__ import annotations

import math
import random

import pytest

from feature_stream.aggregate import (
    EntityState,
    Rec,
    compute_entity_rows,
    compute_row,
    is_late,
    rows_between,
    window_start,
)
from feature_stream.windows import PrefixSums, numeric_window
from featurestore.definitions import AggregationFunction, FeatureViewDef, WindowDef

VIEW = FeatureViewDef.model_validate(
    {
        "name": "v",
        "version": 1,
        "source": "t",
        "entity": "k",
        "ttl": "1d",
        "allowed_lateness": "2m",
        "features": [
            {"name": "n", "agg": "count", "window": {"kind": "hopping", "size": "10m", "step": "1m"}},
            {"name": "s", "agg": "sum", "field": "x", "window": {"kind": "hopping", "size": "10m", "step": "1m"}},
            {"name": "mean", "agg": "mean", "field": "x", "window": {"size": "1h"}},
            {"name": "lo", "agg": "min", "field": "x", "window": {"size": "1h"}},
            {"name": "hi", "agg": "max", "field": "x", "window": {"size": "1h"}},
            {"name": "last", "agg": "last", "field": "x", "window": {"size": "1d"}},
            {
                "name": "d",
                "agg": "distinct_count",
                "field": "m",
                "window": {"kind": "hopping", "size": "1h", "step": "5m"},
            },
        ],
    }
)


def test_window_start_is_the_newest_hopping_window_containing_t() -> None:
    hop = WindowDef.model_validate({"kind": "hopping", "size": "10m", "step": "1m"})
    assert window_start(10 * 60_000 + 5, hop) == 60_000
    tumble = WindowDef.model_validate({"size": "1h"})
    assert window_start(3_600_000 + 5, tumble) == 3_600_000
    assert window_start(3_599_999, tumble) == 0


def test_each_aggregation_over_a_small_history() -> None:
    recs = [
        Rec(1_000, "a", {"x": 1.0, "m": "m1"}),
        Rec(2_000, "b", {"x": 4, "m": "m2"}),
        Rec(2_000, "c", {"m": "m1"}),  # no x: counted, not summed
        Rec(700_000, "d", {"x": 2.5, "m": "m3"}),  # 10m hopping window of d starts at 60s
    ]
    rows = compute_entity_rows(VIEW, recs)
    assert rows[2][1] == {"n": 3.0, "s": 5.0, "mean": 2.5, "lo": 1.0, "hi": 4.0, "last": 4.0, "d": 2.0}
    assert rows[3][1] == {"n": 1.0, "s": 2.5, "mean": 2.5, "lo": 1.0, "hi": 4.0, "last": 2.5, "d": 3.0}


def test_ties_on_time_are_broken_by_event_id_and_exclude_later_events() -> None:
    rows = compute_entity_rows(VIEW, [Rec(5, "b", {"x": 2.0}), Rec(5, "a", {"x": 1.0})])
    assert [r.event_id for r, _ in rows] == ["a", "b"]
    assert rows[0][1]["s"] == 1.0 and rows[1][1]["s"] == 3.0


def test_lateness_is_relative_to_the_watermark() -> None:
    assert not is_late(100, -1, 0)
    assert not is_late(100, 200, 100)
    assert is_late(99, 200, 100)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streaming_state_matches_batch_under_any_arrival_order_and_replays(seed: int) -> None:
    rng = random.Random(seed)
    recs = [
        Rec(rng.randint(0, 3_600_000), f"e{i}", {"x": round(rng.uniform(0, 100), 2), "m": f"m{rng.randint(0, 5)}"})
        for i in range(300)
    ]
    expected = {r.event_id: v for r, v in compute_entity_rows(VIEW, recs)}
    arrivals = recs + rng.sample(recs, 30)  # replays of some events
    rng.shuffle(arrivals)
    st = EntityState()
    latest: dict[str, dict[str, float | None]] = {}
    for rec in arrivals:
        st.add(rec)
        for r, values in st.rows_from(VIEW, rec):
            latest[r.event_id] = values
    assert latest == expected


def _awkward_value(rng: random.Random) -> float | int | str | None:
    """Values that break naive float sums or min/max: cancellation, huge spreads, signed zeros, gaps."""
    return rng.choice(
        [
            None,
            "text",
            0.0,
            -0.0,
            3,
            rng.uniform(-1, 1),
            rng.uniform(-1, 1) * 1e16,
            1e-300 * rng.random(),
            0.1,
            -0.1,
            rng.choice([1.0, -1.0]) * 2.0**60,
            round(rng.uniform(0, 500), 2),
        ]
    )


@pytest.mark.parametrize("seed", range(12))
def test_one_pass_rows_are_bit_identical_to_each_window_on_its_own(seed: int) -> None:
    rng = random.Random(seed)
    recs = sorted(
        (
            Rec(
                rng.randrange(0, 3 * 3_600_000, rng.choice([1, 1000, 60_000])),
                f"e{i:04d}",
                {
                    k: v
                    for k, v in (("x", _awkward_value(rng)), ("m", rng.choice(["a", "b", "c", None])))
                    if v is not None
                },
            )
            for i in range(rng.randrange(1, 400))
        ),
        key=lambda r: r.order,
    )
    lo = rng.randrange(0, len(recs))
    hi = rng.randrange(lo, len(recs) + 1)
    short = rng.randrange(lo, min(lo + 4, len(recs)) + 1)  # few rows: the window-by-window path
    for a, b in ((lo, hi), (lo, short)):
        for i, got in enumerate(rows_between(VIEW, recs, a, b), start=a):
            _assert_bit_identical(i, got, compute_row(VIEW, recs, i))
    # The streaming engine with its cached columns, events arriving in any order, some replayed.
    st = EntityState()
    arrivals = recs + rng.sample(recs, min(20, len(recs)))
    rng.shuffle(arrivals)
    latest: dict[str, dict[str, float | None]] = {}
    for rec in arrivals:
        st.add(rec)
        for r, values in st.rows_from(VIEW, rec):
            latest[r.event_id] = values
    for i, r in enumerate(recs):
        _assert_bit_identical(i, latest[r.event_id], compute_row(VIEW, recs, i))


def _assert_bit_identical(i: int, got: dict[str, float | None], want: dict[str, float | None]) -> None:
    assert got.keys() == want.keys()
    for name, w in want.items():
        g = got[name]
        same = (g is None and w is None) or (
            g is not None and w is not None and g == w and math.copysign(1, g) == math.copysign(1, w)
        )
        assert same, (i, name, g, w)


def test_one_pass_sums_keep_the_sign_of_a_zero_sum_as_fsum_does() -> None:
    recs = [Rec(1000, "a", {"x": -0.0}), Rec(2000, "b", {"x": -0.0}), Rec(3000, "c", {"x": 0.0})]
    got = [row["s"] for row in rows_between(VIEW, recs, 0, 3)]
    want = [compute_row(VIEW, recs, i)["s"] for i in range(3)]
    assert [math.copysign(1, x or 0.0) for x in got] == [math.copysign(1, x or 0.0) for x in want]


@pytest.mark.parametrize("seed", range(6))
def test_kept_prefix_sums_equal_fsum_of_every_window_through_inserts_and_drops(seed: int) -> None:
    rng = random.Random(seed)
    numbers: list[float | None] = []
    sums = PrefixSums(numbers)  # reads the column it is given, as an entity's cached columns share it
    for step in range(300):
        if numbers and rng.random() < 0.05:  # the entity's oldest events leave the state
            n = rng.randrange(1, min(20, len(numbers)) + 1)
            del numbers[:n]
            sums.drop_head(n)
        for _ in range(rng.randrange(1, 4)):  # a few events between reads, anywhere: out of order
            x = _awkward_value(rng)
            i = rng.randrange(0, len(numbers) + 1)
            numbers.insert(i, float(x) if isinstance(x, float | int) else None)
            sums.invalidate(i)
        lo = rng.randrange(0, len(numbers))
        hi = rng.randrange(lo, len(numbers)) + 1
        for agg in (AggregationFunction.SUM, AggregationFunction.MEAN):
            got, want = sums.window(agg, lo, hi), numeric_window(agg, numbers, lo, hi)
            same = (got is None and want is None) or (
                got is not None and want is not None and got == want and math.copysign(1, got) == math.copysign(1, want)
            )
            assert same, (step, agg, lo, hi, got, want)
        part = sums.slice(lo, hi, numbers[lo:hi])  # what a one-pass over rows reads
        assert part.window(AggregationFunction.SUM, 0, hi - lo) == math.fsum(v for v in numbers[lo:hi] if v is not None)
