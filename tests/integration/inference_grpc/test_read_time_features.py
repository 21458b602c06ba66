"""The server evaluates every window at the request's arrival: a count read hours after the last event is 0."""

from __future__ import annotations

import time

from feature_stream.backfill import tile_writes
from featurestore.accepted import EntityEvents
from featurestore.definitions import FeatureViewDef
from featurestore.online import RedisOnlineStore
from featurestore.tiles import Event, evaluate_events
from fti.v1.inference_pb2 import FeatureStatus
from registry.models import ModelRegistry

from ...unit.inference_grpc.models_helper import publish_model
from .conftest import MODEL, ServerFactory

CARD = FeatureViewDef.model_validate(
    {
        "name": "card_activity",
        "version": 1,
        "source": "transaction",
        "entity": "card_id",
        "ttl": "1d",
        "features": [
            {"name": "txn_count", "agg": "count", "window": {"kind": "hopping", "size": "10m", "step": "1m"}},
            {
                "name": "amount_sum",
                "agg": "sum",
                "field": "amount",
                "window": {"kind": "hopping", "size": "10m", "step": "1m"},
            },
        ],
    }
)
MERCHANT = FeatureViewDef.model_validate(
    {
        "name": "merchant_activity",
        "version": 1,
        "source": "transaction",
        "entity": "merchant_id",
        "ttl": "1d",
        "features": [{"name": "txn_count", "agg": "count", "window": {"kind": "hopping", "size": "1h", "step": "5m"}}],
    }
)


def _entity(start_ms: int, amounts: list[float]) -> EntityEvents:
    return EntityEvents(
        events=[Event(start_ms + i * 1000, f"e{start_ms}-{i}", {"amount": a}) for i, a in enumerate(amounts)]
    )


async def test_request_time_windows_fresh_and_hours_after_the_last_event(
    serve: ServerFactory, publisher: ModelRegistry, feature_store: RedisOnlineStore
) -> None:
    record = publish_model(publisher, MODEL, 1)
    publisher.move_alias(MODEL, "production", record.version, actor="test")
    now = int(time.time() * 1000)
    cards = {"c-fresh": _entity(now - 120_000, [10.0, 20.5, 4.25]), "c-quiet": _entity(now - 3 * 3_600_000, [7.0] * 5)}
    merchants = {"m1": _entity(now - 60_000, [1.0, 2.0])}
    feature_store.register_views([CARD, MERCHANT])
    feature_store.write_tiles(tile_writes(CARD, cards, 300_000) + tile_writes(MERCHANT, merchants, 300_000))
    run = await serve()

    fresh = await run.predict(card_id="c-fresh", merchant_id="m1")
    values = {(f.view, f.name): (f.status, f.value) for f in fresh.features}
    expected = evaluate_events(CARD, cards["c-fresh"].events, int(time.time() * 1000))
    assert expected == {"txn_count": 3.0, "amount_sum": 34.75}  # the windows still hold them (8 minutes of margin)
    assert values[("card_activity", "txn_count")] == (FeatureStatus.FEATURE_STATUS_OK, 3.0)
    assert values[("card_activity", "amount_sum")] == (FeatureStatus.FEATURE_STATUS_OK, 34.75)
    assert values[("merchant_activity", "txn_count")] == (FeatureStatus.FEATURE_STATUS_OK, 2.0)

    quiet = await run.predict(card_id="c-quiet", merchant_id="m-never-seen")
    values = {(f.view, f.name): (f.status, f.value) for f in quiet.features}
    # Three hours after the card's last event its 10-minute windows are empty: 0, not the count of then.
    assert values[("card_activity", "txn_count")] == (FeatureStatus.FEATURE_STATUS_OK, 0.0)
    assert values[("card_activity", "amount_sum")] == (FeatureStatus.FEATURE_STATUS_OK, 0.0)
    assert values[("merchant_activity", "txn_count")] == (FeatureStatus.FEATURE_STATUS_OK, 0.0)
    ages = {(f.view, f.name): f.age_ms for f in quiet.features}
    assert ages[("card_activity", "txn_count")] >= 3 * 3_600_000 - 4_000  # the age of its newest event
    assert ages[("merchant_activity", "txn_count")] == -1  # no event stored
