"""The worker's batch logic with in-memory state and stores: stream == backfill, DLQ, replays."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from feature_stream.backfill import compute_view
from feature_stream.codec import DeadLetter
from feature_stream.processor import InMessage, Outbox, Processor, ViewItem
from feature_stream.state import InMemoryStateStore
from feature_stream.verify import ViewSkew, compare_view
from featurestore.definitions import Definitions, load_definitions
from featurestore.offline import OfflineStore
from featurestore.online import AsyncInMemoryOnlineStore, OnlineKey, TileWrite
from featurestore.values import to_value
from fti.v1 import events_pb2, rekeyed_pb2
from fti_core.errors import UnavailableError
from fti_demo.simulate import SimConfig, generate

DEFS = load_definitions(Path(__file__).parents[3] / "examples/fraud/features.yaml")
SKEW = 300_000


def _skews(defs: Definitions, offline: OfflineStore, online: AsyncInMemoryOnlineStore) -> list[ViewSkew]:
    """Every entity of every view: the online store at the probe times vs the archive."""
    archive = offline.read_archive()
    out = []
    for view in defs.views:
        expected = compute_view(view, archive)
        states = online.store.read_state([OnlineKey(view.name, view.version, e) for e in expected])
        out.append(compare_view(view, expected, dict(zip(expected, states, strict=True)), SKEW, 2_000_000_000_000))
    return out


class ListOutbox(Outbox):
    def __init__(self) -> None:
        self.dead: list[tuple[InMessage, DeadLetter]] = []
        self.forwarded: list[ViewItem] = []

    def dead_letter(self, msg: InMessage, letter: DeadLetter) -> None:
        self.dead.append((msg, letter))

    def forward(self, items: Sequence[ViewItem]) -> None:
        self.forwarded.extend(ViewItem.decode_many(ViewItem.encode_many(items)))  # through the wire format

    async def flush(self) -> None:
        pass


async def _run(proc: Processor, outbox: ListOutbox, msgs: list[InMessage], batch: int) -> None:
    for i in range(0, len(msgs), batch):
        await proc.ingest(msgs[i : i + batch])
        items, outbox.forwarded = outbox.forwarded, []
        await proc.aggregate(items)


async def test_stream_equals_backfill_with_duplicates_out_of_order_late_and_replays(tmp_path: Path) -> None:
    offline = OfflineStore(str(tmp_path))
    online = AsyncInMemoryOnlineStore()
    await online.register_views(DEFS.views)
    outbox = ListOutbox()
    proc = Processor(DEFS, InMemoryStateStore(), online, offline, outbox)
    sim = list(generate(4000, SimConfig(seed=3, cards=200, merchants=40)))
    msgs = [InMessage("raw", 0, i, e.key, e.value) for i, e in enumerate(sim)]
    bad = events_pb2.Event(event_id="x", event_type="nope", schema_version=1)
    bad.event_time.FromMilliseconds(1)
    msgs.insert(100, InMessage("raw", 0, 10**6, b"k", b"\xff\xff\xff"))
    msgs.insert(200, InMessage("raw", 0, 10**6 + 1, b"k", bad.SerializeToString()))
    await _run(proc, outbox, msgs[:2000], 300)
    await proc.flush()
    proc.reset()  # as after a crash: state reloaded, a stretch of input replayed
    await _run(proc, outbox, msgs[1500:], 250)
    await proc.flush()

    reasons = sorted(letter.reason_name for _, letter in outbox.dead)
    assert reasons == ["DEAD_LETTER_REASON_UNDECODABLE", "DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE"]
    archive = offline.read_archive()
    assert len(archive) == len({e.event_id for e in sim})
    assert archive["late"].any()
    for skew in _skews(DEFS, offline, online):
        assert skew.mismatches == [], skew.mismatches[:5]
        assert skew.entities > 10 and skew.probes > 5 * skew.entities


async def test_batches_are_acked_only_after_their_outputs_and_state_are_flushed(tmp_path: Path) -> None:
    offline = OfflineStore(str(tmp_path))
    state = InMemoryStateStore()
    outbox = ListOutbox()
    proc = Processor(DEFS, state, AsyncInMemoryOnlineStore(), offline, outbox, flush_rows=10**9)
    sim = list(generate(600, SimConfig(seed=4, cards=50, merchants=10)))
    msgs = [InMessage("raw", 0, i, e.key, e.value) for i, e in enumerate(sim)]
    acked: list[int] = []
    await proc.ingest(msgs[:300], lambda: acked.append(1))
    await proc.ingest(msgs[300:], lambda: acked.append(2))
    assert acked == [] and state.keys == {} and offline.archive_event_types() == []
    proc.reset()  # a crash before the flush: nothing acked, so everything is consumed again
    await _run(proc, outbox, msgs, 200)
    await proc.flush()
    assert len(offline.read_archive()) == len({e.event_id for e in sim})
    assert state.keys and state.entities
    done: list[int] = []
    await proc.ingest(msgs[:10], lambda: done.append(1))
    await proc.flush()
    assert done == [1]


class FailingOnlineStore(AsyncInMemoryOnlineStore):
    async def write_tiles(self, writes: Sequence[TileWrite]) -> int:
        raise UnavailableError("redis down")


async def test_a_failed_online_write_fails_the_flush_and_nothing_is_acked(tmp_path: Path) -> None:
    # Online writes are sent without waiting; the flush is where their failure must surface.
    state = InMemoryStateStore()
    proc = Processor(DEFS, state, FailingOnlineStore(), OfflineStore(str(tmp_path)), ListOutbox())
    sim = list(generate(100, SimConfig(seed=5, cards=10, merchants=5)))
    acked: list[int] = []
    await proc.ingest([InMessage("raw", 0, i, e.key, e.value) for i, e in enumerate(sim)], lambda: acked.append(1))
    with pytest.raises(UnavailableError):
        await proc.flush()
    assert acked == [] and state.keys == {}  # neither acked nor state saved: consumed again


class SlowFirstOnlineStore(AsyncInMemoryOnlineStore):
    """The first write takes longer than the next: concurrent writes would land reversed."""

    def __init__(self) -> None:
        super().__init__()
        self.delays = [0.05]

    async def write_tiles(self, writes: Sequence[TileWrite]) -> int:
        await asyncio.sleep(self.delays.pop() if self.delays else 0)
        return await super().write_tiles(writes)


def _txn(offset: int, event_id: str, seconds: int, amount: float) -> InMessage:
    ev = events_pb2.Event(
        event_id=event_id,
        event_type="transaction",
        entities={"card_id": "c1", "merchant_id": "m1"},
        values={"amount": to_value(amount), "merchant_id": to_value("m1")},
        schema_version=1,
    )
    ev.event_time.FromSeconds(1_800_000_000 + seconds)
    # Produced when it happened: the record's timestamp is its event time.
    return InMessage("raw", 0, offset, b"c1", ev.SerializeToString(), (1_800_000_000 + seconds) * 1000)


async def test_a_rewritten_tile_is_not_overtaken_by_the_older_write_of_the_same_tile(tmp_path: Path) -> None:
    online = SlowFirstOnlineStore()
    await online.register_views(DEFS.views)
    proc = Processor(DEFS, InMemoryStateStore(), online, OfflineStore(str(tmp_path)), ListOutbox())
    await proc.ingest([_txn(0, "a", 0, 10.0), _txn(1, "b", 20, 20.0)])
    # Out of order but allowed: it enters the same one-minute tile, which is written again whole.
    await proc.ingest([_txn(2, "c", 10, 5.0)])
    await proc.flush()
    value = online.store.read_at([OnlineKey("card_activity", 1, "c1")], 1_800_000_000_000 + 30_000)[0]
    assert value is not None and value.values["txn_count_10m"] == 3.0 and value.values["amount_sum_10m"] == 35.0


async def test_counts_read_long_after_the_last_event_are_zero_online(tmp_path: Path) -> None:
    online = AsyncInMemoryOnlineStore()
    await online.register_views(DEFS.views)
    proc = Processor(DEFS, InMemoryStateStore(), online, OfflineStore(str(tmp_path)), ListOutbox())
    await proc.ingest([_txn(i, f"e{i}", 10 * i, 7.0) for i in range(5)])
    await proc.flush()
    key = [OnlineKey("card_activity", 1, "c1")]
    at_last = (await online.read_at(key, 1_800_000_040_000))[0]
    assert at_last is not None and at_last.values["txn_count_10m"] == 5.0 and at_last.event_time_ms == 1_800_000_040_000
    later = (await online.read_at(key, 1_800_000_000_000 + 3 * 3_600_000))[0]  # three hours on
    assert later is not None and later.values["txn_count_10m"] == 0.0 and later.values["amount_sum_10m"] == 0.0
    assert later.values["amount_max_1h"] is None and later.age_ms(later.as_of_ms) == 3 * 3_600_000 - 40_000
    unseen = (await online.read_at([OnlineKey("card_activity", 1, "nobody")], 1_800_000_000_000))[0]
    assert unseen is not None and unseen.values["txn_count_10m"] == 0.0 and unseen.age_ms(0) == -1


async def test_a_future_dated_event_is_dead_lettered_and_moves_no_clock(tmp_path: Path) -> None:
    online, outbox, offline = AsyncInMemoryOnlineStore(), ListOutbox(), OfflineStore(str(tmp_path))
    await online.register_views(DEFS.views)
    proc = Processor(DEFS, InMemoryStateStore(), online, offline, outbox, future_skew_ms=SKEW)
    now = 1_800_000_000_000

    def at(msg: InMessage) -> InMessage:  # produced at `now`: the record's Kafka timestamp
        return InMessage(msg.topic, msg.partition, msg.offset, msg.key, msg.value, now)

    # A day ahead: dead-lettered. Just within the skew: accepted.
    await proc.ingest([at(_txn(0, "a", 0, 1.0)), at(_txn(1, "ahead", 86_400, 9.0)), at(_txn(2, "b", 60, 2.0))])
    await proc.ingest([at(_txn(3, "skewed", 240, 4.0))])
    await proc.flush()
    assert [(m.offset, d.reason_name) for m, d in outbox.dead] == [(1, "DEAD_LETTER_REASON_FUTURE_EVENT_TIME")]
    archive = offline.read_archive()
    assert set(archive["event_id"]) == {"a", "b", "skewed"} and not archive["late"].any()  # "b" was not judged late
    value = (await online.read_at([OnlineKey("card_activity", 1, "c1")], now + 240_000))[0]
    assert value is not None and value.event_time_ms == now + 240_000 and value.values["txn_count_10m"] == 3.0


async def test_the_same_event_id_under_two_message_keys_is_one_event(tmp_path: Path) -> None:
    online, offline, outbox = AsyncInMemoryOnlineStore(), OfflineStore(str(tmp_path)), ListOutbox()
    await online.register_views(DEFS.views)
    proc = Processor(DEFS, InMemoryStateStore(), online, offline, outbox)
    first = _txn(0, "same", 0, 10.0)
    other_key = InMessage("raw", 1, 0, b"other-key", first.value, first.timestamp_ms)  # another partition and key
    await _run(proc, outbox, [first, _txn(1, "b", 5, 1.0)], 10)
    await _run(proc, outbox, [other_key], 10)
    await proc.flush()
    proc.reset()  # a replay of the first copy is still that copy, not a duplicate
    await _run(proc, outbox, [first], 10)
    await proc.flush()
    assert sorted(offline.read_archive()["event_id"]) == ["b", "same"]
    value = (await online.read_at([OnlineKey("merchant_activity", 1, "m1")], 1_800_000_010_000))[0]
    assert value is not None and value.values["txn_count_1h"] == 2.0
    for skew in _skews(DEFS, offline, online):
        assert skew.mismatches == []


def test_rekeyed_records_are_columnar_and_the_earlier_formats_still_read() -> None:
    items = [ViewItem("merchant_activity:1", "m1", "e1", 5, -1, {"amount": 2.5, "n": 3, "ok": True, "tag": "x"})]
    data = ViewItem.encode_many(items)
    assert rekeyed_pb2.RekeyedColumns.FromString(data[1:]).entity_keys == ["m1"]
    assert ViewItem.decode_many(data) == items
    earlier = b'[["merchant_activity:1","m1","e1",5,-1,{"amount":2.5,"n":3,"ok":true,"tag":"x"}]]'
    assert ViewItem.decode_many(earlier) == items
    assert (
        ViewItem.decode_many(b'["merchant_activity:1","m1","e1",5,-1,{"amount":2.5,"n":3,"ok":true,"tag":"x"}]')
        == items
    )


class GatedOnlineStore(AsyncInMemoryOnlineStore):
    """Tile writes wait for `gate` while it is set: a flush can be held half way."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None

    async def write_tiles(self, writes: Sequence[TileWrite]) -> int:
        if self.gate is not None:
            await self.gate.wait()
        return await super().write_tiles(writes)


