"""Worker state round-trips through a real Redis: many keys and entities, drops, the stored layout."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
import redis
import redis.asyncio as aredis

from feature_stream.aggregate import Rec
from feature_stream.state import (
    SAVE_FIELDS_PER_CALL,
    EntityChanges,
    InMemoryStateStore,
    KeyChanges,
    RedisStateStore,
    Seen,
    StateStore,
    pack_rec,
    pack_seen,
    unpack_seen,
)
from fti_core.errors import UnavailableError

from ...legacy_state import old_rec, old_seen

# Quotes, backslashes, control characters and non-ASCII text must arrive byte for byte.
ODD = 'é"\\\n\x00☃𝄞'
BIG = 5_000  # fields in one hash: more than one Lua unpack() can take at once
msgpack_encode = msgspec.msgpack.encode


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStateStore]:
    st = RedisStateStore(aredis.Redis.from_url(redis_url), f"{redis_prefix}:st")
    yield st
    await st.close()


def _seen(i: int) -> Seen:
    return Seen(f"events/{i % 4}/{i}", 1_000 + i, 2_000 + i)


def _rec(eid: str, i: int) -> Rec:
    return Rec(1_000 + i, eid, {"amount": i / 3, "n": i, "ok": i % 2 == 0, "tag": f"{ODD}{i}"})


def _first_save() -> tuple[dict[str, KeyChanges], EntityChanges]:
    keys = {f"card-{k}{ODD}": KeyChanges({f"ev-{k}-{i}": _seen(i) for i in range(5)}, set()) for k in range(300)}
    keys["big"] = KeyChanges({f"ev-{i}": _seen(i) for i in range(BIG)}, set())
    changes = EntityChanges()
    for e in range(200):
        for i in range(4):
            changes.add(("card_stats:1", f"card-{e}"), _rec(f"ev-{e}-{i}{ODD}", i))
    for i in range(BIG):
        changes.add(("merchant_stats:2", "big"), _rec(f"ev-{i}", i))
    return keys, changes


def _second_save() -> tuple[dict[str, KeyChanges], EntityChanges]:
    keys = {f"card-{k}{ODD}": KeyChanges({"ev-new": _seen(k)}, {f"ev-{k}-0", f"ev-{k}-1"}) for k in range(0, 300, 2)}
    keys["big"] = KeyChanges({}, {f"ev-{i}" for i in range(0, BIG, 2)} | {"never-stored"})
    changes = EntityChanges()
    for e in range(0, 200, 3):
        changes.drop(("card_stats:1", f"card-{e}"), [f"ev-{e}-0{ODD}"])
        changes.add(("card_stats:1", f"card-{e}"), _rec("ev-new", e))
    changes.drop(("merchant_stats:2", "big"), [f"ev-{i}" for i in range(1, BIG, 2)])
    return keys, changes


async def _snapshot(st: StateStore) -> tuple[dict[str, dict[str, Seen]], dict[tuple[str, str], list[Rec]]]:
    keys = [f"card-{k}{ODD}" for k in range(300)] + ["big", "absent"]
    refs = [("card_stats:1", f"card-{e}") for e in range(200)] + [("merchant_stats:2", "big"), ("v:1", "absent")]
    loaded = await st.load_keys(keys)
    for k, ks in loaded.items():  # the watermark is derived from what was loaded
        assert ks.max_ms == max((s.time_ms for s in ks.seen.values()), default=-1), k
    entities = await st.load_entities(refs)
    return {k: ks.seen for k, ks in loaded.items()}, {
        r: sorted(recs, key=lambda x: x.order) for r, recs in entities.items()
    }


async def test_saves_load_back_as_the_in_memory_store_holds_them(store: RedisStateStore) -> None:
    oracle = InMemoryStateStore()
    for keys, changes in (_first_save(), _second_save()):
        await store.save(keys, changes)
        await oracle.save(keys, changes)
        assert await _snapshot(store) == await _snapshot(oracle)
    seen, entities = await _snapshot(store)
    assert len(seen["big"]) == BIG // 2 and len(entities[("merchant_stats:2", "big")]) == BIG // 2
    assert len(seen[f"card-0{ODD}"]) == 4 and len(seen[f"card-1{ODD}"]) == 5


async def test_stored_layout_is_one_packed_record_per_event(
    store: RedisStateStore, redis_url: str, redis_prefix: str
) -> None:
    rec = _rec("e1", 7)
    big = Rec(1007, "e2", {"id": 2**63 - 1, "neg": -(2**62) - 3, "x": 0.1})
    await store.save({"k": KeyChanges({"e1": _seen(7)}, set())}, _changes(("card_stats:1", "c"), rec, big))
    client = redis.Redis.from_url(redis_url)
    # [position, time_ms, watermark_ms - time_ms]
    assert client.hgetall(f"{redis_prefix}:st:in:k") == {b"e1": msgpack_encode(["events/3/7", 1007, 1000])}
    raw = client.hgetall(f"{redis_prefix}:st:vw:card_stats:v1:c")
    assert raw == {b"e1": msgpack_encode([1007, dict(rec.values)]), b"e2": msgpack_encode([1007, dict(big.values)])}
    loaded = (await store.load_entities([("card_stats:1", "c")]))[("card_stats:1", "c")]
    assert {r.event_id: r for r in loaded} == {"e1": rec, "e2": big}
    assert {r.event_id: [type(x) for x in r.values.values()] for r in loaded} == {
        "e1": [float, int, bool, str],
        "e2": [int, int, float],
    }


async def test_state_of_the_earlier_json_layout_loads_exactly_and_is_rewritten_packed(
    store: RedisStateStore, redis_url: str, redis_prefix: str
) -> None:
    keys, changes = _first_save()
    client = redis.Redis.from_url(redis_url)
    for k, kc in keys.items():
        client.hset(f"{redis_prefix}:st:in:{k}", mapping={e: old_seen(s) for e, s in kc.added.items()})
    for (view, entity), recs in changes.added.items():
        name = f"{redis_prefix}:st:vw:{view.replace(':', ':v')}:{entity}"
        client.hset(name, mapping={e: old_rec(r) for e, r in recs.items()})
    oracle = InMemoryStateStore()
    await oracle.save(keys, changes)
    assert await _snapshot(store) == await _snapshot(oracle)  # values and their types exact
    assert store.repacked == sum(len(kc.added) for kc in keys.values()) + sum(len(r) for r in changes.added.values())
    # Rewritten packed, byte for byte what a save of the same state writes.
    assert client.hget(f"{redis_prefix}:st:in:big", "ev-3") == pack_seen(_seen(3))
    assert client.hget(f"{redis_prefix}:st:vw:merchant_stats:v2:big", "ev-3") == pack_rec(_rec("ev-3", 3))
    # Later saves and loads go on from the rewritten state; nothing is left to rewrite.
    for keys2, changes2 in (_second_save(),):
        await store.save(keys2, changes2)
        await oracle.save(keys2, changes2)
    before = store.repacked
    assert await _snapshot(store) == await _snapshot(oracle)
    assert store.repacked == before


async def test_a_rewrite_never_overwrites_a_field_changed_after_the_load(
    store: RedisStateStore, redis_url: str, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    name = f"{redis_prefix}:st:in:k"
    client.hset(name, mapping={"a": "events/0/1|5|6", "b": "events/0/2|4|6"})
    raw = client.hgetall(name)
    client.hdel(name, "b")  # another worker pruned it between the read and the rewrite
    await store._repack_legacy([(name, f, v, pack_seen(unpack_seen(v))) for f, v in raw.items()])
    assert client.hgetall(name) == {b"a": pack_seen(Seen("events/0/1", 5, 6))}


async def test_state_written_by_an_older_worker_loads_and_takes_drops(
    store: RedisStateStore, redis_url: str, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.hset(f"{redis_prefix}:st:in:k", mapping={"old": "events/0/1|5|6", "gone": "events/0/2|4|6"})
    client.hset(f"{redis_prefix}:st:vw:card_stats:v1:c", mapping={"old": '[5,{"n":1}]', "gone": '[4,{"n":2}]'})
    changes = EntityChanges()
    changes.drop(("card_stats:1", "c"), ["gone"])
    await store.save({"k": KeyChanges({}, {"gone"})}, changes)
    assert (await store.load_keys(["k"]))["k"].seen == {"old": Seen("events/0/1", 5, 6)}
    assert await store.load_entities([("card_stats:1", "c")]) == {("card_stats:1", "c"): [Rec(5, "old", {"n": 1})]}


async def test_an_empty_save_is_a_no_op(store: RedisStateStore) -> None:
    await store.save({"k": KeyChanges({}, set())}, EntityChanges())
    assert (await store.load_keys(["k"]))["k"].seen == {}


async def test_redis_errors_are_unavailable(store: RedisStateStore, redis_url: str, redis_prefix: str) -> None:
    redis.Redis.from_url(redis_url).set(f"{redis_prefix}:st:in:k", "not a hash")
    with pytest.raises(UnavailableError, match="state save failed"):
        await store.save({"k": KeyChanges({"e": _seen(1)}, set())}, EntityChanges())
    unreachable = RedisStateStore(aredis.Redis.from_url("redis://127.0.0.1:1/0"), "p")
    with pytest.raises(UnavailableError, match="state save failed"):
        await unreachable.save({"k": KeyChanges({"e": _seen(1)}, set())}, EntityChanges())
    await unreachable.close()


def _changes(ref: tuple[str, str], *recs: Rec) -> EntityChanges:
    changes = EntityChanges()
    for rec in recs:
        changes.add(ref, rec)
    return changes


# The fields one call of the save script carries, counted by the decoder the script uses.
_COUNT_FIELDS = """
local n = 0
for _, op in ipairs(cmsgpack.unpack(ARGV[1])) do
  for _ in pairs(op[1]) do n = n + 1 end
  n = n + #op[2]
end
return n
"""


async def test_a_large_save_goes_in_bounded_calls_each_hash_whole(store: RedisStateStore, redis_url: str) -> None:
    # A script blocks Redis while it runs; a hash split across calls could be half-saved.
    keys, changes = _first_save()
    calls = list(store._save_calls(keys, changes))
    assert len(calls) > 2
    names = [n for ns, _ in calls for n in ns]
    assert len(names) == len(set(names)) == len(keys) + len(changes.added)
    total = 0
    for ns, doc in calls:
        fields = redis.Redis.from_url(redis_url).eval(_COUNT_FIELDS, 0, doc)
        assert fields <= SAVE_FIELDS_PER_CALL or len(ns) == 1, (len(ns), fields)
        total += fields
    assert total == sum(len(k.added) for k in keys.values()) + sum(len(r) for r in changes.added.values())
