"""CPU profile driver of the worker's hot path, without Kafka, Faust or Redis (not a test).

    python bench/feature_pipeline/profile_processor.py --events 30000 [--view card_activity:1] [--profile]

Feeds `Processor.ingest` batches of encoded demo messages (as a fetch hands them over), with
in-memory state, an online store that encodes each tile write as the Redis store does (the
Lua call's JSON) and drops it, the real parquet archive in a temporary directory, and an
outbox that sends re-keyed items through their wire format back into `Processor.aggregate`.
Prints events/s and CPU µs per event (process time, so a loaded machine skews it less than
wall time); `--profile` prints the top of a cProfile of the same run. `--repeat N` runs N
times and prints the median.

`--live RATE` feeds live traffic instead, as the freshness phase of `run.py` produces it:
transactions of 1,000 cards at 300 merchants with random ids, stamped RATE a second up to now,
in batches of `--batch` (what one fetch holds at that rate: ~RATE/20 in the worker) and a
flush every RATE/2 events (the worker's 0.5 s timer). Each event is then most often its
entity's only one in a batch, so per-entity work is not shared as in a catch-up: this is the
CPU per event that freshness depends on.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from feature_stream.codec import DeadLetter
from feature_stream.collector import Collector
from feature_stream.processor import InMessage, Outbox, Processor, ViewItem
from feature_stream.state import InMemoryStateStore, StateStore
from featurestore.definitions import Definitions, load_definitions
from featurestore.offline import OfflineStore
from featurestore.online import AsyncOnlineStore, OnlineKey, OnlineRow, OnlineValue, TileWrite
from featurestore.online_tiles import tile_calls
from featurestore.values import to_value
from fti.v1 import events_pb2
from fti_demo.simulate import SimConfig, generate

ROOT = Path(__file__).parents[2]


class _EncodingOnline(AsyncOnlineStore):
    """Encodes tile writes as the Redis store's script call would, then drops them."""

    def __init__(self) -> None:
        self.bytes = 0

    async def write(self, rows: Sequence[OnlineRow]) -> int:
        return 0

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        return []

    async def register_views(self, views: object) -> None:
        return None

    async def write_tiles(self, writes: Sequence[TileWrite]) -> int:
        for _, args in tile_calls("fti", writes):
            self.bytes += len(args[0])
        return len(writes)


class _LoopOutbox(Outbox):
    """Re-keyed items through their wire format, handed back to the caller."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.dead = 0

    def dead_letter(self, msg: InMessage, letter: DeadLetter) -> None:
        self.dead += 1

    def forward(self, items: Sequence[ViewItem]) -> None:
        for i in range(0, len(items), 500):
            self.records.append(ViewItem.encode_many(items[i : i + 500]))

    async def flush(self) -> None:
        return None


def _defs(view: str | None) -> Definitions:
    defs = load_definitions(ROOT / "examples/fraud/features.yaml")
    if view is None:
        return defs
    return defs.model_copy(update={"views": tuple(v for v in defs.views if v.ref == view)})


def _live(events: int, rate: float) -> list[InMessage]:
    """Transactions as the freshness phase produces them: `rate` a second, the last one now."""
    rng = random.Random(3)
    start_ms = int(time.time() * 1000) - int(events / rate * 1000)
    msgs = []
    for i in range(events):
        card, merchant = f"probe{rng.randrange(1000):04d}", f"m{rng.randrange(300):04d}"
        ev = events_pb2.Event(
            event_id=uuid.UUID(int=rng.getrandbits(128)).hex,
            event_type="transaction",
            entities={"card_id": card, "merchant_id": merchant},
            values={"amount": to_value(10.0 + i % 7), "merchant_id": to_value(merchant)},
            schema_version=1,
            source="bench",
        )
        at_ms = start_ms + int(i * 1000 / rate)
        ev.event_time.FromMilliseconds(at_ms)
        msgs.append(InMessage("raw", i % 4, i, card.encode(), ev.SerializeToString(), at_ms))
    return msgs


async def _run(
    defs: Definitions,
    msgs: list[InMessage],
    batch: int,
    tmp: str,
    collector: Collector | None,
    flush_every: int | None = None,
    state: StateStore | None = None,
    online: AsyncOnlineStore | None = None,
) -> None:
    """Batches through the processor; flushed by its own 0.5 s timer, or every `flush_every` events.
    `state` and `online` replace the in-memory state and the encoding online store (to record
    what the processor asks of them: `redis_writes.py`)."""
    outbox = _LoopOutbox()
    state = InMemoryStateStore() if state is None else state
    proc = Processor(defs, state, _EncodingOnline() if online is None else online, OfflineStore(tmp), outbox)
    since = 0
    for i in range(0, len(msgs), batch):
        await proc.ingest(msgs[i : i + batch])
        records, outbox.records = outbox.records, []
        for rec in records:  # as the re-keyed agent gets them
            await proc.aggregate(ViewItem.decode_many(rec))
        since += batch
        if flush_every is None:
            await proc.flush_if_due()
        elif since >= flush_every:
            since = 0
            await proc.flush()
        if collector is not None and (flush_every is None or not since):  # the worker's flush loop ticks
            collector.tick()
    await proc.flush()


def _once(
    defs: Definitions,
    msgs: list[InMessage],
    batch: int,
    profile: cProfile.Profile | None,
    collector: Collector | None,
    flush_every: int | None = None,
) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        c0 = time.process_time()
        if profile is not None:
            profile.enable()
        asyncio.run(_run(defs, msgs, batch, tmp, collector, flush_every))
        if profile is not None:
            profile.disable()
        return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=None, help="events a batch (default 2,000; RATE/20 with --live)")
    ap.add_argument("--live", type=float, default=None, metavar="RATE", help="live traffic at RATE events/s")
    ap.add_argument("--view", default=None, help="only this view ref (name:version); default all demo views")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=35)
    ap.add_argument("--default-gc", action="store_true", help="Python's default GC, not the worker's policy")
    args = ap.parse_args()
    defs = _defs(args.view)
    if args.live:
        msgs = _live(args.events, args.live)
        batch, flush_every = args.batch or max(1, round(args.live / 20)), max(1, round(args.live / 2))
    else:
        now_ms = int(time.time() * 1000)
        msgs = [
            InMessage("raw", 0, i, e.key, e.value, now_ms)
            for i, e in enumerate(generate(args.events, SimConfig(seed=1)))
        ]
        batch, flush_every = args.batch or 2000, None
    collector = None if args.default_gc else Collector()  # as the worker does
    if collector is not None:
        collector.start()
    profile = cProfile.Profile() if args.profile else None
    cpu = [_once(defs, msgs, batch, profile, collector, flush_every) for _ in range(args.repeat)]
    med = statistics.median(cpu)
    views = [v.ref for v in defs.views]
    rate, per = len(msgs) / med, 1e6 * med / len(msgs)
    what = f"live at {args.live:,.0f}/s, batches of {batch}" if args.live else f"batches of {batch}"
    print(f"{len(msgs)} messages ({what}), views={views}: {rate:,.0f} msg/s CPU, {per:.1f} us CPU/msg", end="")
    print(f" (median of {len(cpu)})")
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
