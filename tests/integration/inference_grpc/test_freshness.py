"""`fti serve` says when most features of its model are stale or missing: one log line at start, a gauge."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import pytest

from feature_stream.backfill import tile_writes
from featurestore.accepted import EntityEvents
from featurestore.online import RedisOnlineStore
from featurestore.tiles import Event
from registry.models import ModelRegistry

from ...unit.inference_grpc.models_helper import publish_model
from .conftest import MODEL, Running, ServerFactory
from .test_read_time_features import CARD, MERCHANT

DAY = 86_400_000
GAUGE = "fti_inference_stale_feature_ratio"
_SPARE_DB = 15


@pytest.fixture
def redis_url(redis_url: str) -> str:
    """The same Redis, its database 15: the start-up sample SCANs the keyspace, and the shared
    database 0 may hold more keys (other runs' benchmarks) than a sample looks at."""
    return urlsplit(redis_url)._replace(path=f"/{_SPARE_DB}").geturl()


def _history(newest_ms: int, entities: list[str]) -> dict[str, EntityEvents]:
    return {
        e: EntityEvents([Event(newest_ms - 60_000 * i, f"{e}-{i}", {"amount": 10.0 + i}) for i in range(3, -1, -1)])
        for e in entities
    }


def _write(store: RedisOnlineStore, newest_ms: int) -> None:
    store.register_views([CARD, MERCHANT])
    cards, merchants = _history(newest_ms, ["c1", "c2", "c3"]), _history(newest_ms, ["m1", "m2"])
    store.write_tiles(tile_writes(CARD, cards, 300_000) + tile_writes(MERCHANT, merchants, 300_000))


async def _started(serve: ServerFactory, publisher: ModelRegistry) -> Running:
    publisher.move_alias(MODEL, "production", publish_model(publisher, MODEL, 1).version, actor="test")
    run = await serve()
    assert run.server.freshness_check is not None  # the model loaded at start, so the check ran
    await run.server.freshness_check
    return run


def _gauge(run: Running) -> float | None:
    return run.server.metrics.registry.get_sample_value(GAUGE)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "stale or missing" in r.getMessage()
    ]


async def test_history_replayed_from_long_ago_is_a_warning_at_start_and_a_gauge_at_one(
    serve: ServerFactory, publisher: ModelRegistry, feature_store: RedisOnlineStore, caplog: pytest.LogCaptureFixture
) -> None:
    _write(feature_store, int(time.time() * 1000) - 3 * DAY)  # every entity's newest event: 3 days ago (TTL 1d)
    caplog.set_level(logging.INFO)
    run = await _started(serve, publisher)

    (line,) = _warnings(caplog)
    assert f"model '{MODEL}' v1: 100% of its features are stale or missing" in line
    assert "card_activity:1: 3 of 3 sampled entities have no event within the view's TTL (1.0d)" in line
    assert "merchant_activity:1: 2 of 2 sampled entities" in line
    assert "What you see when features are stale" in line
    assert _gauge(run) == 1.0

    for _ in range(5):  # requests for stored entities: windows answered (0), and counted as stale
        response = await run.predict(card_id="c1", merchant_id="m1")
        assert [f.value for f in response.features] == [0.0, 0.0, 0.0]
    assert _gauge(run) == 1.0


async def test_a_fresh_store_gives_no_warning_and_a_gauge_at_zero(
    serve: ServerFactory, publisher: ModelRegistry, feature_store: RedisOnlineStore, caplog: pytest.LogCaptureFixture
) -> None:
    _write(feature_store, int(time.time() * 1000) - 1_000)
    caplog.set_level(logging.INFO)
    run = await _started(serve, publisher)

    assert _warnings(caplog) == []
    assert _gauge(run) == 0.0
    await run.predict(card_id="c1", merchant_id="m1")
    assert _gauge(run) == 0.0
    await run.predict(card_id="c-unknown", merchant_id="m1")  # nothing stored for the card: 2 of 3 missing
    assert _gauge(run) == pytest.approx(2 / 6)


async def test_an_empty_store_warns_that_every_feature_is_missing(
    serve: ServerFactory, publisher: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    run = await _started(serve, publisher)
    (line,) = _warnings(caplog)
    assert "100% of its features are stale or missing" in line
    assert "card_activity:1: no entity in the online store (every feature missing)" in line
    assert _gauge(run) == 1.0
