"""Online store: the latest feature values per (view, version, entity), in Redis.

Layout (the contract the inference pipeline reads): one Redis hash per entity and view version,
key `<prefix>:<view>:v<version>:<entity_key>`, with fields
  `t`   event time in ms the values are valid as of,
  `v`   the values as serialised `fti.v1.FeatureVector` bytes,
  `ttl` the view's TTL in ms (a reader treats older values as stale).
The key also expires after the TTL. Writes are conditional in one Lua script, so an older
value never overwrites a newer one whatever order the writers run in.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis
from google.protobuf.timestamp_pb2 import Timestamp

from featurestore.values import Scalar, from_value_map, to_value_map
from fti.v1 import features_pb2
from fti_core.errors import UnavailableError

__all__ = [
    "AsyncInMemoryOnlineStore",
    "AsyncOnlineStore",
    "AsyncRedisOnlineStore",
    "InMemoryOnlineStore",
    "OnlineKey",
    "OnlineRow",
    "OnlineStore",
    "OnlineValue",
    "RedisOnlineStore",
    "online_key",
]

DEFAULT_PREFIX = "fti"

# KEYS[i] = hash key of row i; ARGV[3i-2..3i] = its event_time_ms, value bytes, ttl_ms.
# Rows apply in order (a key repeated in one call behaves as successive writes); an older event
# time never overwrites a newer one, an equal one does. Returns how many rows were applied.
_WRITE_IF_NEWER = """
local applied = 0
for i, key in ipairs(KEYS) do
  local t, ttl = ARGV[3 * i - 2], ARGV[3 * i]
  local cur = redis.call('HGET', key, 't')
  if not (cur and tonumber(cur) > tonumber(t)) then
    redis.call('HSET', key, 't', t, 'v', ARGV[3 * i - 1], 'ttl', ttl)
    if tonumber(ttl) > 0 then redis.call('PEXPIRE', key, ttl) end
    applied = applied + 1
  end
