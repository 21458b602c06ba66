"""The servicer without a network: deadlines, Redis failures and the configured fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from featurestore.online import AsyncInMemoryOnlineStore, OnlineKey, OnlineValue
from fti.v1 import inference_pb2
from fti_core.errors import UnavailableError
from inference_grpc.errors import DeadlineExceededError, OnlineStoreUnavailableError
from inference_grpc.features import FeatureStatus

from .models_helper import new_servicer as _servicer


class Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


class DownStore(AsyncInMemoryOnlineStore):
    reads = 0

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        self.reads += 1
        raise UnavailableError("online store read failed: Connection refused")


REQUEST = inference_pb2.PredictRequest(entities={"card_id": "c", "merchant_id": "m"})


@pytest.mark.parametrize("remaining", [0.0, -1.0, 0.000_1])
async def test_no_redis_call_once_the_deadline_has_passed(tmp_path: Path, remaining: float) -> None:
    store = DownStore()
    servicer = await _servicer(tmp_path, store)
    with pytest.raises(DeadlineExceededError):
        await servicer.Predict(REQUEST, Context(remaining))
    assert store.reads == 0


async def test_unreachable_redis_is_unavailable_with_a_clear_message(tmp_path: Path) -> None:
    servicer = await _servicer(tmp_path, DownStore())
    with pytest.raises(OnlineStoreUnavailableError, match=r"online store \(Redis\) unreachable"):
        await servicer.Predict(REQUEST, Context(None))


async def test_configured_fallback_scores_with_features_missing(tmp_path: Path) -> None:
    servicer = await _servicer(tmp_path, DownStore(), redis_failure_mode="missing")
    response = await servicer.Predict(REQUEST, Context(5.0))
    assert {f.status for f in response.features} == {FeatureStatus.MISSING}
    assert 0.0 < response.score < 1.0


class SlowStore(AsyncInMemoryOnlineStore):
    """Replies after `delays[i]` seconds on the i-th read (the last delay repeats)."""

    def __init__(self, *delays: float) -> None:
        super().__init__()
        self.delays = list(delays)
        self.reads = 0

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        delay = self.delays[min(self.reads, len(self.delays) - 1)]
        self.reads += 1
        await asyncio.sleep(delay)
        return await super().read(keys)


async def test_one_slow_reply_is_retried_within_the_deadline(tmp_path: Path) -> None:
    store = SlowStore(1.0, 0.0)
    servicer = await _servicer(tmp_path, store, redis_timeout_ms=50)
    response = await servicer.Predict(REQUEST, Context(2.0))
    assert store.reads == 2
    assert response.model == "fraud"


async def test_a_store_that_stays_slow_is_unavailable_after_one_retry(tmp_path: Path) -> None:
    store = SlowStore(1.0)
    servicer = await _servicer(tmp_path, store, redis_timeout_ms=50)
    with pytest.raises(OnlineStoreUnavailableError, match=r"read timed out after 0\.050s"):
        await servicer.Predict(REQUEST, Context(None))
    assert store.reads == 2


async def test_refused_connections_are_not_retried(tmp_path: Path) -> None:
    store = DownStore()
    servicer = await _servicer(tmp_path, store)
    with pytest.raises(OnlineStoreUnavailableError):
        await servicer.Predict(REQUEST, Context(2.0))
    assert store.reads == 1