async def test_caches_stay_within_the_bound_with_more_entities_than_it_and_values_stay_exact(tmp_path: Path) -> None:
    offline, online, outbox, state = OfflineStore(str(tmp_path)), GatedOnlineStore(), ListOutbox(), InMemoryStateStore()
    await online.register_views(DEFS.views)
    bound = 25
    proc = Processor(DEFS, state, online, offline, outbox, max_cached=bound)
    sim = list(generate(3000, SimConfig(seed=8, cards=150, merchants=60)))
    msgs = [InMessage("raw", 0, i, e.key, e.value) for i, e in enumerate(sim)]
    peak = (0, 0)
    for i in range(0, len(msgs), 300):
        # A flush held on its online writes while the next batch comes in: that batch's entities
        # and keys are not saved when the flush trims the caches, so they must stay cached.
        online.gate = asyncio.Event()
        await _run(proc, outbox, msgs[i : i + 100], 100)
        flushing = asyncio.ensure_future(proc.flush())
        await asyncio.sleep(0)  # one step of the flush: it takes the buffer, then waits on the gate
        await _run(proc, outbox, msgs[i + 100 : i + 200], 100)
        online.gate.set()
        online.gate = None
        await flushing
        await _run(proc, outbox, msgs[i + 200 : i + 300], 100)  # reloads what the trim evicted
        await proc.flush()
        entities, keys = proc.cached
        assert entities <= bound and keys <= bound, (entities, keys)
        peak = max(peak, (entities, keys))
    assert peak == (bound, bound)  # the bound was reached: entities were evicted and reloaded
    assert len(state.entities) > 4 * bound and len(state.keys) > 4 * bound
    archive = offline.read_archive()
    assert len(archive) == len({e.event_id for e in sim})
    # Each event's watermark is its key's newest earlier time, as if nothing had been evicted.
    newest: dict[bytes, int] = {}
    expected: dict[str, int] = {}
    for e in sim:
        if e.event_id not in expected:
            expected[e.event_id] = newest.get(e.key, -1)
            newest[e.key] = max(newest.get(e.key, -1), e.time_ms)
    assert dict(zip(archive["event_id"], archive["watermark_ms"], strict=True)) == expected
    for skew in _skews(DEFS, offline, online):
        assert skew.mismatches == [], skew.mismatches[:5]
        assert skew.entities > 2 * bound


