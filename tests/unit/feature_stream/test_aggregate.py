"""The streaming engine's entity state: tiles updated a batch at a time == one event at a time == the batch engine."""

from __future__ import annotations

import json
import random

from feature_stream import aggregate
from feature_stream.aggregate import EntityState, Rec, expire_ms
from featurestore.aggregations import KINDS
from featurestore.definitions import FeatureViewDef
from featurestore.online import InMemoryOnlineStore, OnlineKey
from featurestore.tiles import build_tiles, encode_tile, evaluate_events, horizon_ms, tail_start_ms, tile_field

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
            {"name": "hi", "agg": "max", "field": "x", "window": {"kind": "hopping", "size": "1h", "step": "5m"}},
            {"name": "last", "agg": "last", "field": "x", "window": {"size": "1d"}},
            {
                "name": "d",
                "agg": "distinct_count",
                "field": "m",
                "window": {"kind": "hopping", "size": "1h", "step": "5m"},
            },
            {"name": "last_m", "agg": "last_string", "field": "m", "window": {"size": "1h"}},
            {
                "name": "top_m",
                "agg": "most_frequent",
                "field": "m",
                "window": {"kind": "hopping", "size": "10m", "step": "1m"},
            },
        ],
    }
)
SKEW = 300_000
T0 = 1_800_000_000_000


def _recs(rng: random.Random, n: int, span_ms: int) -> list[Rec]:
    return [
        Rec(T0 + rng.randint(0, span_ms), f"e{i:05d}", {"x": round(rng.uniform(-50, 50), 3), "m": rng.choice("abcdef")})
        for i in range(n)
    ]


def _stream(recs: list[Rec], batch: int, rng: random.Random) -> InMemoryOnlineStore:
    """Feed `recs` in batches into entity states that are reloaded (as after a crash) now and then."""
    store = InMemoryOnlineStore()
    store.register_views([VIEW])
    st = EntityState(VIEW)
    for i in range(0, len(recs), batch):
        update = st.apply(recs[i : i + batch], "k1", SKEW)
        if update.write is not None:
            store.write_tiles([update.write])
        if rng.random() < 0.2:
            st = EntityState(VIEW, st.recs)  # reloaded from saved state: same tiles
    return store


def test_streamed_tiles_equal_the_batch_engine_for_any_arrival_order_and_batching() -> None:
    rng = random.Random(11)
    for _ in range(15):
        recs = _recs(rng, 300, 6 * 3_600_000)
        ordered = sorted(recs, key=lambda r: r.order)
        rng.shuffle(recs)
        state = _stream(recs, rng.randint(1, 40), rng).read_state([OnlineKey("v", 1, "k1")])[0]
        assert state is not None and state.newest_ms == ordered[-1].time_ms
        n = state.newest_ms
        for t in [n - SKEW, n - 1000, n, n + 1, n + 11 * 60_000, n + 2 * 3_600_000, n + 2 * 86_400_000]:
            assert state.at(t) == evaluate_events(VIEW, ordered, t), t


def test_replayed_events_change_nothing_and_old_ones_are_kept_out_of_the_state() -> None:
    rng = random.Random(5)
    recs = sorted(_recs(rng, 200, 3 * 3_600_000), key=lambda r: r.order)
    st = EntityState(VIEW)
    first = st.apply(recs, "k1", SKEW)
    assert first.write is not None and first.beyond_horizon == 0
    again = st.apply(recs[-50:], "k1", SKEW)  # a replay: every id is held
    assert again.write is None and again.added == []
    old = Rec(T0 - 86_400_000 * 3, "old", {"x": 1.0, "m": "z"})  # on time in its own partition, days behind
    late = st.apply([old], "k1", SKEW)
    assert late.beyond_horizon == 1 and late.dropped == ["old"]
    assert late.write is not None and late.write.tiles == {}  # no tile any read at t >= newest - skew sees


def test_online_keys_live_at_least_as_long_as_the_longest_window() -> None:
    assert expire_ms(VIEW, SKEW) == 86_400_000 + SKEW


