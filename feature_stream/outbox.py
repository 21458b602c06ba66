"""Kafka outputs of the worker (dead letters, re-keyed forwards) through a plain confluent-kafka producer.

Faust's send path costs a coroutine, a future and a callback per message, several times the
rest of an event's processing; librdkafka batches in C. `flush` is the durability point the
processor waits on before it saves state and acks offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from feature_stream.codec import DLQ_REASON_HEADER, DeadLetter
from feature_stream.records import InMessage, Outbox, ViewItem
from feature_stream.settings import FeatureStreamSettings
from featurestore.offline import OfflineStore, date_of
from fti_core.errors import UnavailableError

__all__ = ["MAX_INLINE_DEAD_LETTER", "ORIGINAL_URI_HEADER", "RDKAFKA_LOG", "KafkaOutbox"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_PACK = 500  # items per re-keyed record, keeping records far below the broker's 1 MB limit
_MAX_MESSAGE_BYTES = 1_000_000  # the producer's and the broker's default limit on one record
# A dead letter larger than this keeps its original bytes in the offline store instead.
MAX_INLINE_DEAD_LETTER = _MAX_MESSAGE_BYTES - 64 * 1024
ORIGINAL_URI_HEADER = "fti-dlq-original-uri"
# librdkafka's own lines go through Python logging, to the root handlers that carry the
# worker's repeat limit (not under "fti.worker", whose own handler lets every line through),
# rather than straight to stderr: a broker outage made it print two lines a second.
RDKAFKA_LOG = logging.getLogger("fti.rdkafka")


class KafkaOutbox(Outbox):
    def __init__(self, settings: FeatureStreamSettings) -> None:
        conf: dict[str, Any] = {
            **settings.confluent_config(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": _MAX_MESSAGE_BYTES,
            "logger": RDKAFKA_LOG,
        }
        self._producer = Producer(conf)
        self._dlq = settings.dlq_topic
        self._rekeyed = settings.repartition_topic
        self._error: KafkaError | None = None
        self._n: int | None = None
        self._offline_root = settings.offline_root

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None and self._error is None:
            self._error = err

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None,
        partition: int = -1,  # -1: librdkafka's partitioner picks from the key
    ) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, partition, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain it
            except KafkaException as exc:
                raise UnavailableError(f"produce to {topic} failed: {exc}") from exc

    def dead_letter(self, msg: InMessage, letter: DeadLetter) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            (DLQ_REASON_HEADER, letter.reason_name.encode()),
            ("fti-dlq-detail", letter.detail.encode()[:512]),
            ("fti-dlq-source", msg.position.encode()),
        ]
        value, key = msg.value or b"", msg.key
        if len(value) + len(key or b"") > MAX_INLINE_DEAD_LETTER:
            # Too large to send whole: the original bytes go to the offline store first
            # (synchronously, so they are durable before the offset is), the record points there.
            name = f"{msg.topic}-{msg.partition}-{msg.offset}.bin"
            uri = OfflineStore(self._offline_root).write_bytes(f"dead_letters/date={date_of(_now_ms())}/{name}", value)
            headers += [(ORIGINAL_URI_HEADER, uri.encode()), ("fti-dlq-original-bytes", str(len(value)).encode())]
            value, key = b"", (key or b"")[:1024]
        self._produce(self._dlq, key, value, headers)

    def forward(self, items: Sequence[ViewItem]) -> None:
        # Items are packed per partition, so the re-keyed handler gets a few records per batch
        # instead of one per event; crc32 of the entity key gives every worker the same owner.
        parts: dict[int, list[ViewItem]] = {}
        n = self._partitions()
        for item in items:
            parts.setdefault(zlib.crc32(item.entity_key.encode()) % n, []).append(item)
        for partition, group in parts.items():
            for i in range(0, len(group), _PACK):
                self._produce(self._rekeyed, None, ViewItem.encode_many(group[i : i + _PACK]), None, partition)

    def _partitions(self) -> int:
        if self._n is None:
            try:
                meta = self._producer.list_topics(self._rekeyed, timeout=30).topics[self._rekeyed]
            except KafkaException as exc:
                raise UnavailableError(f"metadata of {self._rekeyed} failed: {exc}") from exc
            if meta.error is not None or not meta.partitions:
                raise UnavailableError(f"topic {self._rekeyed} unavailable: {meta.error}")
            self._n = len(meta.partitions)
        return self._n

    async def flush(self) -> None:
        left = await asyncio.to_thread(self._producer.flush, 30)
        err, self._error = self._error, None
        if left or err is not None:
            raise UnavailableError(f"kafka delivery failed: {err or f'{left} messages undelivered'}")
