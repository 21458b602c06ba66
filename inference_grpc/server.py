"""Builds the inference server: gRPC service, health, reflection, metrics, hot-swap tasks.

`create_server(settings)` wires the real registry, Redis and Kafka; tests pass in-memory
stand-ins for any of them. It binds the port (0 picks a free one) and returns it; `start()`
resolves the alias from the registry, so the server needs no event to begin serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from featurestore.online import AsyncOnlineStore, AsyncRedisOnlineStore
from fti.v1 import inference_pb2
from fti_core.errors import FtiError
from registry.events import ModelEventSource

from .coalesce import CoalescingOnlineStore
from .errors import ServerStartError
from .freshness import FreshnessTracker, ViewFreshness, assess, describe
from .holder import ModelHolder
from .interceptor import ErrorMappingInterceptor
from .listener import ModelEventListener, refresh_periodically
from .metrics import Metrics
from .model import LoadedModel, ModelSource
from .servicer import InferenceServicer
from .settings import InferenceSettings

__all__ = ["SERVICE_NAME", "InferenceServer", "create_server"]

log = logging.getLogger(__name__)

SERVICE_NAME: str = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Entities sampled per view by the freshness check at start and on each swap.
_FRESHNESS_SAMPLE = 200


@dataclass
class InferenceServer:
    """A bound, not yet started server; `start()`, then `stop(grace)` (or wait for termination)."""

    settings: InferenceSettings
    grpc_server: aio.Server
    port: int
    holder: ModelHolder
    health: health.aio.HealthServicer
    metrics: Metrics
    store: AsyncOnlineStore
    events: ModelEventSource | None
    metrics_port: int | None = None
    freshness: FreshnessTracker | None = None
    # The freshness check of the model last loaded (a sample of the store; `freshness.py`).
    freshness_check: asyncio.Task[None] | None = None
    # Set once a model is loaded (the first swap); `fti serve` says so when it started without one.
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Start serving. A typed error (a busy port, Kafka unreachable) leaves everything closed."""
        try:
            await self._start()
        except FtiError:
            await self.stop(grace=0)
            raise

    async def _start(self) -> None:
        if self.settings.metrics_enabled:
            # First: a busy port fails the start before anything else runs.
            self.metrics_port = self.metrics.serve_http(self.settings.metrics_port)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, _NOT_SERVING)
        await self.grpc_server.start()
        if self.events is not None:
            # Fix the event position first, then resolve: an alias move in between is not lost.
            await self.events.start()
        await self.holder.refresh(reason="startup")
        if self.events is not None:
            listener = ModelEventListener(self.events, self.holder, metrics=self.metrics)
            self._tasks.append(asyncio.create_task(listener.run(), name="fti-model-events"))
        poll = refresh_periodically(self.holder, self.settings.resolve_interval_s)
        self._tasks.append(asyncio.create_task(poll, name="fti-model-refresh"))
        log.info("serving %s (alias %r) on port %d", self.holder.model, self.holder.alias, self.port)

    async def on_model_change(self, model: LoadedModel) -> None:
        # A model is loaded, and a swap never unloads one: from here on the server is ready.
        for name in ("", SERVICE_NAME):
            await self.health.set(name, _SERVING)
        self.ready.set()
        if self.freshness_check is not None:
            self.freshness_check.cancel()
        # Off the swap path: a swap must not wait for a look at the store.
        self.freshness_check = asyncio.create_task(self._check_freshness(model), name="fti-freshness")

    async def _check_freshness(self, model: LoadedModel) -> None:
        """One log line when most of the model's features are stale or missing in a sample of the store."""
        slots = model.layout.views
        try:
            samples = await self.store.sample_newest([(v.view, v.version) for v in slots], _FRESHNESS_SAMPLE)
        except NotImplementedError:
            return  # a store that cannot sample (a test stand-in): nothing to say
        except Exception as exc:  # noqa: BLE001 - a failed look must not touch serving; say so
            log.warning("could not check how fresh the features of %s v%d are: %s", model.name, model.version, exc)
            return
        per_view = Counter(vi for vi, _ in model.layout.features)
        views = []
        for i, v in enumerate(slots):
            got = samples[(v.view, v.version)]
            if got.newest_ms or got.complete:  # else: none met within the scan budget, which says nothing
                views.append(
                    ViewFreshness(v.view, v.version, per_view[i], got.spec.ttl_ms if got.spec else None, got.newest_ms)
                )
        if not views:
            return
        now_ms = int(time.time() * 1000)
        ratio = assess(views, now_ms)
        if self.freshness is not None:
            self.freshness.seed(ratio)
        if ratio > self.settings.stale_warn_ratio:
            log.warning("%s", describe(model.name, model.version, views, now_ms))
        else:
            log.info(
                "model %r v%d: %.0f%% of its features stale or missing in a sample",
                model.name,
                model.version,
                ratio * 100,
            )

    async def stop(self, grace: float | None = None) -> None:
        """Drain: say NOT_SERVING, refuse new RPCs, let in-flight ones finish within `grace`."""
        await self.health.enter_graceful_shutdown()
        if self.freshness_check is not None:
            self.freshness_check.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.grpc_server.stop(self.settings.shutdown_grace_s if grace is None else grace)
        if self.events is not None:
            await self.events.close()
        await self.store.close()
        self.metrics.close()

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


