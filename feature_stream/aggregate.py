"""The streaming engine's per-entity state: retained events and the tiles built from them.

The semantics (a window read at t) and the tile maths live in `featurestore.tiles` and
`featurestore.aggregations`, shared with the backfill, `verify`, the trainer and the server.
Here, per view entity, the worker keeps the accepted events that reads at
`t >= newest - future_skew` can still see (from `tiles.horizon_ms` on) and their tiles,
updated one event at a time (exact partials: the same values as rebuilding them in any
order). `EntityState.apply` returns what changed as one `TileWrite` (whole tiles, raw tail
events), so writing it twice, or after a replay, leaves the online store as it was.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from featurestore.accepted import is_late
from featurestore.aggregations import kind_of
from featurestore.definitions import FeatureViewDef
from featurestore.online import OnlineKey, TileWrite, encode_tail_event
from featurestore.tiles import (
    Event,
    Tile,
    TileKey,
    build_tiles,
    encode_tile,
    horizon_ms,
    tail_start_ms,
    tile_field,
    tile_start,
    tile_steps,
)

__all__ = ["EntityState", "Rec", "Update", "expire_ms", "is_late"]

Rec = Event  # the worker state's name for an accepted event


def expire_ms(view: FeatureViewDef, future_skew_ms: int) -> int:
    """How long an entity's online keys live without writes: never less than a window reaches."""
    return max(view.ttl_ms, max(f.window.size_ms for f in view.features)) + future_skew_ms


@dataclass(frozen=True, slots=True)
class Update:
    """What one batch did to an entity: the online write, and the state events added and dropped."""

    write: TileWrite | None
    added: list[Rec]
    dropped: list[str]
    beyond_horizon: int  # accepted events too old to be seen by any online read (archived, exact)


class EntityState:
    """The retained accepted events of one view entity, sorted by (time, id), and their tiles."""

    def __init__(self, view: FeatureViewDef, recs: Iterable[Rec] = ()) -> None:
        self.view = view
        self.recs: list[Rec] = sorted(recs, key=lambda r: r.order)
        self._keys = [r.order for r in self.recs]
        self._ids = {r.event_id for r in self.recs}
        self._steps = tile_steps(view)
        # Per step, its features as (name, kind, field, filter): looked up once, used per event.
        self._plan = [
            (s, [(f.name, kind_of(f.agg), f.field, f.filter) for f in view.features if f.window.step_ms == s])
            for s in self._steps
        ]
        self._tiles: dict[TileKey, Tile] = build_tiles(view, self.recs)

    def __len__(self) -> int:
        return len(self.recs)

    @property
    def newest_ms(self) -> int | None:
        return self.recs[-1].time_ms if self.recs else None

    def _insert(self, rec: Rec) -> bool:
        if rec.event_id in self._ids:
            return False  # a replay (or the same event under another message key)
        i = bisect_right(self._keys, rec.order)
        self._keys.insert(i, rec.order)
        self.recs.insert(i, rec)
        self._ids.add(rec.event_id)
        t, eid, values = rec.time_ms, rec.event_id, rec.values
        for s, features in self._plan:
            key = (s, tile_start(t, s))
            tile = self._tiles.get(key)
            if tile is None:
                tile = self._tiles[key] = Tile(t, {name: kind.empty() for name, kind, _, _ in features})
            elif t > tile.max_time_ms:
                tile = self._tiles[key] = tile._replace(max_time_ms=t)
            # The cache owns its tiles' partials (dicts built here or by `build_tiles`): updated in place.
            partials = cast(dict[str, Any], tile.partials)
            for name, kind, field, flt in features:
                if flt is None or flt.test(values):  # `tiles.passes`: the feature's `where` filter
                    partials[name] = kind.add(partials[name], t, eid, values.get(field) if field else None)
        return True

    def _between(self, lo_ms: int, hi_ms: int) -> list[Rec]:
        """Held events with lo_ms <= time < hi_ms."""
        return self.recs[bisect_left(self._keys, (lo_ms, "")) : bisect_left(self._keys, (hi_ms, ""))]

    def _prune(self, horizon: int) -> list[Rec]:
        cut = bisect_left(self._keys, (horizon, ""))
        dropped = self.recs[:cut]
        del self.recs[:cut]
        del self._keys[:cut]
        self._ids.difference_update(r.event_id for r in dropped)
        for key in [k for k in self._tiles if k[1] < horizon]:
            del self._tiles[key]
        return dropped

    def apply(self, recs: Sequence[Rec], entity_key: str, future_skew_ms: int) -> Update:
        """Add accepted events; the tiles and tail events that changed, and what leaves the state."""
        view = self.view
        old_newest = self.newest_ms
        added = [r for r in recs if self._insert(r)]
        newest = self.newest_ms
        if not added or newest is None:
            return Update(None, [], [], 0)
        horizon = horizon_ms(view, newest, future_skew_ms)
        tail_from = tail_start_ms(view, newest, future_skew_ms)
        touched = {(s, tile_start(r.time_ms, s)) for r in added for s in self._steps}
        # Tiles are written whole; those starting before the horizon are never read.
        tiles = {tile_field(k): encode_tile(view, self._tiles[k]) for k in touched if k[1] >= horizon}
        tail = {r.event_id: encode_tail_event(r) for r in added if r.time_ms >= tail_from}
        left_tail: list[str] = []
        if old_newest is not None:
            old_from = tail_start_ms(view, old_newest, future_skew_ms)
            left_tail = [r.event_id for r in self._between(old_from, tail_from)]
        dropped = self._prune(horizon)
        drop_tiles = {tile_field((s, tile_start(r.time_ms, s))) for r in dropped for s in self._steps}
        write = TileWrite(
            OnlineKey(view.name, view.version, entity_key),
            newest,
            expire_ms(view, future_skew_ms),
            tiles,
            sorted(drop_tiles - set(tiles)),
            {k: v for k, v in tail.items() if k not in {r.event_id for r in dropped}},
            sorted(set(left_tail) | {r.event_id for r in dropped}),
        )
        beyond = sum(r.time_ms < horizon for r in added)
        return Update(write, added, [r.event_id for r in dropped], beyond)
