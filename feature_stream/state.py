"""Durable worker state: per message key (dedup + watermark) and per view entity (retained events).

State lives outside the Kafka consumer so a restarted or newly assigned worker continues
exactly: it is written *after* the outputs of the batches it covers (archive, forwards,
feature rows) and *before* their offsets are acked, in Redis script calls of bounded size,
each hash's changes atomic (the processor buffers both across batches). After a `kill -9`
the state may be ahead of the committed offsets (wholly or for some hashes), never behind;
replayed messages are recognised by their recorded position (topic/partition/offset) and
re-emitted with the decisions taken the first time, so nothing is lost and nothing is
counted twice.

Redis layout under the state prefix (values are MessagePack, one packed record per event):
  `<p>:id:<event_type>:<event_id>`    the position that first claimed the event id (expires after
                                      the dedup retention): one event per (type, id) across keys
  `<p>:in:<msg_key>`                  hash event_id -> msgpack [position, time_ms, watermark_ms - time_ms]
(the key's watermark is the newest time among its remembered ids, so writes only ever add)
  `<p>:vw:<view>:v<ver>:<entity>`     hash event_id -> msgpack [time_ms, {field: value}]
Values keep their type exactly (int64, float64, str, bool). A packed record starts with a
fixarray byte (0x93 / 0x92), which no text value of the earlier JSON layout
("position|time_ms|watermark_ms", `[time_ms, {...}]`) starts with: fields in that layout are
still read, and rewritten packed when their hash is loaded (a compare-and-set per field, so a
field another worker changed or dropped meanwhile is left alone). A downgrade to a worker
that reads only the JSON layout is not supported.
"""

from __future__ import annotations

import itertools
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import msgspec
import redis
import redis.asyncio as aredis
from mypy_extensions import mypyc_attr

from feature_stream.aggregate import Rec
from featurestore.online_tiles import LUA_HASH_HELPERS
from fti_core.errors import UnavailableError

__all__ = [
    "SAVE_FIELDS_PER_CALL",
    "Claim",
    "EntityChanges",
    "InMemoryStateStore",
    "KeyChanges",
    "KeyState",
    "RedisStateStore",
    "Seen",
    "StateStore",
    "pack_rec",
    "pack_seen",
    "unpack_rec",
    "unpack_seen",
]

log = logging.getLogger("feature_stream.state")

EntityRef = tuple[str, str]  # (view ref "name:version", entity key)


class Seen(NamedTuple):
    """What the ingest stage recorded of an event on its message key (one per event: a tuple,
    the cheapest immutable record to build; a frozen dataclass costs ~6x as much)."""

    position: str
    time_ms: int
    watermark_ms: int


@dataclass
class EntityChanges:
    """Events added to and removed from view entities since the last save; an id is in at most one."""

    added: dict[EntityRef, dict[str, Rec]] = field(default_factory=dict)
    dropped: dict[EntityRef, set[str]] = field(default_factory=dict)

    def add(self, ref: EntityRef, rec: Rec) -> None:
        self.added.setdefault(ref, {})[rec.event_id] = rec
        if ref in self.dropped:
            self.dropped[ref].discard(rec.event_id)

    def drop(self, ref: EntityRef, ids: Sequence[str]) -> None:
        if not ids:
            return
        held = self.added.get(ref)
        if held:
            for eid in ids:
                held.pop(eid, None)
        self.dropped.setdefault(ref, set()).update(ids)


@dataclass(frozen=True, slots=True)
class KeyChanges:
    added: Mapping[str, Seen]
    dropped: Set[str]

    def __init__(self, added: Mapping[str, Seen], dropped: Set[str]) -> None:
        # Written out (`fti_core.native`: frozen dataclasses): one per touched key.
        object.__setattr__(self, "added", added)
        object.__setattr__(self, "dropped", dropped)


@dataclass
class KeyState:
    """What the ingest stage knows about one message key."""

    max_ms: int = -1
    seen: dict[str, Seen] = field(default_factory=dict)
    added: dict[str, Seen] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    pruned_at: int = -(2**62)  # the horizon of the last scan

    def take_changes(self) -> KeyChanges:
        """What changed since the last call (`added`, `dropped`), leaving both empty."""
        changes = KeyChanges(self.added, self.dropped)
        self.added, self.dropped = {}, set()
        return changes

    def prune(self, horizon_ms: int, every_ms: int = 0) -> int:
        """Forget ids older than `horizon_ms`; returns how many. A scan visits every remembered
        id (a day of a key's events by default), so with `every_ms` it waits until the horizon
        has moved that far since the last one: ids are then remembered up to `every_ms` longer."""
        if horizon_ms < self.pruned_at + every_ms:
            return 0
        self.pruned_at = horizon_ms
        old = [e for e, s in self.seen.items() if s.time_ms < horizon_ms]
        for eid in old:
            del self.seen[eid]
            self.added.pop(eid, None)
            self.dropped.add(eid)
        return len(old)


