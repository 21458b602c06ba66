"""Online store: what a reader needs to evaluate each window of a view at its read time, in Redis.

Layout (the contract the worker writes and the inference pipeline reads; see
`featurestore.tiles` for the semantics):

  `<prefix>:spec:<view>:v<version>`            the view's definition (JSON), written once per version
  `<prefix>:tiles:<view>:v<version>:<entity>`  hash: `n` the entity's newest accepted event time (ms),
                                               `w` wall-clock ms of the last write, and one field
                                               `<step_ms>:<start_ms>` per retained tile (exact partials)
  `<prefix>:tail:<view>:v<version>:<entity>`   hash: event_id -> [time_ms, {field: value}], the raw
                                               events from `tiles.tail_start_ms` on

A read at t fetches the specs it does not know yet, then every entity's tiles hash in one
round trip for all views of a request, and evaluates the windows at t; only a read at t
before the entity's newest event (possible within the future skew) also reads its tail. A
missing hash is an entity with no event in any window: counts and sums 0, others missing.
Both hashes expire after the view's TTL without writes (a TTL is at least the view's longest
window, so an expired key reads as what it held). Tiles are written whole (absolute values
computed by the worker from its state), so a replayed write changes nothing.

Until the next release a reader still serves the earlier layout (one hash per entity with the
values as of its last event, `t`/`v`/`ttl`, key `<prefix>:<view>:v<version>:<entity>`) for a
view whose spec is not in Redis, with a warning: those values are not evaluated at read time.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis
from google.protobuf.timestamp_pb2 import Timestamp

from featurestore.definitions import FeatureViewDef
from featurestore.tiles import Event, NeedTail, Tile, decode_tile, evaluate_tiles
from featurestore.values import Scalar, from_value_map, to_value_map
from fti.v1 import features_pb2
from fti_core.errors import IntegrityError, UnavailableError

__all__ = [
    "AsyncInMemoryOnlineStore",
    "AsyncOnlineStore",
    "AsyncRedisOnlineStore",
    "InMemoryOnlineStore",
    "OnlineKey",
    "OnlineRow",
    "OnlineState",
    "OnlineStore",
    "OnlineValue",
    "RedisOnlineStore",
    "TileWrite",
    "decode_tail_event",
    "encode_tail_event",
    "online_key",
    "spec_key",
    "tail_key",
    "tiles_key",
]

log = logging.getLogger(__name__)

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
    """A view's values for one entity: evaluated at `as_of_ms` (tiles), or as stored (earlier layout)."""

    view: str
    version: int
    entity_key: str
    event_time_ms: int  # the entity's newest event time; -1 when none is stored
    ingest_time_ms: int
    ttl_ms: int  # 0 for values evaluated at read time: their windows decide, nothing goes stale
    values: Mapping[str, Scalar | None]
    as_of_ms: int = -1  # the read time the windows were evaluated at; -1 for the earlier layout

    def age_ms(self, now_ms: int) -> int:
        """How old the entity's newest event is; -1 when no event is stored."""
        if self.event_time_ms < 0:
            return -1
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


# -- tiles (read-time windows) ---------------------------------------------------------------


def spec_key(prefix: str, view: str, version: int) -> str:
    return f"{prefix}:spec:{view}:v{version}"


def tiles_key(prefix: str, key: OnlineKey) -> str:
    return f"{prefix}:tiles:{key.view}:v{key.version}:{key.entity_key}"


def tail_key(prefix: str, key: OnlineKey) -> str:
    return f"{prefix}:tail:{key.view}:v{key.version}:{key.entity_key}"


_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def encode_tail_event(event: Event) -> str:
    return _compact_json([event.time_ms, dict(event.values)])


def decode_tail_event(event_id: str, raw: str | bytes) -> Event:
    t, values = json.loads(raw)
    return Event(int(t), event_id, values)


@dataclass(frozen=True, slots=True)
class TileWrite:
    """What changed for one entity of one view: whole tiles (encoded) and tail events to set or drop."""

    key: OnlineKey
    newest_ms: int
    expire_ms: int
    tiles: Mapping[str, str] = field(default_factory=dict)
    drop_tiles: Sequence[str] = ()
    tail: Mapping[str, str] = field(default_factory=dict)
    drop_tail: Sequence[str] = ()

    def doc(self) -> list[object]:
        # Numbers as text: cjson would turn big ones into floats.
        return [str(self.newest_ms), str(self.expire_ms), str(int(time.time() * 1000)),
                dict(self.tiles), list(self.drop_tiles), dict(self.tail), list(self.drop_tail)]  # fmt: skip


