"""Publishing and alias moves reach the model topic as fti.v1.ModelEvent (real Kafka)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from confluent_kafka.admin import AdminClient

from fti.v1 import models_pb2
from fti_core.settings import FtiSettings
from registry.events import KafkaModelEventSink, KafkaModelEventSource
from registry.models import FeatureRef, ModelRegistry

from ...unit.inference_grpc.models_helper import train_model_text
from ...waits import consume_until


def _publish(reg: ModelRegistry, artefact: bytes) -> int:
    return reg.publish(
        "fraud",
        artefact,
        features=[
            FeatureRef("card_activity", 1, "txn_count_10m", "card_id"),
            FeatureRef("card_activity", 1, "amount_sum_10m", "card_id"),
        ],
        entities=["card_id"],
        snapshot_id="snap",
        code_version="test",
        params={},
        metrics={"auc": 0.8},
        task="binary",
    ).version


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes | None, bytes]]:
    return consume_until(bootstrap, topic, lambda got: len(got) >= expected, what=f"{expected} model events")


def test_publish_promote_rollback_events_decode_with_a_plain_consumer(
    tmp_path: Path, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    settings = FtiSettings(
        data_dir=tmp_path,
        kafka_bootstrap_servers=kafka_bootstrap,
        models_topic=unique("models"),
        models_topic_partitions=2,
    )
    sink = KafkaModelEventSink(settings)  # creates the topic itself, as the topics table says
    meta = AdminClient(settings.confluent_config()).list_topics(settings.models_topic, timeout=10)
    assert len(meta.topics[settings.models_topic].partitions) == 2
    reg = ModelRegistry.from_uri(str(tmp_path / "registry"), events=sink)
    # Real models: an alias only moves to a version that loads.
    _publish(reg, train_model_text(1, n_features=2).encode())
    _publish(reg, train_model_text(2, n_features=2).encode())
    reg.move_alias("fraud", "production", 1, actor="alice")
    reg.move_alias("fraud", "production", 2, kind="promoted", actor="bob", evidence={"auc": 0.9})
    reg.rollback("fraud", "production", actor="carol", reason="regression seen")
    sink.close()

    raw = _consume_all(kafka_bootstrap, settings.models_topic, expected=5)
    assert {key for key, _ in raw} == {b"fraud"}
    events = [models_pb2.ModelEvent.FromString(value) for _, value in raw]
    published = [e.published.version.version for e in events if e.WhichOneof("kind") == "published"]
    moves = [e.alias_moved for e in events if e.WhichOneof("kind") == "alias_moved"]
    assert published == [1, 2]  # one key -> one partition -> in order
    assert [(m.from_version, m.to_version, m.kind, m.sequence) for m in moves] == [
        (0, 1, models_pb2.ALIAS_MOVE_KIND_SET, 1),
        (1, 2, models_pb2.ALIAS_MOVE_KIND_PROMOTED, 2),
        (2, 1, models_pb2.ALIAS_MOVE_KIND_ROLLED_BACK, 3),
    ]
    assert moves[1].evidence["auc"] == 0.9 and moves[2].actor == "carol"


async def test_every_unjoined_source_sees_every_event(
    tmp_path: Path, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    settings = FtiSettings(data_dir=tmp_path, kafka_bootstrap_servers=kafka_bootstrap, models_topic=unique("models"))
    sources = [KafkaModelEventSource(settings), KafkaModelEventSource(settings)]
    for source in sources:
        await source.start()  # position fixed: later events are seen
    reg = ModelRegistry.from_uri(str(tmp_path / "registry"), events=KafkaModelEventSink(settings))
    await asyncio.to_thread(_publish, reg, b"m")

    async def first(source: KafkaModelEventSource) -> models_pb2.ModelEvent:
        async for event in source:
            return event
        raise AssertionError("source ended")

    got = await asyncio.wait_for(asyncio.gather(*(first(s) for s in sources)), timeout=30)
    assert [e.published.version.version for e in got] == [1, 1]
    for source in sources:
        await source.close()
