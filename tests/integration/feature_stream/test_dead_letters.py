"""Each kind of malformed input lands in the DLQ with its reason and original bytes; valid events stay exact."""

from __future__ import annotations

import math
from collections.abc import Callable

from confluent_kafka import Consumer

from feature_stream.codec import DLQ_REASON_HEADER
from featurestore.values import to_value
from fti.v1 import events_pb2
from fti_demo.simulate import SimConfig, generate

from .conftest import FeaturePipeline


def _event(**overrides: object) -> bytes:
    ev = events_pb2.Event(
        event_id="bad-" + str(overrides.pop("tag", "x")),
        event_type="transaction",
        entities={"card_id": "c1", "merchant_id": "m1"},
        values={"amount": to_value(3.0), "merchant_id": to_value("m1")},
        schema_version=1,
    )
    ev.event_time.FromMilliseconds(1_700_000_000_000)
    for name, value in overrides.items():
        if name == "no_time":
            ev.ClearField("event_time")
        elif name == "drop_entity":
            del ev.entities[str(value)]
        elif name == "amount":
            ev.values["amount"].double_value = float(value)  # type: ignore[arg-type]
        else:
            setattr(ev, name, value)
    return ev.SerializeToString()


MALFORMED = {
    "DEAD_LETTER_REASON_UNDECODABLE": b"\xff\xfe not protobuf \x00",
    "DEAD_LETTER_REASON_UNKNOWN_EVENT_TYPE": _event(tag="type", event_type="refund"),
    "DEAD_LETTER_REASON_MISSING_ENTITY_KEY": _event(tag="entity", drop_entity="merchant_id"),
    "DEAD_LETTER_REASON_UNKNOWN_SCHEMA_VERSION": _event(tag="version", schema_version=2),
    "DEAD_LETTER_REASON_NON_FINITE_VALUE": _event(tag="nan", amount=math.nan),
    "DEAD_LETTER_REASON_MISSING_EVENT_ID": _event(event_id=""),
    "DEAD_LETTER_REASON_MISSING_EVENT_TIME": _event(tag="time", no_time=True),
}


def _read_dlq(pipe: FeaturePipeline, expected: int) -> list[tuple[str, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": pipe.settings.kafka_bootstrap_servers,
            "group.id": pipe.settings.app_id + "-dlq-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([pipe.settings.dlq_topic])
    out: list[tuple[str, bytes]] = []
    try:
        for _ in range(60):
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    headers = dict(msg.headers() or [])
                    reason = headers[DLQ_REASON_HEADER]
                    assert isinstance(reason, bytes)
                    out.append((reason.decode(), msg.value() or b""))
            if len(out) >= expected:
                break
    finally:
        consumer.close()
    return out


def test_each_malformed_kind_is_dead_lettered_and_valid_events_stay_exact(
    feature_pipeline: Callable[..., FeaturePipeline],
) -> None:
    pipe = feature_pipeline(partitions=2)
    sim = [(e.key, e.value) for e in generate(3000, SimConfig(seed=5, cards=300, merchants=50))]
    bad = [*MALFORMED.items(), ("DEAD_LETTER_REASON_NON_FINITE_VALUE", _event(tag="inf", amount=math.inf))]
    mixed = list(sim)
    for i, (_, data) in enumerate(bad):
        mixed.insert(300 * (i + 1), (b"c1", data))
    pipe.produce(mixed)
    pipe.start_worker()
    pipe.wait_caught_up()
    dead = _read_dlq(pipe, len(bad))
    assert sorted(dead) == sorted(bad)
    for s in pipe.parity():
        assert s.mismatches == [], (s.view, s.mismatches[:10])
        assert s.offline_rows > 0
