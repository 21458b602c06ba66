"""The hand-written baseline of the feature pipeline bench: plain confluent-kafka and Python dicts.

    python bench/feature_pipeline/baseline.py --topic T --total N --definitions F --view card_activity \
        --prefix P [--redis-url URL]

What a competent engineer would write for ONE view without the worker's guarantees of
durability, written for speed but not cut short:
* decode each `fti.v1.Event` once;
* dead-letter (here: count) events stamped more than 5 min ahead of their record's timestamp;
* dedup per (event_type, event_id), in a dict;
* watermark per message key (the newest event time seen earlier on the key); an event is late
  for the view when `time < watermark - allowed_lateness` and is then not aggregated;
* per entity and window step, the partial aggregates of each tile (the view's real windows,
  read from the definitions file), old tiles dropped once no read at the newest time needs them;
* per poll (one `consume` of up to 2,000 messages), one Redis pipeline: HSET of the changed
  tiles and the entity's newest time, HDEL of dropped tiles, PEXPIRE with the view's ttl; sent
  by a writer thread (at most two polls queued) while the next poll is processed.
Everything else lives in memory only: no state survives the process, no archive, no DLQ topic.
Sums are floats (the worker keeps exact integer sums). Prints one JSON line:
{"events", "seconds", "events_per_s", "cpu_us_per_event", ...}.

`--live` runs until SIGTERM instead, each poll waiting at most `--poll-ms`, and also writes each
aggregated event's id to its card's tail hash, where the bench's freshness watcher looks.
`--live --floor` only decodes each event and writes its id there: the freshness the consumer,
the broker and Redis allow on their own, with no view work at all.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Consumer

from featurestore.definitions import AggregationFunction, FeatureViewDef, load_definitions
from fti.v1 import events_pb2

__all__ = ["Baseline", "main"]

FUTURE_SKEW_MS = 300_000
POLL = 2000
LIVE_POLL_S = 0.005  # `--live`: how long a poll waits for messages before what it has is handled
A = AggregationFunction


def _fields(values: Any, names: tuple[str, ...]) -> dict[str | None, Any]:
    """The view's input fields of one event, each decoded once (None when absent)."""
    out: dict[str | None, Any] = dict.fromkeys((None, *names))  # None: a feature without a field
    for name in names:
        if name in values:
            v = values[name]
            kind = v.WhichOneof("kind")
            if kind:
                out[name] = getattr(v, kind)
    return out


def _updater(agg: AggregationFunction, slot: int) -> Callable[[list[Any], int, str, Any], None]:
    """How one event changes slot(s) of a tile: the partials a read merges (mean: sum and count)."""

    def count(p: list[Any], t: int, eid: str, x: Any) -> None:
        p[slot] += 1

    def add(p: list[Any], t: int, eid: str, x: Any) -> None:
        if x is not None:
            p[slot] += x

    def mean(p: list[Any], t: int, eid: str, x: Any) -> None:
        if x is not None:
            p[slot] += x
            p[slot + 1] += 1

    def hi(p: list[Any], t: int, eid: str, x: Any) -> None:
        if x is not None and (p[slot] is None or x > p[slot]):
            p[slot] = x

    def lo(p: list[Any], t: int, eid: str, x: Any) -> None:
        if x is not None and (p[slot] is None or x < p[slot]):
            p[slot] = x

    def distinct(p: list[Any], t: int, eid: str, x: Any) -> None:
        if x is not None:
            p[slot].add(x)

    def last(p: list[Any], t: int, eid: str, x: Any) -> None:
        if x is not None and (p[slot] is None or (t, eid) > (p[slot][0], p[slot][1])):
            p[slot] = (t, eid, x)

    return {A.COUNT: count, A.SUM: add, A.MEAN: mean, A.MAX: hi, A.MIN: lo, A.DISTINCT_COUNT: distinct, A.LAST: last}[
        agg
    ]


