"""The README's code examples work as written (only the broker address is the test's own)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml
from confluent_kafka import Consumer, Message

from feature_stream.codec import RawEvent, decode_event
from featurestore.definitions import parse_definitions
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


def _consume_one(kafka_bootstrap: str, topic: str) -> Message:
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    try:
        for _ in range(30):
            rec = consumer.poll(1)
            if rec is not None and rec.error() is None:
                return rec
    finally:
        consumer.close()
    raise AssertionError(f"nothing on {topic}")


def test_bring_your_own_events_example_is_decoded_by_its_source(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    section = README.split("## Bring your own events", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None, "the section has no YAML example"
    defs = parse_definitions(yaml.safe_load(match.group(1)))
    topic = topic_factory("readme-json", partitions=1)
    code = example("produce-json").replace('"localhost:9092"', repr(kafka_bootstrap)).replace('"rides.v1"', repr(topic))
    exec(compile(code, "README.md#produce-json", "exec"), {})

    ev = decode_event(_consume_one(kafka_bootstrap, topic).value(), defs, "rides.v1")
    assert isinstance(ev, RawEvent), ev
    assert (ev.event_type, ev.event_id, ev.source) == ("ride_completed", "r-1001", "rides")
    assert ev.entities == {"driver_id": "42", "route": "Z1|Z2"}
    assert ev.values == {"fare": 12.5, "distance_km": 3.2}
