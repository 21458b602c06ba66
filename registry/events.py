"""Model lifecycle events on Kafka: a sink the registry writes to, a source consumers read.

Events are `fti.v1.ModelEvent` messages keyed by model name, so every event of one model
lands on one partition, in order. The registry stays the system of record: an event is a
notification, and a consumer that missed some (it was down, or started late) re-reads the
registry (`ModelRegistry.resolve`) instead of replaying the topic.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.message import DecodeError

from fti.v1 import models_pb2
from fti_core.errors import UnavailableError
from fti_core.settings import FtiSettings
from fti_core.topics import TopicSpec, create_missing_topics

__all__ = [
    "InMemoryModelEventSink",
    "InMemoryModelEventSource",
    "KafkaModelEventSink",
    "KafkaModelEventSource",
    "ModelEventSink",
    "ModelEventSource",
    "ensure_topic",
    "event_model",
    "new_event",
]

log = logging.getLogger(__name__)


def new_event(**kind: Any) -> models_pb2.ModelEvent:
    """A ModelEvent with a fresh id and the current time; `kind` is one oneof member."""
    event = models_pb2.ModelEvent(event_id=uuid.uuid4().hex, **kind)
    event.emitted_at.GetCurrentTime()
    return event


def event_model(event: models_pb2.ModelEvent) -> str:
    """The model an event is about (the Kafka key)."""
    kind = event.WhichOneof("kind")
    if kind == "published":
        return event.published.version.model
    if kind == "alias_moved":
        return event.alias_moved.model
    if kind == "promotion_declined":
        return event.promotion_declined.model
    return ""


class ModelEventSink(ABC):
    @abstractmethod
    def emit(self, event: models_pb2.ModelEvent) -> None:
        """Deliver the event; raise UnavailableError when it could not be delivered."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sinks hold nothing
        """Release connections."""


class InMemoryModelEventSink(ModelEventSink):
    """Keeps events in a list, for unit tests."""

    def __init__(self) -> None:
        self.events: list[models_pb2.ModelEvent] = []
        self._lock = threading.Lock()

    def emit(self, event: models_pb2.ModelEvent) -> None:
        with self._lock:
            self.events.append(event)


def ensure_topic(settings: FtiSettings, spec: TopicSpec) -> int:
    """Create the topic as the spec says unless it exists; returns its partition count.

    Brokers may not auto-create topics, and a consumer that starts first must still find it.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    conf: dict[str, Any] = dict(settings.confluent_config())
    create_missing_topics(conf, [spec])
    admin = AdminClient(conf)
    try:
        # A just-created topic takes a moment to appear in every broker's metadata.
        deadline = time.monotonic() + 10
        while (
            meta := admin.list_topics(spec.name, timeout=10).topics.get(spec.name)
        ) is None or meta.error is not None:
            if time.monotonic() > deadline:
                raise UnavailableError(f"topic {spec.name} did not appear in the cluster metadata")
            time.sleep(0.1)
        return len(meta.partitions)
    except KafkaException as exc:
        raise UnavailableError(f"cannot create topic {spec.name}: {exc}") from exc


class KafkaModelEventSink(ModelEventSink):
    """confluent-kafka producer; `emit` returns only once the broker has acknowledged the event."""

    def __init__(self, settings: FtiSettings, *, topic: TopicSpec | None = None, timeout_s: float = 30.0) -> None:
        from confluent_kafka import Producer

        spec = topic or settings.topics.models
        self.topic = spec.name
        self._timeout_s = timeout_s
        ensure_topic(settings, spec)
        conf: dict[str, Any] = {**settings.confluent_config(), "acks": "all", "enable.idempotence": True}
        self._producer = Producer(conf)

    def emit(self, event: models_pb2.ModelEvent) -> None:
        errors: list[Any] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        key = event_model(event).encode()
        try:
            self._producer.produce(self.topic, key=key, value=event.SerializeToString(), on_delivery=on_delivery)
        except Exception as exc:  # BufferError / KafkaException from librdkafka
            raise UnavailableError(f"cannot produce model event to {self.topic}: {exc}") from exc
        remaining = self._producer.flush(self._timeout_s)
        if remaining or errors:
            reason = errors[0] if errors else f"not acknowledged within {self._timeout_s}s"
            raise UnavailableError(f"model event {event.event_id} not delivered to {self.topic}: {reason}")

    def close(self) -> None:
        self._producer.flush(self._timeout_s)


class ModelEventSource(ABC):
    """An async stream of model events."""

    @abstractmethod
    def events(self) -> AsyncIterator[models_pb2.ModelEvent]: ...

    def __aiter__(self) -> AsyncIterator[models_pb2.ModelEvent]:
        return self.events()

    async def start(self) -> None:  # noqa: B027 - optional: sources may start lazily
        """Connect and fix the starting position; events emitted after this returns are seen."""

    async def commit(self) -> None:  # noqa: B027 - only group consumers commit
        """Mark the events yielded so far as handled (group consumers only)."""

    @abstractmethod
    async def close(self) -> None: ...


class InMemoryModelEventSource(ModelEventSource):
    """Fed by `put`, for unit tests; `close` ends the iteration."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[models_pb2.ModelEvent | None] = asyncio.Queue()

    def put(self, event: models_pb2.ModelEvent) -> None:
        self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[models_pb2.ModelEvent]:
        while (event := await self._queue.get()) is not None:
            yield event

    async def close(self) -> None:
        self._queue.put_nowait(None)


