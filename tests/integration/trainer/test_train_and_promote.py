"""The demo domain end to end through the real snapshot store, `fti train`, and the promoter on real Kafka.

The archive of simulated events is written with the offline-store writer and frozen with
SnapshotStore.create(); `fti train` evaluates every window at its label times from it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import pytest
from click.testing import CliRunner

from featurestore.definitions import load_definitions
from featurestore.offline import ArchiveRow, OfflineStore
from featurestore.snapshots import SnapshotStore
from featurestore.values import from_value_map
from fti.v1 import events_pb2, models_pb2
from fti_core.settings import FtiSettings
from fti_demo.simulate import SimConfig, generate
from registry.events import KafkaModelEventSink, KafkaModelEventSource
from registry.models import ModelRegistry
from registry.promotion import Promoter, PromotionPolicy
from trainer.cli import train

from ...waits import async_wait_for, consume_until

DEFS = Path(__file__).resolve().parents[3] / "examples/fraud/features.yaml"
END_MS = 1_760_000_000_000


def _write_demo_offline_store(root: str, count: int) -> str:
    defs = load_definitions(DEFS)
    seen: dict[str, events_pb2.Event] = {}
    for sim in generate(count, SimConfig(seed=11, end_ms=END_MS)):
        ev = events_pb2.Event.FromString(sim.value)
        seen.setdefault(ev.event_id, ev)  # the simulator sends duplicates
    store = OfflineStore(root)
    archive = [
        ArchiveRow(
            event_id=ev.event_id,
            event_type=ev.event_type,
            event_time_ms=ev.event_time.ToMilliseconds(),
            entities=dict(ev.entities),
            values={k: v for k, v in from_value_map(ev.values).items() if v is not None},
            source=ev.source,
            schema_version=ev.schema_version,
            msg_key="",
            watermark_ms=-1,
            late=False,
            ingest_ns=0,
        )
        for ev in seen.values()
    ]
    store.write_archive(archive)
    return SnapshotStore(root).create(views=defs.views).id


def _consume(bootstrap: str, topic: str, expected: int) -> list[models_pb2.ModelEvent]:
    raw = consume_until(bootstrap, topic, lambda got: len(got) >= expected, what=f"{expected} model events")
    return [models_pb2.ModelEvent.FromString(value) for _, value in raw]


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, unique: Callable[[str], str]) -> dict[str, str]:
    return {
        "FTI_DATA_DIR": str(tmp_path),
        "FTI_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FTI_MODELS_TOPIC": unique("models"),
        "FTI_DEFINITIONS_PATH": str(DEFS),
        "FTI_TRAIN_CODE_VERSION": "itest",
    }


async def test_train_on_demo_snapshot_then_promoter_promotes_better_and_declines_tie(
    env: dict[str, str], tmp_path: Path, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    snapshot_id = await asyncio.to_thread(_write_demo_offline_store, str(tmp_path / "offline"), 30_000)
    settings = FtiSettings(
        data_dir=tmp_path, kafka_bootstrap_servers=kafka_bootstrap, models_topic=env["FTI_MODELS_TOPIC"]
    )
    registry = ModelRegistry.from_uri(settings.registry_root, events=KafkaModelEventSink(settings))
    promoter = Promoter(registry, PromotionPolicy(alias="production", margin=0.001), actor="itest")
    source = KafkaModelEventSource(settings, group_id=unique("promoter"), from_beginning=True)
    await source.start()
    runner = asyncio.create_task(promoter.run(source))

    def run_train(*args: str) -> dict[str, object]:
        result = CliRunner().invoke(train, ["--model", "fraud", "--json", *args], env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    async def holder_becomes(version: int | None) -> None:
        def check() -> bool:
            holder = registry.resolve("fraud", "production")
            return (holder.version if holder else None) == version

        await async_wait_for(check, what=f"production to become v{version}")

    first = await asyncio.to_thread(run_train, "--snapshot", snapshot_id, "--seed", "1")
    assert first["metrics"]["auc"] > 0.85  # type: ignore[index]
    await holder_becomes(1)  # no holder -> promoted

    # A deliberately weak model on the same features (3 rounds): published by hand, declined.
    rec1 = registry.get("fraud", 1)
    weak = lgb.Booster(model_str=registry.load_artefact("fraud", 1).decode()).model_to_string(num_iteration=1)
    registry.publish(
        "fraud", weak.encode(), features=rec1.features, entities=rec1.entities, snapshot_id=snapshot_id,
        code_version="weak", params={}, metrics={}, task="binary", label=rec1.label,
        holdout=registry.load_holdout("fraud", 1),
    )  # fmt: skip
    second = await asyncio.to_thread(run_train, "--snapshot", snapshot_id, "--seed", "1")
    assert second["sha256"] == first["sha256"]  # same snapshot + seed -> byte-identical model
    await async_wait_for(lambda: registry.decision("fraud", "production", 3), what="a verdict on v3")
    runner.cancel()
    await source.close()

    assert registry.resolve("fraud", "production").version == 1  # type: ignore[union-attr]
    weak_decision, tie = registry.decision("fraud", "production", 2), registry.decision("fraud", "production", 3)
    assert weak_decision is not None and not weak_decision.promoted
    assert weak_decision.evidence["candidate_auc"] < weak_decision.evidence["current_auc"]
    assert tie is not None and not tie.promoted and tie.evidence["improvement"] == 0.0

    events = _consume(kafka_bootstrap, env["FTI_MODELS_TOPIC"], expected=6)
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds.count("published") == 3 and kinds.count("promotion_declined") == 2
    promoted = [e.alias_moved for e in events if e.WhichOneof("kind") == "alias_moved"]
    assert [(m.to_version, m.kind) for m in promoted] == [(1, models_pb2.ALIAS_MOVE_KIND_PROMOTED)]
    rec = registry.get("fraud", 1)
    assert rec.snapshot_id == snapshot_id and rec.code_version == "itest"
    assert [f.column for f in rec.features][:2] == ["card_activity__txn_count_10m", "card_activity__amount_sum_10m"]
    print(f"demo validation AUC {rec.metrics['auc']:.4f} logloss {rec.metrics['logloss']:.4f}")
