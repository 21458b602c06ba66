"""Shared work between concurrent requests: one LightGBM call per turn, grouped Redis reads."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
import pytest

from featurestore.online import AsyncInMemoryOnlineStore, OnlineKey, OnlineValue
from fti.v1 import inference_pb2
from inference_grpc.batcher import PredictBatcher
from inference_grpc.coalesce import CoalescingOnlineStore
from inference_grpc.features import FeatureStatus, FeatureUse, layout_for
from inference_grpc.model import LoadedModel
from registry.flavors import LightGBMPredictor

from ...waits import async_wait_for
from .models_helper import ENTITIES, FEATURES, train_model_text

ROWS = [[1.0, 2.0, 3.0], [math.nan, -1.0, 0.5], [0.0, math.nan, math.nan], [4.0, 4.0, 4.0]]


def _model(seed: int = 1, version: int = 1) -> LoadedModel:
    predictor = LightGBMPredictor(lgb.Booster(model_str=train_model_text(seed)), num_threads=1)
    return LoadedModel("fraud", version, "sha", layout_for(FEATURES, ENTITIES), predictor)


def _booster(model: LoadedModel) -> lgb.Booster:
    assert isinstance(model.predictor, LightGBMPredictor)
    return model.predictor.booster


class CountingModel(LoadedModel):
    calls: list[int]

    def predict(self, rows: Sequence[Sequence[float]]) -> list[float]:
        self.calls.append(len(rows))
        return super().predict(rows)


def _counting(seed: int, version: int) -> CountingModel:
    model = CountingModel(
        "fraud",
        version,
        "sha",
        layout_for(FEATURES, ENTITIES),
        LightGBMPredictor(lgb.Booster(model_str=train_model_text(seed)), num_threads=1),
    )
    object.__setattr__(model, "calls", [])
    return model


async def test_requests_in_one_turn_share_one_predict_and_get_their_own_scores() -> None:
    model, batcher = _counting(1, 1), PredictBatcher()
    scores = await asyncio.gather(*(batcher.score(model, [row]) for row in ROWS))
    assert model.calls == [len(ROWS)]
    expected = _booster(model).predict(np.array(ROWS))
    assert [s[0] for s in scores] == list(expected)  # exactly equal, row by row


async def test_a_turn_with_two_versions_scores_each_request_with_its_own() -> None:
    old, new, batcher = _counting(1, 1), _counting(2, 2), PredictBatcher()
    got = await asyncio.gather(batcher.score(old, ROWS[:2]), batcher.score(new, ROWS[2:]), batcher.score(old, ROWS[3:]))
    assert (old.calls, new.calls) == ([3], [2])
    assert got[0] + got[2] == list(_booster(old).predict(np.array(ROWS[:2] + ROWS[3:])))
    assert got[1] == list(_booster(new).predict(np.array(ROWS[2:])))


async def test_a_failing_predict_fails_every_request_of_its_group() -> None:
    model, batcher = _model(), PredictBatcher()
    results = await asyncio.gather(batcher.score(model, [[1.0]]), batcher.score(model, [[2.0]]), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)  # wrong row width for this model


def test_response_from_the_template_matches_a_response_built_field_by_field() -> None:
    model = _model()
    used = [
        FeatureUse("txn_count", "card_activity", 1, FeatureStatus.OK, 120, 3.0),
        FeatureUse("amount_sum", "card_activity", 1, FeatureStatus.REQUEST, 0, 99.0),
        FeatureUse("txn_count", "merchant_activity", 1, FeatureStatus.MISSING, -1, math.nan),
    ]
    expected = inference_pb2.PredictResponse(
        score=0.25,
        model="fraud",
        model_version=1,
        views=[inference_pb2.ViewVersion(view=v, version=1) for v in ("card_activity", "merchant_activity")],
        features=[
            inference_pb2.FeatureUsed(
                name=u.name,
                view=u.view,
                view_version=u.view_version,
                status=int(u.status),  # type: ignore[arg-type]
                age_ms=u.age_ms,
                value=u.value,
            )
            for u in used
        ],
    )
    first = model.response(used, 0.25)
    assert first.SerializeToString() == expected.SerializeToString()
    first.features[0].age_ms = 7  # a response handed out never changes the next one
    assert model.response(used, 0.25).SerializeToString() == expected.SerializeToString()


class SlowStore(AsyncInMemoryOnlineStore):
    """Records each round trip's keys and the most round trips outstanding at once."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.trips: list[int] = []
        self.outstanding = self.most_outstanding = 0

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        self.trips.append(len(keys))
        self.outstanding += 1
        self.most_outstanding = max(self.most_outstanding, self.outstanding)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.outstanding -= 1
        return await super().read(keys)


def _keys(i: int) -> list[OnlineKey]:
    return [OnlineKey("card_activity", 1, f"c{i}"), OnlineKey("merchant_activity", 1, f"m{i}")]


class GatedStore(AsyncInMemoryOnlineStore):
    """Each round trip waits for `gate`: a read stays in flight exactly as long as the test wants."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.trips: list[int] = []

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        self.trips.append(len(keys))
        await self.gate.wait()
        return await super().read(keys)


async def test_requests_arriving_during_a_round_trip_share_the_next_one() -> None:
    inner = GatedStore()
    store = CoalescingOnlineStore(inner)
    first = asyncio.create_task(store.read(_keys(0)))
    await async_wait_for(lambda: inner.trips == [2], what="the first round trip to be in flight")
    later = []
    for i in range(1, 4):  # these three queue behind it, one per turn
        later.append(asyncio.create_task(store.read(_keys(i))))
        await asyncio.sleep(0)
    assert inner.trips == [2]
    inner.gate.set()
    assert [len(r) for r in await asyncio.gather(first, *later)] == [2, 2, 2, 2]
    assert inner.trips == [2, 6]


async def test_a_hung_round_trip_is_cut_at_the_timeout_for_everyone_waiting() -> None:
    store = CoalescingOnlineStore(GatedStore(), timeout_s=0.05)  # never opened: hung for good
    # The outer timeout only bounds a broken run; the 50 ms cap is what must end both reads.
    results = await asyncio.wait_for(
        asyncio.gather(store.read(_keys(0)), store.read(_keys(1)), return_exceptions=True), timeout=60
    )
    assert all(isinstance(r, TimeoutError) for r in results)
    assert await asyncio.wait_for(CoalescingOnlineStore(SlowStore(0)).read(_keys(2)), 60) == [None, None]


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_at_most_max_in_flight_round_trips_are_outstanding(in_flight: int) -> None:
    inner = SlowStore(delay_s=0.02)
    store = CoalescingOnlineStore(inner, max_in_flight=in_flight)
    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(store.read(_keys(i))))
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    assert sum(inner.trips) == 12  # every key read once
    assert 1 <= inner.most_outstanding <= in_flight
