"""Shares Redis round trips between concurrent requests (group commit, for reads).

Every request still reads all the views it needs in one pipelined round trip; under load,
requests share that round trip. Per-request client overhead (a pipeline, a socket write, a
read wake-up, a timer) is what limits a Python server's throughput, so paying it once per
group instead of once per request raises requests/s.

grpc.aio hands the server new calls one per event-loop turn, so "the requests ready in the
same turn" is nearly always one request. Groups therefore form around round trips instead:
at most `max_in_flight` reads are outstanding; requests arriving meanwhile wait and go
together in the next one, sent the moment a read completes. At low load nothing is in
flight and a request is sent after a single `call_soon`; under load the groups grow by
themselves with the request rate, and a request waits at most one round trip more.

`timeout_s` caps each shared round trip as a whole. The server's Redis client has no
per-command socket timeout (redis-py arms one timer per reply, per key), so this cap is what
stops a read on a hung connection; a caller's own deadline only stops that caller's wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from featurestore.online import AsyncOnlineStore, OnlineKey, OnlineRow, OnlineValue, ViewSample

__all__ = ["CoalescingOnlineStore"]

_Waiter = tuple[Sequence[OnlineKey], "asyncio.Future[list[OnlineValue | None]]"]


class CoalescingOnlineStore(AsyncOnlineStore):
    def __init__(
        self,
        inner: AsyncOnlineStore,
        max_keys: int = 4096,
        timeout_s: float | None = None,
        max_in_flight: int = 1,
    ) -> None:
        self._inner = inner
        self._max_keys = max_keys
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._pending: list[_Waiter] = []
        self._pending_keys = 0
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[OnlineValue | None]] = loop.create_future()
        self._pending.append((keys, future))
        self._pending_keys += len(keys)
        if self._pending_keys >= self._max_keys:
            self._flush()  # a full group goes now, whatever is in flight
        elif not self._flush_scheduled and len(self._tasks) < self._max_in_flight:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending, self._pending_keys = self._pending, [], 0
        if batch:
            task = asyncio.get_running_loop().create_task(self._read(batch))
            self._tasks.add(task)  # keep a reference until done; also the in-flight count
            task.add_done_callback(self._read_done)

    def _read_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # The requests that queued behind this round trip go together in the next one.
        if self._pending and not self._flush_scheduled:
            self._flush()

    async def _read(self, batch: list[_Waiter]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                values = await self._inner.read([k for keys, _ in batch for k in keys])
        except Exception as exc:  # noqa: BLE001 - not swallowed: every waiter gets the store's error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for keys, future in batch:
            if not future.done():  # a caller that gave up (deadline) is simply skipped
                future.set_result(values[start : start + len(keys)])
            start += len(keys)

    async def sample_newest(self, views: Sequence[tuple[str, int]], limit: int) -> dict[tuple[str, int], ViewSample]:
        return await self._inner.sample_newest(views, limit)

    async def write(self, rows: Sequence[OnlineRow]) -> int:
        return await self._inner.write(rows)

    async def close(self) -> None:
        await self._inner.close()