# KEYS = (tiles hash, tail hash) per write; ARGV[1] = JSON array of `TileWrite.doc()`.
# `n` only ever grows; tiles and tail events are set whole, so replays are idempotent.
_WRITE_TILES = """
local SLICE = 1000
local function hset(key, map)
  local args, n = {}, 0
  for f, v in pairs(map) do
    args[n + 1], args[n + 2] = f, v
    n = n + 2
    if n >= SLICE then redis.call('HSET', key, unpack(args, 1, n)); n = 0 end
  end
  if n > 0 then redis.call('HSET', key, unpack(args, 1, n)) end
end
local function hdel(key, fields)
  for i = 1, #fields, SLICE do
    redis.call('HDEL', key, unpack(fields, i, math.min(i + SLICE - 1, #fields)))
  end
end
local ops = cjson.decode(ARGV[1])
for i, op in ipairs(ops) do
  local key, tail = KEYS[2 * i - 1], KEYS[2 * i]
  local cur = redis.call('HGET', key, 'n')
  if not cur or tonumber(cur) < tonumber(op[1]) then redis.call('HSET', key, 'n', op[1]) end
  redis.call('HSET', key, 'w', op[3])
  hset(key, op[4])
  hdel(key, op[5])
  hset(tail, op[6])
  hdel(tail, op[7])
  redis.call('PEXPIRE', key, op[2])
  if redis.call('EXISTS', tail) == 1 then redis.call('PEXPIRE', tail, op[2]) end
end
return #ops
"""

_TILE_WRITE_CHUNK = 200


def _tile_calls(prefix: str, writes: Sequence[TileWrite]) -> list[tuple[list[str], list[str]]]:
    calls = []
    for start in range(0, len(writes), _TILE_WRITE_CHUNK):
        chunk = writes[start : start + _TILE_WRITE_CHUNK]
        keys = [k for w in chunk for k in (tiles_key(prefix, w.key), tail_key(prefix, w.key))]
        calls.append((keys, [json.dumps([w.doc() for w in chunk], separators=(",", ":"))]))
    return calls


@dataclass(frozen=True)
class OnlineState:
    """Everything stored for one entity of one view (for `verify`: evaluate it at many times)."""

    spec: FeatureViewDef
    key: OnlineKey
    newest_ms: int  # -1 when nothing is stored
    tiles: Mapping[tuple[int, int], Tile]
    tail: Sequence[Event]

    def at(self, t: int) -> dict[str, float | None]:
        """The values a reader gets at t (the tail only where a current tile holds later events)."""
        try:
            return evaluate_tiles(self.spec, self.tiles, t)
        except NeedTail:
            return evaluate_tiles(self.spec, self.tiles, t, self.tail)


# A view without a spec in Redis is looked up again after this long (a worker may start later).
_SPEC_RETRY_S = 5.0


