"""Batch engine: a view's online state recomputed from the raw archive with the shared maths.

Training sets need no backfill: the trainer evaluates every window at its label times from
the archive (`featurestore.tiles.evaluate_events`). What a new view version needs is its
online state: per entity, the tiles and tail events a read at `t >= newest - future_skew`
uses, built by `featurestore.tiles.build_tiles` from the accepted events
(`featurestore.accepted`), exactly what the worker would hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from feature_stream.aggregate import expire_ms
from feature_stream.settings import FeatureStreamSettings
from featurestore.accepted import EntityEvents, ParsedArchive, accepted_events
from featurestore.catalogue import Catalogue
from featurestore.definitions import DefinitionError, FeatureViewDef, load_definitions
from featurestore.offline import OfflineStore
from featurestore.online import OnlineKey, RedisOnlineStore, TileWrite, encode_tail_event
from featurestore.tiles import build_tiles, encode_tile, horizon_ms, tail_start_ms, tile_field

__all__ = ["compute_view", "parse_view_ref", "run_backfill", "tile_writes"]


def parse_view_ref(ref: str) -> tuple[str, int]:
    name, _, version = ref.partition(":")
    if not version.isdigit():
        raise DefinitionError(f"view reference {ref!r}: use NAME:VERSION")
    return name, int(version)


def compute_view(
    view: FeatureViewDef, archive: pd.DataFrame | ParsedArchive, entities: Iterable[str] | None = None
) -> dict[str, EntityEvents]:
    """Every entity's accepted events of `view` in `archive` (or only `entities`)."""
    return accepted_events(view, archive, entities)


def tile_writes(view: FeatureViewDef, events: Mapping[str, EntityEvents], future_skew_ms: int) -> list[TileWrite]:
    """The online state of each entity, as whole tiles and tail events."""
    out = []
    for entity, got in sorted(events.items()):
        if not got.events:
            continue
        newest = got.events[-1].time_ms
        horizon = horizon_ms(view, newest, future_skew_ms)
        tail_from = tail_start_ms(view, newest, future_skew_ms)
        tiles = build_tiles(view, (e for e in got.events if e.time_ms >= horizon), since_ms=horizon)
        out.append(
            TileWrite(
                OnlineKey(view.name, view.version, entity),
                newest,
                expire_ms(view, future_skew_ms),
                {tile_field(k): encode_tile(view, t) for k, t in tiles.items()},
                (),
                {e.event_id: encode_tail_event(e) for e in got.events if e.time_ms >= tail_from},
            )
        )
    return out


def run_backfill(
    settings: FeatureStreamSettings,
    view_ref: str,
    from_ms: int | None = None,
    to_ms: int | None = None,
    *,
    online: bool = False,
    progress: bool = False,
) -> dict[str, object]:
    """Register one view version; with `online`, write its online state recomputed from the archive
    (entities whose newest event lies in [from_ms, to_ms] when given)."""
    name, version = parse_view_ref(view_ref)
    view = load_definitions(settings.definitions_path).view(name, version)
    if view.version != version:
        raise DefinitionError(f"no feature view {view_ref} in {settings.definitions_path}")
    Catalogue(settings.offline_root).register([view])
    events = compute_view(view, OfflineStore(settings.offline_root).read_archive([view.source]))
    chosen = {
        e: got
        for e, got in events.items()
        if got.events
        and (from_ms is None or got.events[-1].time_ms >= from_ms)
        and (to_ms is None or got.events[-1].time_ms <= to_ms)
    }
    applied = 0
    if online:
        writer = RedisOnlineStore.from_url(settings.redis_url.get_secret_value(), settings.redis_prefix)
        writer.register_views([view])
        writes = tile_writes(view, chosen, settings.future_skew_ms)
        if progress:
            from tqdm import tqdm

            writes = list(tqdm(writes, unit="entity", desc=f"backfill {view.ref}"))
        applied = writer.write_tiles(writes)
    return {"view": view.ref, "entities": len(chosen), "online_applied": applied}
