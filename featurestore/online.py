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
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis
from redis.exceptions import NoScriptError

from featurestore.definitions import FeatureViewDef
from featurestore.online_layout import (
    DEFAULT_PREFIX,
    WRITE_IF_NEWER,
    OnlineKey,
    OnlineRow,
    OnlineValue,
    online_key,
    write_calls,
)
from featurestore.online_tiles import (
    WRITE_TILES,
    OnlineState,
    TileReader,
    TileWrite,
    decode_tail_event,
    encode_tail_event,
    spec_key,
    tail_key,
    tile_calls,
    tiles_key,
)
from featurestore.tile_senders import ChainedTileSender, RedisScriptStream, TileSender
from featurestore.tiles import NeedTail
from fti_core.errors import UnavailableError

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
    "ViewSample",
    "decode_tail_event",
    "encode_tail_event",
    "online_key",
    "spec_key",
    "tail_key",
    "tiles_key",
]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _spec_json(view: FeatureViewDef) -> str:
    # Unset optional keys left out: readers of the release before them read the spec too.
    return json.dumps(view.document(), separators=(",", ":"))


@dataclass(frozen=True)
class ViewSample:
    """Some stored entities of a view version: their newest event times, the view's spec (None:
    no spec in the store), and whether the whole keyspace was looked at (else an empty sample
    says nothing)."""

    spec: FeatureViewDef | None
    newest_ms: list[int]
    complete: bool = True


# A sample looks at no more than this many keys, however big the keyspace. SCAN calls are
# small (1,000 keys, about a millisecond of Redis) so other clients' commands interleave.
SAMPLE_SCAN_KEYS = 1_000_000
_SCAN_COUNT = 1_000


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


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

    def tile_sender(self) -> TileSender:
        """A sender of tile writes in order, each not waiting for the one before to be applied
        (the worker's); here, `write_tiles` calls chained one after the other."""
        return ChainedTileSender(self.write_tiles)

    async def sample_newest(self, views: Sequence[tuple[str, int]], limit: int) -> dict[tuple[str, int], ViewSample]:
        """Up to `limit` stored entities' newest event times per view version, and its spec: a
        look at how fresh the store is (`fti serve` at start), not a serving read."""
        raise NotImplementedError(f"{type(self).__name__} cannot sample entities")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class RedisOnlineStore(OnlineStore):
    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(WRITE_IF_NEWER)
        self._tiles_script = client.register_script(WRITE_TILES)
        self._reader = TileReader(prefix)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX) -> RedisOnlineStore:
        return cls(redis.Redis.from_url(url), prefix)

    def write(self, rows: Sequence[OnlineRow]) -> int:
        if not rows:
            return 0
        calls = write_calls(self._prefix, rows)
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
            return sum(int(self._tiles_script(keys, args)) for keys, args in tile_calls(self._prefix, writes))
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
        self._script = client.register_script(WRITE_IF_NEWER)
        self._tiles_script = client.register_script(WRITE_TILES)
        self._reader = TileReader(prefix)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, **kwargs: Any) -> AsyncRedisOnlineStore:
        return cls(aredis.Redis.from_url(url, **kwargs), prefix)

    async def write(self, rows: Sequence[OnlineRow]) -> int:
        if not rows:
            return 0
        try:
            return await self._call_all(self._script, write_calls(self._prefix, rows))
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
            return await self._call_all(self._tiles_script, tile_calls(self._prefix, writes))
        except redis.RedisError as exc:
            raise UnavailableError(f"online store tile write failed: {exc}") from exc

    def tile_sender(self) -> TileSender:
        """Tile writes streamed on a connection of their own (`tile_senders.RedisScriptStream`)."""
        prefix = self._prefix
        return RedisScriptStream(self._client, WRITE_TILES, lambda writes: tile_calls(prefix, writes))

    async def _call_all(self, script: Any, calls: Sequence[tuple[list[str], Sequence[str | bytes | int]]]) -> int:
        """Every call of a write script in one round trip, each still its own atomic call
        (readers get in between); the sum of what they return. Awaited one by one, a
        2,000-entity batch took 10 round trips, each waiting for the worker's busy event loop to
        send the next: writes fell behind the batches. Several calls go as EVALSHA straight,
        since a redis-py pipeline of scripts asks SCRIPT EXISTS first; a Redis that lost its
        scripts (restarted) gets them loaded and all the calls again, which changes nothing for
        those that ran (both write scripts are idempotent)."""
        if len(calls) == 1:  # the common case: redis-py's call loads the script when needed
            return int(await script(*calls[0]))
        try:
            return await self._evalsha_pipeline(script.sha, calls)
        except NoScriptError:
            await self._client.script_load(script.script)
            return await self._evalsha_pipeline(script.sha, calls)

    async def _evalsha_pipeline(self, sha: str, calls: Sequence[tuple[list[str], Sequence[str | bytes | int]]]) -> int:
        pipe = self._client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        return sum(int(r) for r in await pipe.execute())

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        return await self.read_at(keys, _now_ms())

    async def sample_newest(self, views: Sequence[tuple[str, int]], limit: int) -> dict[tuple[str, int], ViewSample]:
        # One SCAN pass over the tiles keys for all views, bucketed by view; bounded by SAMPLE_SCAN_KEYS.
        heads = {tiles_key(self._prefix, OnlineKey(v, ver, "")).encode(): (v, ver) for v, ver in views}
        found: dict[tuple[str, int], list[bytes]] = {v: [] for v in heads.values()}
        try:
            specs = [await self._client.get(spec_key(self._prefix, v, ver)) for v, ver in views]
            cursor, scanned = 0, 0
            match = f"{_glob_escape(self._prefix)}:tiles:*"
            while scanned < SAMPLE_SCAN_KEYS and any(len(keys) < limit for keys in found.values()):
                cursor, got = await self._client.scan(cursor, match=match, count=_SCAN_COUNT)
                scanned += _SCAN_COUNT
                for found_key in got:
                    key = found_key if isinstance(found_key, bytes) else str(found_key).encode()
                    for head, view in heads.items():
                        if key.startswith(head) and len(found[view]) < limit:
                            found[view].append(key)
                if cursor == 0:
                    break
            pipe = self._client.pipeline(transaction=False)
            for keys in found.values():
                for k in keys:
                    pipe.hget(k, "n")
            newest = iter(await pipe.execute())
        except redis.RedisError as exc:
            raise UnavailableError(f"online store sample failed: {exc}") from exc
        out = {}
        for (view, keys), raw in zip(found.items(), specs, strict=True):
            times = [int(n) for n in (next(newest) for _ in keys) if n is not None]
            spec = FeatureViewDef.model_validate_json(raw) if raw else None
            out[view] = ViewSample(spec, times, complete=cursor == 0 or len(keys) >= limit)
        return out

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
        reader = TileReader(DEFAULT_PREFIX)
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
        reader = TileReader(DEFAULT_PREFIX)
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

    async def sample_newest(self, views: Sequence[tuple[str, int]], limit: int) -> dict[tuple[str, int], ViewSample]:
        out = {}
        for view in views:
            hashes = [h for k, h in self.store.tiles.items() if (k.view, k.version) == view and b"n" in h]
            out[view] = ViewSample(self.store.specs.get(view), [int(h[b"n"]) for h in hashes[:limit]])
        return out
