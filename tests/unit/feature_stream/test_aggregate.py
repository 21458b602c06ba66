"""The streaming engine's entity state: tiles updated one event at a time == the batch engine."""

from __future__ import annotations

import random

from feature_stream.aggregate import EntityState, Rec, expire_ms
from featurestore.definitions import FeatureViewDef
from featurestore.online import InMemoryOnlineStore, OnlineKey
from featurestore.tiles import evaluate_events

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
