"""The online store's Redis layout of read-time windows: spec, tiles and tail keys (see `featurestore.online`).

The I/O-free half of the store: key names, the write script, and `TileReader`, which says what
to queue on a pipeline and turns the replies into values evaluated at a read time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from featurestore.definitions import FeatureViewDef
from featurestore.online_eval import compiled
from featurestore.online_layout import READ_FIELDS, OnlineKey, OnlineValue, P, decode_value, online_key
from featurestore.tiles import Event, NeedTail, Tile, Values, decode_tile, evaluate_tiles
from fti_core.errors import IntegrityError

__all__ = [
    "EXPIRY_SLACK",
    "LUA_HASH_HELPERS",
    "SPEC_RETRY_S",
    "TILE_WRITE_CHUNK",
    "WRITE_TILES",
    "OnlineState",
    "TileReader",
    "TileWrite",
    "decode_tail_event",
    "encode_tail_event",
    "spec_key",
    "tail_key",
    "tile_calls",
    "tiles_key",
]

log = logging.getLogger("featurestore.online")


def spec_key(prefix: str, view: str, version: int) -> str:
    return f"{prefix}:spec:{view}:v{version}"


def tiles_key(prefix: str, key: OnlineKey) -> str:
    return f"{prefix}:tiles:{key.view}:v{key.version}:{key.entity_key}"


def tail_key(prefix: str, key: OnlineKey) -> str:
    return f"{prefix}:tail:{key.view}:v{key.version}:{key.entity_key}"


_compact_json = json.JSONEncoder(separators=(",", ":")).encode


_tail_json = msgspec.json.Encoder().encode


def encode_tail_event(event: Event) -> str:
    """`[time_ms, {field: value}]` as JSON. msgspec's encoder writes what `json.loads` reads as
    the same values (floats in their shortest round-trip form) at a fraction of the cost;
    values are finite (non-finite ones are dead-lettered), and an integer beyond 64 bits falls
    back to the standard library."""
    try:
        return _tail_json((event.time_ms, event.values)).decode()
    except (OverflowError, TypeError, msgspec.EncodeError):
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
    tiles: Mapping[str, str]  # the defaults: `__init__`'s
    drop_tiles: Sequence[str]
    tail: Mapping[str, str]
    drop_tail: Sequence[str]

    def __init__(
        self,
        key: OnlineKey,
        newest_ms: int,
        expire_ms: int,
        tiles: Mapping[str, str] | None = None,
        drop_tiles: Sequence[str] = (),
        tail: Mapping[str, str] | None = None,
        drop_tail: Sequence[str] = (),
    ) -> None:
        # Written out (`fti_core.native`: frozen dataclasses): one per entity update.
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "newest_ms", newest_ms)
        object.__setattr__(self, "expire_ms", expire_ms)
        object.__setattr__(self, "tiles", {} if tiles is None else tiles)
        object.__setattr__(self, "drop_tiles", drop_tiles)
        object.__setattr__(self, "tail", {} if tail is None else tail)
        object.__setattr__(self, "drop_tail", drop_tail)

    def doc(self, now_ms: str) -> list[object]:
        """The write script's op. Numbers as text: Lua's numbers are doubles. `now_ms`: the
        time written as 'w', one for all the ops of a call (`tile_calls`)."""
        return [str(self.newest_ms), str(self.expire_ms), now_ms,
                _dict(self.tiles), _list(self.drop_tiles), _dict(self.tail), _list(self.drop_tail)]  # fmt: skip


def _dict(m: Mapping[str, str]) -> dict[str, str]:
    return m if isinstance(m, dict) else dict(m)  # the usual case: already one, not copied


def _list(s: Sequence[str]) -> Sequence[str]:
    return s if isinstance(s, list | tuple) else list(s)  # what MessagePack writes as an array


# Lua: `hset(key, {field: value})` and `hdel(key, {fields})` in slices, because unpack() of a
# huge table exceeds Lua's C stack. Shared by every script that writes whole hashes.
LUA_HASH_HELPERS = """
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
"""


# KEYS = (tiles hash, tail hash) per write; ARGV[1] = MessagePack array of `TileWrite.doc()`.
# MessagePack, not JSON: the tiles are JSON text already, and JSON around them escaped every
# quote (and Lua unescaped it again); cmsgpack takes a str as the bytes it holds.
# `n` only ever grows; tiles and tail events are set whole, so replays are idempotent.
# A write leaves each key at least its expiry (`TileWrite.expire_ms`) to live. An expiry is
# renewed only when less than that is left, and then to an eighth more (`EXPIRY_SLACK`): a
# busy entity's keys get a PEXPIRE about once per eighth of the expiry rather than at every
# write, which took ~2 of the ~30 µs of Redis CPU and 157 of the 743 append-only bytes of a
# live write (bench/feature_pipeline/redis_writes.py). A key missing its expiry (written by
# hand, restored) gets one at its next write.
EXPIRY_SLACK = 8  # keys live from their expiry to 1 + 1/EXPIRY_SLACK of it after their last write
WRITE_TILES = (
    LUA_HASH_HELPERS
    + """
