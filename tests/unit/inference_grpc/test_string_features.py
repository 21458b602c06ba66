"""String features at request time: coded by the version's vocabulary, unknown values missing."""

from __future__ import annotations

import math
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from featurestore.definitions import FeatureViewDef, parse_definitions
from featurestore.online import AsyncInMemoryOnlineStore, OnlineKey, OnlineValue, TileWrite
from featurestore.tiles import Event, build_tiles, encode_tile, tile_field
from fti.v1 import inference_pb2, values_pb2
from inference_grpc.errors import InvalidRequestError
from inference_grpc.features import FeatureStatus, assemble, layout_for, parse_request_values
from inference_grpc.holder import ModelHolder
from inference_grpc.metrics import Metrics
from inference_grpc.servicer import InferenceServicer
from inference_grpc.settings import InferenceSettings
from registry.models import FeatureRef, ModelRegistry, Vocabulary

NOW = 1_700_000_000_000
FEATURES = (FeatureRef("card", 1, "n_1h", "card_id"), FeatureRef("card", 1, "last_mcc", "card_id"))
VOCAB = Vocabulary("card__last_mcc", ("grocery", "fuel", "casino"))


def _row(values: dict[str, object]) -> OnlineValue:
    return OnlineValue("card", 1, "k", NOW - 1000, NOW - 1000, 0, values)  # type: ignore[arg-type]


def test_a_stored_string_maps_to_its_code_and_an_unknown_one_to_missing() -> None:
    layout = layout_for(FEATURES, ["card_id"], {VOCAB.column: VOCAB})
    known = assemble(layout, [_row({"n_1h": 3.0, "last_mcc": "casino"})], {}, NOW)
    assert known.vector == [3.0, 2.0]
    assert known.used[1].status is FeatureStatus.OK and known.used[1].text == "casino"
    unknown = assemble(layout, [_row({"n_1h": 3.0, "last_mcc": "bowling"})], {}, NOW)
    assert math.isnan(unknown.vector[1]) and unknown.used[1].text == "bowling"
    absent = assemble(layout, [_row({"n_1h": 0.0, "last_mcc": None})], {}, NOW)
    assert math.isnan(absent.vector[1]) and absent.used[1].status is FeatureStatus.MISSING
    assert absent.used[1].text == ""


def test_a_request_value_for_a_string_feature_is_a_string_coded_the_same_way() -> None:
    layout = layout_for(FEATURES, ["card_id"], {VOCAB.column: VOCAB})
    overrides = parse_request_values(layout, {"last_mcc": values_pb2.Value(string_value="fuel")})
    got = assemble(layout, [_row({"n_1h": 1.0, "last_mcc": "casino"})], overrides, NOW)
    assert got.vector == [1.0, 1.0] and got.used[1].status is FeatureStatus.REQUEST and got.used[1].text == "fuel"
    with pytest.raises(InvalidRequestError, match="'last_mcc' is a string feature; send a string"):
        parse_request_values(layout, {"last_mcc": values_pb2.Value(double_value=2.0)})


VIEW: FeatureViewDef = parse_definitions(
    {
        "views": [
            {
                "name": "card",
                "version": 1,
                "source": "txn",
                "entity": "card_id",
                "ttl": "1d",
                "features": [
                    {"name": "n_1h", "agg": "count", "window": {"size": "1h"}},
                    {"name": "last_mcc", "agg": "last_string", "field": "mcc", "window": {"size": "1h"}},
                ],
            }
        ]
    }
).views[0]


def _booster() -> lgb.Booster:
    """A model whose score depends on the category: code 2 (casino) is risky."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=600).astype(float)
    x = np.column_stack([rng.integers(0, 5, size=600).astype(float), codes])
    y = (codes == 2).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_per_group": 5, "cat_smooth": 1}
    return lgb.train(params, lgb.Dataset(x, y, categorical_feature=[1]), num_boost_round=10)


async def test_the_server_scores_the_code_and_reports_the_string(tmp_path: Path) -> None:
    booster = _booster()
    registry = ModelRegistry.from_uri(str(tmp_path))
    record = registry.publish(
        "risk",
        booster.model_to_string().encode(),
        features=FEATURES,
        snapshot_id="s",
        code_version="test",
        params={},
        metrics={"auc": 1.0},
        task="binary",
        vocabularies=[VOCAB],
    )
    registry.move_alias("risk", "production", record.version, actor="t")
    store = AsyncInMemoryOnlineStore()
    await store.register_views([VIEW])
    now = NOW // 3_600_000 * 3_600_000 + 60_000
    for card, mcc in (("c1", "casino"), ("c2", "bowling")):
        tiles = build_tiles(VIEW, [Event(now - 1000, f"{card}-e", {"mcc": mcc})])
        fields = {tile_field(k): encode_tile(VIEW, t) for k, t in tiles.items()}
        await store.write_tiles([TileWrite(OnlineKey("card", 1, card), now - 1000, 3_600_000, fields)])
    holder = ModelHolder(registry, "risk", "production", metrics=Metrics())
    await holder.refresh(reason="test")
    config = InferenceSettings(model="risk", data_dir=tmp_path)
    servicer = InferenceServicer(holder, _At(store, now), config, Metrics())

    async def predict(card: str) -> inference_pb2.PredictResponse:
        return await servicer.Predict(inference_pb2.PredictRequest(entities={"card_id": card}), _NoDeadline())

    risky, unknown = await predict("c1"), await predict("c2")
    assert risky.features[1].string_value == "casino" and risky.features[1].value == 2.0
    assert risky.score == pytest.approx(booster.predict(np.array([[1.0, 2.0]]))[0])
    assert unknown.features[1].string_value == "bowling" and math.isnan(unknown.features[1].value)
    assert unknown.score == pytest.approx(booster.predict(np.array([[1.0, np.nan]]))[0])
    assert risky.score > 0.5 > unknown.score  # the category decides the score


class _At(AsyncInMemoryOnlineStore):
    """Reads evaluated at a fixed time, so the windows hold the events written above."""

    def __init__(self, inner: AsyncInMemoryOnlineStore, at_ms: int) -> None:
        super().__init__(inner.store)
        self.at_ms = at_ms

    async def read(self, keys: list[OnlineKey]) -> list[OnlineValue | None]:  # type: ignore[override]
        return await self.read_at(keys, self.at_ms)


class _NoDeadline:
    def time_remaining(self) -> float | None:
        return None
