"""The worker's batch logic, apart from Faust: ingest (validate, dedup, watermark, archive, route)
and aggregate (per view entity: rows, online value, offline rows).

Each batch runs outputs first and state last, and the caller acks the batch only after it
returns; see `feature_stream.state` for why that makes `kill -9` at any point safe.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from feature_stream import metrics
from feature_stream.aggregate import EntityState, Rec, is_late, retention_ms
from feature_stream.codec import DeadLetter, RawEvent, decode_event
from feature_stream.state import EntityRef, KeyState, Seen, StateStore
from registry.featurestore.definitions import Definitions, FeatureViewDef
from registry.featurestore.offline import ArchiveRow, FeatureRow, OfflineStore
from registry.featurestore.online import AsyncOnlineStore, OnlineRow
from registry.featurestore.values import Scalar

__all__ = ["InMessage", "Outbox", "Processor", "ViewItem"]


@dataclass(frozen=True, slots=True)
class InMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

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

    def encode(self) -> bytes:
        doc = [self.view_ref, self.entity_key, self.event_id, self.time_ms, self.watermark_ms, dict(self.values)]
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ViewItem:
        ref, key, eid, t, wm, values = json.loads(data)
        return cls(ref, key, eid, int(t), int(wm), values)


class Outbox(ABC):
    """Kafka outputs of a batch; `flush` returns once every message is acknowledged."""

    @abstractmethod
    async def dead_letter(self, msg: InMessage, letter: DeadLetter) -> None: ...

    @abstractmethod
    async def forward(self, item: ViewItem) -> None: ...

    @abstractmethod
    async def flush(self) -> None: ...


class Processor:
    def __init__(
        self,
        defs: Definitions,
        state: StateStore,
        online: AsyncOnlineStore,
        offline: OfflineStore,
        outbox: Outbox,
        *,
        state_slack_ms: int = 3_600_000,
        dedup_retention_ms: int = 86_400_000,
    ) -> None:
        self.defs = defs
        self.views = {v.ref: v for v in defs.views}
        self.state = state
        self.online = online
        self.offline = offline
        self.outbox = outbox
        self.slack_ms = state_slack_ms
        self.dedup_retention_ms = dedup_retention_ms
        self._keys: dict[str, KeyState] = {}
        self._entities: dict[EntityRef, EntityState] = {}
        # Both agents aggregate (in place and re-keyed); one at a time keeps the caches coherent.
        self._lock = asyncio.Lock()

    def reset(self) -> None:
        """Forget cached state; called on every partition assignment (ownership may have moved)."""
        self._keys.clear()
        self._entities.clear()

    # -- ingest ----------------------------------------------------------------------------

    async def _key_states(self, keys: set[str]) -> None:
        missing = sorted(k for k in keys if k not in self._keys)
        if missing:
            self._keys.update(await self.state.load_keys(missing))

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

    def _archive_row(self, msg: InMessage, ev: RawEvent, wm: int, now_ns: int) -> ArchiveRow:
        views = self.defs.views_for_event(ev.event_type)
        late = any(is_late(ev.time_ms, wm, v.allowed_lateness_ms) for v in views)
        return ArchiveRow(
            ev.event_id, ev.event_type, ev.time_ms, ev.entities, ev.values, ev.source,
            ev.schema_version, msg.state_key, wm, late, now_ns,
        )  # fmt: skip

    async def ingest(self, msgs: Sequence[InMessage]) -> None:
        metrics.EVENTS_IN.inc(len(msgs))
        decoded: list[tuple[InMessage, RawEvent]] = []
        for msg in msgs:
            ev = decode_event(msg.value, self.defs)
            if isinstance(ev, DeadLetter):
                metrics.DEAD_LETTERS.labels(ev.reason_name).inc()
                await self.outbox.dead_letter(msg, ev)
            else:
                decoded.append((msg, ev))
        await self._key_states({m.state_key for m, _ in decoded})
        now_ns = time.time_ns()
        archive: list[ArchiveRow] = []
        local: list[ViewItem] = []
        for msg, ev in decoded:
            wm = self._decide(msg, ev)
            if wm is None:
                metrics.DUPLICATES.inc()
                continue
            archive.append(self._archive_row(msg, ev, wm, now_ns))
            for v in self.defs.views_for_event(ev.event_type):
                fields = {f.field for f in v.features if f.field}
                vals = {k: x for k, x in ev.values.items() if k in fields}
                item = ViewItem(v.ref, ev.entities[v.entity], ev.event_id, ev.time_ms, wm, vals)
                # A view keyed like the message is already partitioned right: no Kafka hop.
                if item.entity_key == msg.state_key:
                    local.append(item)
                else:
                    await self.outbox.forward(item)
        if archive:
            await asyncio.to_thread(self.offline.write_archive, archive)
        await self.outbox.flush()
        await self.aggregate(local)
        touched = {m.state_key for m, _ in decoded}
        for k in touched:
            st = self._keys[k]
            st.prune(st.max_ms - self.dedup_retention_ms)
        await self.state.save_keys({k: self._keys[k] for k in touched})

    # -- aggregate -------------------------------------------------------------------------

    async def _entity_states(self, refs: set[EntityRef]) -> None:
        missing = sorted(r for r in refs if r not in self._entities)
        if missing:
            loaded = await self.state.load_entities(missing)
            self._entities.update({r: EntityState(recs) for r, recs in loaded.items()})

    def _accept(self, view: FeatureViewDef, st: EntityState, item: ViewItem) -> Rec:
        rec = Rec(item.time_ms, item.event_id, item.values)
        newest = st.newest()
        if newest is not None and rec.time_ms < newest.time_ms - retention_ms(view, self.slack_ms):
            metrics.BEYOND_HORIZON.labels(view.ref).inc()
        st.add(rec)
        return rec

    async def aggregate(self, items: Sequence[ViewItem]) -> None:
        if not items:
            return
        async with self._lock:
            await self._aggregate(items)

    async def _aggregate(self, items: Sequence[ViewItem]) -> None:
        await self._entity_states({(i.view_ref, i.entity_key) for i in items})
        now_ns = time.time_ns()
        rows: dict[str, list[FeatureRow]] = {}
        first: dict[EntityRef, Rec] = {}
        added: dict[EntityRef, list[Rec]] = {}
        for item in items:
            view = self.views[item.view_ref]
            ref = (item.view_ref, item.entity_key)
            if is_late(item.time_ms, item.watermark_ms, view.allowed_lateness_ms):
                metrics.LATE_EVENTS.labels(view.ref).inc()
                empty = dict.fromkeys(view.feature_names)
                rows.setdefault(view.ref, []).append(
                    FeatureRow(item.entity_key, item.event_id, item.time_ms, empty, True, now_ns)
                )
                continue
            rec = self._accept(view, self._entities[ref], item)
            added.setdefault(ref, []).append(rec)
            if ref not in first or rec.order < first[ref].order:
                first[ref] = rec
        online: list[OnlineRow] = []
        dropped: dict[EntityRef, list[str]] = {}
        for ref, rec in first.items():
            view, st = self.views[ref[0]], self._entities[ref]
            newest = st.newest()
            for r, values in st.rows_from(view, rec):
                rows.setdefault(view.ref, []).append(FeatureRow(ref[1], r.event_id, r.time_ms, values, False, now_ns))
                if r is newest:
                    online.append(OnlineRow(view.name, view.version, ref[1], r.time_ms, values, view.ttl_ms))
            if newest is not None:
                dropped[ref] = st.prune(newest.time_ms - retention_ms(view, self.slack_ms))
        await self._write(rows, online)
        await self.state.save_entities(added, dropped)

    async def _write(self, rows: dict[str, list[FeatureRow]], online: list[OnlineRow]) -> None:
        for ref, part in rows.items():
            view = self.views[ref]
            await asyncio.to_thread(self.offline.write_features, view.name, view.version, view.feature_names, part)
            metrics.FEATURES_WRITTEN.labels(ref).inc(len(part))
        if online:
            applied = await self.online.write(online)
            metrics.ONLINE_WRITES.labels("all").inc(applied)
