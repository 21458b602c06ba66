"""The server end to end through a real channel: scores, statuses, health, reflection, metrics."""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import grpc
import lightgbm as lgb
import numpy as np
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from featurestore.online import AsyncRedisOnlineStore, OnlineKey, OnlineValue, RedisOnlineStore
from fti.v1 import inference_pb2, inference_pb2_grpc, values_pb2
from inference_grpc.features import FeatureStatus
from registry.models import ModelRegistry

from ...unit.inference_grpc.models_helper import publish_model, train_model_text
from .conftest import MODEL, Running, ServerFactory, wait_until, write_features


async def _published(publisher: ModelRegistry, seed: int = 1) -> int:
    record = await asyncio.to_thread(publish_model, publisher, MODEL, seed)
    await asyncio.to_thread(publisher.move_alias, MODEL, "production", record.version, actor="test")
    return record.version


async def test_prediction_equals_lightgbm_on_the_same_vector(
    serve: ServerFactory, publisher: ModelRegistry, feature_store: RedisOnlineStore
) -> None:
    version = await _published(publisher)
    written_ms = int(time.time() * 1000)
    write_features(feature_store, "c1", "m1", age_ms=2_000)
    run = await serve()
    request = inference_pb2.PredictRequest(
        model=MODEL,
        entities={"card_id": "c1", "merchant_id": "m-unknown"},
        request_values={"amount_sum": values_pb2.Value(double_value=99.0)},
    )
    response = await run.stub.Predict(request, timeout=5)
    answered_ms = int(time.time() * 1000)

    expected = lgb.Booster(model_str=train_model_text(1)).predict(np.array([[3.0, 99.0, math.nan]]))[0]
    assert response.score == expected
    assert (response.model, response.model_version) == (MODEL, version)
    assert [(v.view, v.version) for v in response.views] == [("card_activity", 1), ("merchant_activity", 1)]
    statuses = [(f.view, f.name, f.status) for f in response.features]
    assert statuses == [
        ("card_activity", "txn_count", FeatureStatus.OK),
        ("card_activity", "amount_sum", FeatureStatus.REQUEST),
        ("merchant_activity", "txn_count", FeatureStatus.MISSING),
    ]
    # The value was 2 s old when written, and aged by however long the test took since.
    assert 2_000 <= response.features[0].age_ms <= 2_000 + (answered_ms - written_ms) + 1
    assert response.features[2].age_ms == -1

    batch = inference_pb2.PredictBatchRequest(requests=[request, request])
    responses = (await run.stub.PredictBatch(batch, timeout=5)).responses
    assert [r.score for r in responses] == [expected, expected]


class CountingStore(AsyncRedisOnlineStore):
    reads = 0
    delay_s = 0.0

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        self.reads += 1
        await asyncio.sleep(self.delay_s)
        return await super().read(keys)


def _request(**kwargs: object) -> inference_pb2.PredictRequest:
    entities = kwargs.pop("entities", {"card_id": "c1", "merchant_id": "m1"})
    return inference_pb2.PredictRequest(entities=entities, **kwargs)  # type: ignore[arg-type]


