"""Each failure gets its own status through a real channel: undecodable bytes, deadlines
that cut the Redis read, oversized messages, too many calls in flight."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
import pytest

from featurestore.online import AsyncRedisOnlineStore, OnlineKey, OnlineValue
from fti.v1 import inference_pb2
from registry.models import ModelRegistry

from ...unit.inference_grpc.models_helper import publish_model
from ...waits import async_wait_for
from .conftest import MODEL, Running, ServerFactory


class GatedStore(AsyncRedisOnlineStore):
    """The real Redis store, but each read first waits for `gate`: a slow Redis on demand."""

    gate: asyncio.Event
    started = 0
    active = 0

    async def read(self, keys: Sequence[OnlineKey]) -> list[OnlineValue | None]:
        self.started += 1
        self.active += 1
        try:
            await self.gate.wait()
        finally:
            self.active -= 1
        return await super().read(keys)


def _gated(redis_url: str, redis_prefix: str) -> GatedStore:
    store = GatedStore.from_url(redis_url, redis_prefix)
    store.gate = asyncio.Event()
    return store


async def _published(publisher: ModelRegistry) -> None:
    record = await asyncio.to_thread(publish_model, publisher, MODEL, 1)
    await asyncio.to_thread(publisher.move_alias, MODEL, "production", record.version, actor="test")


def _codes(run: Running, method: str = "Predict") -> dict[str, float]:
    out = {}
    for metric in run.server.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "fti_inference_requests_total" and sample.labels["method"] == method and sample.value:
                out[sample.labels["code"]] = sample.value
    return out


_REQUEST = inference_pb2.PredictRequest(entities={"card_id": "c1", "merchant_id": "m1"})


async def test_undecodable_request_bytes_are_invalid_argument_with_one_log_line(
    serve: ServerFactory, publisher: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    await _published(publisher)
    run = await serve()
    caplog.set_level(logging.WARNING)
    for method in ("Predict", "PredictBatch"):
        raw = run.channel.unary_unary(f"/fti.v1.InferenceService/{method}")  # identity serializers
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw(b"\xff\xff\xff\xff not protobuf", timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid fti.v1." in (err.value.details() or "")
        # The server counts a call after its status is sent: wait for the count, don't race it.
        await async_wait_for(
            lambda m=method: _codes(run, m) == {"INVALID_ARGUMENT": 5.0},  # type: ignore[misc]
            what=f"5 INVALID_ARGUMENT {method} calls in the server's metrics",
            details=lambda m=method: str(_codes(run, m)),  # type: ignore[misc]
        )

    # The server's and gRPC's own log records (the Kafka client may warn about its topic meanwhile).
    server_logs = [r for r in caplog.records if r.name.startswith(("inference_grpc", "grpc"))]
    # The start-up freshness check may warn too (this store is empty), whenever its sample ends.
    warnings = [r for r in server_logs if r.levelno >= logging.WARNING and "stale or missing" not in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # ten bad calls, one line
    assert warnings[0].exc_info is None and "request bytes are not a valid" in warnings[0].getMessage()
    # The server is unharmed: a proper request still scores.
    assert (await run.stub.Predict(_REQUEST, timeout=5)).model == MODEL


async def test_a_deadline_that_cuts_the_redis_read_is_deadline_exceeded_never_unavailable(
    serve: ServerFactory, publisher: ModelRegistry, redis_url: str, redis_prefix: str
) -> None:
    await _published(publisher)
    store = _gated(redis_url, redis_prefix)  # never opened: every read outlasts every deadline
    run = await serve(store=store, redis_timeout_ms=60_000)  # so only the caller's deadline can cut it
    for deadline_s in [0.001] * 20 + [0.2] * 5:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await run.stub.Predict(_REQUEST, timeout=deadline_s)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (deadline_s, err.value.details())
    assert store.started >= 1, "no call reached the Redis read: the test proves nothing"

    # Server side: once every read is over, each call it answered is DEADLINE_EXCEEDED (or
    # CANCELLED, when gRPC's own deadline timer got there first), never UNAVAILABLE.
    def settled() -> bool:
        return store.active == 0 and sum(_codes(run).values()) >= store.started

    await async_wait_for(settled, what="every cut read to be answered", details=lambda: str(_codes(run)))
    assert set(_codes(run)) <= {"DEADLINE_EXCEEDED", "CANCELLED"}, _codes(run)
    store.gate.set()


async def test_a_message_over_the_size_limit_is_resource_exhausted(
    serve: ServerFactory, publisher: ModelRegistry
) -> None:
    await _published(publisher)
    run = await serve(max_message_bytes=2_048)
    big = inference_pb2.PredictRequest(entities={"card_id": "c" * 4_096, "merchant_id": "m1"})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await run.stub.Predict(big, timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_calls_beyond_max_concurrent_rpcs_are_resource_exhausted(
    serve: ServerFactory, publisher: ModelRegistry, redis_url: str, redis_prefix: str
) -> None:
    await _published(publisher)
    store = _gated(redis_url, redis_prefix)
    run = await serve(store=store, max_concurrent_rpcs=1)

    async def predict() -> inference_pb2.PredictResponse:
        response: inference_pb2.PredictResponse = await run.stub.Predict(_REQUEST, timeout=30)
        return response

    first = asyncio.create_task(predict())
    await async_wait_for(lambda: store.active == 1, what="the first call to hold the only slot")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await run.stub.Predict(_REQUEST, timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    store.gate.set()
    assert (await first).model == MODEL