class _Step:
    """The features of the view that share one window step: one tile per entity and step start."""

    def __init__(self, view: FeatureViewDef, step: int) -> None:
        self.step = step
        feats = [f for f in view.features if f.window.step_ms == step]
        self.keep_ms = max(f.window.size_ms for f in feats) + FUTURE_SKEW_MS
        self.empty: list[Any] = []
        self.updates: list[tuple[Callable[[list[Any], int, str, Any], None], str | None]] = []
        for f in feats:
            self.updates.append((_updater(f.agg, len(self.empty)), f.field))
            if f.agg is A.MEAN:
                self.empty += [0.0, 0]
            else:
                self.empty.append({A.COUNT: 0, A.SUM: 0.0}.get(f.agg, set() if f.agg is A.DISTINCT_COUNT else None))

        self.sets = [i for i, x in enumerate(self.empty) if isinstance(x, set)]
        self.reads = [(f, self.updates[i][0]) for i, f in enumerate(feats)]
        self.slots: dict[str, int] = {}
        slot = 0
        for f in feats:
            self.slots[f.name] = slot
            slot += 2 if f.agg is A.MEAN else 1

    def new_tile(self) -> list[Any]:
        tile = list(self.empty)
        for i in self.sets:
            tile[i] = set()
        return tile

    def encode(self, tile: list[Any]) -> str:
        if self.sets:
            tile = list(tile)
            for i in self.sets:
                tile[i] = list(tile[i])
        return _json(tile)


_json = json.JSONEncoder(separators=(",", ":")).encode


def _merge(agg: AggregationFunction, parts: list[list[Any]]) -> Any:
    """One feature's value from its slots in the tiles of a window."""
    if agg in (A.COUNT, A.SUM):
        return sum(p[0] for p in parts)
    if agg is A.MEAN:
        n = sum(p[1] for p in parts)
        return sum(p[0] for p in parts) / n if n else None
    if agg is A.DISTINCT_COUNT:
        return len(set().union(*(p[0] for p in parts)))
    got = [p[0] for p in parts if p[0] is not None]
    if not got:
        return None
    if agg is A.LAST:
        return max(got)[2]
    return max(got) if agg is A.MAX else min(got)


