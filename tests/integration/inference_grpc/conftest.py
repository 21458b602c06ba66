"""Fixtures: a registry publishing to a fresh Kafka topic, and in-process servers on port 0."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from featurestore.online import OnlineRow, RedisOnlineStore
from fti.v1 import inference_pb2, inference_pb2_grpc
from inference_grpc.server import InferenceServer, create_server
from inference_grpc.settings import InferenceSettings
from registry.events import KafkaModelEventSink
from registry.models import ModelRegistry

from ...waits import async_wait_for

MODEL = "fraud"


@pytest.fixture
def inference_settings(
    tmp_data_dir: Path, kafka_bootstrap: str, redis_url: str, redis_prefix: str, topic_factory: Callable[..., str]
) -> InferenceSettings:
    return InferenceSettings(
        data_dir=tmp_data_dir,
        kafka_bootstrap_servers=kafka_bootstrap,
        redis_url=redis_url,  # type: ignore[arg-type]
        redis_prefix=redis_prefix,
        models_topic=topic_factory("models", partitions=1),
        models_topic_partitions=1,
        model=MODEL,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        shutdown_grace_s=2.0,
    )


@pytest.fixture
def publisher(inference_settings: InferenceSettings) -> Iterator[ModelRegistry]:
    """The registry as the trainer / a person uses it: every change is emitted on Kafka."""
    sink = KafkaModelEventSink(inference_settings)
    yield ModelRegistry.from_uri(inference_settings.registry_root, events=sink)
    sink.close()


@pytest.fixture
def feature_store(redis_url: str, redis_prefix: str) -> Iterator[RedisOnlineStore]:
    client = redis.Redis.from_url(redis_url)
    yield RedisOnlineStore(client, redis_prefix)
    client.close()


def write_features(store: RedisOnlineStore, card: str, merchant: str, *, age_ms: int = 1_000) -> None:
    now = int(time.time() * 1000)
    store.write(
        [
            OnlineRow("card_activity", 1, card, now - age_ms, {"txn_count": 3, "amount_sum": 120.5}, 3_600_000),
            OnlineRow("merchant_activity", 1, merchant, now - age_ms, {"txn_count": 40}, 3_600_000),
        ]
    )


@dataclass
class Running:
    server: InferenceServer
    port: int
    channel: grpc.aio.Channel
    stub: inference_pb2_grpc.InferenceServiceAsyncStub

    async def predict(self, deadline_s: float = 5.0, **entities: str) -> inference_pb2.PredictResponse:
        request = inference_pb2.PredictRequest(model=MODEL, entities=entities)
        response: inference_pb2.PredictResponse = await self.stub.Predict(request, timeout=deadline_s)
        return response


ServerFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
async def serve(inference_settings: InferenceSettings) -> AsyncIterator[ServerFactory]:
    """Starts servers (settings overridable) and stops them, draining, after the test."""
    running: list[Running] = []

    async def start(**kwargs: Any) -> Running:
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in InferenceSettings.model_fields}
        settings = InferenceSettings(**{**inference_settings.model_dump(), **overrides})
        server, port = create_server(settings, **kwargs)
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        run = Running(server, port, channel, inference_pb2_grpc.InferenceServiceStub(channel))  # type: ignore[arg-type]
        running.append(run)
        return run

    yield start
    for run in running:
        await run.channel.close()
        await run.server.stop(grace=1.0)


async def wait_until(check: Callable[[], Awaitable[bool]], within_s: float = 60.0, what: str = "condition") -> None:
    """Polls `check` until it holds; fails the test naming `what` on timeout (see tests/waits.py)."""
    await async_wait_for(check, what=what, timeout_s=within_s)