# Packed records. One encoder and typed decoders shared by every call (one call per event).
_pack = msgspec.msgpack.Encoder().encode
_unpack_seen = msgspec.msgpack.Decoder(tuple[str, int, int]).decode
_unpack_rec = msgspec.msgpack.Decoder(tuple[int, dict[str, Any]]).decode
_SEEN_HEAD, _REC_HEAD = 0x93, 0x92  # msgpack fixarray of 3 / of 2


def _is_packed(raw: bytes, head: int) -> bool:
    return len(raw) > 0 and raw[0] == head


def pack_seen(seen: Seen) -> bytes:
    # The watermark as an offset from the event's time: usually a few bytes, not nine.
    return _pack((seen.position, seen.time_ms, seen.watermark_ms - seen.time_ms))


def unpack_seen(raw: bytes) -> Seen:
    """A packed `Seen`, or one in the earlier text layout "position|time_ms|watermark_ms"."""
    if _is_packed(raw, _SEEN_HEAD):
        pos, t, dw = _unpack_seen(raw)
        return Seen(pos, t, t + dw)
    text, t_text, wm_text = raw.decode().rsplit("|", 2)
    return Seen(text, int(t_text), int(wm_text))


def pack_rec(rec: Rec) -> bytes:
    values = rec.values if type(rec.values) is dict else dict(rec.values)  # msgspec packs dicts
    return _pack((rec.time_ms, values))


def unpack_rec(event_id: str, raw: bytes) -> Rec:
    """A packed event, or one in the earlier JSON layout `[time_ms, {field: value}]`."""
    if _is_packed(raw, _REC_HEAD):
        t, values = _unpack_rec(raw)
        return Rec(t, event_id, values)
    t, values = json.loads(raw)
    return Rec(int(t), event_id, values)


def _lua_str(raw: bytes) -> msgspec.Raw:
    """`raw` as a MessagePack str inside a script's argument. Redis's cmsgpack reads no bin
    types, and a str is taken as the bytes it holds, so a packed value reaches HSET intact."""
    n = len(raw)
    if n < 32:
        head = bytes((0xA0 | n,))
    elif n < 0x100:
        head = bytes((0xD9, n))
    elif n < 0x10000:
        head = b"\xda" + n.to_bytes(2, "big")
    else:
        head = b"\xdb" + n.to_bytes(4, "big")
    return msgspec.Raw(head + raw)


# One script call per save instead of one HSET/HDEL per hash in a MULTI: atomic all the same,
# and the client packs one argument per hash plus one MessagePack document rather than every
# field. KEYS = the changed hashes; ARGV[1] = msgpack array aligned with KEYS of
# [{field: value to set}, [fields to delete]] (set first, then delete, as the MULTI did).
# HSET/HDEL go in slices (`LUA_HASH_HELPERS`). cmsgpack carries the packed values as they are.
_SAVE = (
    LUA_HASH_HELPERS
    + """
local ops = cmsgpack.unpack(ARGV[1])
for i, key in ipairs(KEYS) do
  hset(key, ops[i][1])
  hdel(key, ops[i][2])
end
return #KEYS
"""
)

# KEYS = hashes holding fields of the earlier layout; ARGV[1] = msgpack array aligned with KEYS
# of [field, value read, packed value, ...]: a field is rewritten only while it still holds
# what was read, so a concurrent save (another worker after a rebalance) always wins.
_REPACK = """
local ops = cmsgpack.unpack(ARGV[1])
local n = 0
for i, key in ipairs(KEYS) do
  local t = ops[i]
  for j = 1, #t, 3 do
    if redis.call('HGET', key, t[j]) == t[j + 1] then
      redis.call('HSET', key, t[j], t[j + 2])
      n = n + 1
    end
  end
end
return n
"""

# A script blocks Redis while it runs (the online store and `fti serve` share it): a catch-up
# flush holds tens of thousands of fields, which as one script took up to ~300 ms. Calls of
# this many fields take a few ms each. Each hash's changes stay whole in one call, and that is
# all a replay needs: a key's dedup decisions and an entity's events are each in one hash, and
# a replay recomputes the same decisions from whichever state (old or new) a hash holds.
SAVE_FIELDS_PER_CALL = 2000


