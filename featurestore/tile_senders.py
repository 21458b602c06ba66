"""Tile writes sent in order without waiting for each other: how the worker feeds the online store.

A tile is written whole, so two writes of one entity applied out of order would leave the
older tile. A sender keeps the order of its `send` calls and returns at once with a future of
the write's result; the caller (the worker's flusher) awaits those futures before it acks.

* `ChainedTileSender`, for any store: each write starts when the previous one is done.
* `RedisScriptStream`, for Redis: every write's script calls go out at once on one connection
  of its own, and a reader task takes the replies in order. Redis applies a connection's
  commands in the order sent, so nothing waits for an earlier write's reply. Chained, a write
  waited ~55 ms (p50) for the one before at 5,200 events/s: each step needed the worker's
  busy event loop to read a reply and send the next.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from hashlib import sha1
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError, ResponseError

from fti_core.errors import UnavailableError

__all__ = ["ChainedTileSender", "RedisScriptStream", "TileSender"]

Call = tuple[list[str], Sequence[Any]]  # a script call's keys and arguments


def _command(args: Sequence[bytes]) -> bytes:
    """One command in RESP, as redis-py packs it, but in one piece: redis-py's packer and the
    socket writes of its chunks took ~6 % of a live worker's time."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _evalsha(sha: bytes, keys: Sequence[str], args: Sequence[Any]) -> bytes:
    return _command([b"EVALSHA", sha, b"%d" % len(keys), *(k.encode() for k in keys), *(_bytes(a) for a in args)])


def _bytes(arg: str | bytes | int | float) -> bytes:
    """An argument's bytes as redis-py encodes it (text as UTF-8, numbers by repr). `int` is
    spelled out: compiled (fti_core.native), an int typed `float` is made a float first."""
    if isinstance(arg, bytes):
        return arg
    return arg.encode() if isinstance(arg, str) else repr(arg).encode()


class TileSender(ABC):
    """Tile writes applied in the order they are sent; each send returns before it is applied."""

    @abstractmethod
    async def send(self, writes: Sequence[Any]) -> asyncio.Future[int]:
        """Start writing; the future holds what the store applied, or the store's failure."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the sender holds."""


class ChainedTileSender(TileSender):
    """Any store's `write_tiles`, each call started once the previous one is done."""

    def __init__(self, write: Callable[[Sequence[Any]], Awaitable[int]]) -> None:
        self._write = write
        self._last: asyncio.Future[int] | None = None

    async def send(self, writes: Sequence[Any]) -> asyncio.Future[int]:
        task = asyncio.ensure_future(self._after(self._last, writes))
        self._last = task
        return task

    async def _after(self, previous: asyncio.Future[int] | None, writes: Sequence[Any]) -> int:
        if previous is not None:
            await asyncio.wait([previous])  # only its order matters here; its error is the caller's
        return await self._write(writes)


class RedisScriptStream(TileSender):
    """One Lua script's calls streamed on a dedicated connection, replies read in order.

    Each send is `SCRIPT LOAD` (a Redis that restarted or flushed its scripts has it again
    before the calls that need it) followed by one EVALSHA per call. A failed connection, a
    timeout or an error reply fails the send's future with `UnavailableError`; a lost
    connection fails every pending send, and every later one (the worker restarts from its
    saved state, which makes any write it did not see answered harmless).
    """

    def __init__(self, client: aredis.Redis, script: str, calls_of: Callable[[Sequence[Any]], Sequence[Call]]) -> None:
        self._pool = client.connection_pool
        self._script = script
        self._sha = sha1(script.encode(), usedforsecurity=False).hexdigest().encode()
        self._load = _command([b"SCRIPT", b"LOAD", script.encode()])
        self._calls_of = calls_of
        self._conn: Any = None  # redis.asyncio.Connection, made on first send
        self._sending = asyncio.Lock()  # one send's bytes at a time, in call order
        self._pending: deque[tuple[int, asyncio.Future[int]]] = deque()  # replies expected, for whom
        self._reader: asyncio.Task[None] | None = None
        self._error: UnavailableError | None = None

    async def send(self, writes: Sequence[Any]) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self._error is not None:
            fut.set_exception(UnavailableError(str(self._error)))
            return fut
        calls = self._calls_of(writes)
        payload = self._load + b"".join(_evalsha(self._sha, keys, args) for keys, args in calls)
        async with self._sending:
            try:
                if self._conn is None:
                    self._conn = self._pool.make_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    await self._conn.connect()
                self._pending.append((1 + len(calls), fut))
                await self._conn.send_packed_command([payload], check_health=False)
            except RedisError as exc:
                self._fail(exc)
                return fut
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read_replies())
        return fut

    async def _read_replies(self) -> None:
        conn = self._conn
        try:
            while self._pending:
                n, fut = self._pending[0]
                applied, error = 0, None
                for i in range(n):
                    try:
                        reply = await conn.read_response()
                    except ResponseError as exc:  # this call failed; the stream goes on
                        error = error or exc
                        continue
                    if i:  # the first reply is SCRIPT LOAD's
                        applied += int(reply)
                self._pending.popleft()
                if fut.done():  # cancelled by a flusher reset
                    continue
                if error is None:
                    fut.set_result(applied)
                else:
                    fut.set_exception(UnavailableError(f"online store tile write failed: {error}"))
        except Exception as exc:  # noqa: BLE001 - gone, timed out or garbled: whatever it is, nothing may wait forever
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        message = f"online store tile write failed: {exc}"
        self._error = UnavailableError(message)
        while self._pending:
            _, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(UnavailableError(message))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._conn is not None:
            await self._conn.disconnect()
