"""The fti.v1 InferenceService: validate, read Redis once, assemble, score, answer.

Concurrent requests share the expensive steps: their Redis reads (`coalesce.py`) and their
LightGBM call (`batcher.py`); everything else is per request and kept allocation-light.

No `context.abort` here: errors are raised typed and mapped by the interceptor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from prometheus_client import Counter

from featurestore.online import AsyncOnlineStore, OnlineKey, OnlineValue
from fti.v1 import inference_pb2, inference_pb2_grpc
from fti_core.errors import UnavailableError

from .batcher import PredictBatcher
from .errors import (
    BatchTooLargeError,
    DeadlineExceededError,
    InvalidRequestError,
    OnlineStoreUnavailableError,
    UnknownModelError,
)
from .features import Assembled, FeatureStatus, assemble, online_keys, parse_request_values
from .freshness import FreshnessTracker
from .holder import ModelHolder
from .metrics import Metrics
from .model import LoadedModel
from .settings import InferenceSettings

__all__ = ["InferenceServicer"]


class _Context(Protocol):
    """The part of `grpc.aio.ServicerContext` the servicer uses."""

    def time_remaining(self) -> float | None: ...


# Below this much time left, a Redis round trip plus scoring cannot answer before the deadline.
_MIN_USEFUL_S = 0.000_5
_MISS_REASONS = {FeatureStatus.MISSING: "missing", FeatureStatus.STALE: "stale"}


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self, holder: ModelHolder, store: AsyncOnlineStore, settings: InferenceSettings, metrics: Metrics
    ) -> None:
        self._holder = holder
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._batcher = PredictBatcher()
        self.freshness = FreshnessTracker(metrics.stale_ratio, settings.stale_warn_ratio)
        # Labelled counter children by (view, reason), bound once: labels() takes a lock each call.
        self._misses: dict[tuple[str, FeatureStatus], Counter] = {}

    async def Predict(self, request: inference_pb2.PredictRequest, context: _Context) -> inference_pb2.PredictResponse:
        return (await self._predict([request], context))[0]

    async def PredictBatch(
        self, request: inference_pb2.PredictBatchRequest, context: _Context
    ) -> inference_pb2.PredictBatchResponse:
        size = len(request.requests)
        if size == 0:
            raise InvalidRequestError("a batch needs at least one request")
        if size > self._settings.max_batch_size:
            raise BatchTooLargeError(f"batch of {size} requests is over the limit of {self._settings.max_batch_size}")
        return inference_pb2.PredictBatchResponse(responses=await self._predict(request.requests, context))

    async def _predict(
        self, requests: Sequence[inference_pb2.PredictRequest], context: _Context
    ) -> list[inference_pb2.PredictResponse]:
        # One model reference for the whole call: a swap meanwhile does not affect this request.
        model = self._holder.require()
        plans = [self._plan(model, r) for r in requests]
        keys = [k for ks, _ in plans for k in ks]
        stored = await self._read(keys, context)
        now_ms = int(time.time() * 1000)
        per_view = len(model.layout.views)
        assembled = [
            assemble(model.layout, stored[i * per_view : (i + 1) * per_view], overrides, now_ms)
            for i, (_, overrides) in enumerate(plans)
        ]
        scores = await self._batcher.score(model, [a.vector for a in assembled])
        return [self._response(model, a, s) for a, s in zip(assembled, scores, strict=True)]

    def _plan(
        self, model: LoadedModel, request: inference_pb2.PredictRequest
    ) -> tuple[list[OnlineKey], dict[int, float | str]]:
        if request.model and request.model != model.name:
            raise UnknownModelError(f"model {request.model!r} is not served here; this server serves {model.name!r}")
        return online_keys(model.layout, request.entities), parse_request_values(model.layout, request.request_values)

    async def _read(self, keys: list[OnlineKey], context: _Context) -> list[OnlineValue | None]:
        # One retry of a timed-out read: a single slow reply (a busy host, a GC pause in
        # Redis) should not fail a request whose caller is still willing to wait. A refused
        # connection is not retried: Redis is down and the caller should hear it at once.
        for attempt in range(2):
            timeout, deadline_bound = self._read_budget(context)
            try:
                # asyncio.timeout, not wait_for: no extra task per request on the hot path.
                async with asyncio.timeout(timeout):
                    return await self._store.read(keys)
            except TimeoutError as exc:
                # The read was cut at the caller's deadline, not at the store's cap: the
                # caller's time is up, whatever time_remaining() says a moment later.
                if deadline_bound:
                    raise DeadlineExceededError("deadline exceeded while reading the online store") from exc
                remaining = context.time_remaining()
                if attempt == 0 and (remaining is None or remaining > _MIN_USEFUL_S):
                    self._metrics.store_retries.inc()
                    continue
                error = OnlineStoreUnavailableError(f"online store (Redis) read timed out after {timeout:.3f}s")
                return self._store_failed(error, len(keys))
            except UnavailableError as exc:
                error = OnlineStoreUnavailableError(f"online store (Redis) unreachable, retry shortly: {exc}")
                return self._store_failed(error, len(keys))
        raise AssertionError("unreachable: the loop returns or raises")

    def _read_budget(self, context: _Context) -> tuple[float, bool]:
        """How long one read may take (the configured cap, shortened to the caller's
        deadline), and whether the deadline is what limits it."""
        timeout = self._settings.redis_timeout_ms / 1000
        remaining = context.time_remaining()
        if remaining is None:
            return timeout, False
        # No Redis call once the caller has given up: the answer could not reach anyone.
        if remaining <= _MIN_USEFUL_S:
            raise DeadlineExceededError("deadline exceeded (or too close) before the online store was read")
        return (remaining, True) if remaining <= timeout else (timeout, False)

    def _store_failed(self, error: OnlineStoreUnavailableError, size: int) -> list[OnlineValue | None]:
        self._metrics.store_errors.inc()
        if self._settings.redis_failure_mode == "missing":
            return [None] * size  # configured fallback: score with stored features as missing
        raise error

    def _response(self, model: LoadedModel, assembled: Assembled, score: float) -> inference_pb2.PredictResponse:
        self.freshness.observe(assembled.stale_or_missing, len(assembled.used))
        for use in assembled.used:
            if use.status is FeatureStatus.MISSING or use.status is FeatureStatus.STALE:
                self._miss_counter(use.view, use.status).inc()
        return model.response(assembled.used, score)

    def _miss_counter(self, view: str, status: FeatureStatus) -> Counter:
        counter = self._misses.get((view, status))
        if counter is None:
            counter = self._metrics.feature_misses.labels(view=view, reason=_MISS_REASONS[status])
            self._misses[(view, status)] = counter
        return counter
