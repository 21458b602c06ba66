"""A server needs only the registry and Redis: no offline store, no definitions file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np

from featurestore.online import OnlineRow, RedisOnlineStore
from inference_grpc.features import FeatureStatus
from registry.models import FeatureRef, ModelRegistry

from ...unit.inference_grpc.models_helper import train_model_text
from .conftest import MODEL, ServerFactory

# Three views over two entity kinds: the record's list of kinds alone cannot say which keys
# which view; each feature's entity does.
FEATURES = (
    FeatureRef("card_activity", 1, "txn_count", "card_id"),
    FeatureRef("merchant_activity", 1, "txn_count", "merchant_id"),
    FeatureRef("card_risk", 2, "score", "card_id"),
)
HOUR_MS = 3_600_000


async def test_a_server_without_offline_store_or_definitions_scores_from_the_registry_and_redis(
    serve: ServerFactory, publisher: ModelRegistry, feature_store: RedisOnlineStore, tmp_path: Path
) -> None:
    record = await asyncio.to_thread(
        publisher.publish,
        MODEL,
        train_model_text(5).encode(),
        features=FEATURES,
        snapshot_id="snap-5",
        code_version="test",
        params={},
        metrics={"auc": 0.5},
        task="binary",
    )
    await asyncio.to_thread(publisher.move_alias, MODEL, "production", record.version, actor="test")
    now = int(time.time() * 1000)
    feature_store.write(
        [
            OnlineRow("card_activity", 1, "c7", now - 1_000, {"txn_count": 4}, HOUR_MS),
            OnlineRow("merchant_activity", 1, "m3", now - 1_000, {"txn_count": 25}, HOUR_MS),
            OnlineRow("card_risk", 2, "c7", now - 1_000, {"score": 0.8}, HOUR_MS),
            # Same views under the other entity's key: read only if a view were keyed wrongly.
            OnlineRow("card_risk", 2, "m3", now - 1_000, {"score": -5.0}, HOUR_MS),
            OnlineRow("merchant_activity", 1, "c7", now - 1_000, {"txn_count": 999}, HOUR_MS),
        ]
    )
    nowhere = tmp_path / "nowhere"
    run = await serve(offline_store_uri=str(nowhere / "offline"), definitions_path=nowhere / "features.yaml")

    response = await run.predict(card_id="c7", merchant_id="m3")

    expected = lgb.Booster(model_str=train_model_text(5)).predict(np.array([[4.0, 25.0, 0.8]]))[0]
    assert response.score == expected
    assert (response.model, response.model_version) == (MODEL, record.version)
    assert [(f.view, f.name, f.status, f.value) for f in response.features] == [
        ("card_activity", "txn_count", FeatureStatus.OK, 4.0),
        ("merchant_activity", "txn_count", FeatureStatus.OK, 25.0),
        ("card_risk", "score", FeatureStatus.OK, 0.8),
    ]
    assert not nowhere.exists()  # nothing was read from (or created at) either path
