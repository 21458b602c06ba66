"""The README's code examples work as written (only the broker address is the test's own)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer

from fti.v1 import events_pb2

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", README, re.S)
    assert match is not None, f"README has no example {name!r}"
    return match.group(1)


def test_produce_example_writes_an_event_the_pipeline_can_decode(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("readme-produce", partitions=4)
    code = example("produce").replace('"localhost:9092"', repr(kafka_bootstrap)).replace('"fti.events"', repr(topic))
    exec(compile(code, "README.md#produce", "exec"), {})

    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    try:
        rec = None
        for _ in range(30):
            rec = consumer.poll(1)
            if rec is not None and rec.error() is None:
                break
    finally:
        consumer.close()
    assert rec is not None and rec.key() == b"c00042"
    event = events_pb2.Event.FromString(rec.value())
    assert event.event_type == "transaction" and event.entities["merchant_id"] == "m0007"
    assert event.values["amount"].double_value == 42.5 and event.event_time.ToMilliseconds() > 0
