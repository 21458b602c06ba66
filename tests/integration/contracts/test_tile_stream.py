"""Tile writes streamed on one connection (`RedisScriptStream`) against a real Redis: the order
kept, scripts lost on the way, an error reply, a lost connection."""

from __future__ import annotations

import asyncio
import random
import uuid

import redis
import redis.asyncio as aredis

from feature_stream.aggregate import EntityState
from feature_stream.faults import classify
from featurestore.online import AsyncRedisOnlineStore, OnlineKey, RedisOnlineStore, TileWrite, tiles_key
from featurestore.tile_senders import RedisScriptStream
from featurestore.tiles import Event
from fti_core.errors import UnavailableError
from tests.integration.contracts.test_redis_tiles import SKEW, T0, VIEW


def _batches(seed: int, n: int) -> list[list[TileWrite]]:
    """The worker's tile writes of `n` batches over a few entities: each entity's tiles are
    rewritten whole by later batches, so an older write applied last would show."""
    rng = random.Random(seed)
    states = {f"d{i}": EntityState(VIEW) for i in range(5)}
    out = []
    for b in range(n):
        writes = []
        for entity, st in states.items():
            if rng.random() < 0.7:
                t = T0 + b * 20_000 + rng.randrange(60_000)
                ev = Event(t, f"{entity}-{b}", {"fare": round(rng.uniform(1, 90), 2), "zone": rng.choice("abc")})
                update = st.apply([ev], entity, SKEW)
                if update.write is not None:
                    writes.append(update.write)
        out.append(writes)
    return out


def _stored(client: redis.Redis, prefix: str, entity: str) -> dict[bytes, bytes]:
    got = client.hgetall(tiles_key(prefix, OnlineKey(VIEW.name, VIEW.version, entity)))
    got.pop(b"w", None)  # when it was written
    return got


def test_streamed_writes_sent_without_waiting_store_what_writing_them_one_by_one_stores(
    redis_url: str, redis_prefix: str
) -> None:
    batches = _batches(3, 60)
    sync_prefix = f"{redis_prefix}:sync"
    sync = RedisOnlineStore.from_url(redis_url, prefix=sync_prefix)
    for writes in batches:
        sync.write_tiles(writes)
    client = redis.Redis.from_url(redis_url)

    async def stream() -> list[int]:
        store = AsyncRedisOnlineStore.from_url(redis_url, prefix=redis_prefix)
        sender = store.tile_sender()
        # Half sent at once, then Redis loses its scripts (a restart, SCRIPT FLUSH), then the rest.
        first = [await sender.send(w) for w in batches[:30]]
        applied = list(await asyncio.gather(*first))
        client.script_flush()
        rest = [await sender.send(w) for w in batches[30:]]
        applied += await asyncio.gather(*rest)
        await sender.close()
        await store.close()
        return applied

    applied = asyncio.run(stream())
    assert applied == [len(w) for w in batches]
    for entity in (f"d{i}" for i in range(5)):
        assert _stored(client, redis_prefix, entity) == _stored(client, sync_prefix, entity) != {}


def test_an_error_reply_fails_its_own_send_and_the_stream_goes_on(redis_url: str, redis_prefix: str) -> None:
    key = f"{redis_prefix}:counter"
    script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"

    async def run() -> tuple[BaseException | None, list[int]]:
        client = aredis.Redis.from_url(redis_url)
        sender = RedisScriptStream(client, script, lambda calls: list(calls))
        ok1 = await sender.send([([key], [2])])
        bad = await sender.send([([key], [3]), ([key], ["not a number"])])
        ok2 = await sender.send([([key], [5])])
        got = [await ok1, await ok2]
        error = bad.exception()
        await sender.close()
        await client.aclose()
        return error, got

    error, got = asyncio.run(run())
    assert isinstance(error, UnavailableError) and "online store tile write failed" in str(error)
    assert got == [2, 10]  # the failed send's other call ran: each call is its own script call


def test_a_lost_connection_fails_the_pending_send_and_every_later_one_as_a_redis_outage(redis_url: str) -> None:
    name = f"stream-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)

    async def run() -> tuple[int, BaseException | None, BaseException | None]:
        client = aredis.Redis.from_url(redis_url, client_name=name, socket_timeout=5)
        sender = RedisScriptStream(client, "return 1", lambda calls: list(calls))
        first = await (await sender.send([([], [])]))
        ids = [c["id"] for c in admin.client_list() if c.get("name") == name]
        assert ids, "the stream's connection is named like its client"
        admin.client_kill_filter(_id=ids[0])
        lost = await sender.send([([], [])])
        await asyncio.wait([lost], timeout=10)
        later = await sender.send([([], [])])
        await sender.close()
        await client.aclose()
        return first, lost.exception() if lost.done() else None, later.exception()

    first, lost, later = asyncio.run(run())
    assert first == 1
    for error in (lost, later):
        assert isinstance(error, UnavailableError)
        assert classify(error).dependency == "redis"


def test_a_reply_it_cannot_read_fails_the_send_and_never_leaves_it_waiting(redis_url: str) -> None:
    async def run() -> tuple[BaseException | None, BaseException | None]:
        client = aredis.Redis.from_url(redis_url)
        sender = RedisScriptStream(client, "return 'not a count'", lambda calls: list(calls))
        odd = await sender.send([([], [])])
        await asyncio.wait([odd], timeout=10)
        later = await sender.send([([], [])])
        await sender.close()
        await client.aclose()
        return odd.exception() if odd.done() else None, later.exception()

    odd, later = asyncio.run(run())
    assert isinstance(odd, UnavailableError) and isinstance(later, UnavailableError)