async def test_cached_events_stay_within_their_bound_with_busy_entities_and_values_stay_exact(tmp_path: Path) -> None:
    """Few entities with many events each, over two days (events and ids age out): the event
    bound, not the entity bound, evicts."""
    offline, online, outbox = OfflineStore(str(tmp_path)), AsyncInMemoryOnlineStore(), ListOutbox()
    state = InMemoryStateStore()
    await online.register_views(DEFS.views)
    bound = 400
    proc = Processor(DEFS, state, online, offline, outbox, max_cached=10_000, max_cached_events=bound)
    misses_before = _entity_misses()
    config = SimConfig(seed=9, sim_rate=0.02, cards=40, merchants=12, ooo_fraction=0.2, late_fraction=0.02)
    sim = list(generate(4000, config))
    msgs = [InMessage("raw", 0, i, e.key, e.value) for i, e in enumerate(sim)]
    evicted = False
    for i in range(0, len(msgs), 250):
        before = proc.cached
        await _run(proc, outbox, msgs[i : i + 250], 125)
        await proc.flush()
        events, ids = proc.held
        # The running totals are what the caches hold.
        assert events == sum(len(s) for s in proc._entities.values())
        assert ids == sum(len(k.seen) for k in proc._ingest._keys.values())
        assert events <= bound and ids <= bound, (events, ids)
        evicted = evicted or proc.cached[0] < before[0]
    assert evicted  # entities were evicted and reloaded
    assert len(state.entities) > proc.cached[0]
    # Each entity missed the cache at its first sighting, and again after each eviction.
    assert _entity_misses() - misses_before > len(state.entities)
    for skew in _skews(DEFS, offline, online):
        assert skew.mismatches == [], skew.mismatches[:5]