BAD_REQUESTS = [
    ("unknown model", _request(model="nope"), grpc.StatusCode.NOT_FOUND),
    ("missing entity", _request(entities={"card_id": "c1"}), grpc.StatusCode.INVALID_ARGUMENT),
    ("empty entity", _request(entities={"card_id": "c1", "merchant_id": ""}), grpc.StatusCode.INVALID_ARGUMENT),
    (
        "string value",
        _request(request_values={"amount_sum": values_pb2.Value(string_value="x")}),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "NaN value",
        _request(request_values={"amount_sum": values_pb2.Value(double_value=math.nan)}),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "unknown feature",
        _request(request_values={"nope": values_pb2.Value(double_value=1.0)}),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
]


async def test_each_bad_request_gets_its_status_and_never_internal(
    serve: ServerFactory, publisher: ModelRegistry, inference_settings: object, redis_url: str, redis_prefix: str
) -> None:
    await _published(publisher)
    store = CountingStore.from_url(redis_url, redis_prefix)
    run = await serve(store=store, max_batch_size=4)
    for what, request, code in BAD_REQUESTS:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await run.stub.Predict(request, timeout=5)
        assert err.value.code() == code, what
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await run.stub.PredictBatch(inference_pb2.PredictBatchRequest(requests=[_request()] * 5), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await run.stub.PredictBatch(inference_pb2.PredictBatchRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert store.reads == 0  # every bad request was refused before touching Redis

    await run.stub.Predict(_request(), timeout=5)
    assert store.reads == 1
    # (That no Redis call follows an expired deadline is proven in the servicer's unit tests:
    # through a real channel, whether the deadline expires before the handler runs is a race.)
    store.delay_s = 1.0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await run.stub.Predict(_request(), timeout=0.2)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    internal = run.server.metrics.registry.get_sample_value(
        "fti_inference_requests_total", {"method": "Predict", "code": "INTERNAL"}
    )
    assert internal is None


async def test_health_is_not_serving_until_a_model_is_loaded_then_serving(
    serve: ServerFactory, publisher: ModelRegistry
) -> None:
    run = await serve()
    health = health_pb2_grpc.HealthStub(run.channel)
    service = "fti.v1.InferenceService"
    check = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await run.predict(card_id="c1", merchant_id="m1")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    await _published(publisher)  # the alias move arrives as a Kafka event

    async def serving() -> bool:
        got = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return bool(got.status == health_pb2.HealthCheckResponse.SERVING)

    await wait_until(serving, what="SERVING after the first alias move")
    assert (await run.predict(card_id="c1", merchant_id="m1")).model_version == 1

    watch = health.Watch(health_pb2.HealthCheckRequest(service=service))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.create_task(run.server.stop(grace=0.5))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    await stopping


def _reflected_methods(port: int) -> tuple[list[str], list[str]]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        service = DescriptorPool(database).FindServiceByName("fti.v1.InferenceService")
        return services, [m.name for m in service.methods]


async def test_reflection_lists_and_describes_the_service(serve: ServerFactory) -> None:
    run = await serve()
    services, methods = await asyncio.to_thread(_reflected_methods, run.port)
    assert "fti.v1.InferenceService" in services and "grpc.health.v1.Health" in services
    assert methods == ["Predict", "PredictBatch"]


async def test_metrics_endpoint_reports_requests_version_misses_and_swaps(
    serve: ServerFactory, publisher: ModelRegistry
) -> None:
    await _published(publisher)
    run: Running = await serve()
    await run.predict(card_id="nobody", merchant_id="nowhere")
    url = f"http://127.0.0.1:{run.server.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'fti_inference_requests_total{code="OK",method="Predict"} 1.0' in body
    assert 'fti_inference_served_model_version{model="fraud"} 1.0' in body
    assert 'fti_inference_feature_misses_total{reason="missing",view="card_activity"} 2.0' in body
    assert 'fti_inference_model_swaps_total{model="fraud",outcome="swapped"} 1.0' in body
    assert "fti_inference_request_seconds_bucket" in body


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "server.pem", folder / "server.key"
    subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    args = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject]
    subprocess.run([*args, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_when_configured(serve: ServerFactory, publisher: ModelRegistry, tmp_path: Path) -> None:
    await _published(publisher)
    cert, key = _self_signed(tmp_path)
    run = await serve(tls_cert_file=cert, tls_key_file=key)
    credentials = grpc.ssl_channel_credentials(cert.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{run.port}", credentials) as channel:
        response = await inference_pb2_grpc.InferenceServiceStub(channel).Predict(_request(), timeout=5)
    assert response.model_version == 1
    with pytest.raises(grpc.aio.AioRpcError):
        await run.predict(deadline_s=1, card_id="c1", merchant_id="m1")  # plaintext is refused