# KEYS = claim keys; ARGV[1] = retention ms, ARGV[2..] = the position claiming each key.
# Returns, per key, the position that holds it (the caller's when it won or already held it).
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local pos = ARGV[i + 1]
  if redis.call('SET', key, pos, 'NX', 'PX', ARGV[1]) then
    out[i] = pos
  else
    out[i] = redis.call('GET', key) or pos
  end
end
return out
"""

Claim = tuple[str, str, str]  # (event_type, event_id, position)

# (hash name, field, value read, packed value): a field of the earlier layout to rewrite.
_Repack = tuple[str, bytes, bytes, bytes]


# Implemented outside the compiled hot path (fti_core.native): Kafka, tests, benches.
@mypyc_attr(allow_interpreted_subclasses=True)
class StateStore(ABC):
    @abstractmethod
    async def claim(self, claims: Sequence[Claim], retention_ms: int) -> list[str]:
        """Claim each (type, id) for a position, in order; the position that holds each claim."""

    @abstractmethod
    async def load_keys(self, keys: Sequence[str]) -> dict[str, KeyState]: ...

    @abstractmethod
    async def load_entities(self, refs: Sequence[EntityRef]) -> dict[EntityRef, list[Rec]]: ...

    @abstractmethod
    async def save(self, keys: Mapping[str, KeyChanges], changes: EntityChanges) -> None:
        """Persist what changed for message keys and view entities, each hash's changes atomically."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class RedisStateStore(StateStore):
    def __init__(self, client: aredis.Redis, prefix: str) -> None:
        self._r = client
        self._p = prefix
        self._save = client.register_script(_SAVE)
        self._claim = client.register_script(_CLAIM)
        self._repack = client.register_script(_REPACK)
        self.repacked = 0  # fields of the earlier layout this store rewrote packed

    async def claim(self, claims: Sequence[Claim], retention_ms: int) -> list[str]:
        out: list[str] = []
        try:
            for i in range(0, len(claims), 2000):
                part = claims[i : i + 2000]
                keys = [f"{self._p}:id:{t}:{eid}" for t, eid, _ in part]
                got = await self._claim(keys, [max(1, retention_ms), *(pos for _, _, pos in part)])
                out += [g.decode() if isinstance(g, bytes) else str(g) for g in got]
        except redis.RedisError as exc:
            raise UnavailableError(f"event id claim failed: {exc}") from exc
        return out

    def _in(self, key: str) -> str:
        return f"{self._p}:in:{key}"

    def _vw(self, ref: EntityRef) -> str:
        view, _, version = ref[0].partition(":")
        return f"{self._p}:vw:{view}:v{version}:{ref[1]}"

    async def _hgetall_many(self, names: Sequence[str]) -> list[dict[bytes, bytes]]:
        """Every hash in one round trip."""
        try:
            pipe = self._r.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(name)
            raws: list[dict[bytes, bytes]] = await pipe.execute()
        except redis.RedisError as exc:
            raise UnavailableError(f"state load failed: {exc}") from exc
        return raws

    async def load_keys(self, keys: Sequence[str]) -> dict[str, KeyState]:
        names = [self._in(k) for k in keys]
        raws = await self._hgetall_many(names)
        out: dict[str, KeyState] = {}
        legacy: list[_Repack] = []
        for k, name, raw in zip(keys, names, raws, strict=True):
            st = KeyState()
            for f, v in raw.items():
                seen = st.seen[f.decode()] = unpack_seen(v)
                if not _is_packed(v, _SEEN_HEAD):
                    legacy.append((name, f, v, pack_seen(seen)))
            st.max_ms = max((s.time_ms for s in st.seen.values()), default=-1)
            out[k] = st
        await self._repack_legacy(legacy)
        return out

    async def load_entities(self, refs: Sequence[EntityRef]) -> dict[EntityRef, list[Rec]]:
        names = [self._vw(ref) for ref in refs]
        raws = await self._hgetall_many(names)
        out: dict[EntityRef, list[Rec]] = {}
        legacy: list[_Repack] = []
        for ref, name, raw in zip(refs, names, raws, strict=True):
            recs = out[ref] = []
            for f, v in raw.items():
                rec = unpack_rec(f.decode(), v)
                recs.append(rec)
                if not _is_packed(v, _REC_HEAD):
                    legacy.append((name, f, v, pack_rec(rec)))
        await self._repack_legacy(legacy)
        return out

    async def _repack_legacy(self, fields: Sequence[_Repack]) -> None:
        """Rewrite fields of the earlier layout packed, in calls of bounded size. The values are
        the same, so this may run at any time: a crash before or after it changes nothing."""
        if not fields:
            return
        if not self.repacked:
            log.warning("worker state in the earlier JSON layout found: rewriting it packed as it is loaded")
        by_hash: dict[str, list[msgspec.Raw]] = {}
        for name, f, old, new in fields:
            by_hash.setdefault(name, []).extend((_lua_str(f), _lua_str(old), _lua_str(new)))
        try:
            for names, ops in _bounded(by_hash.items(), lambda t: len(t) // 3):
                self.repacked += await self._repack(names, [_pack(ops)])
        except redis.RedisError as exc:
            raise UnavailableError(f"state load failed (rewriting the earlier layout): {exc}") from exc

    def _save_calls(self, keys: Mapping[str, KeyChanges], changes: EntityChanges) -> Iterator[tuple[list[str], bytes]]:
        """The `_SAVE` script calls of a save: each its KEYS and ARGV[1] (each changed hash and
        its [set, delete] fields), a hash's changes always whole in one call, and a call no
        larger than `SAVE_FIELDS_PER_CALL` fields unless one hash alone is. Lazily: encoding a
        catch-up flush's state at once held the event loop for most of a second."""
        ops = (
            (name, (sets, deletes))
            for name, sets, deletes in itertools.chain(self._key_ops(keys), self._entity_ops(changes))
        )
        for names, docs in _bounded(ops, lambda op: len(op[0]) + len(op[1])):
            yield names, _pack(docs)

    def _key_ops(self, keys: Mapping[str, KeyChanges]) -> Iterator[tuple[str, dict[str, msgspec.Raw], list[str]]]:
        for k, st in keys.items():
            if st.added or st.dropped:
                yield self._in(k), {eid: _lua_str(pack_seen(s)) for eid, s in st.added.items()}, list(st.dropped)

    def _entity_ops(self, changes: EntityChanges) -> Iterator[tuple[str, dict[str, msgspec.Raw], list[str]]]:
        for ref in dict.fromkeys([*changes.added, *changes.dropped]):  # ordered union
            recs, ids = changes.added.get(ref), changes.dropped.get(ref)
            if recs or ids:
                yield self._vw(ref), {eid: _lua_str(pack_rec(r)) for eid, r in (recs or {}).items()}, list(ids or ())

    async def save(self, keys: Mapping[str, KeyChanges], changes: EntityChanges) -> None:
        try:
            for names, ops in self._save_calls(keys, changes):
                await self._save(names, [ops])
        except redis.RedisError as exc:
            raise UnavailableError(f"state save failed: {exc}") from exc

    async def close(self) -> None:
        await self._r.aclose()


_T = TypeVar("_T")


def _bounded(items: Iterable[tuple[str, _T]], size: Callable[[_T], int]) -> Iterator[tuple[list[str], list[_T]]]:
    """`(hash, op)` pairs grouped into script calls of at most `SAVE_FIELDS_PER_CALL` fields
    (a hash's op always whole, alone in its call when it is larger)."""
    names: list[str] = []
    ops: list[_T] = []
    total = 0
    for name, op in items:
        n = size(op)
        if names and total + n > SAVE_FIELDS_PER_CALL:
            yield names, ops
            names, ops, total = [], [], 0
        names.append(name)
        ops.append(op)
        total += n
    if names:
        yield names, ops


class InMemoryStateStore(StateStore):
    """The same contract in dicts, for unit tests."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Seen]] = {}
        self.entities: dict[EntityRef, dict[str, Rec]] = {}
        self.claims: dict[tuple[str, str], str] = {}

    async def claim(self, claims: Sequence[Claim], retention_ms: int) -> list[str]:
        return [self.claims.setdefault((t, eid), pos) for t, eid, pos in claims]

    async def load_keys(self, keys: Sequence[str]) -> dict[str, KeyState]:
        out = {}
        for k in keys:
            seen = self.keys.get(k, {})
            out[k] = KeyState(max((s.time_ms for s in seen.values()), default=-1), dict(seen))
        return out

    async def load_entities(self, refs: Sequence[EntityRef]) -> dict[EntityRef, list[Rec]]:
        return {ref: list(self.entities.get(ref, {}).values()) for ref in refs}

    async def save(self, keys: Mapping[str, KeyChanges], changes: EntityChanges) -> None:
        for k, st in keys.items():
            seen = self.keys.setdefault(k, {})
            seen.update(st.added)
            for eid in st.dropped:
                seen.pop(eid, None)
        for ref, recs in changes.added.items():
            self.entities.setdefault(ref, {}).update(recs)
        for ref, ids in changes.dropped.items():
            for eid in ids:
                self.entities.get(ref, {}).pop(eid, None)