end
return applied
"""

# Rows per script call: one call packs and parses as one command instead of one per row, while
# one call blocks other Redis clients for only a few milliseconds.
_WRITE_CHUNK = 500


@dataclass(frozen=True, slots=True)
class OnlineKey:
    view: str
    version: int
    entity_key: str


@dataclass(frozen=True, slots=True)
class OnlineRow:
    """Values of one view for one entity as of `event_time_ms`."""

    view: str
    version: int
    entity_key: str
    event_time_ms: int
    values: Mapping[str, Scalar | None]
    ttl_ms: int
    ingest_time_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def key(self) -> OnlineKey:
        return OnlineKey(self.view, self.version, self.entity_key)


@dataclass(frozen=True, slots=True)
class OnlineValue:
    view: str
    version: int
    entity_key: str
    event_time_ms: int
    ingest_time_ms: int
    ttl_ms: int
    values: Mapping[str, Scalar | None]

    def age_ms(self, now_ms: int) -> int:
        return max(0, now_ms - self.event_time_ms)

    def is_stale(self, now_ms: int) -> bool:
        return self.ttl_ms > 0 and self.age_ms(now_ms) > self.ttl_ms


def online_key(prefix: str, key: OnlineKey) -> str:
    return f"{prefix}:{key.view}:v{key.version}:{key.entity_key}"


def _ts(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def encode_row(row: OnlineRow) -> bytes:
    vec = features_pb2.FeatureVector(
        view=row.view,
        view_version=row.version,
        entity_key=row.entity_key,
        event_time=_ts(row.event_time_ms),
        values=to_value_map(row.values),
        ingest_time=_ts(row.ingest_time_ms),
    )
    return vec.SerializeToString(deterministic=True)


# The hash fields a reader fetches, in the order `decode_value` unpacks them.
_READ_FIELDS = ("t", "v", "ttl")

_P = TypeVar("_P", redis.client.Pipeline, aredis.client.Pipeline)

_ScriptCall = tuple[list[str], list[bytes | int]]  # (KEYS, ARGV) of one `_WRITE_IF_NEWER` call


def _write_calls(prefix: str, rows: Sequence[OnlineRow]) -> list[_ScriptCall]:
    """The rows as `_WRITE_IF_NEWER` calls of at most `_WRITE_CHUNK` rows each, in order."""
    calls: list[_ScriptCall] = []
    for start in range(0, len(rows), _WRITE_CHUNK):
        keys: list[str] = []
        args: list[bytes | int] = []
        for row in rows[start : start + _WRITE_CHUNK]:
            keys.append(online_key(prefix, row.key))
            args += (row.event_time_ms, encode_row(row), row.ttl_ms)
        calls.append((keys, args))
    return calls


def _queue_reads(pipe: _P, prefix: str, keys: Sequence[OnlineKey]) -> _P:
    """Queue one HMGET per key; queuing is synchronous on sync and async pipelines alike."""
    for k in keys:
        pipe.hmget(online_key(prefix, k), _READ_FIELDS)
    return pipe


def decode_value(key: OnlineKey, raw: Sequence[Any]) -> OnlineValue | None:
    t, v, ttl = raw
    if t is None or v is None:
        return None
    vec = features_pb2.FeatureVector.FromString(v)
    return OnlineValue(
        view=key.view,
        version=key.version,
        entity_key=key.entity_key,
        event_time_ms=int(t),
        ingest_time_ms=vec.ingest_time.ToMilliseconds(),
        ttl_ms=int(ttl or 0),
        values=from_value_map(vec.values),
    )


class OnlineStore(ABC):
    """Synchronous online store (batch jobs, CLI tools)."""

    @abstractmethod
    def write(self, rows: Sequence[OnlineRow]) -> int:
        """Apply rows not older than what is stored; returns how many were applied."""

    @abstractmethod
    def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        """Read many keys in one round trip; None where nothing (or only an expired value) is stored."""


class AsyncOnlineStore(ABC):
    """Asynchronous online store (the Faust worker, the gRPC server)."""

    @abstractmethod
    async def write(self, rows: Sequence[OnlineRow]) -> int: ...

    @abstractmethod
    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class RedisOnlineStore(OnlineStore):
    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_WRITE_IF_NEWER)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX) -> RedisOnlineStore:
        return cls(redis.Redis.from_url(url), prefix)

    def write(self, rows: Sequence[OnlineRow]) -> int:
        if not rows:
            return 0
        calls = _write_calls(self._prefix, rows)
        try:
            if len(calls) == 1:  # the common case: no pipeline, so no SCRIPT EXISTS round trip
                return int(self._script(*calls[0]))
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls:
                self._script(keys, args, client=pipe)
            return sum(int(r) for r in pipe.execute())
        except redis.RedisError as exc:
            raise UnavailableError(f"online store write failed: {exc}") from exc

    def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        try:
            raws = _queue_reads(self._client.pipeline(transaction=False), self._prefix, keys).execute()
        except redis.RedisError as exc:
            raise UnavailableError(f"online store read failed: {exc}") from exc
        return [decode_value(k, raw) for k, raw in zip(keys, raws, strict=True)]


class AsyncRedisOnlineStore(AsyncOnlineStore):
    def __init__(self, client: aredis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_WRITE_IF_NEWER)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, **kwargs: Any) -> AsyncRedisOnlineStore:
        return cls(aredis.Redis.from_url(url, **kwargs), prefix)

    async def write(self, rows: Sequence[OnlineRow]) -> int:
        if not rows:
            return 0
        calls = _write_calls(self._prefix, rows)
        try:
            if len(calls) == 1:  # the common case: no pipeline, so no SCRIPT EXISTS round trip
                return int(await self._script(*calls[0]))
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls:
                await self._script(keys, args, client=pipe)
            return sum(int(r) for r in await pipe.execute())
        except redis.RedisError as exc:
            raise UnavailableError(f"online store write failed: {exc}") from exc

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        try:
            raws = await _queue_reads(self._client.pipeline(transaction=False), self._prefix, keys).execute()
        except redis.RedisError as exc:
            raise UnavailableError(f"online store read failed: {exc}") from exc
        return [decode_value(k, raw) for k, raw in zip(keys, raws, strict=True)]

    async def close(self) -> None:
        await self._client.aclose()


class InMemoryOnlineStore(OnlineStore):
    """The same semantics in a dict, for unit tests."""

    def __init__(self) -> None:
        self.data: dict[OnlineKey, OnlineValue] = {}

    def write(self, rows: Sequence[OnlineRow]) -> int:
        applied = 0
        for row in rows:
            cur = self.data.get(row.key)
            if cur is not None and cur.event_time_ms > row.event_time_ms:
                continue
            self.data[row.key] = OnlineValue(
                row.view,
                row.version,
                row.entity_key,
                row.event_time_ms,
                row.ingest_time_ms,
                row.ttl_ms,
                dict(row.values),
            )
            applied += 1
        return applied

    def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        return [self.data.get(k) for k in keys]


class AsyncInMemoryOnlineStore(AsyncOnlineStore):
    """Async face of an `InMemoryOnlineStore`, for unit tests of async code."""

    def __init__(self, store: InMemoryOnlineStore | None = None) -> None:
        self.store = store or InMemoryOnlineStore()

    async def write(self, rows: Sequence[OnlineRow]) -> int:
        return self.store.write(rows)

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        return self.store.read(keys)