class _TileReader:
    """The I/O-free half of a read: which commands to queue, and the values from their replies."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._specs: dict[tuple[str, int], tuple[FeatureViewDef | None, float]] = {}
        self._warned: set[tuple[str, int]] = set()

    def unknown_specs(self, keys: Sequence[OnlineKey]) -> list[tuple[str, int]]:
        now = time.monotonic()
        views = dict.fromkeys((k.view, k.version) for k in keys)
        return [
            v for v in views if (got := self._specs.get(v)) is None or (got[0] is None and now - got[1] > _SPEC_RETRY_S)
        ]

    def queue_specs(self, pipe: _P, views: Sequence[tuple[str, int]]) -> _P:
        for view, version in views:
            pipe.get(spec_key(self.prefix, view, version))
        return pipe

    def take_specs(self, views: Sequence[tuple[str, int]], raws: Sequence[bytes | None]) -> None:
        now = time.monotonic()
        for v, raw in zip(views, raws, strict=True):
            spec = FeatureViewDef.model_validate_json(raw) if raw else None
            self._specs[v] = (spec, now)

    def spec(self, key: OnlineKey) -> FeatureViewDef | None:
        got = self._specs.get((key.view, key.version))
        return got[0] if got else None

    def queue_main(self, pipe: _P, keys: Sequence[OnlineKey]) -> _P:
        for k in keys:
            if self.spec(k) is not None:
                pipe.hgetall(tiles_key(self.prefix, k))
            else:
                pipe.hmget(online_key(self.prefix, k), _READ_FIELDS)
        return pipe

    def decode_main(
        self, keys: Sequence[OnlineKey], raws: Sequence[Any], at_ms: int
    ) -> tuple[list[OnlineValue | None], list[int]]:
        """Values per key, and the positions whose read also needs the tail."""
        out: list[OnlineValue | None] = []
        need: list[int] = []
        for i, (k, raw) in enumerate(zip(keys, raws, strict=True)):
            spec = self.spec(k)
            if spec is None:
                out.append(self._legacy(k, raw))
                continue
            try:
                out.append(self.evaluate(spec, k, raw, at_ms, None))
            except NeedTail:
                out.append(None)
                need.append(i)
        return out, need

    def _legacy(self, key: OnlineKey, raw: Sequence[Any]) -> OnlineValue | None:
        value = decode_value(key, raw)
        if value is not None and (key.view, key.version) not in self._warned:
            self._warned.add((key.view, key.version))
            log.warning(
                "view %s:%s has values in the earlier online layout and no spec: serving them as stored "
                "(not evaluated at read time); run the worker or `fti features backfill --online`",
                key.view, key.version,
            )  # fmt: skip
        return value

    def parse(
        self, spec: FeatureViewDef, key: OnlineKey, raw: Mapping[bytes, bytes]
    ) -> tuple[int, int, dict[tuple[int, int], Tile]]:
        """(newest event time, last write time, tiles) of a tiles hash."""
        tiles: dict[tuple[int, int], Tile] = {}
        newest = written = -1
        for f, v in raw.items():
            name = f.decode()
            if name == "n":
                newest = int(v)
            elif name == "w":
                written = int(v)
            else:
                step, _, start = name.partition(":")
                try:
                    tiles[(int(step), int(start))] = decode_tile(spec, v)
                except (ValueError, KeyError) as exc:
                    where = tiles_key(self.prefix, key)
                    raise IntegrityError(f"online tile {name} of {where} is unreadable: {exc}") from exc
        return newest, written, tiles

    def evaluate(
        self, spec: FeatureViewDef, key: OnlineKey, raw: Mapping[bytes, bytes], at_ms: int, tail: Sequence[Event] | None
    ) -> OnlineValue:
        newest, written, tiles = self.parse(spec, key, raw)
        values = evaluate_tiles(spec, tiles, at_ms, tail)
        return OnlineValue(key.view, key.version, key.entity_key, newest, written, 0, values, at_ms)

    def state(self, key: OnlineKey, main: Mapping[bytes, bytes], tail: Mapping[bytes, bytes]) -> OnlineState:
        spec = self.spec(key)
        assert spec is not None
        newest, _, tiles = self.parse(spec, key, main)
        return OnlineState(spec, key, newest, tiles, [decode_tail_event(f.decode(), v) for f, v in tail.items()])

    def queue_tails(self, pipe: _P, keys: Sequence[OnlineKey]) -> _P:
        for k in keys:
            pipe.hgetall(tail_key(self.prefix, k))
        return pipe

    def decode_tails(
        self,
        keys: Sequence[OnlineKey],
        mains: Sequence[Any],
        tails: Sequence[Mapping[bytes, bytes]],
        at_ms: int,
    ) -> list[OnlineValue]:
        out = []
        for k, main, raw in zip(keys, mains, tails, strict=True):
            spec = self.spec(k)
            assert spec is not None  # only tile reads need a tail
            events = [decode_tail_event(f.decode(), v) for f, v in raw.items()]
            out.append(self.evaluate(spec, k, main, at_ms, events))
        return out


def _now_ms() -> int:
    return int(time.time() * 1000)


def _spec_json(view: FeatureViewDef) -> str:
    return view.model_dump_json()


class OnlineStore(ABC):
    """Synchronous online store (batch jobs, CLI tools)."""

    @abstractmethod
    def write(self, rows: Sequence[OnlineRow]) -> int:
        """Earlier layout: apply rows not older than what is stored; returns how many were applied."""

    def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        """Every key's values evaluated now, in one round trip (None: the view is unknown here)."""
        return self.read_at(keys, _now_ms())

    @abstractmethod
    def read_at(self, keys: Sequence[OnlineKey], at_ms: int) -> list[OnlineValue | None]:
        """Every key's values evaluated at `at_ms`."""

    @abstractmethod
    def register_views(self, views: Iterable[FeatureViewDef]) -> None:
        """Publish view specs so readers can evaluate their tiles (idempotent)."""

    @abstractmethod
    def write_tiles(self, writes: Sequence[TileWrite]) -> int: ...

    @abstractmethod
    def read_state(self, keys: Sequence[OnlineKey]) -> list[OnlineState | None]: ...


