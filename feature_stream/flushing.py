"""Buffering and the flush protocol: outputs, then state, then offsets.

Batches add to one buffer: archive rows, Kafka sends (in the outbox), state changes and the
callbacks that ack their messages. Online tile writes are sent at once (freshness), applied
in the order sent, and remembered. A flush — from a timer when the oldest buffered work is
`interval_s` old, on partition revocation, or inline past `max_rows` — waits for the online
writes, writes parquet, waits for the producer's acknowledgements, saves the state, and
only then acks. Taking the buffer is the only step under the processing lock, so batches
go on while a flush writes; flushes never overlap, so state is saved in batch order. See
`feature_stream.state` for why that order makes `kill -9` at any point safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from feature_stream import metrics
from feature_stream.records import Outbox
from feature_stream.state import EntityChanges, KeyState, StateStore
from featurestore.offline import ArchiveRow, OfflineStore
from featurestore.online import AsyncOnlineStore, TileWrite

__all__ = ["MAX_ONLINE_IN_FLIGHT", "Buffer", "Flusher"]

MAX_ONLINE_IN_FLIGHT = 4


@dataclass
class Buffer:
    """Everything written since the last flush except the online tiles (already sent)."""

    archive: list[ArchiveRow] = field(default_factory=list)
    keys: dict[str, KeyState] = field(default_factory=dict)
    entities: EntityChanges = field(default_factory=EntityChanges)
    # Online writes already sent: a flush waits for them (and fails with them) before acking.
    online: list[asyncio.Future[int]] = field(default_factory=list)
    on_durable: list[Callable[[], None]] = field(default_factory=list)
    rows: int = 0
    since: float = field(default_factory=time.monotonic)

    def __bool__(self) -> bool:
        return bool(self.rows or self.keys or self.on_durable or self.online)


class Flusher:
    def __init__(
        self,
        state: StateStore,
        online: AsyncOnlineStore,
        offline: OfflineStore,
        outbox: Outbox,
        lock: asyncio.Lock,
        *,
        max_rows: int,
        interval_s: float,
    ) -> None:
        self.state = state
        self.online = online
        self.offline = offline
        self.outbox = outbox
        self.max_rows = max_rows
        self.interval_s = interval_s
        self.buffer = Buffer()
        self._lock = lock  # the processing lock: held only while taking the buffer
        self._flush_lock = asyncio.Lock()  # flushes save state in batch order
        self._sender = online.tile_sender()
        self._inflight: list[asyncio.Future[int]] = []  # sent online writes, oldest first
        self.on_failure: Callable[[], None] = self.reset
        # Called under the processing lock once a flush saved the state and acked (cache trims).
        self.on_saved: Callable[[], None] = lambda: None

    def reset(self) -> None:
        """Drop unflushed work, as a crash would: its offsets were not acked."""
        for task in self._inflight:
            task.cancel()
        self._inflight = []
        self.buffer = Buffer()

    async def flush(self) -> None:
        """Write buffered outputs, then state, then ack (the `on_durable` callbacks)."""
        async with self._flush_lock:
            async with self._lock:
                pending, self.buffer = self.buffer, Buffer()
                keys = {k: st.take_changes() for k, st in pending.keys.items()}
            if not pending:
                return
            try:
                for task in pending.online:
                    await task
                if pending.archive:
                    await asyncio.to_thread(self.offline.write_archive, pending.archive)
                await self.outbox.flush()
                await self.state.save(keys, pending.entities)
            except BaseException:
                self.on_failure()  # the caches are ahead of the saved state
                raise
            for ack in pending.on_durable:
                ack()
            async with self._lock:
                self.on_saved()

    async def flush_if_due(self) -> None:
        if self.buffer and time.monotonic() - self.buffer.since >= self.interval_s:
            await self.flush()

    async def flush_if_full(self) -> None:
        # Waited for by the handler (outside the processing lock): back-pressure when the timer's
        # flushes lag. Set well above what one interval buffers: at 30k rows every flush ran
        # inline, and batches idled on parquet, Kafka and Redis instead of going on meanwhile.
        if self.buffer.rows >= self.max_rows:
            await self.flush()

    async def send_online(self, writes: list[TileWrite]) -> None:
        """Send tile writes now without waiting for Redis to apply them; a flush awaits them.

        Writes are applied in the order sent (a tile is written whole, so a reordered pair
        could leave the older tile): `AsyncOnlineStore.tile_sender`. Past
        `MAX_ONLINE_IN_FLIGHT` unfinished writes the batch waits for the oldest (back-pressure
        when Redis falls behind)."""
        inflight = [f for f in self._inflight if not f.done()]
        if len(inflight) >= MAX_ONLINE_IN_FLIGHT:
            await asyncio.wait(inflight[:1])
            inflight = [f for f in inflight if not f.done()]
        sent = await self._sender.send(writes)
        sent.add_done_callback(_count_applied)
        self._inflight = [*inflight, sent]
        self.buffer.online.append(sent)


def _count_applied(sent: asyncio.Future[int]) -> None:
    if not sent.cancelled() and sent.exception() is None:
        metrics.ONLINE_WRITES.labels("all").inc(sent.result())
