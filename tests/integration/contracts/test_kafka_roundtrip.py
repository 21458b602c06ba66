"""Every fti.v1 message, with every field set, survives a trip through a real Kafka topic."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

import fti.v1

_SCALARS: dict[int, object] = {
    FieldDescriptor.TYPE_DOUBLE: 2.5,
    FieldDescriptor.TYPE_FLOAT: 1.5,
    FieldDescriptor.TYPE_INT64: -(2**40),
    FieldDescriptor.TYPE_SINT64: -(2**41),
    FieldDescriptor.TYPE_UINT64: 2**40,
    FieldDescriptor.TYPE_INT32: -7,
    FieldDescriptor.TYPE_UINT32: 7,
    FieldDescriptor.TYPE_BOOL: True,
    FieldDescriptor.TYPE_STRING: "ünïcode-✓",
    FieldDescriptor.TYPE_BYTES: b"\x00\xff",
}


def _all_message_types() -> list[Descriptor]:
    out = []
    for mod in pkgutil.iter_modules(fti.v1.__path__):
        if mod.name.endswith("_pb2"):
            fd = importlib.import_module(f"fti.v1.{mod.name}").DESCRIPTOR
            out.extend(fd.message_types_by_name.values())
    return sorted(out, key=lambda d: d.full_name)


def _scalar(field: FieldDescriptor) -> object:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number
    return _SCALARS[field.type]


def _fill(msg: Message, depth: int = 0) -> Message:
    """Set every field (the first member of each oneof) to a non-default value."""
    seen_oneofs: set[str] = set()
    for field in msg.DESCRIPTOR.fields:
        if field.containing_oneof is not None:
            if field.containing_oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(field.containing_oneof.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f, val_f = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            key = _scalar(key_f)
            if val_f.message_type is not None:
                _fill(getattr(msg, field.name)[key], depth + 1)
            else:
                getattr(msg, field.name)[key] = _scalar(val_f)
        elif field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                sub = getattr(msg, field.name).add() if _repeated(field) else getattr(msg, field.name)
                sub.FromMilliseconds(1_795_000_000_123)
            elif field.message_type.full_name == "google.protobuf.Duration":
                sub = getattr(msg, field.name).add() if _repeated(field) else getattr(msg, field.name)
                sub.FromMilliseconds(90_000)
            elif depth < 4:
                _fill(getattr(msg, field.name).add() if _repeated(field) else getattr(msg, field.name), depth + 1)
        elif _repeated(field):
            getattr(msg, field.name).extend([_scalar(field), _scalar(field)])
        else:
            setattr(msg, field.name, _scalar(field))
    return msg


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def samples() -> list[Message]:
    return [_fill(GetMessageClass(d)()) for d in _all_message_types()]


def test_samples_cover_every_contract_message() -> None:
    names = {m.DESCRIPTOR.full_name for m in samples()}
    assert {"fti.v1.Event", "fti.v1.FeatureVector", "fti.v1.ModelEvent", "fti.v1.PredictRequest"} <= names
    for m in samples():
        assert m.ByteSize() > 0, m.DESCRIPTOR.full_name


def _decode(name: str, data: bytes) -> Message:
    desc = next(d for d in _all_message_types() if d.full_name == name)
    return GetMessageClass(desc).FromString(data)


def test_every_message_round_trips_with_confluent_kafka(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("contracts-ck")
    sent = samples()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for msg in sent:
        producer.produce(topic, value=msg.SerializeToString(), headers={"type": msg.DESCRIPTOR.full_name})
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    received: list[Message] = []
    try:
        while len(received) < len(sent):
            rec = consumer.poll(10)
            assert rec is not None, f"timed out after {len(received)} of {len(sent)} messages"
            assert rec.error() is None, rec.error()
            headers = dict(rec.headers() or [])
            received.append(_decode(headers["type"].decode(), rec.value()))
    finally:
        consumer.close()
    assert received == sent


def test_every_message_round_trips_with_aiokafka(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("contracts-aio")
    sent = samples()

    async def run() -> list[Message]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for msg in sent:
                await producer.send_and_wait(
                    topic, msg.SerializeToString(), headers=[("type", msg.DESCRIPTOR.full_name.encode())]
                )
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, group_id=topic, auto_offset_reset="earliest"
        )
        await consumer.start()
        out: list[Message] = []
        try:
            while len(out) < len(sent):
                rec = await asyncio.wait_for(consumer.getone(), timeout=20)
                out.append(_decode(dict(rec.headers)["type"].decode(), rec.value))
        finally:
            await consumer.stop()
        return out

    assert asyncio.run(run()) == sent