def _default_source(settings: InferenceSettings) -> ModelSource:
    from registry.models import ModelRegistry

    source: ModelSource = ModelRegistry.from_uri(settings.registry_root)
    return source


def _default_events(settings: InferenceSettings) -> ModelEventSource:
    from registry.events import KafkaModelEventSource

    return KafkaModelEventSource(settings, group_id=settings.event_group_id)


def _default_store(settings: InferenceSettings) -> AsyncOnlineStore:
    # No client-side retry loop: an unreachable Redis must turn into a prompt UNAVAILABLE, and
    # the pool reconnects on the next request once Redis is back. Connects are capped by the
    # socket timeout; reads are capped as a whole by the caller (the servicer, and the
    # coalescer for a shared round trip) rather than by a socket timeout, which redis-py arms
    # once per reply: a timer per key read, ~15% of the client's time per request.
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    timeout = settings.redis_timeout_ms / 1000
    redis_store = AsyncRedisOnlineStore.from_url(
        settings.redis_url.get_secret_value(),
        settings.redis_prefix,
        socket_timeout=None,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return CoalescingOnlineStore(redis_store, timeout_s=timeout) if settings.redis_coalesce else redis_store


def _bind(grpc_server: aio.Server, settings: InferenceSettings) -> int:
    address = f"{settings.host}:{settings.port}"
    credentials = _credentials(settings)
    try:
        if credentials is None:
            return int(grpc_server.add_insecure_port(address))
        return int(grpc_server.add_secure_port(address, credentials))
    except RuntimeError as exc:  # grpc says only "Failed to bind to address ..."
        raise ServerStartError(
            f"cannot listen for gRPC on {address}: the port is in use or the address is not local "
            "(choose another with --port; 0 picks a free one)"
        ) from exc


def _credentials(settings: InferenceSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def create_server(
    settings: InferenceSettings,
    *,
    source: ModelSource | None = None,
    store: AsyncOnlineStore | None = None,
    events: ModelEventSource | None = None,
    use_kafka_events: bool = True,
) -> tuple[InferenceServer, int]:
    """Build and bind the server. Call from inside the event loop that will run it."""
    if not settings.model:
        raise ValueError("settings.model is empty: name the model to serve (fti serve --model NAME)")
    metrics = Metrics()
    size = settings.max_message_bytes
    grpc_server = aio.server(
        options=[
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            # Without this a second server binds a port another gRPC server holds, and the two
            # silently share its connections; a port in use must be an error.
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    port = _bind(grpc_server, settings)
    if events is None and use_kafka_events:
        events = _default_events(settings)
    holder = ModelHolder(
        source or _default_source(settings),
        settings.model,
        settings.alias,
        metrics=metrics,
        follow_latest=settings.swap_on_publish,
    )
    health_servicer = health.aio.HealthServicer()
    app = InferenceServer(
        settings, grpc_server, port, holder, health_servicer, metrics, store or _default_store(settings), events
    )
    holder.set_on_change(app.on_model_change)
    servicer = InferenceServicer(holder, app.store, settings, metrics)
    app.freshness = servicer.freshness
    service = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"]
    ErrorMappingInterceptor(metrics).register(servicer, service, grpc_server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), grpc_server)
    return app, port
