"""The Faust app: two agents around `Processor`, plus topic creation and the worker entry point.

* `ingest` consumes the raw topic in batches (`take_events`), so Faust acks, and later
  commits, a batch's offsets only after its outputs and state are written.
* `aggregate` consumes the re-keyed topic: events routed to views whose entity is not the
  raw message key, keyed by that entity so one worker owns each entity.
State is kept in Redis by the processor (not in Faust tables), so no changelog recovery is
needed when partitions move; caches are dropped on every assignment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

import faust
import redis.asyncio as aredis
from confluent_kafka.admin import AdminClient, NewTopic
from faust.streams import Stream

from feature_stream import metrics
from feature_stream.codec import DLQ_REASON_HEADER, DeadLetter
from feature_stream.processor import InMessage, Outbox, Processor, ViewItem
from feature_stream.settings import FeatureStreamSettings
from feature_stream.state import RedisStateStore
from registry.featurestore.catalogue import Catalogue
from registry.featurestore.definitions import Definitions, load_definitions
from registry.featurestore.offline import OfflineStore
from registry.featurestore.online import AsyncRedisOnlineStore

__all__ = ["build_app", "ensure_topics", "run_worker"]

log = logging.getLogger(__name__)


def ensure_topics(settings: FeatureStreamSettings) -> None:
    """Create the raw, dead-letter and re-keyed topics when missing (broker auto-creation may be off)."""
    conf: dict[str, str | int | float | bool] = dict(settings.confluent_config())
    admin = AdminClient(conf)
    existing = set(admin.list_topics(timeout=30).topics)
    parts = settings.features_topic_partitions
    # Faust's partition assignor elects its leader through a one-partition topic.
    wanted = {
        settings.events_topic: parts,
        settings.dlq_topic: parts,
        settings.repartition_topic: parts,
        f"{settings.features_app_id}-__assignor-__leader": 1,
    }
    rf = settings.features_replication_factor
    new = [NewTopic(t, num_partitions=n, replication_factor=rf) for t, n in wanted.items() if t not in existing]
    if not new:
        return
    for name, fut in admin.create_topics(new).items():
        try:
            fut.result(timeout=30)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
            log.debug("topic %s already exists", name)


class FaustOutbox(Outbox):
    def __init__(self, dlq: faust.TopicT, rekeyed: faust.TopicT) -> None:
        self._dlq = dlq
        self._rekeyed = rekeyed
        self._pending: list[Any] = []

    async def dead_letter(self, msg: InMessage, letter: DeadLetter) -> None:
        headers = [
            (DLQ_REASON_HEADER, letter.reason_name.encode()),
            ("fti-dlq-detail", letter.detail.encode()[:512]),
            ("fti-dlq-source", msg.position.encode()),
        ]
        self._pending.append(await self._dlq.send(key=msg.key, value=msg.value or b"", headers=headers))

    async def forward(self, item: ViewItem) -> None:
        self._pending.append(await self._rekeyed.send(key=item.entity_key.encode(), value=item.encode()))

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)


def _to_messages(events: Sequence[faust.EventT[Any]]) -> list[InMessage]:
    return [
        InMessage(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value)
        for e in events
    ]


def _app_config(settings: FeatureStreamSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap_servers}",
        "store": "memory://",
        "web_enabled": settings.features_web_port > 0,
        "web_port": settings.features_web_port or 6066,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.features_session_timeout_s,
        "broker_heartbeat_interval": settings.features_heartbeat_interval_s,
        "broker_commit_interval": settings.features_commit_interval_s,
        "topic_partitions": settings.features_topic_partitions,
        "topic_replication_factor": settings.features_replication_factor,
        "topic_allow_declare": False,
        "stream_wait_empty": True,
        "producer_acks": -1,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    ctx = settings.ssl_context()
    if ctx is not None:
        conf["broker_credentials"] = ctx
    return conf


def build_app(settings: FeatureStreamSettings, defs: Definitions) -> faust.App:
    app = faust.App(settings.features_app_id, **_app_config(settings))
    raw = app.topic(settings.events_topic, key_type=bytes, value_type=bytes)
    rekeyed = app.topic(settings.repartition_topic, key_type=bytes, value_type=bytes)
    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes)
    redis_url = settings.redis_url.get_secret_value()
    processor = Processor(
        defs,
        RedisStateStore(aredis.Redis.from_url(redis_url), settings.state_prefix),
        AsyncRedisOnlineStore.from_url(redis_url, settings.features_redis_prefix),
        OfflineStore(settings.offline_root),
        FaustOutbox(dlq, rekeyed),
        state_slack_ms=settings.features_state_slack_ms,
        dedup_retention_ms=settings.features_dedup_retention_ms,
    )
    size, within = settings.features_batch_size, settings.features_batch_within_s

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode's signal typing is narrower than its calls
    async def _on_assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        processor.reset()

    @app.agent(raw)
    async def ingest(stream: faust.StreamT[Any]) -> None:
        async for events in cast(Stream[bytes], stream).take_events(size, within=within):
            msgs = _to_messages(events)
            try:
                await processor.ingest(msgs)
            except Exception:
                processor.reset()  # the cache may be ahead of the saved state
                raise
            _record_lag(app, msgs)

    @app.agent(rekeyed)
    async def aggregate(stream: faust.StreamT[Any]) -> None:
        async for events in cast(Stream[bytes], stream).take_events(size, within=within):
            try:
                await processor.aggregate([ViewItem.decode(e.message.value or b"[]") for e in events])
            except Exception:
                processor.reset()
                raise
            _record_lag(app, _to_messages(events))

    return app


def _record_lag(app: faust.App, msgs: Sequence[InMessage]) -> None:
    last: dict[tuple[str, int], int] = {}
    for m in msgs:
        last[(m.topic, m.partition)] = max(last.get((m.topic, m.partition), -1), m.offset)
    for (topic, partition), offset in last.items():
        try:
            high = app.consumer.highwater(faust.types.TP(topic, partition))
        except (KeyError, AttributeError):
            continue
        if high is not None:
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(0, high - offset - 1))


def run_worker(settings: FeatureStreamSettings) -> None:
    """Blocking: prepare topics and the catalogue, then run the Faust worker until stopped."""
    defs = load_definitions(settings.definitions_path)
    Catalogue(settings.offline_root).register(defs.views)
    ensure_topics(settings)
    metrics.serve_metrics(settings.features_metrics_port)
    app = build_app(settings, defs)
    worker = faust.Worker(app, loglevel=settings.features_log_level, quiet=True)
    worker.execute_from_commandline()
