"""Kafka outputs of the worker (dead letters, re-keyed forwards) through a plain confluent-kafka producer.

Faust's send path costs a coroutine, a future and a callback per message, several times the
rest of an event's processing; librdkafka batches in C. `flush` is the durability point the
processor waits on before it saves state and acks offsets.
"""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from feature_stream.codec import DLQ_REASON_HEADER, DeadLetter
from feature_stream.processor import InMessage, Outbox, ViewItem
from feature_stream.settings import FeatureStreamSettings
from registry.errors import UnavailableError

__all__ = ["KafkaOutbox"]


class KafkaOutbox(Outbox):
    def __init__(self, settings: FeatureStreamSettings) -> None:
        conf: dict[str, Any] = {
            **settings.confluent_config(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
        }
        self._producer = Producer(conf)
        self._dlq = settings.dlq_topic
        self._rekeyed = settings.repartition_topic
        self._error: KafkaError | None = None

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None and self._error is None:
            self._error = err

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, str | bytes | None]] | None
    ) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
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
        self._produce(self._dlq, msg.key, msg.value or b"", headers)

    def forward(self, item: ViewItem) -> None:
        self._produce(self._rekeyed, item.entity_key.encode(), item.encode(), None)

    async def flush(self) -> None:
        left = await asyncio.to_thread(self._producer.flush, 30)
        err, self._error = self._error, None
        if left or err is not None:
            raise UnavailableError(f"kafka delivery failed: {err or f'{left} messages undelivered'}")
