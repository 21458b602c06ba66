"""The tile layout through a real Redis: read at t == the batch engine, tails, replays, expiry, the earlier layout."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import redis

from feature_stream.backfill import tile_writes
from featurestore.accepted import EntityEvents
from featurestore.definitions import FeatureViewDef
from featurestore.online import (
    AsyncRedisOnlineStore,
    OnlineKey,
    OnlineRow,
    OnlineValue,
    RedisOnlineStore,
    tail_key,
    tiles_key,
)
from featurestore.online_tiles import EXPIRY_SLACK, TILE_WRITE_CHUNK
from featurestore.tiles import Event, evaluate_events

VIEW = FeatureViewDef.model_validate(
    {
        "name": "trips",
        "version": 1,
        "source": "trip",
        "entity": "driver_id",
        "ttl": "1h",
        "features": [
            {"name": "n_10m", "agg": "count", "window": {"kind": "hopping", "size": "10m", "step": "1m"}},
            {
                "name": "fare_sum_1h",
                "agg": "sum",
                "field": "fare",
                "window": {"kind": "hopping", "size": "1h", "step": "5m"},
            },
            {"name": "fare_max_1h", "agg": "max", "field": "fare", "window": {"size": "1h"}},
            {"name": "zones_1h", "agg": "distinct_count", "field": "zone", "window": {"size": "1h"}},
            {"name": "last_fare", "agg": "last", "field": "fare", "window": {"size": "1d"}},
        ],
    }
)
SKEW = 300_000
T0 = 1_790_000_000_000


def _events(seed: int) -> dict[str, EntityEvents]:
    rng = random.Random(seed)
    out: dict[str, EntityEvents] = {}
    for i in range(600):
        t = T0 + rng.randrange(3 * 3_600_000)
        got = out.setdefault(f"d{rng.randrange(8)}", EntityEvents())
        got.events.append(Event(t, f"e{i:04d}", {"fare": round(rng.uniform(1, 90), 2), "zone": rng.choice("abcdefg")}))
    for got in out.values():
        got.events.sort(key=lambda e: e.order)
    return out


def test_reads_at_any_supported_time_equal_the_batch_engine_sync_and_async(redis_url: str, redis_prefix: str) -> None:
    events = _events(3)
    store = RedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
    store.register_views([VIEW])
    writes = tile_writes(VIEW, events, SKEW)
    assert store.write_tiles(writes) == len(events)
    assert store.write_tiles(writes) == len(events)  # a replayed write changes nothing
    keys = [OnlineKey("trips", 1, e) for e in sorted(events)] + [OnlineKey("trips", 1, "nobody")]
    newest = min(got.events[-1].time_ms for got in events.values())
    # Before the newest events (the tail is read: a second round trip), at them, and hours on.
    times = [newest - SKEW // 2, newest, newest + 1, newest + 15 * 60_000, newest + 5 * 3_600_000]
    async_reads = asyncio.run(_read_async(redis_url, redis_prefix, keys, times))
    for t, async_got in zip(times, async_reads, strict=True):
        want = [evaluate_events(VIEW, events.get(k.entity_key, EntityEvents()).events, t) for k in keys]
        sync_got = store.read_at(keys, t)
        for values, s, a in zip(want, sync_got, async_got, strict=True):
            assert s is not None and a is not None
            assert dict(s.values) == values == dict(a.values), t
    nobody = store.read_at(keys[-1:], newest)[0]
    assert nobody is not None and nobody.event_time_ms == -1 and nobody.values["n_10m"] == 0.0


async def _read_async(url: str, prefix: str, keys: list[OnlineKey], times: list[int]) -> list[list[OnlineValue | None]]:
    store = AsyncRedisOnlineStore.from_url(url, prefix=prefix)
    try:
        return [await store.read_at(keys, t) for t in times]
    finally:
        await store.close()


def test_keys_expire_and_the_earlier_layout_is_still_served_without_a_spec(redis_url: str, redis_prefix: str) -> None:
    store = RedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
    store.register_views([VIEW])
    store.write_tiles(tile_writes(VIEW, _events(4), SKEW))
    client = redis.Redis.from_url(redis_url)
    ttl = client.pttl(tiles_key(redis_prefix, OnlineKey("trips", 1, "d0")))
    expire = 86_400_000 + SKEW  # at least the longest window: `last_fare` over a day
    assert expire < ttl <= expire + expire // EXPIRY_SLACK
    # A view with no spec: the row layout of the previous release, served as stored.
    store.write([OnlineRow("old_view", 1, "c1", 5_000, {"x": 2.0}, 60_000)])
    old = store.read_at([OnlineKey("old_view", 1, "c1")], 6_000)[0]
    assert old is not None and old.values == {"x": 2.0} and old.as_of_ms == -1


def test_a_write_renews_an_expiry_only_when_less_than_the_views_is_left(redis_url: str, redis_prefix: str) -> None:
    """Keys live at least the expiry after every write, and at most an eighth more; a busy
    key is not given a new expiry at each write (PEXPIRE was ~a fifth of the append-only file)."""
    store = RedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
    store.register_views([VIEW])
    writes = tile_writes(VIEW, _events(5), SKEW)
    first = writes[0]
    key, tail = tiles_key(redis_prefix, first.key), tail_key(redis_prefix, first.key)
    ms = first.expire_ms
    client = redis.Redis.from_url(redis_url)
    client.delete(key, tail)
    store.write_tiles([first])
    assert client.exists(key) == 1
    assert ms < client.pttl(key) <= ms + ms // EXPIRY_SLACK
    again = dataclasses.replace(first, tail={})  # the same tiles again, no new tail event

    client.pexpire(key, ms + 1_000)  # more than the expiry left: kept as it is
    store.write_tiles([again])
    assert ms < client.pttl(key) <= ms + 1_000

    client.pexpire(key, ms - 60_000)  # as an hour-old expiry would be: renewed
    store.write_tiles([again])
    assert ms < client.pttl(key) <= ms + ms // EXPIRY_SLACK

    client.persist(key)  # a key without an expiry (restored by hand) gets one
    store.write_tiles([again])
    assert ms < client.pttl(key) <= ms + ms // EXPIRY_SLACK

    if first.tail:
        assert ms < client.pttl(tail) <= ms + ms // EXPIRY_SLACK
    client.delete(tail)
    store.write_tiles([again])  # a write with no tail event makes no tail key
    assert client.exists(tail) == 0


def test_a_batch_of_many_entities_is_written_whole_by_the_async_store_even_after_redis_lost_its_scripts(
    redis_url: str, redis_prefix: str
) -> None:
    """More entities than one script call takes go in one pipeline of calls; a Redis that lost
    its scripts (a restart) gets them loaded and the calls again. What is stored equals what
    the synchronous store (one call at a time) stores."""
    rng = random.Random(11)
    events: dict[str, EntityEvents] = {}
    for i in range(3 * TILE_WRITE_CHUNK + 7):
        got = events.setdefault(f"d{i}", EntityEvents())
        got.events.append(Event(T0 + rng.randrange(3_600_000), f"e{i}", {"fare": float(i % 13), "zone": "a"}))
    writes = tile_writes(VIEW, events, SKEW)
    sync_prefix = f"{redis_prefix}:sync"
    RedisOnlineStore.from_url(redis_url, prefix=sync_prefix).write_tiles(writes)
    client = redis.Redis.from_url(redis_url)
    client.script_flush()

    async def write() -> int:
        store = AsyncRedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
        return await store.write_tiles(writes)

    assert asyncio.run(write()) == len(events)

    def stored(prefix: str, entity: str) -> dict[bytes, bytes]:
        got = client.hgetall(tiles_key(prefix, OnlineKey("trips", 1, entity)))
        got.pop(b"w")  # when it was written
        return got

    assert all(stored(redis_prefix, e) == stored(sync_prefix, e) != {} for e in events)