class Baseline:
    """One view over one topic, in memory; `run` returns when `total` messages were consumed."""

    def __init__(
        self, view: FeatureViewDef, prefix: str, r: redis.Redis, live: bool = False, floor: bool = False
    ) -> None:
        self.view, self.r = view, r
        # `--floor` (live only): each event decoded and its id written to its card's tail hash,
        # nothing else: what freshness the consumer, the broker and Redis allow on their own.
        self.floor = floor and live
        self.key_prefix = f"{prefix}:tiles:{view.name}:v{view.version}:"
        # Live (`--live`): also each aggregated event's id in its entity's tail hash, where the
        # bench's freshness watcher looks for it (the worker writes its tail events there).
        self.tail_prefix = f"{prefix}:tail:{view.name}:v{view.version}:" if live else None
        self.tails: dict[str, list[str]] = {}
        self.steps = [_Step(view, s) for s in sorted({f.window.step_ms for f in view.features})]
        self.seen: dict[tuple[str, str], int] = {}
        self.marks: dict[bytes, int] = {}
        self.entities: dict[str, tuple[list[int], list[dict[int, list[Any]]]]] = {}
        self.counts = {"late": 0, "duplicates": 0, "future": 0, "aggregated": 0}
        self.queue: queue.Queue[list[tuple[str, dict[str | bytes, str], list[str]]] | None] = queue.Queue(2)
        self.failed: Exception | None = None
        self.inputs = tuple(sorted({f.field for f in view.features if f.field}))

    def apply(self, msg: Any, dirty: dict[str, tuple[set[str], set[str]]]) -> None:
        ev = events_pb2.Event.FromString(msg.value())
        if self.floor:
            if self.view.entity in ev.entities:
                self.tails.setdefault(ev.entities[self.view.entity], []).append(ev.event_id)
            return
        t = ev.event_time.seconds * 1000 + ev.event_time.nanos // 1_000_000
        if t > msg.timestamp()[1] + FUTURE_SKEW_MS:
            self.counts["future"] += 1
            return
        ident = (ev.event_type, ev.event_id)
        if ident in self.seen:
            self.counts["duplicates"] += 1
            return
        self.seen[ident] = t
        key = msg.key()
        mark = self.marks.get(key, -(2**62))
        if t > mark:
            self.marks[key] = t
        if ev.event_type != self.view.source or self.view.entity not in ev.entities:
            return
        if t < mark - self.view.allowed_lateness_ms:
            self.counts["late"] += 1
            return
        values = _fields(ev.values, self.inputs)
        self._aggregate(ev.entities[self.view.entity], t, ev.event_id, values, dirty)

    def _aggregate(
        self, entity: str, t: int, eid: str, values: Any, dirty: dict[str, tuple[set[str], set[str]]]
    ) -> None:
        state = self.entities.get(entity)
        if state is None:
            state = self.entities[entity] = ([t], [{} for _ in self.steps])
        elif t > state[0][0]:
            state[0][0] = t
        newest = state[0][0]
        changed, dropped = dirty.setdefault(entity, (set(), set()))
        for step, tiles in zip(self.steps, state[1], strict=True):
            start = t - t % step.step
            if start < newest - step.keep_ms:
                continue  # no read at or after the newest time sees it
            tile = tiles.get(start)
            if tile is None:
                tile = tiles[start] = step.new_tile()
                horizon = newest - step.keep_ms
                if min(tiles) < horizon:
                    for old in [s for s in tiles if s < horizon]:
                        del tiles[old]
                        dropped.add(f"{step.step}:{old}")
            for update, name in step.updates:
                update(tile, t, eid, values[name])
            changed.add(f"{step.step}:{start}")
        if self.tail_prefix is not None:
            self.tails.setdefault(entity, []).append(eid)
        self.counts["aggregated"] += 1

    def read(self, entity: str, t: int) -> dict[str, Any]:
        """The view's values at t >= the entity's newest event (what a server reads): each
        window's tiles merged. For the bench's own test; not on the measured path."""
        out: dict[str, Any] = {}
        state = self.entities.get(entity)
        for i, step in enumerate(self.steps):
            tiles = state[1][i] if state else {}
            for f, _ in step.reads:
                lo = t - t % step.step - f.window.size_ms + step.step
                parts = [tile for start, tile in tiles.items() if lo <= start <= t]
                out[f.name] = _merge(f.agg, [p[step.slots[f.name] :] for p in parts])
        return out

    def changes(
        self, dirty: dict[str, tuple[set[str], set[str]]]
    ) -> list[tuple[str, dict[str | bytes, str], list[str]]]:
        """Per dirty entity: its key, the changed tiles encoded (and its newest time), the tiles to drop."""
        steps = {s.step: (i, s) for i, s in enumerate(self.steps)}
        out = []
        for entity, (changed, dropped) in dirty.items():
            newest, tiles = self.entities[entity]
            fields: dict[str | bytes, str] = {"n": str(newest[0])}
            gone = list(dropped - changed)
            for name in changed:
                step, _, start = name.partition(":")
                i, kind = steps[int(step)]
                tile = tiles[i].get(int(start))
                if tile is None:
                    gone.append(name)  # changed, then dropped in the same poll
                else:
                    fields[name] = kind.encode(tile)
            out.append((self.key_prefix + entity, fields, gone))
        if self.tail_prefix is not None:
            tails, self.tails = self.tails, {}
            out += [(self.tail_prefix + entity, dict.fromkeys(ids, "1"), []) for entity, ids in tails.items()]
        return out

    def _writer(self) -> None:
        """One pipeline per poll, sent from this thread so the next poll is processed meanwhile."""
        while (batch := self.queue.get()) is not None:
            try:
                self.send(batch)
            except redis.RedisError as exc:
                self.failed = exc
                return

    def send(self, batch: list[tuple[str, dict[str | bytes, str], list[str]]]) -> None:
        """A poll's `changes` to Redis, in one pipeline."""
        pipe = self.r.pipeline(transaction=False)
        for key, fields, gone in batch:
            pipe.hset(key, mapping=fields)
            if gone:
                pipe.hdel(key, *gone)
            pipe.pexpire(key, self.view.ttl_ms)
        pipe.execute()

    def run_live(self, consumer: Consumer, stop: threading.Event, poll_s: float = LIVE_POLL_S) -> None:
        """Live traffic until `stop`: each poll's changes sent as soon as it is processed; a poll
        waits at most `poll_s` for messages (`run` waits up to 1 s for a full poll)."""
        writer = threading.Thread(target=self._writer, daemon=True)
        writer.start()
        while not stop.is_set():
            if self.failed is not None:
                raise SystemExit(f"baseline: Redis write failed: {self.failed}")
            msgs = consumer.consume(POLL, timeout=poll_s)
            dirty: dict[str, tuple[set[str], set[str]]] = {}
            for msg in msgs:
                if msg.error() is None:
                    self.apply(msg, dirty)
            if dirty or self.tails:
                self.queue.put(self.changes(dirty))
        self.queue.put(None)
        writer.join()
        if self.failed is not None:  # in the last polls, after the stop: still a failed run
            raise SystemExit(f"baseline: Redis write failed: {self.failed}")

    def run(self, consumer: Consumer, total: int) -> dict[str, float]:
        writer = threading.Thread(target=self._writer, daemon=True)
        writer.start()
        n, t0, cpu0 = 0, 0.0, 0.0
        while n < total:
            if self.failed is not None:
                raise SystemExit(f"baseline: Redis write failed: {self.failed}")
            msgs = consumer.consume(min(POLL, total - n), timeout=1.0)
            if not msgs:
                continue
            if n == 0:
                t0, cpu0 = time.monotonic(), time.process_time()
            dirty: dict[str, tuple[set[str], set[str]]] = {}
            for msg in msgs:
                if msg.error() is None:
                    self.apply(msg, dirty)
                    n += 1
            if dirty:
                self.queue.put(self.changes(dirty))
        self.queue.put(None)
        writer.join()
        if self.failed is not None:
            raise SystemExit(f"baseline: Redis write failed: {self.failed}")
        seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
        return {"events": n, "seconds": seconds, "cpu_s": cpu, **self.counts, "entities": len(self.entities)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="localhost:9092")
    ap.add_argument("--redis-url", default="redis://localhost:6379/0")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--total", type=int, help="Messages to consume, then print the result (not with --live).")
    ap.add_argument("--live", action="store_true", help="Run until SIGTERM, event ids also in tail hashes.")
    ap.add_argument("--poll-ms", type=float, default=LIVE_POLL_S * 1000, help="With --live: a poll's longest wait.")
    ap.add_argument("--floor", action="store_true", help="With --live: only decode, and write each id to its tail.")
    ap.add_argument("--definitions", required=True)
    ap.add_argument("--view", default="card_activity")
    ap.add_argument("--prefix", required=True)
    args = ap.parse_args()
    if args.floor and not args.live:
        raise SystemExit("baseline: --floor needs --live")
    view = next(v for v in load_definitions(Path(args.definitions)).views if v.name == args.view)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"baseline-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    baseline = Baseline(view, args.prefix, redis.Redis.from_url(args.redis_url), live=args.live, floor=args.floor)
    if args.live:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        baseline.run_live(consumer, stop, args.poll_ms / 1000)
        consumer.close()
        return
    if args.total is None:
        raise SystemExit("baseline: --total is required without --live")
    out = baseline.run(consumer, args.total)
    consumer.close()
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
