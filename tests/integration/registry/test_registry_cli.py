"""`fti registry promote` / `rollback` refuse a corrupt target: exit 1, one clear line, nothing
moved, nothing on the model topic (real Kafka)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from fti.v1 import models_pb2
from registry.cli import registry
from registry.models import FeatureRef, ModelRegistry, ModelVersionRecord

from ...unit.inference_grpc.models_helper import train_model_text
from ...waits import consume_until

FEATURES = (
    FeatureRef("card_activity", 1, "txn_count", "card_id"),
    FeatureRef("card_activity", 1, "amount_sum", "card_id"),
)


def _publish(reg: ModelRegistry, seed: int) -> ModelVersionRecord:
    return reg.publish(
        "fraud",
        train_model_text(seed, n_features=len(FEATURES)).encode(),
        features=FEATURES,
        entities=["card_id"],
        snapshot_id="snap",
        code_version="test",
        params={},
        metrics={"auc": 0.7},
        task="binary",
    )


def _corrupt(reg: ModelRegistry, record: ModelVersionRecord) -> bytes:
    path = Path(reg.store.root) / record.artefact_uri
    good = path.read_bytes()
    path.write_bytes(good.replace(b"Tree=0", b"Tree=X", 1))
    return good


def test_promote_and_rollback_refuse_a_corrupt_target_with_nothing_moved_or_emitted(
    tmp_path: Path, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic = unique("models")
    env = {"FTI_DATA_DIR": str(tmp_path), "FTI_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "FTI_MODELS_TOPIC": topic}
    reg = ModelRegistry.from_uri(str(tmp_path / "registry"))  # publishes without events: only moves are emitted
    v1, v2, v3 = (_publish(reg, seed) for seed in (1, 2, 3))

    def fti(*args: str) -> Result:
        return CliRunner().invoke(registry, list(args), env=env)

    for version in (v1, v2):
        assert fti("promote", "fraud", str(version.version)).exit_code == 0
    good_v3 = _corrupt(reg, v3)
    refused = fti("promote", "fraud", str(v3.version))
    assert refused.exit_code == 1
    assert "IntegrityError" in refused.output and "fraud@production not moved to v3" in refused.output
    assert "Traceback" not in refused.output

    _corrupt(reg, v1)
    refused = fti("rollback", "fraud")
    assert refused.exit_code == 1
    assert "rollback refused" in refused.output and "not moved to v1" in refused.output
    assert reg.aliases("fraud") == {"production": v2.version}

    # Repaired, v3 is promoted; every move before that one on the topic is a real one.
    (Path(reg.store.root) / v3.artefact_uri).write_bytes(good_v3)
    assert fti("promote", "fraud", str(v3.version)).exit_code == 0

    def moves(messages: list[tuple[bytes | None, bytes]]) -> list[tuple[int, int]]:
        events = [models_pb2.ModelEvent.FromString(value) for _, value in messages]
        return [(e.alias_moved.from_version, e.alias_moved.to_version) for e in events if e.alias_moved.model]

    messages = consume_until(
        kafka_bootstrap, topic, lambda got: (2, 3) in moves(got), what="the move to v3 on the model topic"
    )
    assert moves(messages) == [(0, 1), (1, 2), (2, 3)]
    assert [m.to_version for m in reg.alias_history("fraud", "production")] == [1, 2, 3]