FILTERED = FeatureViewDef.model_validate(
    {
        **VIEW.model_dump(include={"name", "version", "source", "entity", "ttl_ms", "allowed_lateness_ms"}),
        "name": "vf",
        "features": [
            {"name": "n", "agg": "count", "window": {"kind": "hopping", "size": "10m", "step": "1m"}},
            {"name": "n_a", "agg": "count", "where": 'm in ["a", "b"]', "window": {"size": "10m"}},
            {"name": "s_pos", "agg": "sum", "field": "x", "where": 'x > 0 and m != "c"', "window": {"size": "1h"}},
            {"name": "last_neg", "agg": "last", "field": "x", "where": "x < -10", "window": {"size": "1d"}},
        ],
        "derived": [{"name": "share_a", "expr": "n_a / n"}],
    }
)


def test_streamed_filtered_and_derived_features_equal_the_batch_engine_for_any_arrival_order() -> None:
    rng = random.Random(17)
    for _ in range(10):
        recs = _recs(rng, 250, 4 * 3_600_000)
        ordered = sorted(recs, key=lambda r: r.order)
        rng.shuffle(recs)
        store = InMemoryOnlineStore()
        store.register_views([FILTERED])
        st = EntityState(FILTERED)
        batch = rng.randint(1, 40)
        for i in range(0, len(recs), batch):
            update = st.apply(recs[i : i + batch], "k1", SKEW)
            if update.write is not None:
                store.write_tiles([update.write])
            if rng.random() < 0.2:
                st = EntityState(FILTERED, st.recs)  # reloaded from saved state: same tiles
        state = store.read_state([OnlineKey("vf", 1, "k1")])[0]
        assert state is not None
        n = state.newest_ms
        for t in [n - SKEW, n - 1000, n, n + 1, n + 11 * 60_000, n + 2 * 3_600_000]:
            got, want = state.at(t), evaluate_events(FILTERED, ordered, t)
            assert got == want and "share_a" in got, t
            served = store.read_at([OnlineKey("vf", 1, "k1")], t)[0]  # the server's read
            assert served is not None and served.values == want, t


# Every registered kind, over a numeric and a text field, on two steps: a kind added to `KINDS`
# is covered here too (through `Kind.add` unless the streaming engine writes its fold out).
ALL_KINDS = FeatureViewDef.model_validate(
    {
        "name": "all",
        "version": 1,
        "source": "t",
        "entity": "k",
        "ttl": "1h",
        "allowed_lateness": "2m",
        "features": [
            {"name": f"{agg.value}_{field}_{size}", "agg": agg.value, "field": field, "window": window}
            for agg in KINDS
            for field in ("x", "m")
            for size, window in (("h", {"kind": "hopping", "size": "1h", "step": "5m"}), ("t", {"size": "10m"}))
        ],
    }
)


def _value(rng: random.Random) -> object:
    """Numbers that make exact sums work (tiny, huge, signed zeros, ints, bools), text, or absent."""
    # Text JSON writes as itself, and text it escapes.
    texts = ["7", "", "abc", 'q"é\n']
    return rng.choice(
        [None, 0.0, -0.0, 1, -3, True, 0.1, 1e-300, -2.5e15, 123.456, 7e22, *texts, rng.uniform(-1e6, 1e6)]
    )


