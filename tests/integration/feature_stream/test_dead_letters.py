"""Each kind of malformed input lands in the DLQ with its reason and original bytes; valid events stay exact."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer

from feature_stream.codec import DLQ_REASON_HEADER
from feature_stream.outbox import ORIGINAL_URI_HEADER
from featurestore.offline import OfflineStore
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
        elif name == "amount_value":
            ev.values["amount"].CopyFrom(to_value(value))  # type: ignore[arg-type]
        elif name == "time_s":
            ev.event_time.seconds = int(value)  # type: ignore[call-overload]
        elif name == "label":
            ev.event_type = "fraud_label"
            ev.entities.pop("merchant_id")
            ev.values.clear()
            if value is not None:
                ev.values["is_fraud"].CopyFrom(to_value(value))  # type: ignore[arg-type]
        elif name == "card":
            ev.entities["card_id"] = str(value)
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
    "DEAD_LETTER_REASON_WRONG_TYPE": _event(tag="str-amount", amount_value="12.50"),
    "DEAD_LETTER_REASON_VALUE_OUT_OF_RANGE": _event(tag="huge", amount=1e300),
    "DEAD_LETTER_REASON_LABEL_OUT_OF_DOMAIN": _event(tag="label", label=2),
    "DEAD_LETTER_REASON_EVENT_TIME_OUT_OF_RANGE": _event(tag="year-3000", time_s=32_503_680_000),
    "DEAD_LETTER_REASON_INVALID_KEY": _event(tag="long-key", card="c" * 5000),
}
MORE = [
    ("DEAD_LETTER_REASON_NON_FINITE_VALUE", _event(tag="inf", amount=math.inf)),
    ("DEAD_LETTER_REASON_WRONG_TYPE", _event(tag="bool-amount", amount_value=True)),
    ("DEAD_LETTER_REASON_VALUE_OUT_OF_RANGE", _event(tag="negative", amount=-5.0)),
    ("DEAD_LETTER_REASON_LABEL_OUT_OF_DOMAIN", _event(tag="no-label", label=None)),
    ("DEAD_LETTER_REASON_EVENT_TIME_OUT_OF_RANGE", _event(tag="max-seconds", time_s=2**62)),
]


def _read_dlq_records(pipe: FeaturePipeline, expected: int) -> list[tuple[dict[str, bytes], bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": pipe.settings.kafka_bootstrap_servers,
            "group.id": pipe.settings.app_id + "-dlq-records",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([pipe.settings.dlq_topic])
    out: list[tuple[dict[str, bytes], bytes]] = []
    try:
        for _ in range(60):
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    out.append(({k: v or b"" for k, v in msg.headers() or []}, msg.value() or b""))
            if len(out) >= expected:
                break
    finally:
        consumer.close()
    return out


def _read_dlq(pipe: FeaturePipeline, expected: int) -> list[tuple[str, bytes]]:
    return [(h[DLQ_REASON_HEADER].decode(), v) for h, v in _read_dlq_records(pipe, expected)]


def test_each_malformed_kind_is_dead_lettered_and_valid_events_stay_exact(
    feature_pipeline: Callable[..., FeaturePipeline],
) -> None:
    pipe = feature_pipeline(partitions=2)
    sim = [(e.key, e.value) for e in generate(3000, SimConfig(seed=5, cards=300, merchants=50))]
    bad = [*MALFORMED.items(), *MORE]
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
        assert s.probes > 0


def test_a_dead_letter_too_large_to_send_keeps_its_bytes_in_the_offline_store(
    feature_pipeline: Callable[..., FeaturePipeline],
) -> None:
    pipe = feature_pipeline(partitions=1)
    huge = b"\xff" + bytes(random.Random(3).getrandbits(8) for _ in range(990_000))  # undecodable, near 1 MB
    pipe.produce([(b"c1", huge), *[(e.key, e.value) for e in generate(200, SimConfig(seed=8))]])
    pipe.start_worker()
    pipe.wait_caught_up()
    records = _read_dlq_records(pipe, 1)
    assert len(records) == 1
    headers, value = records[0]
    assert headers[DLQ_REASON_HEADER] == b"DEAD_LETTER_REASON_UNDECODABLE"
    assert value == b""
    original = Path(headers[ORIGINAL_URI_HEADER].decode())
    assert original.read_bytes() == huge
    assert int(headers["fti-dlq-original-bytes"]) == len(huge)


def test_a_message_dead_lettered_by_hand_is_never_processed(feature_pipeline: Callable[..., FeaturePipeline]) -> None:
    pipe = feature_pipeline(partitions=1)
    sim = list(generate(300, SimConfig(seed=9)))
    pipe.produce([(e.key, e.value) for e in sim])
    cli = "from feature_stream.cli import features; features()"
    args = ["dead-letter", "--partition", "0", "--offset", "7", "--reason", "crashes the worker, see INC-42"]
    done = subprocess.run([sys.executable, "-c", cli, *args], env=pipe.env, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    pipe.start_worker()
    pipe.wait_caught_up()
    records = _read_dlq_records(pipe, 1)
    assert [(h[DLQ_REASON_HEADER], h["fti-dlq-detail"], v) for h, v in records] == [
        (b"DEAD_LETTER_REASON_MANUAL", b"crashes the worker, see INC-42", sim[7].value)
    ]
    archived = set(OfflineStore(pipe.settings.offline_root).read_archive()["event_id"])
    assert sim[7].event_id not in archived and sim[8].event_id in archived
    for s in pipe.parity():
        assert s.mismatches == [], (s.view, s.mismatches[:10])


def test_dead_lettering_a_message_that_does_not_exist_is_refused(
    feature_pipeline: Callable[..., FeaturePipeline],
) -> None:
    pipe = feature_pipeline(partitions=1)
    cli = "from feature_stream.cli import features; features()"
    args = ["dead-letter", "--partition", "0", "--offset", "99", "--reason", "x"]
    done = subprocess.run([sys.executable, "-c", cli, *args], env=pipe.env, capture_output=True, check=False)
    assert done.returncode != 0
    assert b"no message at" in done.stderr


def test_dead_lettering_a_processed_message_or_without_a_reason_is_refused(
    feature_pipeline: Callable[..., FeaturePipeline],
) -> None:
    pipe = feature_pipeline(partitions=1)
    pipe.produce([(e.key, e.value) for e in generate(50, SimConfig(seed=12))])
    cli = "from feature_stream.cli import features; features()"
    blank = ["dead-letter", "--partition", "0", "--offset", "3", "--reason", "  "]
    done = subprocess.run([sys.executable, "-c", cli, *blank], env=pipe.env, capture_output=True, check=False)
    assert done.returncode != 0 and b"say why" in done.stderr
    pipe.start_worker()
    pipe.wait_caught_up()
    late = ["dead-letter", "--partition", "0", "--offset", "3", "--reason", "too late"]
    done = subprocess.run([sys.executable, "-c", cli, *late], env=pipe.env, capture_output=True, check=False)
    assert done.returncode != 0
    assert b"already processed" in done.stderr and b"would change nothing" in done.stderr
