"""The worker's batch logic, apart from Faust: ingest (validate, dedup, watermark, archive, route)
and aggregate (per view entity: its tiles, written to the online store).

Each batch sends its online tiles at once (freshness; without waiting for Redis to apply
them) and buffers the rest: archive rows, Kafka sends and state changes. `flush` waits for
the online writes, writes the rest in the order outputs, then state, then calls the batches'
`on_durable` callbacks, which ack their offsets; see `feature_stream.state`
for why that order makes `kill -9` at any point safe. Buffering across batches turns many
small parquet files and Redis transactions per batch into a few per flush.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feature_stream import metrics
from feature_stream.aggregate import EntityState, Rec, is_late
from feature_stream.codec import DeadLetter, RawEvent, decode_event
from feature_stream.state import EntityChanges, EntityRef, KeyState, Seen, StateStore
from featurestore.definitions import Definitions
from featurestore.offline import ArchiveRow, OfflineStore
from featurestore.online import AsyncOnlineStore, TileWrite
from featurestore.values import Scalar
from fti.v1 import events_pb2

__all__ = ["InMessage", "Outbox", "Processor", "ViewItem"]

MAX_ONLINE_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class InMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None  # the record's Kafka timestamp, when known

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def state_key(self) -> str:
        # Unkeyed messages share their partition's watermark.
        return self.key.decode(errors="replace") if self.key else f"~p{self.partition}"


@dataclass(frozen=True, slots=True)
class ViewItem:
    """One accepted-or-late event routed to one view entity (also the re-keyed topic's record)."""

    view_ref: str
    entity_key: str
    event_id: str
    time_ms: int
    watermark_ms: int
    values: Mapping[str, Scalar]

    def _doc(self) -> list[object]:
        return [self.view_ref, self.entity_key, self.event_id, self.time_ms, self.watermark_ms, dict(self.values)]

    @classmethod
    def _of(cls, doc: list[Any]) -> ViewItem:
        ref, key, eid, t, wm, values = doc
        return cls(ref, key, eid, int(t), int(wm), values)

    @staticmethod
    def encode_many(items: Sequence[ViewItem]) -> bytes:
        """One re-keyed record holds many items: Faust's cost per consumed record dwarfs an item's."""
        return json.dumps([i._doc() for i in items], separators=(",", ":")).encode()

    @classmethod
    def decode_many(cls, data: bytes) -> list[ViewItem]:
        docs = json.loads(data)
        if docs and not isinstance(docs[0], list):  # a single item (the record format before packing)
            return [cls._of(docs)]
        return [cls._of(d) for d in docs]


class Outbox(ABC):
    """Kafka outputs: `dead_letter` and `forward` only enqueue; `flush` returns once every
    enqueued message is acknowledged by the broker (and raises if any was not)."""

    @abstractmethod
    def dead_letter(self, msg: InMessage, letter: DeadLetter) -> None: ...

    @abstractmethod
    def forward(self, items: Sequence[ViewItem]) -> None:
        """Send items to the re-keyed topic, each entity always to the same partition."""

    @abstractmethod
    async def flush(self) -> None: ...


@dataclass
class _Pending:
    """Everything written since the last flush except the online values."""

    archive: list[ArchiveRow] = field(default_factory=list)
    keys: dict[str, KeyState] = field(default_factory=dict)
    entities: EntityChanges = field(default_factory=EntityChanges)
    # Online writes already sent: a flush waits for them (and fails with them) before acking.
    online: list[asyncio.Task[int]] = field(default_factory=list)
    on_durable: list[Callable[[], None]] = field(default_factory=list)
    rows: int = 0
    since: float = field(default_factory=time.monotonic)

    def __bool__(self) -> bool:
        return bool(self.rows or self.keys or self.on_durable or self.online)


class Processor:
    def __init__(
        self,
        defs: Definitions,
        state: StateStore,
        online: AsyncOnlineStore,
        offline: OfflineStore,
        outbox: Outbox,
        *,
        future_skew_ms: int = 300_000,
        dedup_retention_ms: int = 86_400_000,
        flush_rows: int = 100_000,
        flush_interval_s: float = 0.5,
    ) -> None:
        self.defs = defs
        self.views = {v.ref: v for v in defs.views}
        self.state = state
        self.online = online
        self.offline = offline
        self.outbox = outbox
        self.future_skew_ms = future_skew_ms
        self.dedup_retention_ms = dedup_retention_ms
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        # Per event type: the views it feeds with the fields each reads (looked up once, not per event).
        self._routes = {
            t: [(v, frozenset(f.field for f in v.features if f.field)) for v in defs.views_for_event(t)]
            for t in defs.event_types
        }
        self._least_lateness = {
            t: min((v.allowed_lateness_ms for v, _ in routes), default=None) for t, routes in self._routes.items()
        }
        self._keys: dict[str, KeyState] = {}
        self._entities: dict[EntityRef, EntityState] = {}
        self._pending = _Pending()
        self._online_inflight: list[asyncio.Task[int]] = []  # sent online writes, oldest first
        # Both batch handlers and the flush timer share caches and the buffer; one at a time keeps them coherent.
        self._lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()  # flushes save state in batch order
        # Messages an operator dead-lettered by hand: position -> reason (`feature_stream.skips`).
        self.skip: dict[str, str] = {}

    def reset(self) -> None:
        """Forget cached state and unflushed work, as a crash would: their offsets were not acked,
        so the messages are consumed again. Called on partition assignment and after errors."""
        self._keys.clear()
        self._entities.clear()
        for task in self._online_inflight:
            task.cancel()
        self._online_inflight = []
        self._pending = _Pending()

    # -- flushing --------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write buffered outputs, then state, then ack (the `on_durable` callbacks).

        Only taking the buffer holds the processing lock: batches go on while a flush writes,
        into a new buffer that the next flush (never concurrent with this one) covers."""
        async with self._flush_lock:
            async with self._lock:
                pending, self._pending = self._pending, _Pending()
                keys = {k: st.take_changes() for k, st in pending.keys.items()}
            if not pending:
                return
            try:
                for task in pending.online:
                    await task
                await asyncio.to_thread(self._write_offline, pending)
                await self.outbox.flush()
                await self.state.save(keys, pending.entities)
            except BaseException:
                self.reset()  # the caches are ahead of the saved state
                raise
            for ack in pending.on_durable:
                ack()

    async def flush_if_due(self) -> None:
        """Flush when the oldest buffered work is `flush_interval_s` old (called by a timer)."""
        if self._pending and time.monotonic() - self._pending.since >= self.flush_interval_s:
            await self.flush()

    def _write_offline(self, pending: _Pending) -> None:
        if pending.archive:
            self.offline.write_archive(pending.archive)

    async def _after_batch(self, on_durable: Callable[[], None] | None) -> None:
        if on_durable is not None:
            self._pending.on_durable.append(on_durable)

    async def _flush_if_full(self) -> None:
        # Waited for by the handler (outside the processing lock): back-pressure when the timer's
        # flushes lag. Set well above what one interval buffers: at 30k rows every flush ran
        # inline here, and batches idled on parquet, Kafka and Redis instead of going on while
        # the timer's flush wrote (5.5k -> 13k events/s).
        if self._pending.rows >= self.flush_rows:
            await self.flush()

    # -- ingest ----------------------------------------------------------------------------

    async def _key_states(self, keys: set[str]) -> None:
        missing = sorted(k for k in keys if k not in self._keys)
        if missing:
            self._keys.update(await self.state.load_keys(missing))

    async def _claimed_elsewhere(self, decoded: Sequence[tuple[InMessage, RawEvent]]) -> set[str]:
        """Positions whose event (type, id) another message claimed first: one dedup scope per
        event type, whatever message key or partition carries the copies."""
        fresh = [
            (ev.event_type, ev.event_id, m.position)
            for m, ev in decoded
            if ev.event_id not in self._keys[m.state_key].seen
        ]
        if not fresh:
            return set()
        owners = await self.state.claim(fresh, self.dedup_retention_ms)
        return {pos for (_, _, pos), owner in zip(fresh, owners, strict=True) if owner != pos}

    def _decide(self, msg: InMessage, ev: RawEvent) -> int | None:
        """The watermark recorded for a new or replayed event; None for a duplicate."""
        st = self._keys[msg.state_key]
        seen = st.seen.get(ev.event_id)
        if seen is not None:
            return seen.watermark_ms if seen.position == msg.position else None
        wm = st.max_ms
        st.seen[ev.event_id] = st.added[ev.event_id] = Seen(msg.position, ev.time_ms, wm)
        st.max_ms = max(st.max_ms, ev.time_ms)
        return wm

    def _archive_row(self, key: str, ev: RawEvent, wm: int, now_ns: int) -> ArchiveRow:
        # Late for some view == late for the view with the least allowed lateness.
        least = self._least_lateness[ev.event_type]
        late = least is not None and is_late(ev.time_ms, wm, least)
        return ArchiveRow(
            ev.event_id, ev.event_type, ev.time_ms, ev.entities, ev.values, ev.source,
            ev.schema_version, key, wm, late, now_ns,
        )  # fmt: skip

    async def ingest(self, msgs: Sequence[InMessage], on_durable: Callable[[], None] | None = None) -> None:
        """Process raw messages; `on_durable` is called once their effects are flushed."""
        async with self._lock:
            await self._ingest(msgs)
            await self._after_batch(on_durable)
        await self._flush_if_full()

    def dead_letter(self, msg: InMessage, letter: DeadLetter) -> None:
        """Send one message to the dead-letter topic; it is acked with its batch after the flush."""
        metrics.DEAD_LETTERS.labels(letter.reason_name).inc()
        self.outbox.dead_letter(msg, letter)

    def _future(self, msg: InMessage, ev: RawEvent, now_ms: int) -> DeadLetter | None:
        """An event stamped beyond the future skew never enters the state: it would move its
        key's watermark (judging every later event late) and its entity's newest time. Judged
        against the record's Kafka timestamp, so a replay decides the same way."""
        ref = msg.timestamp_ms if msg.timestamp_ms is not None and msg.timestamp_ms > 0 else now_ms
        if ev.time_ms <= ref + self.future_skew_ms:
            return None
        ahead = ev.time_ms - ref
        detail = f"event_time is {ahead} ms ahead of the record timestamp (future skew {self.future_skew_ms} ms)"
        return DeadLetter(events_pb2.DEAD_LETTER_REASON_FUTURE_EVENT_TIME, detail)

    def _decode(self, msgs: Sequence[InMessage]) -> list[tuple[InMessage, RawEvent]]:
        decoded: list[tuple[InMessage, RawEvent]] = []
        now_ms = int(time.time() * 1000)
        for msg in msgs:
            ev: RawEvent | DeadLetter
            try:
                ev = decode_event(msg.value, self.defs)
            except Exception as exc:  # noqa: BLE001 - one message never stops the worker: it is dead-lettered
                ev = DeadLetter(events_pb2.DEAD_LETTER_REASON_PROCESSING_FAILED, f"{type(exc).__name__}: {exc}")
            if isinstance(ev, RawEvent) and msg.position in self.skip:
                ev = DeadLetter(events_pb2.DEAD_LETTER_REASON_MANUAL, self.skip[msg.position])
            if isinstance(ev, RawEvent):
                ev = self._future(msg, ev, now_ms) or ev
            if isinstance(ev, DeadLetter):
                self.dead_letter(msg, ev)
            else:
                decoded.append((msg, ev))
        return decoded

    async def _ingest(self, msgs: Sequence[InMessage]) -> None:
        metrics.EVENTS_IN.inc(len(msgs))
        decoded = self._decode(msgs)
        touched = {m.state_key for m, _ in decoded}
        await self._key_states(touched)
        elsewhere = await self._claimed_elsewhere(decoded)
        now_ns = time.time_ns()
        archive = self._pending.archive
        local: list[ViewItem] = []
        remote: list[ViewItem] = []
        for msg, ev in decoded:
            wm = None if msg.position in elsewhere else self._decide(msg, ev)
            if wm is None:
                metrics.DUPLICATES.inc()
                continue
            key = msg.state_key
            archive.append(self._archive_row(key, ev, wm, now_ns))
            for view, fields in self._routes[ev.event_type]:
                vals = {k: x for k, x in ev.values.items() if k in fields}
                item = ViewItem(view.ref, ev.entities[view.entity], ev.event_id, ev.time_ms, wm, vals)
                # A view keyed like the message is already partitioned right: no Kafka hop.
                if item.entity_key == key:
                    local.append(item)
                else:
                    remote.append(item)
        if remote:
            self.outbox.forward(remote)
        self._pending.rows += len(decoded)
        for k in touched:
            st = self._keys[k]
            st.prune(st.max_ms - self.dedup_retention_ms, every_ms=self.dedup_retention_ms // 16)
            self._pending.keys[k] = st
        await self._aggregate(local)

    # -- aggregate -------------------------------------------------------------------------

    async def _entity_states(self, refs: set[EntityRef]) -> None:
        missing = sorted(r for r in refs if r not in self._entities)
        if missing:
            loaded = await self.state.load_entities(missing)
            self._entities.update({r: EntityState(self.views[r[0]], recs) for r, recs in loaded.items()})

    async def aggregate(self, items: Sequence[ViewItem], on_durable: Callable[[], None] | None = None) -> None:
        """Process re-keyed items; `on_durable` is called once their effects are flushed."""
        async with self._lock:
            await self._aggregate(items)
            await self._after_batch(on_durable)
        await self._flush_if_full()

    async def _aggregate(self, items: Sequence[ViewItem]) -> None:
        if not items:
            return
        await self._entity_states({(i.view_ref, i.entity_key) for i in items})
        accepted: dict[EntityRef, list[Rec]] = {}
        for item in items:
            view = self.views[item.view_ref]
            # Lateness is judged in the event's own message key's order (the watermark it carries),
            # so disorder between partitions or keys is never lateness.
            if is_late(item.time_ms, item.watermark_ms, view.allowed_lateness_ms):
                metrics.LATE_EVENTS.labels(view.ref).inc()
                continue
            accepted.setdefault((item.view_ref, item.entity_key), []).append(
                Rec(item.time_ms, item.event_id, item.values)
            )
        writes: list[TileWrite] = []
        changes = self._pending.entities
        for ref, recs in accepted.items():
            update = self._entities[ref].apply(recs, ref[1], self.future_skew_ms)
            for rec in update.added:
                changes.add(ref, rec)
            changes.drop(ref, update.dropped)
            if update.beyond_horizon:
                metrics.BEYOND_HORIZON.labels(ref[0]).inc(update.beyond_horizon)
            if update.write is not None:
                writes.append(update.write)
        self._pending.rows += len(items)
        if writes:
            await self._send_online(writes)

    async def _send_online(self, writes: list[TileWrite]) -> None:
        """Send tile writes now without waiting for Redis to apply them; a flush awaits them.

        Each write starts when the previous one is done: a tile is written whole, so a
        reordered pair could leave the older tile. Past `MAX_ONLINE_IN_FLIGHT` unfinished
        writes the batch waits for the oldest (back-pressure when Redis falls behind)."""
        inflight = [t for t in self._online_inflight if not t.done()]
        if len(inflight) >= MAX_ONLINE_IN_FLIGHT:
            await asyncio.wait(inflight[:1])
            inflight = [t for t in inflight if not t.done()]
        task = asyncio.ensure_future(self._write_online(writes, inflight[-1] if inflight else None))
        self._online_inflight = [*inflight, task]
        self._pending.online.append(task)

    async def _write_online(self, writes: list[TileWrite], after: asyncio.Task[int] | None) -> int:
        if after is not None:
            await asyncio.wait([after])  # only its order matters here; its error is the flush's
        applied = await self.online.write_tiles(writes)
        metrics.ONLINE_WRITES.labels("all").inc(applied)
        return applied