class AsyncOnlineStore(ABC):
    """Asynchronous online store (the Faust worker, the gRPC server)."""

    @abstractmethod
    async def write(self, rows: Sequence[OnlineRow]) -> int: ...

    @abstractmethod
    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        """Every key's values evaluated at the time of the read."""

    async def read_at(self, keys: Sequence[OnlineKey], at_ms: int) -> list[OnlineValue | None]:
        raise NotImplementedError(f"{type(self).__name__} cannot read at a given time")

    async def register_views(self, views: Iterable[FeatureViewDef]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not store tiles")

    async def write_tiles(self, writes: Sequence[TileWrite]) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not store tiles")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class RedisOnlineStore(OnlineStore):
    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_WRITE_IF_NEWER)
        self._tiles_script = client.register_script(_WRITE_TILES)
        self._reader = _TileReader(prefix)

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

    def register_views(self, views: Iterable[FeatureViewDef]) -> None:
        try:
            for v in views:
                self._client.set(spec_key(self._prefix, v.name, v.version), _spec_json(v))
        except redis.RedisError as exc:
            raise UnavailableError(f"online store spec write failed: {exc}") from exc

    def write_tiles(self, writes: Sequence[TileWrite]) -> int:
        try:
            return sum(int(self._tiles_script(keys, args)) for keys, args in _tile_calls(self._prefix, writes))
        except redis.RedisError as exc:
            raise UnavailableError(f"online store tile write failed: {exc}") from exc

    def read_at(self, keys: Sequence[OnlineKey], at_ms: int) -> list[OnlineValue | None]:
        r = self._reader
        try:
            if views := r.unknown_specs(keys):
                r.take_specs(views, r.queue_specs(self._client.pipeline(transaction=False), views).execute())
            raws = r.queue_main(self._client.pipeline(transaction=False), keys).execute()
            out, need = r.decode_main(keys, raws, at_ms)
            if need:
                split = [keys[i] for i in need]
                tails = r.queue_tails(self._client.pipeline(transaction=False), split).execute()
                for i, value in zip(need, r.decode_tails(split, [raws[i] for i in need], tails, at_ms), strict=True):
                    out[i] = value
        except redis.RedisError as exc:
            raise UnavailableError(f"online store read failed: {exc}") from exc
        return out

    def entities(self, view: str, version: int) -> list[str]:
        """Every entity key with a tiles hash of the view version (a SCAN: for checks, not serving)."""
        head = tiles_key(self._prefix, OnlineKey(view, version, ""))
        try:
            return sorted(k.decode()[len(head) :] for k in self._client.scan_iter(match=f"{head}*", count=1000))
        except redis.RedisError as exc:
            raise UnavailableError(f"online store scan failed: {exc}") from exc

    def read_state(self, keys: Sequence[OnlineKey]) -> list[OnlineState | None]:
        """The stored tiles and tail of each key (None: its view has no spec here)."""
        r = self._reader
        try:
            if views := r.unknown_specs(keys):
                r.take_specs(views, r.queue_specs(self._client.pipeline(transaction=False), views).execute())
            known = [k for k in keys if r.spec(k) is not None]
            pipe = self._client.pipeline(transaction=False)
            for k in known:
                pipe.hgetall(tiles_key(self._prefix, k))
                pipe.hgetall(tail_key(self._prefix, k))
            raws = pipe.execute()
        except redis.RedisError as exc:
            raise UnavailableError(f"online store read failed: {exc}") from exc
        got = {k: (raws[2 * i], raws[2 * i + 1]) for i, k in enumerate(known)}
        return [r.state(k, *got[k]) if k in got else None for k in keys]


