"""The worker's coordinator, apart from Faust: raw batches through the ingest decisions, view
items into their entities' tiles, everything into the flush buffer.

* `ingest.Ingest` decides what each raw message is (dead letter, duplicate, event with its
  watermark) and where it goes (archive, local views, the re-keyed topic);
* `aggregate.EntityState` keeps each view entity's retained events and tiles and says what
  an update changed;
* `flushing.Flusher` sends the tile writes at once and buffers the rest until a flush
  (outputs, then state, then acks).

Both batch handlers and the flush timer share the caches and the buffer; one lock keeps
them coherent. The caches (view entity states, message key states) keep at most
`max_cached` entries each, and at most `max_cached_events` events (entities) or event ids
(keys) each, once a flush has saved the state: the least recently used entries whose changes
are saved are evicted after every flush, and reloaded from the state store when their entity
or key comes back. An entity's size is its retained events, so the second bound is what
keeps memory within a setting when entities are busy and windows long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from feature_stream import metrics
from feature_stream.aggregate import EntityState, Rec, is_late
from feature_stream.caches import evict_lru, touch
from feature_stream.codec import DeadLetter
from feature_stream.flushing import Flusher
from feature_stream.ingest import Ingest
from feature_stream.records import InMessage, Outbox, ViewItem
from feature_stream.state import EntityRef, StateStore
from featurestore.definitions import Definitions
from featurestore.offline import OfflineStore
from featurestore.online import AsyncOnlineStore, TileWrite

__all__ = ["InMessage", "Outbox", "Processor", "ViewItem"]

log = logging.getLogger("fti.worker")
_ENTITY_MISSES = metrics.CACHE_MISSES.labels("entities")


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
        max_cached: int | None = None,
        max_cached_events: int | None = None,
    ) -> None:
        self.defs = defs
        self.views = {v.ref: v for v in defs.views}
        self._lateness = {v.ref: v.allowed_lateness_ms for v in defs.views}
        self.state = state
        self.outbox = outbox
        self.future_skew_ms = future_skew_ms
        self._lock = asyncio.Lock()
        self._ingest = Ingest(defs, state, future_skew_ms=future_skew_ms, dedup_retention_ms=dedup_retention_ms)
        self.max_cached_events = max_cached_events
        self._flusher = Flusher(
            state, online, offline, outbox, self._lock, max_rows=flush_rows, interval_s=flush_interval_s
        )
        self._flusher.on_failure = self.reset
        self._flusher.on_saved = self._trim
        self.max_cached = max_cached
        self._entities: dict[EntityRef, EntityState] = {}  # least recently used first
        self._held = 0  # events the cached entity states retain: kept as they change, not summed
        self._warned_big: set[str] = set()  # views warned of an entity bigger than the event bound

    def reset(self) -> None:
        """Forget cached state and unflushed work, as a crash would: their offsets were not acked,
        so the messages are consumed again. Called on partition assignment and after errors."""
        self._ingest.reset()
        self._entities.clear()
        self._held = 0
        self._flusher.reset()

    @property
    def cached(self) -> tuple[int, int]:
        """How many view entity states and message key states are cached."""
        return len(self._entities), self._ingest.cached

    @property
    def held(self) -> tuple[int, int]:
        """Events the cached entity states retain, and event ids the cached key states remember."""
        return self._held, self._ingest.held

    def _trim(self) -> None:
        """Evict least recently used cache entries beyond `max_cached` entries or
        `max_cached_events` events (called by the flusher, under the processing lock, once the
        state is saved); entries with changes in the current buffer are kept, since the state
        store does not have those yet."""
        if self.max_cached is not None or self.max_cached_events is not None:
            buffer = self._flusher.buffer
            unsaved = buffer.entities.added.keys() | buffer.entities.dropped.keys()
            self._held -= evict_lru(self._entities, self.max_cached, unsaved, self._held, self.max_cached_events, len)
            self._ingest.trim(self.max_cached, self.max_cached_events, buffer.keys.keys())
        metrics.CACHED.labels("entities").set(len(self._entities))
        metrics.CACHED.labels("keys").set(self._ingest.cached)
        metrics.CACHED_EVENTS.labels("entities").set(self._held)
        metrics.CACHED_EVENTS.labels("keys").set(self._ingest.held)

    @property
    def skip(self) -> dict[str, str]:
        """Messages an operator dead-lettered by hand: position -> reason (`feature_stream.skips`)."""
        return self._ingest.skip

    @skip.setter
    def skip(self, positions: dict[str, str]) -> None:
        self._ingest.skip = positions

    def dead_letter(self, msg: InMessage, letter: DeadLetter) -> None:
        """Send one message to the dead-letter topic; it is acked with its batch after the flush."""
        metrics.DEAD_LETTERS.labels(letter.reason_name).inc()
        self.outbox.dead_letter(msg, letter)

    async def flush(self) -> None:
        await self._flusher.flush()

    async def flush_if_due(self) -> None:
        """Flush when the oldest buffered work is `flush_interval_s` old (called by a timer)."""
        await self._flusher.flush_if_due()

    async def ingest(self, msgs: Sequence[InMessage], on_durable: Callable[[], None] | None = None) -> None:
        """Process raw messages; `on_durable` is called once their effects are flushed."""
        async with self._lock:
            decided = await self._ingest.decide(msgs)
            buffer = self._flusher.buffer
            for msg, letter in decided.dead:
                self.outbox.dead_letter(msg, letter)  # counted by the ingest stage
            buffer.archive.extend(decided.archive)
            buffer.keys.update(decided.keys)
            buffer.rows += decided.events
            if decided.remote:
                self.outbox.forward(decided.remote)
            await self._aggregate(decided.local)
            if on_durable is not None:
                self._flusher.buffer.on_durable.append(on_durable)
        await self._flusher.flush_if_full()

    async def aggregate(self, items: Sequence[ViewItem], on_durable: Callable[[], None] | None = None) -> None:
        """Process re-keyed items; `on_durable` is called once their effects are flushed."""
        async with self._lock:
            await self._aggregate(items)
            if on_durable is not None:
                self._flusher.buffer.on_durable.append(on_durable)
        await self._flusher.flush_if_full()

    async def _entity_states(self, refs: set[EntityRef]) -> None:
        missing = touch(self._entities, refs)
        if missing:
            _ENTITY_MISSES.inc(len(missing))
            loaded = await self.state.load_entities(sorted(missing))
            for ref, recs in loaded.items():
                self._entities[ref] = EntityState(self.views[ref[0]], recs)
                self._held += len(recs)
                if self.max_cached_events is not None and len(recs) > self.max_cached_events:
                    self._warn_big(ref, len(recs))

    def _warn_big(self, ref: EntityRef, events: int) -> None:
        """Once per view: an entity bigger than the event bound is reloaded at every batch."""
        if ref[0] in self._warned_big:
            return
        self._warned_big.add(ref[0])
        log.warning(
            "view %s: entity %r retains %d events, more than FTI_WORKER_MAX_CACHED_EVENTS (%d): it is "
            "reloaded from Redis for every batch it is in; raise the bound or shorten the view's longest window",
            ref[0], ref[1], events, self.max_cached_events,
        )  # fmt: skip

    async def _aggregate(self, items: Sequence[ViewItem]) -> None:
        if not items:
            return
        await self._entity_states({(i.view_ref, i.entity_key) for i in items})
        accepted: dict[EntityRef, list[Rec]] = {}
        lateness = self._lateness
        for item in items:
            view_ref = item.view_ref
            # Lateness is judged in the event's own message key's order (the watermark it carries),
            # so disorder between partitions or keys is never lateness.
            if is_late(item.time_ms, item.watermark_ms, lateness[view_ref]):
                metrics.LATE_EVENTS.labels(view_ref).inc()
                continue
            accepted.setdefault((view_ref, item.entity_key), []).append(Rec(item.time_ms, item.event_id, item.values))
        writes: list[TileWrite] = []
        changes = self._flusher.buffer.entities
        for ref, recs in accepted.items():
            update = self._entities[ref].apply(recs, ref[1], self.future_skew_ms)
            self._held += len(update.added) - len(update.dropped)
            for rec in update.added:
                changes.add(ref, rec)
            changes.drop(ref, update.dropped)
            if update.beyond_horizon:
                metrics.BEYOND_HORIZON.labels(ref[0]).inc(update.beyond_horizon)
            if update.write is not None:
                writes.append(update.write)
        self._flusher.buffer.rows += len(items)
        if writes:
            await self._flusher.send_online(writes)
