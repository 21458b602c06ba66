"""Ingest decisions, apart from I/O timing: what each raw message is and where it goes.

Per message, in order: decode and validate (or a dead letter; a decode that raises, or a
message an operator dead-lettered by hand, too); an event stamped beyond the future skew is
dead-lettered; the first message to claim an (event_type, event_id) is the
event, a copy under any other position a duplicate (a replay of the claiming position is the
same event, re-emitted with its recorded decision); its *watermark* is the newest time seen
earlier on its message key. Each event is archived once and routed to the views of its type:
to a view keyed like the message in this worker, to the others through the re-keyed topic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from feature_stream import metrics
from feature_stream.caches import evict_lru, touch
from feature_stream.codec import DeadLetter, RawEvent, decode_event
from feature_stream.records import InMessage, ViewItem
from feature_stream.state import KeyState, Seen, StateStore
from featurestore.accepted import is_late
from featurestore.definitions import Definitions
from featurestore.offline import ArchiveRow
from fti.v1 import events_pb2

__all__ = ["Decisions", "Ingest"]

_KEY_MISSES = metrics.CACHE_MISSES.labels("keys")


@dataclass
class Decisions:
    """What one batch of raw messages came to."""

    dead: list[tuple[InMessage, DeadLetter]] = field(default_factory=list)
    archive: list[ArchiveRow] = field(default_factory=list)
    local: list[ViewItem] = field(default_factory=list)  # views keyed like the message
    remote: list[ViewItem] = field(default_factory=list)  # views re-keyed through Kafka
    keys: dict[str, KeyState] = field(default_factory=dict)  # key states this batch changed
    events: int = 0


class Ingest:
    def __init__(self, defs: Definitions, state: StateStore, *, future_skew_ms: int, dedup_retention_ms: int) -> None:
        self.defs = defs
        self.state = state
        self.future_skew_ms = future_skew_ms
        self.dedup_retention_ms = dedup_retention_ms
        # Per event type: each view it feeds as (ref, entity kind, the fields it reads, its
        # filters' included), looked up once rather than per event.
        self._routes = {
            t: [(v.ref, v.entity, v.read_fields) for v in defs.views_for_event(t)] for t in defs.event_types
        }
        self._least_lateness = {
            t: min((v.allowed_lateness_ms for v in defs.views_for_event(t)), default=None) for t in defs.event_types
        }
        self._keys: dict[str, KeyState] = {}  # least recently used first
        self.held = 0  # event ids the cached key states remember: kept as they change, not summed
        # Messages an operator dead-lettered by hand: position -> reason (`feature_stream.skips`).
        self.skip: dict[str, str] = {}

    def reset(self) -> None:
        self._keys.clear()
        self.held = 0

    @property
    def cached(self) -> int:
        return len(self._keys)

    def trim(self, limit: int | None, most_ids: int | None, unsaved: Set[str]) -> None:
        """Evict the least recently used key states beyond `limit` states or `most_ids`
        remembered ids, except those in `unsaved`."""
        self.held -= evict_lru(self._keys, limit, unsaved, self.held, most_ids, _ids_held)

    async def decide(self, msgs: Sequence[InMessage]) -> Decisions:
        out = Decisions()
        metrics.EVENTS_IN.inc(len(msgs))
        decoded = self._decode(msgs, out)
        # Each message's position and state key, worked out once (each is a new string).
        refs = [(m.position, m.state_key) for m, _ in decoded]
        touched = {k for _, k in refs}
        missing = touch(self._keys, touched)
        if missing:
            _KEY_MISSES.inc(len(missing))
            loaded = await self.state.load_keys(sorted(missing))
            self._keys.update(loaded)
            self.held += sum(len(st.seen) for st in loaded.values())
        elsewhere = await self._claimed_elsewhere(decoded, refs)
        now_ns = time.time_ns()
        for (msg, ev), (pos, key) in zip(decoded, refs, strict=True):
            wm = None if pos in elsewhere else self._watermark(pos, key, ev)
            if wm is None:
                metrics.DUPLICATES.inc()
                continue
            self._route(msg, key, ev, wm, now_ns, out)
        out.events = len(decoded)
        for k in touched:
            st = self._keys[k]
            self.held -= st.prune(st.max_ms - self.dedup_retention_ms, every_ms=self.dedup_retention_ms // 16)
            out.keys[k] = st
        return out

    def _route(self, msg: InMessage, key: str, ev: RawEvent, wm: int, now_ns: int, out: Decisions) -> None:
        out.archive.append(self._archive_row(key, ev, wm, now_ns))
        values = ev.values
        for ref, entity, fields in self._routes[ev.event_type]:
            # Values are never changed once decoded: a view reading every field shares the dict.
            vals = values if fields.issuperset(values) else {k: x for k, x in values.items() if k in fields}
            item = ViewItem(ref, ev.entities[entity], ev.event_id, ev.time_ms, wm, vals)
            # A view keyed like a raw message is already partitioned right: no Kafka hop. A source
            # topic's partitioner is the user's, so its items always take the re-keyed topic.
            (out.local if item.entity_key == key and not msg.own_keys else out.remote).append(item)

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

    def _decode(self, msgs: Sequence[InMessage], out: Decisions) -> list[tuple[InMessage, RawEvent]]:
        decoded: list[tuple[InMessage, RawEvent]] = []
        now_ms = int(time.time() * 1000)
        for msg in msgs:
            ev: RawEvent | DeadLetter
            try:
                ev = decode_event(msg.value, self.defs, msg.topic)
            except Exception as exc:  # noqa: BLE001 - one message never stops the worker: it is dead-lettered
                ev = DeadLetter(events_pb2.DEAD_LETTER_REASON_PROCESSING_FAILED, f"{type(exc).__name__}: {exc}")
            if self.skip and isinstance(ev, RawEvent) and msg.position in self.skip:
                ev = DeadLetter(events_pb2.DEAD_LETTER_REASON_MANUAL, self.skip[msg.position])
            if isinstance(ev, RawEvent):
                ev = self._future(msg, ev, now_ms) or ev
            if isinstance(ev, DeadLetter):
                metrics.DEAD_LETTERS.labels(ev.reason_name).inc()
                out.dead.append((msg, ev))
            else:
                decoded.append((msg, ev))
        return decoded

    async def _claimed_elsewhere(
        self, decoded: Sequence[tuple[InMessage, RawEvent]], refs: Sequence[tuple[str, str]]
    ) -> set[str]:
        """Positions whose event (type, id) another message claimed first: one dedup scope per
        event type, whatever message key or partition carries the copies."""
        keys = self._keys
        fresh = [
            (ev.event_type, ev.event_id, pos)
            for (_, ev), (pos, key) in zip(decoded, refs, strict=True)
            if ev.event_id not in keys[key].seen
        ]
        if not fresh:
            return set()
        owners = await self.state.claim(fresh, self.dedup_retention_ms)
        return {pos for (_, _, pos), owner in zip(fresh, owners, strict=True) if owner != pos}

    def _watermark(self, position: str, key: str, ev: RawEvent) -> int | None:
        """The watermark recorded for a new or replayed event; None for a duplicate."""
        st = self._keys[key]
        seen = st.seen.get(ev.event_id)
        if seen is not None:
            return seen.watermark_ms if seen.position == position else None
        wm = st.max_ms
        st.seen[ev.event_id] = st.added[ev.event_id] = Seen(position, ev.time_ms, wm)
        self.held += 1
        if ev.time_ms > wm:
            st.max_ms = ev.time_ms
        return wm

    def _archive_row(self, key: str, ev: RawEvent, wm: int, now_ns: int) -> ArchiveRow:
        # Late for some view == late for the view with the least allowed lateness.
        least = self._least_lateness[ev.event_type]
        late = least is not None and is_late(ev.time_ms, wm, least)
        return ArchiveRow(
            ev.event_id, ev.event_type, ev.time_ms, ev.entities, ev.values, ev.source,
            ev.schema_version, key, wm, late, now_ns,
        )  # fmt: skip


def _ids_held(st: KeyState) -> int:
    return len(st.seen)
