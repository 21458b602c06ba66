"""A string feature over the real server and Redis: its code scores, its string comes back, unknown is missing."""

from __future__ import annotations

import math
import time

import lightgbm as lgb
import numpy as np
import pytest

from feature_stream.backfill import tile_writes
from featurestore.accepted import EntityEvents
from featurestore.definitions import FeatureViewDef
from featurestore.online import RedisOnlineStore
from featurestore.tiles import Event
from fti.v1.inference_pb2 import FeatureStatus
from registry.models import FeatureRef, ModelRegistry, Vocabulary

from .conftest import MODEL, ServerFactory

CARD = FeatureViewDef.model_validate(
    {
        "name": "card_mcc",
        "version": 1,
        "source": "transaction",
        "entity": "card_id",
        "ttl": "1d",
        "features": [
            {"name": "txn_count", "agg": "count", "window": {"kind": "hopping", "size": "1h", "step": "5m"}},
            {
                "name": "top_mcc",
                "agg": "most_frequent",
                "field": "mcc",
                "window": {"kind": "hopping", "size": "1h", "step": "5m"},  # always holds the last 55 minutes
            },
        ],
    }
)
FEATURES = (FeatureRef("card_mcc", 1, "txn_count", "card_id"), FeatureRef("card_mcc", 1, "top_mcc", "card_id"))
VOCAB = Vocabulary("card_mcc__top_mcc", ("grocery", "fuel", "casino"))


def _model() -> lgb.Booster:
    """Scores high for code 2 (casino), low otherwise."""
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 3, size=600).astype(float)
    x = np.column_stack([rng.integers(1, 6, size=600).astype(float), codes])
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_per_group": 5, "cat_smooth": 1}
    return lgb.train(params, lgb.Dataset(x, (codes == 2).astype(int), categorical_feature=[1]), num_boost_round=10)


async def test_a_string_feature_is_scored_by_its_code_and_reported_as_read(
    serve: ServerFactory, publisher: ModelRegistry, feature_store: RedisOnlineStore
) -> None:
    booster = _model()
    record = publisher.publish(
        MODEL,
        booster.model_to_string().encode(),
        features=FEATURES,
        snapshot_id="s",
        code_version="test",
        params={},
        metrics={"auc": 1.0},
        task="binary",
        vocabularies=[VOCAB],
    )
    publisher.move_alias(MODEL, "production", record.version, actor="test")
    now = int(time.time() * 1000)

    def card(mccs: list[str]) -> EntityEvents:
        return EntityEvents(events=[Event(now - 60_000 + i, f"{mccs}-{i}", {"mcc": m}) for i, m in enumerate(mccs)])

    cards = {"c-risky": card(["casino", "fuel", "casino"]), "c-new-kind": card(["bowling", "bowling", "fuel"])}
    feature_store.register_views([CARD])
    feature_store.write_tiles(tile_writes(CARD, cards, 300_000))
    run = await serve()

    risky = await run.predict(card_id="c-risky")
    used = {f.name: f for f in risky.features}
    assert (used["top_mcc"].status, used["top_mcc"].string_value, used["top_mcc"].value) == (
        FeatureStatus.FEATURE_STATUS_OK,
        "casino",
        2.0,
    )
    assert risky.score == pytest.approx(booster.predict(np.array([[3.0, 2.0]]))[0])

    unknown = await run.predict(card_id="c-new-kind")
    used = {f.name: f for f in unknown.features}
    assert used["top_mcc"].string_value == "bowling" and math.isnan(used["top_mcc"].value)
    assert unknown.score == pytest.approx(booster.predict(np.array([[3.0, np.nan]]))[0])

    absent = await run.predict(card_id="c-never-seen")
    used = {f.name: f for f in absent.features}
    assert used["top_mcc"].status == FeatureStatus.FEATURE_STATUS_MISSING and used["top_mcc"].string_value == ""
    assert risky.score > 0.5 > unknown.score
