"""The online-store layout round-trips through a real Redis, newer values win, TTLs apply."""

from __future__ import annotations

import asyncio

import redis

from featurestore.online import (
    AsyncRedisOnlineStore,
    OnlineKey,
    OnlineRow,
    RedisOnlineStore,
    online_key,
)

from ...waits import wait_for


def test_write_then_read_many_keys_in_one_round_trip(redis_url: str, redis_prefix: str) -> None:
    store = RedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
    rows = [OnlineRow("v", 1, f"e{i}", 1_000 + i, {"n": i, "avg": i / 2, "tag": "x"}, ttl_ms=60_000) for i in range(50)]
    assert store.write(rows) == 50
    got = store.read([OnlineKey("v", 1, f"e{i}") for i in range(50)] + [OnlineKey("v", 1, "absent")])
    assert got[-1] is None
    for i, value in enumerate(got[:-1]):
        assert value is not None
        assert (value.event_time_ms, value.ttl_ms) == (1_000 + i, 60_000)
        assert value.values == {"n": i, "avg": i / 2, "tag": "x"}


def test_an_older_value_never_overwrites_a_newer_one(redis_url: str, redis_prefix: str) -> None:
    store = RedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
    key = OnlineKey("v", 1, "card-1")
    assert store.write([OnlineRow("v", 1, "card-1", 2_000, {"x": 2.0}, 60_000)]) == 1
    assert store.write([OnlineRow("v", 1, "card-1", 1_000, {"x": 1.0}, 60_000)]) == 0
    value = store.read([key])[0]
    assert value is not None and value.values == {"x": 2.0} and value.event_time_ms == 2_000
    # An equal event time is a re-delivery or a correction: applied.
    assert store.write([OnlineRow("v", 1, "card-1", 2_000, {"x": 2.5}, 60_000)]) == 1
    value = store.read([key])[0]
    assert value is not None and value.values == {"x": 2.5}


def test_keys_expire_after_the_view_ttl(redis_url: str, redis_prefix: str) -> None:
    store = RedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
    store.write([OnlineRow("v", 3, "e", 5, {"x": 1.0}, ttl_ms=300)])
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.pttl(online_key(redis_prefix, OnlineKey("v", 3, "e"))) <= 300
    wait_for(lambda: store.read([OnlineKey("v", 3, "e")])[0] is None, what="the key to expire after its 300 ms TTL")


def test_async_store_reads_what_the_sync_store_wrote(redis_url: str, redis_prefix: str) -> None:
    RedisOnlineStore.from_url(redis_url, prefix=redis_prefix).write(
        [OnlineRow("view_a", 1, "k", 10, {"a": 1.0}, 60_000), OnlineRow("view_b", 2, "k", 20, {"b": True}, 60_000)]
    )

    async def read() -> list[object]:
        store = AsyncRedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
        try:
            return list(await store.read([OnlineKey("view_a", 1, "k"), OnlineKey("view_b", 2, "k")]))
        finally:
            await store.close()

    a, b = asyncio.run(read())
    assert getattr(a, "values", None) == {"a": 1.0}
    assert getattr(b, "values", None) == {"b": True}


def test_one_call_applies_rows_in_order_and_refuses_older_ones(redis_url: str, redis_prefix: str) -> None:
    store = RedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
    assert store.write([OnlineRow("v", 1, "a", 2_000, {"x": 2.0}, 60_000)]) == 1
    rows = [
        OnlineRow("v", 1, "a", 1_000, {"x": 1.0}, 60_000),  # older than stored: refused
        OnlineRow("v", 1, "b", 1_000, {"x": 1.0}, 60_000),
        OnlineRow("v", 1, "b", 3_000, {"x": 3.0}, 60_000),
        OnlineRow("v", 1, "b", 2_000, {"x": 2.0}, 60_000),  # older than a row earlier in the call: refused
        OnlineRow("v", 1, "b", 3_000, {"x": 3.5}, 60_000),  # equal time: applied
        OnlineRow("v", 1, "c", 5, {"x": 0.5}, 0),  # no TTL: no expiry
    ]
    assert store.write(rows) == 4
    a, b, c = store.read([OnlineKey("v", 1, k) for k in "abc"])
    assert a is not None and (a.event_time_ms, a.values) == (2_000, {"x": 2.0})
    assert b is not None and (b.event_time_ms, b.values) == (3_000, {"x": 3.5})
    assert c is not None and (c.event_time_ms, c.ttl_ms, c.values) == (5, 0, {"x": 0.5})
    client = redis.Redis.from_url(redis_url)
    assert client.pttl(online_key(redis_prefix, OnlineKey("v", 1, "c"))) == -1
    assert 0 < client.pttl(online_key(redis_prefix, OnlineKey("v", 1, "b"))) <= 60_000


def _rows_across_chunks() -> list[OnlineRow]:
    """1,201 rows (several script calls): 600 keys, then the same keys older, then one more."""
    newer = [OnlineRow("v", 1, f"e{i}", 10, {"i": i}, 60_000) for i in range(600)]
    older = [OnlineRow("v", 1, f"e{i}", 5, {"i": -i}, 60_000) for i in range(600)]
    return [*newer, *older, OnlineRow("v", 1, "last", 1, {"i": 0}, 60_000)]


def _assert_newer_rows_kept(values: list[object]) -> None:
    assert [getattr(v, "values", None) for v in values] == [{"i": i} for i in range(600)]


def test_sync_write_of_many_rows_keeps_order_across_script_calls(redis_url: str, redis_prefix: str) -> None:
    store = RedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
    assert store.write(_rows_across_chunks()) == 601
    _assert_newer_rows_kept(list(store.read([OnlineKey("v", 1, f"e{i}") for i in range(600)])))


def test_async_write_of_many_rows_keeps_order_across_script_calls(redis_url: str, redis_prefix: str) -> None:
    async def write_then_read() -> tuple[int, list[object]]:
        store = AsyncRedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
        try:
            applied = await store.write(_rows_across_chunks())
            single = await store.write([OnlineRow("v", 1, "e0", 7, {"i": 7}, 60_000)])  # one call, refused
            assert single == 0
            return applied, list(await store.read([OnlineKey("v", 1, f"e{i}") for i in range(600)]))
        finally:
            await store.close()

    applied, values = asyncio.run(write_then_read())
    assert applied == 601
    _assert_newer_rows_kept(values)