def _random_events(rng: random.Random, n: int, span_ms: int) -> list[Rec]:
    out = []
    for i in range(n):
        values = {k: v for k in ("x", "m") if (v := _value(rng)) is not None}
        # Ties in time too, and ids that JSON must escape.
        out.append(Rec(T0 + 1000 * rng.randint(0, span_ms // 1000), f'e{i:04d}"é', values))
    return out


def test_batched_tile_updates_equal_one_event_at_a_time_folds_for_any_order_duplicates_and_splits() -> None:
    rng = random.Random(23)
    key = OnlineKey("all", 1, "k1")
    for _ in range(25):
        events = _random_events(rng, rng.randint(1, 250), rng.choice([60_000, 3_600_000, 5 * 3_600_000]))
        arrivals = events + rng.sample(events, len(events) // 5)  # duplicates: replays and copies
        rng.shuffle(arrivals)
        store = InMemoryOnlineStore()
        store.register_views([ALL_KINDS])
        st, i = EntityState(ALL_KINDS), 0
        sizes = rng.choice([[1], [1, 2, 3], [1, 5, 30, 200]])
        while i < len(arrivals):  # random batch splits, and reloads as after a restart
            n = rng.choice(sizes)
            update = st.apply(arrivals[i : i + n], "k1", SKEW)
            i += n
            if update.write is not None:
                store.write_tiles([update.write])
            if rng.random() < 0.1:
                st = EntityState(ALL_KINDS, st.recs)
        newest = max(e.time_ms for e in events)
        horizon = horizon_ms(ALL_KINDS, newest, SKEW)
        # The tiles written, byte for byte, are those `Kind.add` folds one event at a time.
        expected = {
            tile_field(k): encode_tile(ALL_KINDS, tile)
            for k, tile in build_tiles(ALL_KINDS, [e for e in events if e.time_ms >= horizon], since_ms=horizon).items()
        }
        written = {f.decode(): v.decode() for f, v in store.tiles[key].items() if f not in (b"n", b"w")}
        assert {f: v for f, v in written.items() if int(f.split(":")[1]) >= horizon} == expected
        state = store.read_state([key])[0]
        assert state is not None and state.newest_ms == newest
        ordered = sorted(events, key=lambda e: e.order)
        for t in [newest - SKEW, newest - 1, newest, newest + 7 * 60_000, newest + 3_600_000]:
            assert state.at(t) == evaluate_events(ALL_KINDS, [e for e in ordered if e.time_ms >= horizon], t), t


def test_a_distinct_set_grown_a_few_values_at_a_time_has_the_text_of_the_whole_set() -> None:
    """`ViewPlan.encode` inserts a set's new values into the order its last text had."""
    rng = random.Random(5)
    pool = ["", " ", "~", "a", "m0001", 'q"u', "a\\b", "\n", "\x7f", "é", "日本", *(f"m{i:04d}" for i in range(40))]
    for _ in range(500):
        p: frozenset[str] = frozenset()
        memo = None
        for _ in range(rng.randint(1, 25)):
            p = p | frozenset(rng.sample(pool, rng.randint(0, 3)))
            # Now and then the tile's memo is new (a reloaded state): the set is sorted whole.
            memo = aggregate._distinct_memo('"d":', p, memo if rng.random() < 0.9 else None)
            assert memo[1] == '"d":' + json.dumps(sorted(p), separators=(",", ":"))


def test_a_plans_remembered_bounds_equal_the_horizon_and_tail_start_worked_out_afresh() -> None:
    """`ViewPlan.bounds` keeps its last answer while newest - skew stays within one multiple of
    the steps' gcd: equal to `tiles.horizon_ms` / `tail_start_ms` for steps that are not
    multiples of each other, times before the epoch, runs of close times and jumps."""
    rng = random.Random(41)
    for steps in (["1m", "5m"], ["2m", "3m"], ["8s", "1h"], ["2h"]):
        view = FeatureViewDef.model_validate(
            {
                "name": f"b{len(steps)}{steps[0]}",
                "version": 1,
                "source": "t",
                "entity": "k",
                "ttl": "1d",
                "features": [
                    {"name": f"n{i}", "agg": "count", "window": {"kind": "hopping", "size": "2h", "step": step}}
                    for i, step in enumerate(steps)
                ]
                + [{"name": "day", "agg": "sum", "field": "x", "window": {"size": "1d"}}],
            }
        )
        plan = aggregate.ViewPlan(view)
        t = rng.randint(-(10**13), 10**13)
        for _ in range(3_000):
            t += rng.choice([0, 1, rng.randint(-999, 999), rng.randint(-(10**8), 10**8)])
            skew = rng.choice([SKEW, SKEW, 0, 1])
            assert plan.bounds(t, skew) == (horizon_ms(view, t, skew), tail_start_ms(view, t, skew)), (steps, t, skew)


def test_an_event_leaves_the_state_exactly_when_the_horizon_passes_it() -> None:
    newest = T0 + 5 * 3_600_000
    horizon = horizon_ms(VIEW, newest, SKEW)
    before, at = Rec(horizon - 1, "before", {"x": 1.0, "m": "a"}), Rec(horizon, "at", {"x": 2.0, "m": "b"})
    st = EntityState(VIEW, [before, at])
    assert st.apply([Rec(horizon + 1, "early", {"x": 3.0, "m": "c"})], "k", SKEW).dropped == []  # horizon unmoved
    update = st.apply([Rec(newest, "new", {"x": 4.0, "m": "d"})], "k", SKEW)
    assert update.dropped == ["before"]
    assert [r.event_id for r in st.recs] == ["at", "early", "new"]