class KafkaModelEventSource(ModelEventSource):
    """aiokafka consumer of the model topic.

    With `group_id=None` (inference replicas) the source reads every partition itself,
    outside any consumer group, so every replica sees every event and no rebalance delays
    start-up; it starts at the end of the topic (or the beginning with `from_beginning`),
    and the position is fixed in `start()`. With a `group_id` (the promoter) replicas share
    the work, committed offsets survive restarts, and `commit()` marks progress after an
    event was handled (at-least-once).
    """

    def __init__(
        self,
        settings: FtiSettings,
        *,
        group_id: str | None = None,
        from_beginning: bool = False,
        topic: TopicSpec | None = None,
    ) -> None:
        self._settings = settings
        self._spec = topic or settings.topics.models
        self.topic = self._spec.name
        self.group_id = group_id
        self._from_beginning = from_beginning
        self._consumer: Any = None
        self._closed = False

    async def start(self) -> None:
        if self._consumer is not None:
            return
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        # The topic may not exist yet when a server starts before the first publish.
        count = await asyncio.to_thread(ensure_topic, self._settings, self._spec)
        reset = "earliest" if self._from_beginning else "latest"
        conf = self._settings.aiokafka_config()
        try:
            if self.group_id is None:
                consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset=reset, **conf)
                await consumer.start()
                tps = [TopicPartition(self.topic, p) for p in range(count)]
                consumer.assign(tps)
                if self._from_beginning:
                    await consumer.seek_to_beginning(*tps)
                else:
                    await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)  # resolve now, not at the first fetch
            else:
                consumer = AIOKafkaConsumer(
                    self.topic,
                    group_id=self.group_id,
                    enable_auto_commit=False,
                    auto_offset_reset=reset,
                    session_timeout_ms=10_000,
                    heartbeat_interval_ms=1_000,
                    **conf,
                )
                await consumer.start()
        except KafkaError as exc:
            raise UnavailableError(f"cannot consume {self.topic}: {exc}") from exc
        self._consumer = consumer

    async def events(self) -> AsyncIterator[models_pb2.ModelEvent]:
        await self.start()
        while not self._closed and (consumer := self._consumer) is not None:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = models_pb2.ModelEvent()
                    try:
                        event.ParseFromString(record.value or b"")
                    except DecodeError:
                        log.warning("skipping undecodable model event at %s offset %s", record.partition, record.offset)
                        continue
                    yield event

    async def commit(self) -> None:
        if self._consumer is not None and self.group_id is not None:
            await self._consumer.commit()

    async def close(self) -> None:
        self._closed = True
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