class AsyncRedisOnlineStore(AsyncOnlineStore):
    def __init__(self, client: aredis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_WRITE_IF_NEWER)
        self._tiles_script = client.register_script(_WRITE_TILES)
        self._reader = _TileReader(prefix)

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

    async def register_views(self, views: Iterable[FeatureViewDef]) -> None:
        try:
            for v in views:
                await self._client.set(spec_key(self._prefix, v.name, v.version), _spec_json(v))
        except redis.RedisError as exc:
            raise UnavailableError(f"online store spec write failed: {exc}") from exc

    async def write_tiles(self, writes: Sequence[TileWrite]) -> int:
        try:
            applied = 0
            for keys, args in _tile_calls(self._prefix, writes):
                applied += int(await self._tiles_script(keys, args))
            return applied
        except redis.RedisError as exc:
            raise UnavailableError(f"online store tile write failed: {exc}") from exc

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        return await self.read_at(keys, _now_ms())

    async def read_at(self, keys: Sequence[OnlineKey], at_ms: int) -> list[OnlineValue | None]:
        r = self._reader
        try:
            if views := r.unknown_specs(keys):
                r.take_specs(views, await r.queue_specs(self._client.pipeline(transaction=False), views).execute())
            raws = await r.queue_main(self._client.pipeline(transaction=False), keys).execute()
            out, need = r.decode_main(keys, raws, at_ms)
            if need:
                split = [keys[i] for i in need]
                tails = await r.queue_tails(self._client.pipeline(transaction=False), split).execute()
                for i, value in zip(need, r.decode_tails(split, [raws[i] for i in need], tails, at_ms), strict=True):
                    out[i] = value
        except redis.RedisError as exc:
            raise UnavailableError(f"online store read failed: {exc}") from exc
        return out

    async def close(self) -> None:
        await self._client.aclose()


class InMemoryOnlineStore(OnlineStore):
    """The same semantics in dicts, for unit tests: earlier-layout rows and the tile layout."""

    def __init__(self) -> None:
        self.data: dict[OnlineKey, OnlineValue] = {}
        self.specs: dict[tuple[str, int], FeatureViewDef] = {}
        self.tiles: dict[OnlineKey, dict[bytes, bytes]] = {}
        self.tails: dict[OnlineKey, dict[bytes, bytes]] = {}

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

    def register_views(self, views: Iterable[FeatureViewDef]) -> None:
        self.specs.update({(v.name, v.version): v for v in views})

    def write_tiles(self, writes: Sequence[TileWrite]) -> int:
        for w in writes:
            main = self.tiles.setdefault(w.key, {})
            if int(main.get(b"n", b"-1")) < w.newest_ms:
                main[b"n"] = str(w.newest_ms).encode()
            main[b"w"] = str(_now_ms()).encode()
            main.update({f.encode(): v.encode() for f, v in w.tiles.items()})
            for f in w.drop_tiles:
                main.pop(f.encode(), None)
            tail = self.tails.setdefault(w.key, {})
            tail.update({f.encode(): v.encode() for f, v in w.tail.items()})
            for f in w.drop_tail:
                tail.pop(f.encode(), None)
        return len(writes)

    def read_at(self, keys: Sequence[OnlineKey], at_ms: int) -> list[OnlineValue | None]:
        reader = _TileReader(DEFAULT_PREFIX)
        out: list[OnlineValue | None] = []
        for k in keys:
            spec = self.specs.get((k.view, k.version))
            if spec is None:
                out.append(self.data.get(k))
                continue
            main = self.tiles.get(k, {})
            try:
                out.append(reader.evaluate(spec, k, main, at_ms, None))
            except NeedTail:
                tail = [decode_tail_event(f.decode(), v) for f, v in self.tails.get(k, {}).items()]
                out.append(reader.evaluate(spec, k, main, at_ms, tail))
        return out

    def read_state(self, keys: Sequence[OnlineKey]) -> list[OnlineState | None]:
        reader = _TileReader(DEFAULT_PREFIX)
        reader.take_specs(list(self.specs), [v.model_dump_json().encode() for v in self.specs.values()])
        return [
            reader.state(k, self.tiles.get(k, {}), self.tails.get(k, {})) if (k.view, k.version) in self.specs else None
            for k in keys
        ]


class AsyncInMemoryOnlineStore(AsyncOnlineStore):
    """Async face of an `InMemoryOnlineStore`, for unit tests of async code."""

    def __init__(self, store: InMemoryOnlineStore | None = None) -> None:
        self.store = store or InMemoryOnlineStore()

    async def write(self, rows: Sequence[OnlineRow]) -> int:
        return self.store.write(rows)

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        return self.store.read(keys)

    async def read_at(self, keys: Sequence[OnlineKey], at_ms: int) -> list[OnlineValue | None]:
        return self.store.read_at(keys, at_ms)

    async def register_views(self, views: Iterable[FeatureViewDef]) -> None:
        self.store.register_views(views)

    async def write_tiles(self, writes: Sequence[TileWrite]) -> int:
        return self.store.write_tiles(writes)