def _entity_misses() -> float:
    return REGISTRY.get_sample_value("fti_features_cache_misses_total", {"kind": "entities"}) or 0.0


def _online_content(online: AsyncInMemoryOnlineStore) -> dict[OnlineKey, tuple[dict[bytes, bytes], dict[bytes, bytes]]]:
    """Every entity's tiles and tail as stored, without the wall-clock write time."""
    store = online.store
    return {k: ({f: v for f, v in store.tiles[k].items() if f != b"w"}, store.tails.get(k, {})) for k in store.tiles}


async def test_batches_of_any_split_give_the_online_store_one_message_at_a_time_gives(tmp_path: Path) -> None:
    rng = random.Random(31)
    sim = list(generate(1500, SimConfig(seed=12, cards=60, merchants=15, ooo_fraction=0.3, late_fraction=0.02)))
    msgs = [InMessage("raw", 0, i, e.key, e.value) for i, e in enumerate(sim)]
    copies = rng.sample(msgs, 100)  # the same events again under other positions: duplicates
    msgs += [InMessage("raw", 1, i, m.key, m.value) for i, m in enumerate(copies)]
    rng.shuffle(msgs)
    stores = []
    for splits in ([1], [1, 7, 64, 300, 900]):
        online = AsyncInMemoryOnlineStore()
        await online.register_views(DEFS.views)
        outbox = ListOutbox()
        proc = Processor(DEFS, InMemoryStateStore(), online, OfflineStore(str(tmp_path / str(len(splits)))), outbox)
        i = 0
        while i < len(msgs):
            n = rng.choice(splits)
            await _run(proc, outbox, msgs[i : i + n], n)
            i += n
            if len(splits) > 1 and rng.random() < 0.2:  # flushed now and then, and restarted
                await proc.flush()
                proc.reset()
        await proc.flush()
        stores.append(_online_content(online))
    assert len(stores[0]) > 70 and stores[0] == stores[1]
