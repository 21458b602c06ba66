"""The online store's Redis layout of the earlier release, and the types every layout shares.

`OnlineKey` names an entity of a view version; `OnlineValue` is what a reader gets for it.
The row layout (one hash per entity and view version, key `<prefix>:<view>:v<version>:<entity>`,
fields `t` the event time the values are as of, `v` a serialised `fti.v1.FeatureVector`,
`ttl`) is still read for views without a spec (see `featurestore.online`), and written by
`OnlineStore.write` for tools and tests of that release. Writes are conditional in one Lua
script, so an older value never overwrites a newer one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis
from google.protobuf.timestamp_pb2 import Timestamp

from featurestore.values import Scalar, from_value_map, to_value_map
from fti.v1 import features_pb2

__all__ = [
    "DEFAULT_PREFIX",
    "READ_FIELDS",
    "WRITE_CHUNK",
    "WRITE_IF_NEWER",
    "OnlineKey",
    "OnlineRow",
    "OnlineValue",
    "P",
    "ScriptCall",
    "decode_value",
    "encode_row",
    "online_key",
    "queue_reads",
    "write_calls",
]

DEFAULT_PREFIX = "fti"

# KEYS[i] = hash key of row i; ARGV[3i-2..3i] = its event_time_ms, value bytes, ttl_ms.
# Rows apply in order (a key repeated in one call behaves as successive writes); an older event
# time never overwrites a newer one, an equal one does. Returns how many rows were applied.
WRITE_IF_NEWER = """
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
WRITE_CHUNK = 500


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
    """A view's values for one entity: evaluated at `as_of_ms` (tiles), or as stored (earlier layout)."""

    view: str
    version: int
    entity_key: str
    event_time_ms: int  # the entity's newest event time; -1 when none is stored
    ingest_time_ms: int
    ttl_ms: int  # 0 for values evaluated at read time: their windows decide, nothing goes stale
    values: Mapping[str, Scalar | None]
    as_of_ms: int = -1  # the read time the windows were evaluated at; -1 for the earlier layout
    # The view's TTL, for values evaluated at read time (0: unknown). Their windows still decide
    # the values; an entity whose newest event is older than this is reported stale (`is_dated`).
    view_ttl_ms: int = 0

    def age_ms(self, now_ms: int) -> int:
        """How old the entity's newest event is; -1 when no event is stored."""
        if self.event_time_ms < 0:
            return -1
        return max(0, now_ms - self.event_time_ms)

    def is_stale(self, now_ms: int) -> bool:
        return self.ttl_ms > 0 and self.age_ms(now_ms) > self.ttl_ms

    def is_dated(self, now_ms: int) -> bool:
        """Nothing for this entity within its view's TTL: every window shorter than that reads empty."""
        ttl = self.view_ttl_ms or self.ttl_ms
        return ttl > 0 and self.age_ms(now_ms) > ttl


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
READ_FIELDS = ("t", "v", "ttl")

P = TypeVar("P", redis.client.Pipeline, aredis.client.Pipeline)

ScriptCall = tuple[list[str], list[bytes | int]]  # (KEYS, ARGV) of one `WRITE_IF_NEWER` call


def write_calls(prefix: str, rows: Sequence[OnlineRow]) -> list[ScriptCall]:
    """The rows as `WRITE_IF_NEWER` calls of at most `WRITE_CHUNK` rows each, in order."""
    calls: list[ScriptCall] = []
    for start in range(0, len(rows), WRITE_CHUNK):
        keys: list[str] = []
        args: list[bytes | int] = []
        for row in rows[start : start + WRITE_CHUNK]:
            keys.append(online_key(prefix, row.key))
            args += (row.event_time_ms, encode_row(row), row.ttl_ms)
        calls.append((keys, args))
    return calls


def queue_reads(pipe: P, prefix: str, keys: Sequence[OnlineKey]) -> P:
    """Queue one HMGET per key; queuing is synchronous on sync and async pipelines alike."""
    for k in keys:
        pipe.hmget(online_key(prefix, k), READ_FIELDS)
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