local function refresh(key, ms)
  local left = redis.call('PTTL', key)
  if left ~= -2 and left < ms then
    redis.call('PEXPIRE', key, string.format('%d', ms + math.floor(ms / """
    + str(EXPIRY_SLACK)
    + """)))
  end
end
local ops = cmsgpack.unpack(ARGV[1])
for i, op in ipairs(ops) do
  local key, tail = KEYS[2 * i - 1], KEYS[2 * i]
  -- 'w', 'n' (when newer) and the tiles in one HSET: their fields never overlap.
  local args, n = {'w', op[3]}, 2
  local cur = redis.call('HGET', key, 'n')
  if not cur or tonumber(cur) < tonumber(op[1]) then args[3], args[4] = 'n', op[1]; n = 4 end
  for f, v in pairs(op[4]) do
    args[n + 1], args[n + 2] = f, v
    n = n + 2
    if n >= SLICE then redis.call('HSET', key, unpack(args, 1, n)); n = 0 end
  end
  if n > 0 then redis.call('HSET', key, unpack(args, 1, n)) end
  hdel(key, op[5])
  hset(tail, op[6])
  hdel(tail, op[7])
  local ms = tonumber(op[2])
  refresh(key, ms)
  refresh(tail, ms)  -- no tail key (no event in its tiles): none is made
end
return #ops
"""
)

TILE_WRITE_CHUNK = 200

_pack_docs = msgspec.msgpack.Encoder().encode


def tile_calls(prefix: str, writes: Sequence[TileWrite]) -> list[tuple[list[str], list[bytes]]]:
    calls = []
    for start in range(0, len(writes), TILE_WRITE_CHUNK):
        chunk = writes[start : start + TILE_WRITE_CHUNK]
        keys = [k for w in chunk for k in (tiles_key(prefix, w.key), tail_key(prefix, w.key))]
        now_ms = str(int(time.time() * 1000))
        calls.append((keys, [_pack_docs([w.doc(now_ms) for w in chunk])]))
    return calls


@dataclass(frozen=True)
class OnlineState:
    """Everything stored for one entity of one view (for `verify`: evaluate it at many times)."""

    spec: FeatureViewDef
    key: OnlineKey
    newest_ms: int  # -1 when nothing is stored
    tiles: Mapping[tuple[int, int], Tile]
    tail: Sequence[Event]

    def at(self, t: int) -> Values:
        """The values a reader gets at t (the tail only where a current tile holds later events)."""
        try:
            return evaluate_tiles(self.spec, self.tiles, t)
        except NeedTail:
            return evaluate_tiles(self.spec, self.tiles, t, self.tail)


# A view without a spec in Redis is looked up again after this long (a worker may start later).
SPEC_RETRY_S = 5.0


class TileReader:
    """The I/O-free half of a read: which commands to queue, and the values from their replies."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._specs: dict[tuple[str, int], tuple[FeatureViewDef | None, float]] = {}
        self._warned: set[tuple[str, int]] = set()

    def unknown_specs(self, keys: Sequence[OnlineKey]) -> list[tuple[str, int]]:
        now = time.monotonic()
        views = dict.fromkeys((k.view, k.version) for k in keys)
        return [
            v for v in views if (got := self._specs.get(v)) is None or (got[0] is None and now - got[1] > SPEC_RETRY_S)
        ]

    def queue_specs(self, pipe: P, views: Sequence[tuple[str, int]]) -> P:
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

    def queue_main(self, pipe: P, keys: Sequence[OnlineKey]) -> P:
        for k in keys:
            if self.spec(k) is not None:
                pipe.hgetall(tiles_key(self.prefix, k))
            else:
                pipe.hmget(online_key(self.prefix, k), READ_FIELDS)
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
        if tail is None:  # the common case: straight from the hash's bytes (`online_eval`)
            newest, written, values = compiled(spec).evaluate(raw, at_ms, tiles_key(self.prefix, key))
        else:
            newest, written, tiles = self.parse(spec, key, raw)
            values = evaluate_tiles(spec, tiles, at_ms, tail)
        return OnlineValue(key.view, key.version, key.entity_key, newest, written, 0, values, at_ms, spec.ttl_ms)

    def state(self, key: OnlineKey, main: Mapping[bytes, bytes], tail: Mapping[bytes, bytes]) -> OnlineState:
        spec = self.spec(key)
        assert spec is not None
        newest, _, tiles = self.parse(spec, key, main)
        return OnlineState(spec, key, newest, tiles, [decode_tail_event(f.decode(), v) for f, v in tail.items()])

    def queue_tails(self, pipe: P, keys: Sequence[OnlineKey]) -> P:
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
